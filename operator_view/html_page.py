"""One self-contained HTML page per run, readable at a glance by whoever approves the run.

`render(report, rows=...)` turns any script's report dict (merge, preview, restore,
find-duplicates) into one page: the run's header (when, which CSV by hash, which DevRev,
options, exit code), totals, a table of its rows with status colours, failures and skips
with their reason first, drift since the preview, and calls per minute against the rate
limit as an inline SVG chart. No network, no script: a Content-Security-Policy forbids
both, and every value is escaped by Jinja2's autoescape (a contact named
`<script>alert(1)</script>` shows as text). The template is `templates/report.html.j2`.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import jinja2
import markupsafe

from operator_view.summary import plural, size
from plumbing.cli import EXIT_MEANING
from plumbing.files import atomic_write_bytes

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_BREAK_AFTER = re.compile(r"([_@./-])")


def breakable(value: Any) -> markupsafe.Markup:
    """The value escaped, then with a line-break opportunity (`<wbr>`) after `_ @ . / -`, so
    long ids and paths wrap in a narrow table; the text itself is unchanged."""
    return markupsafe.Markup(_BREAK_AFTER.sub(r"\1<wbr>", str(markupsafe.escape(str(value)))))


_ENV.filters["breakable"] = breakable

# status -> colour class; anything else is shown neutral
STATUS_CLASS = {"merged": "ok", "would_merge": "ok", "would_move": "ok", "moved_only": "ok", "restored": "ok",
                "already_merged": "done", "already_moved_only": "done", "skipped": "skip", "not_a_merge_set": "skip",
                "failed": "bad", "backup_failed": "bad", "would_restore": "ok", "already_restored": "done",
                "merge_set": "ok",
                "pending": "wait", "interrupted": "wait", "in_progress": "wait"}
_HEADER_SKIP = {"sets", "rows", "results", "skipped", "totals", "api", "calls_per_minute", "journal_problems"}
TITLES = {"preview": "Preview", "merge_report": "Merge report"}
# the run's vocabulary (summary.py) where a bare key would mislead; other keys: "_" -> " "
LABELS = {"skipped": "skipped by live checks", "pending": "not finished", "not_merge_sets": "groups not merge sets",
          "would_merge": "would be merged", "already_done": "finished earlier", "this_run": "this run",
          "duplicate_refs": "duplicates (user refs)", "backups_verified": "verified", "error": "error"}
PATH_COLUMNS = ("backups", "backup", "folder")  # listed under "Backup folders", not in the table
DRIFT_COLUMNS = ("drift_appeared", "drift_vanished")  # under "Drift since the preview"
WHOLE_COLUMNS = ("email", "primary", "status")  # never broken inside a value; others wrap after _ @ . / -


def render(report: dict, *, rows: list[dict] | None = None, columns: list[str] | None = None,
           title: str | None = None) -> str:
    """The page (str) for `report`.

    rows: the table, one dict per row (default: report["sets"], "rows" or "results"); each
    may carry `status`, `reason`, `error`/`detail`, `drift_appeared`/`drift_vanished`.
    columns: which keys to show, in order (default: every key of the rows).
    The header comes from the report's own keys when present: run_id, kind, started_at,
    finished_at, created_at, target, csv {path, sha256, rows}, options, exit_code,
    interrupted_by; the totals from `totals` (a nested dict such as `this_run` is its own
    block); the chart from `calls_per_minute` [{minute, calls}] and `rate_limit` (calls/min).
    """
    if rows is None:
        rows = next((report[k] for k in ("sets", "rows", "results") if isinstance(report.get(k), list)), [])
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    kind = report.get("kind") or "report"
    shown = [c for c in columns if c not in PATH_COLUMNS + DRIFT_COLUMNS]
    page = {"title": title or TITLES.get(kind, kind.replace("_", " ").capitalize()),
            "run_id": report.get("run_id"), "header": _header(report), "totals": _totals(report.get("totals")),
            "columns": shown, "headings": [label(c) for c in shown], "rows": [_row(r, shown) for r in rows],
            "folders": _folders(rows, columns), "drift_known": any(c in DRIFT_COLUMNS for c in columns),
            "problems": _problems(rows),
            "drift": _drift(rows), "canary": _canary(report.get("canary")),
            "chart": _chart(report.get("calls_per_minute") or [], report.get("rate_limit")),
            "api": {k: v for k, v in (report.get("api") or {}).items() if ":" not in k},
            "journal_problems": report.get("journal_problems") or []}
    return _ENV.get_template("report.html.j2").render(**page)


def write(path: str, report: dict, **kwargs: Any) -> str:
    """Render `report` (as `render`) and write it atomically, owner-only, to `path`; returns path."""
    atomic_write_bytes(path, render(report, **kwargs).encode("utf-8"))
    return path


def _header(report: dict) -> list[tuple[str, Any]]:
    csv = report.get("csv") or {}
    items = [("run", report.get("run_id")), ("kind", report.get("kind")),
             ("started", report.get("started_at")),
             ("finished", report.get("finished_at") or report.get("created_at")),
             ("CSV", csv.get("path")), ("CSV sha256", csv.get("sha256")), ("CSV rows", csv.get("rows")),
             ("DevRev", report.get("target")), ("tool version", report.get("tool_version"))]
    if "exit_code" in report:
        code = report["exit_code"]
        items.append(("exit code", f"{code} ({EXIT_MEANING.get(code, 'see README')})"))
    elif report.get("kind") == "preview":
        items.append(("complete", "yes" if report.get("complete") else "no (a set could not be previewed)"))
    if report.get("interrupted_by"):
        items.append(("interrupted by", report["interrupted_by"]))
    if isinstance(report.get("actor"), dict):
        items.append(("run by", describe_actor(report["actor"])))
    options = report.get("options") or {}
    shown = ", ".join(f"{k}={v}" if v is not True else k for k, v in options.items() if v not in (None, False))
    items.append(("options", shown or "defaults"))
    known = {"run_id", "kind", "started_at", "finished_at", "created_at", "csv", "target", "tool_version",
             "exit_code", "interrupted_by", "options", "interrupted", "complete"}
    items += [(k.replace("_", " "), v) for k, v in report.items()
              if k not in known | _HEADER_SKIP and isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return [(label, value) for label, value in items if value not in (None, "")]


def describe_actor(actor: dict) -> str:
    """The report's actor block in one line: "DEVU-1 (admin@x) as ops@host, tool 1.4.0"."""
    who = actor.get("devrev_user") or {}
    person = " ".join(str(p) for p in (who.get("display_id") or who.get("id"),
                                       f"({who['email']})" if who.get("email") else None) if p)
    where = "@".join(str(p) for p in (actor.get("os_user"), actor.get("host")) if p)
    unknown = "DevRev user unknown (dev-users.self failed)" if actor.get("devrev_user_error") else \
        "DevRev user not asked (no call made)"
    return ", ".join(p for p in ((person or unknown) + (f" as {where}" if where else ""),
                                 f"tool {actor.get('tool_version')}") if p)


def label(key: str) -> str:
    """A report key as a heading: the run's vocabulary, else the key with spaces."""
    return LABELS.get(key, key.replace("_", " "))


def _totals(totals: dict | None) -> list[tuple[str, list[tuple[str, Any]]]]:
    """[(block title, [(label, number)])]: the totals so far, then each nested block."""
    if not totals:
        return []
    flat = [(label(k), size(v) if k.endswith("_bytes") else v) for k, v in totals.items() if not isinstance(v, dict)]
    blocks = [("so far" if "this_run" in totals else "totals", flat)]
    blocks += [(label(k), [(label(kk), vv) for kk, vv in v.items()]) for k, v in totals.items()
               if isinstance(v, dict)]
    return blocks


def _cell(value: Any) -> dict:
    """A cell: its lines of text (a list is one item per line; None and [] are empty)."""
    if value is None:
        lines = []
    elif isinstance(value, bool):
        lines = ["yes" if value else "no"]
    elif isinstance(value, (list, tuple)):
        lines = [str(v) for v in value]
    else:
        lines = [str(value)]
    return {"lines": lines}


def _row(row: dict, columns: list[str]) -> dict:
    status = str(row.get("status") or "")
    cells = [dict(_cell(row.get(c)), whole=c in WHOLE_COLUMNS) for c in columns]
    if "status" in columns:  # `not_a_merge_set` as words, so the column can wrap
        cells[columns.index("status")] = dict(_cell(status.replace("_", " ") or None), whole=True)
    return {"status_class": STATUS_CLASS.get(status, "none"), "cells": cells}


def _folders(rows: list[dict], columns: list[str]) -> list[dict]:
    """Each row's backup folders (full paths), for their own section: [{email, status, paths}]."""
    wanted = [c for c in columns if c in PATH_COLUMNS]
    out = []
    for row in rows:
        paths = [p for c in wanted for p in _cell(row.get(c))["lines"]]
        if paths:
            out.append({"email": row.get("email") or row.get("name") or "", "paths": paths,
                        "status_class": STATUS_CLASS.get(str(row.get("status") or ""), "none")})
    return out


def _canary(result: Any) -> dict | None:
    """The merge report's canary (merging.canary.check_set) for the page: one line, then each
    change the tool did not make (red) and each field DevRev changed by itself (grey)."""
    if isinstance(result, str) and result:   # "skipped: no set followed" (merging.run)
        return {"line": result, "rows": []}
    if not isinstance(result, dict):
        return None
    diffs = [d for d in result.get("differences") or [] if isinstance(d, dict)]
    alone = [d for d in result.get("moved_by_themselves") or [] if isinstance(d, dict)]
    if result.get("error"):
        line = f"{result.get('set')}: could not re-read ({result['error']}); the run stopped before the next set"
    elif diffs:
        line = (f"{result.get('set')}: {plural(len(diffs), 'change')} in fields the tool did not write, of "
                f"{plural(result.get('checked') or 0, 'object')} re-read; the run stopped before the next set")
    else:
        line = (f"{result.get('set')}: {plural(result.get('checked') or 0, 'object')} re-read, nothing changed but "
                f"what the tool wrote and the merge is expected to change")
    rows = [dict(d, status_class="bad", why="not written by the tool") for d in diffs]
    rows += [dict(d, status_class="wait", why=d.get("why") or "DevRev changes it by itself") for d in alone]
    return {"line": line, "rows": [{k: _short(r.get(k)) if k in ("before", "after") else r.get(k, "")
                                    for k in ("object", "field", "before", "after", "why", "status_class")}
                                   for r in rows]}


def _short(value: Any, limit: int = 200) -> str:
    """A canary value as text, cut to `limit` characters (a whole timeline would swamp the page)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _problems(rows: list[dict]) -> list[dict]:
    """Failures first, then skips: reason (or `error`) first, then the email and the detail."""
    out = []
    for row in rows:
        status = row.get("status")
        if status in ("failed", "skipped", "not_a_merge_set"):
            out.append({"status": status.replace("_", " "), "status_class": STATUS_CLASS[status],
                        "reason": row.get("reason") or ("error" if status == "failed" else "skipped"),
                        "email": row.get("email") or row.get("name") or "",
                        "detail": row.get("error") or row.get("detail") or row.get("note") or ""})
    order = {"failed": 0, "skipped": 1}
    return sorted(out, key=lambda p: (order.get(p["status"], 2), p["reason"]))


def _drift(rows: list[dict]) -> list[dict]:
    return [{"email": row.get("email", ""), "appeared": row.get("drift_appeared") or [],
             "vanished": row.get("drift_vanished") or []}
            for row in rows if row.get("drift_appeared") or row.get("drift_vanished")]


CHART_BARS = 240   # at most this many bars: a longer series is drawn a few minutes to a bar


def _bucketed(series: list[dict], bars: int = CHART_BARS) -> tuple[list[dict], int]:
    """The series as at most `bars` entries {"minute", "calls" (the busiest minute's), "label"},
    by the entries it holds (what happened), never by the time they span; and the minutes it
    covers (an entry {"gap_minutes": n}, a long quiet stretch or a clock jump, counts n)."""
    clean = [s for s in series if isinstance(s, dict) and isinstance(s.get("calls"), int)
             and isinstance(s.get("minute"), str)]
    size = max(1, -(-len(clean) // bars))
    out = []
    for i in range(0, len(clean), size):
        part = clean[i:i + size]
        peak = max(s["calls"] for s in part)
        gap = sum(int(s.get("gap_minutes") or 0) for s in part if isinstance(s.get("gap_minutes"), int))
        if len(part) == 1 and not gap:
            label = f"{part[0]['minute']}: {peak} calls"
        elif len(part) == 1:
            label = f"{part[0]['minute']}: no calls for {plural(gap, 'minute')}"
        else:
            label = (f"{part[0]['minute']} to {part[-1]['minute']}: {sum(s['calls'] for s in part)} calls, "
                     f"at most {peak} in a minute")
        out.append({"minute": part[0]["minute"], "calls": peak, "label": label})
    minutes = sum(int(s.get("gap_minutes") or 1) if isinstance(s.get("gap_minutes"), int) else 1 for s in clean)
    return out, minutes


def _chart(series: list[dict], limit: float | None, width: int = 640, height: int = 180) -> dict | None:
    """Bars (x, y, w, h, label) of calls per minute (at most CHART_BARS, each the busiest
    minute of its few), the rate limit's line (None when it is far above the bars), and axis
    labels; None without data."""
    total = sum(s["calls"] for s in series if isinstance(s, dict) and isinstance(s.get("calls"), int))
    series, minutes = _bucketed(series)
    if not series:
        return None
    top = max(s["calls"] for s in series)
    limit_shown = limit is not None and limit <= 4 * max(top, 1)
    scale = max(top, limit if limit_shown else 0, 1) * 1.1
    plot_h, left, bottom = height - 30, 48, height - 20
    step = (width - left - 8) / len(series)
    bars = []
    for i, s in enumerate(series):
        h = s["calls"] / scale * plot_h
        bars.append({"x": round(left + i * step + 1, 1), "y": round(bottom - h, 1), "w": round(max(step - 2, 1), 1),
                     "h": round(h, 1), "label": s["label"]})
    limit_y = round(bottom - limit / scale * plot_h, 1) if limit_shown else None
    every = max(1, len(series) // 6)
    ticks = [{"x": round(left + i * step + step / 2, 1), "text": s["minute"][11:16]}
             for i, s in enumerate(series) if i % every == 0]
    return {"width": width, "height": height, "left": left, "bottom": bottom, "bars": bars, "limit": limit,
            "limit_y": limit_y, "top": top, "top_y": round(bottom - top / scale * plot_h, 1), "ticks": ticks,
            "said": f"{plural(total, 'call')} over {plural(minutes, 'minute')}"}
