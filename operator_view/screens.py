"""What an admin reads in the terminal: tables that fit its width, cells that cannot drive it.

The width is the terminal's (COLUMNS first, as shutil reads it), between 60 and 160 columns,
read each time a screen is formatted; output that does not go to a terminal (a report piped
to a file) keeps 100 columns, so it reads the same wherever it was made.

Wider detail (ticket ids, sizes, every reference) goes to the CSV reports; a screen shows
what a person needs to decide: which set, what would happen, how much, and why not.
"""
from __future__ import annotations

import shutil
import sys
import textwrap

from operator_view import summary

WIDTH = 100  # when stdout is not a terminal, and shutil's fallback
MIN_WIDTH, MAX_WIDTH = 60, 160  # a terminal's width is taken within these
GROUPS_PER_REASON = 3  # groups that are not merge sets shown per reason; the rest are in the CSV
_WHAT = {"would_merge": "merge", "would_move": "move only", "skipped": "skip", "failed": "failed",
         "already_merged": "merged earlier", "already_moved_only": "moved earlier", "restored": "restored since",
         "merge_refused": "refused earlier"}


def screen_width() -> int:
    """The columns a screen may use: the terminal's (the COLUMNS variable first, as
    `shutil.get_terminal_size` reads it) kept within MIN_WIDTH..MAX_WIDTH; WIDTH when stdout
    is not a terminal, so a report piped to a file does not depend on who ran it."""
    stdout = sys.stdout
    try:
        if stdout is None or not stdout.isatty():
            return WIDTH
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return WIDTH
    columns = shutil.get_terminal_size(fallback=(WIDTH, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def cell(value, width: int | None = None) -> str:
    """A value as one line of printable text (control characters escaped), cut to `width`
    with a final `…`."""
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in " ".join(text.splitlines()))
    if width is not None and len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text


def format_table(headers: list[str], rows: list[list], *, width: int | None = None, right: tuple[int, ...] = (),
                 caps: dict[int, int] | None = None, last_lines: int = 3, notes: dict[int, str] | None = None) -> str:
    """A plain table no wider than `width` (None: `screen_width()`): each column as wide as its
    widest cell (capped by `caps`, column index -> most characters), the last column taking
    what is left and wrapping onto up to `last_lines` lines. Columns in `right` are
    right-aligned (numbers). When it cannot fit, the capped columns give way first (`_fit`)
    rather than lines growing wider than `width`. `notes`: row index -> text printed under that row,
    indented, across the whole width."""
    width = screen_width() if width is None else width
    notes = notes or {}
    caps = caps or {}
    cells = [[cell(h) for h in headers]] + [[cell(c) for c in row] for row in rows]
    widths = [min(caps.get(i, width), max(len(r[i]) for r in cells)) for i in range(len(headers))]
    widths = _fit(widths, [len(h) for h in cells[0]], width, set(caps), set(right))
    room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
    widths[-1] = max(8, min(widths[-1], room))
    indent = " " * (sum(widths[:-1]) + 2 * (len(widths) - 1))
    lines = []
    for n, row in enumerate(cells):
        parts = [cell(c, w).rjust(w) if i in right else cell(c, w).ljust(w)
                 for i, (c, w) in enumerate(zip(row[:-1], widths))]
        last = _wrap(row[-1], widths[-1], last_lines if n else 1)
        lines.append("  ".join(parts + [last[0]]).rstrip())
        lines += [indent + more for more in last[1:]]
        if n - 1 in notes and n > 0:
            lines += ["    " + line for line in _wrap(cell(notes[n - 1]), width - 4, 2)]
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fit(widths: list[int], header: list[int], width: int, capped: set[int], numbers: set[int]) -> list[int]:
    """The columns' widths cut, one character at a time and the widest first, until the
    table fits `width`: capped columns (which may be cut) down to 12 characters while the
    last column keeps a fifth of the width (no more than it needs); then with the last
    column 8 wide; then capped columns down to 8; then other text columns down to 8. None
    goes below its header; number columns (`numbers`) are never cut. A table that still
    cannot fit keeps those widths (its last column what is left, 8 at least)."""
    widths = list(widths)
    last = len(widths) - 1
    text = set(range(last)) - numbers
    for group, floor, last_min in ((capped, 12, width // 5), (capped, 12, 8), (capped, 8, 8), (text, 8, 8)):
        over = sum(widths[:-1]) + 2 * last + min(max(8, widths[-1]), max(8, last_min)) - width
        while over > 0:
            can = [i for i in group if i < last and widths[i] > max(floor, header[i])]
            if not can:
                break
            i = max(can, key=lambda i: (widths[i], -i))  # the widest; of equals, the one further left
            widths[i] -= 1
            over -= 1
    return widths


def _wrap(text: str, width: int, most: int) -> list[str]:
    """`text` in lines of at most `width`, at most `most` lines (the last cut with `…`)."""
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = cell(lines[-1] + " …", width) if len(lines[-1]) < width - 1 else lines[-1][:width - 1] + "…"
    return lines


def wrap_text(text: str, width: int | None = None) -> str:
    """Running text (a summary) wrapped to `width` (None: `screen_width()`), keeping its own
    line breaks; a line with no space to break at (a long path) is kept whole."""
    width = screen_width() if width is None else width
    return "\n".join(line if len(line) <= width or " " not in line.strip() else
                     textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
                     for line in text.splitlines())


def _set_row(record: dict) -> list:
    status = record["status"]
    dups = record.get("duplicates") or []
    if status.startswith("would"):
        refs = [d.get("external_ref") or d.get("display_id") or d.get("id") for d in dups]
        return [record["email"], _WHAT.get(status, status), sum(len(d["tickets"]) for d in dups),
                sum(len(d["conversations"]) for d in dups), record.get("estimated_calls"), " ".join(refs)]
    why = (record.get("reason") or status) if status in ("skipped", "restored", "merge_refused") else \
        record.get("error") or record.get("detail") or ""
    return [record["email"], _WHAT.get(status, status), None, None, None, why]


def _group_rows(groups: list[dict], more_in: str | None, per_reason: int,
                counts: dict[str, int] | None = None) -> list[tuple[list, str]]:
    """(row, note) for at most `per_reason` groups of each reason, then one `… N more` row
    pointing to the file that lists them all. counts: reason -> all its groups, when
    `groups` lists only the first few (the report's `skipped_counts`)."""
    by_reason: dict[str, list[dict]] = {}
    for group in groups:
        by_reason.setdefault(group["reason"], []).append(group)
    out = []
    for reason, members in by_reason.items():
        for group in members[:per_reason]:
            refs = " ".join(r.get("EXTERNAL_REF") or r.get("REV_USER_ID") or "" for r in group.get("rows") or [])
            out.append(([group["email"], "not a merge set", None, None, None, reason],
                        f"{group.get('detail') or reason}: {refs}"))
        total = (counts or {}).get(reason, len(members))
        if total > per_reason:
            rest = total - min(per_reason, len(members))
            out.append(([f"… {rest} more", "not a merge set", None, None, None, reason],
                        f"{summary.plural(rest, 'more group')} for {reason}" + (f": see {more_in}" if more_in else "")))
    return out


def format_preview(preview: dict, *, width: int | None = None, more_in: str | None = None,
                   per_reason: int = GROUPS_PER_REASON) -> str:
    """The preview table (one row per merge set, then a few groups that are not merge sets
    per reason) and its summary, no line wider than `width` (None: `screen_width()`).
    `preview` is the preview report with its totals; `more_in` names the file listing every
    group. A set skipped by a live check shows its reason, and its detail on the line below."""
    width = screen_width() if width is None else width
    headers = ["email", "would", "tickets", "convs", "calls", "duplicate refs / why not"]
    rows = [_set_row(record) for record in preview["sets"]]
    notes = {n: record.get("detail") for n, record in enumerate(preview["sets"])
             if record["status"] in ("skipped", "restored", "merge_refused") and record.get("detail")}
    notes.update({n: record["primary_from"] for n, record in enumerate(preview["sets"])
                  if n not in notes and record.get("primary_from")})
    for row, note in _group_rows(preview.get("skipped") or [], more_in, per_reason, preview.get("skipped_counts")):
        notes[len(rows)] = note
        rows.append(row)
    table = format_table(headers, rows, width=width, right=(2, 3, 4), caps={0: 30, 1: 15}, notes=notes)
    return f"{table}\n\n{wrap_text(summary.describe_preview(preview['totals']), width)}"


def format_status(sets: list[dict], *, width: int | None = None) -> str:
    """`--status`'s table: each set's state, steps done and open intents, updated, note
    (`sets`: dicts with email, status, done, intents, updated_at, note), no line wider than
    `width` (None: `screen_width()`)."""
    rows = [[s["email"], s["status"], s["done"], s["intents"], (s.get("updated_at") or "")[:19], s.get("note")]
            for s in sets]
    return format_table(["email", "status", "steps done", "open intents", "updated (UTC)", "note"], rows,
                        width=width, right=(2, 3), caps={0: 30, 1: 12})
