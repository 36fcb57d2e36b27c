"""One vocabulary for a run's numbers, said the same way on screen, in the log, the reports
and `--status`.

An admin reads the same three numbers everywhere:

- **merge sets** from the CSV (one `REVU-` primary and its `user_` duplicates);
- of those, the ones **skipped by live checks** (DevRev no longer matches the CSV);
- **groups that are not merge sets** (`single_contact`, `no_primary`, ...), never touched.

A merge set's outcome is one of `OUTCOMES`; `pending` covers every set not finished yet
(not reached, interrupted, in progress). `plural` is the one helper for "1 ticket".
"""
from __future__ import annotations

from typing import Iterable

OUTCOMES = ("merged", "moved_only", "skipped", "failed", "pending", "restored")
# statuses (journal, report, preview) folded into an outcome
_PENDING = {"pending", "interrupted", "in_progress", "not_started"}
_IRREGULAR = {"entry": "entries", "summary": "summaries"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`1 ticket`, `0 tickets`, `2 merge sets`; `many` for irregular nouns (`entry` and a few
    others are known). Only the last word of `noun` is made plural."""
    if n == 1:
        return f"{n} {noun}"
    if many is None:
        many = _IRREGULAR.get(noun)
    if many is None:
        head, _, last = noun.rpartition(" ")
        last = last[:-1] + "ies" if last.endswith("y") and last[-2:-1] not in "aeiou" else last + "s"
        many = f"{head} {last}".strip()
    return f"{n} {many}"


def outcome_of(status: str | None) -> str:
    """The outcome a status counts as: merged, moved_only, skipped, failed, pending or restored
    (put back by restore_contacts.py since)."""
    if status in ("merged", "already_merged"):
        return "merged"
    if status in ("moved_only", "already_moved_only"):
        return "moved_only"
    if status in ("skipped", "failed", "restored"):
        return status
    return "pending"


def count_merge_sets(statuses: Iterable[str | None], not_merge_sets: int) -> dict:
    """Counts in the one vocabulary.

    Returns {"merge_sets": n, "merged", "moved_only", "skipped" (by live checks), "failed",
    "pending" (not finished), "restored" (merged, then put back by a restore), "not_merge_sets":
    groups of the CSV that are not merge sets}.
    """
    counts = {"merge_sets": 0, **{o: 0 for o in OUTCOMES}, "not_merge_sets": not_merge_sets}
    for status in statuses:
        counts["merge_sets"] += 1
        counts[outcome_of(status)] += 1
    return counts


def describe_counts(counts: dict, *, source: str = "from the CSV") -> str:
    """`17 merge sets from the CSV: 12 merged, 5 skipped by live checks, 0 failed; 4 groups are
    not merge sets` (moved only, not finished and the groups only when there are any)."""
    parts = [f"{counts['merged']} merged"]
    if counts.get("moved_only"):
        parts.append(f"{counts['moved_only']} moved only (duplicates kept)")
    if counts.get("skipped"):
        parts.append(f"{counts['skipped']} skipped by live checks")
    parts.append(f"{counts['failed']} failed")
    if counts.get("pending"):
        parts.append(f"{counts['pending']} not finished")
    if counts.get("restored"):
        parts.append(f"{counts['restored']} restored since")
    text = f"{_sets_from(counts, source)}: " + ", ".join(parts)
    return text + groups_clause(counts.get("not_merge_sets"))


def _sets_from(counts: dict, source: str) -> str:
    """`17 merge sets from the CSV`, or `1 merge set of the CSV's 15` when the options (--only,
    --max-merges) select fewer than the CSV holds."""
    total = counts.get("csv_merge_sets")
    if source == "from the CSV" and isinstance(total, int) and total != counts["merge_sets"]:
        return f"{plural(counts['merge_sets'], 'merge set')} of the CSV's {total}"
    return f"{plural(counts['merge_sets'], 'merge set')} {source}"


def describe_groups(n: int | None) -> str:
    """`4 groups are not merge sets`, `1 group is not a merge set`; "" for none."""
    if not n:
        return ""
    return f"{plural(n, 'group')} {'is' if n == 1 else 'are'} not {'a merge set' if n == 1 else 'merge sets'}"


def groups_clause(n: int | None) -> str:
    """`; 4 groups are not merge sets` to end a sentence with; "" for none."""
    return f"; {describe_groups(n)}" if n else ""


def describe_moved(tickets: int, conversations: int) -> str:
    """`3 tickets and 1 conversation moved`."""
    return f"{plural(tickets, 'ticket')} and {plural(conversations, 'conversation')} moved"


def describe_preview(totals: dict) -> str:
    """The preview's one-sentence summary, in the vocabulary (totals: reports.preview_totals)."""
    parts = [f"{totals['would_merge']} would be merged"]
    if totals.get("skipped"):
        parts.append(f"{totals['skipped']} skipped by live checks")
    if totals.get("failed"):
        parts.append(f"{totals['failed']} could not be previewed")
    if totals.get("already_done"):
        parts.append(f"{totals['already_done']} already finished in earlier runs")
    if totals.get("restored"):
        parts.append(f"{totals['restored']} merged, then restored (find them again with find_duplicates.py)")
    if totals.get("merge_refused"):
        parts.append(f"{totals['merge_refused']} whose merge DevRev refused earlier (not asked again without "
                     f"--ask-refused-merges-again)")
    head = f"{_sets_from(totals, 'from the CSV')}: " + ", ".join(parts)
    head += groups_clause(totals.get("not_merge_sets"))
    moves = (f"The {plural(totals['would_merge'], 'merge set')} would move {plural(totals['tickets'], 'ticket')} "
             f"and {plural(totals['conversations'], 'conversation')} ({plural(totals['messages'], 'message')}, "
             f"{plural(totals['attachments'], 'attachment')}, {size(totals['attachment_bytes'])}): about "
             f"{plural(totals['estimated_calls'], 'API call')} and {size(totals['estimated_backup_bytes'])} "
             f"of backups.")
    if totals.get("sets_with_other_works"):
        moves += (f"\n{plural(totals['sets_with_other_works'], 'merge set')} skipped (other_work_items): a "
                  f"duplicate reports work items that are not tickets, which the tool does not move (the set's "
                  f"line names each type and id); move them to the primary by hand, then preview again.")
    if totals.get("frozen"):
        moves += (f"\n{plural(totals['frozen'], 'ticket or conversation', 'tickets and conversations')} "
                  f"{'is' if totals['frozen'] == 1 else 'are'} frozen in DevRev, which may refuse to update "
                  f"{'it' if totals['frozen'] == 1 else 'them'} (frozen in the report).")
    moves += describe_other_references(totals, preview=True)
    if totals.get("sets_with_differences"):
        fields = totals.get("difference_fields") or {}
        named = ", ".join(f"{name} {count}" for name, count in sorted(fields.items(), key=lambda f: (-f[1], f[0]))[:8])
        more = f" and {len(fields) - 8} more" if len(fields) > 8 else ""
        filled = totals.get("sets_filled") or 0
        moves += (f"\n{plural(totals['sets_with_differences'], 'merge set')} differ in contact fields between the "
                  f"primary and its duplicates ({named}{more}): field_differences in the preview; "
                  + (f"--fill-blanks fills the blanks of {plural(filled, 'primary', 'primaries')} (fills in the "
                     f"preview)." if filled else "--fill-blanks FIELDS would fill the primary's blanks."))
    if totals.get("consent_only_on_duplicates"):
        count = totals["consent_only_on_duplicates"]
        moves += (f"\n{plural(count, 'merge set')}: a consent or opt-out custom field is set on a duplicate only; the "
                  f"merge retires that duplicate and --fill-blanks never copies consent: check "
                  f"{'it' if count == 1 else 'them'} by hand (field_differences marked consent).")
    orphans = totals.get("refs_without_contact")
    if orphans:
        moves += (f"\n{plural(orphans, 'user_ reference')} of merged duplicates would belong to no contact: this "
                  f"DevRev keeps one reference per contact and the primary takes the newest (refs_without_contact "
                  f"in the report names each).")
    return f"{head}.\n{moves}"


def describe_other_references(totals: dict, *, preview: bool) -> str:
    """The lines on what else a merge touches: custom-field references and the duplicates' own
    contact pages (each line starts with a newline; "" when there is nothing to say)."""
    out = ""
    refs, would = totals.get("custom_field_refs") or 0, "would be" if preview else "were"
    if refs:
        out += (f"\n{plural(refs, 'ticket or conversation', 'tickets and conversations')} "
                f"{'names' if refs == 1 else 'name'} a duplicate in a custom field: the primary {would} put in its "
                f"place there (custom_field_refs in the report).")
    if totals.get("custom_fields_filter") is False:
        out += ("\nThis DevRev refuses works.list's custom_fields filter: tickets that name a duplicate only in a "
                "custom field cannot be found (how many is unknown); they would keep naming the retired contact.")
    if totals.get("contact_entries"):
        out += (f"\nThe duplicates' own contact pages hold {plural(totals.get('contact_notes') or 0, 'note')} "
                f"({plural(totals['contact_entries'], 'timeline entry', 'timeline entries')}) and "
                f"{plural(totals.get('contact_files') or 0, 'file')} ({size(totals.get('contact_file_bytes') or 0)}): "
                f"backed up before the merge, and written again by restore_contacts.py.")
    return out


def size(n: int | float | None) -> str:
    """A byte count for people: `512 B`, `1.5 KB`, `2.0 MB` (1024-based); "" for None."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
