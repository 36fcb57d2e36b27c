"""The restore tells the merge: a restored set is marked "restored" in the merge's own journal.

After a restore the merge's savepoint still said "merged": `--status`, the preview and the
reports said so, and a re-run skipped the set as finished. So once a set is restored, each merge
set of the merge journal that it undid (same primary, every duplicate among those restored) is
marked `restored` there, with the run and the contacts created again in its `error` column, its
context kept (the record a later restore is held to). The merge reads one journal and knows.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from runs.journal import Journal, JournalError, read_savepoint
from runs.outcomes import SetOutcome, SetStatus

log = logging.getLogger(__name__)

MARKED_FROM = ("merged", "moved_only", "failed")   # a failed set may have moved items the restore gave back


def merge_sets_undone(saved: Iterable[Any], primary_id: str, duplicate_ids: set[str]) -> list[Any]:
    """The merge journal's sets (runs.journal.SavedSet) a restore of `primary_id` and
    `duplicate_ids` undid: the same primary, every duplicate among them, not marked yet."""
    found = []
    for one in saved:
        ctx: dict[str, Any] = one.context if isinstance(one.context, dict) else {}
        primary: dict[str, Any] = ctx["primary"] if isinstance(ctx.get("primary"), dict) else {}
        dups = {d.get("id") for d in ctx.get("duplicates") or [] if isinstance(d, dict)}
        if primary.get("id") == primary_id and dups and dups <= duplicate_ids and one.status in MARKED_FROM:
            found.append(one)
    return found


def mark_restored(merge_savepoint: str, run_id: str, lines: Iterable[SetOutcome]) -> int:
    """Mark, in the merge journal at `merge_savepoint`, every merge set the restored `lines`
    undid; returns how many were marked. No journal there: nothing to mark (0). A journal
    that cannot be written is logged (the restore itself is done) and 0 is returned."""
    restored = [line for line in lines if line.status == SetStatus.RESTORED]
    if not restored or not merge_savepoint or not os.path.isfile(merge_savepoint):
        return 0
    try:
        saved = read_savepoint(merge_savepoint) or []
        marks = []
        for line in restored:
            primary_id = (line.primary or {}).get("id") if isinstance(line.primary, dict) else None
            dups = {d.id for d in line.duplicates or []}
            news = ", ".join(f"{d.display_id} -> {d.new_display_id}" for d in line.duplicates or []
                             if getattr(d, "new_display_id", None))
            marks += [(one, news) for one in merge_sets_undone(saved, str(primary_id), dups)]
        if not marks:
            return 0
        journal = Journal(merge_savepoint, run_id, exclusive=True)
        try:
            for one, news in marks:
                journal.set_status(one.set_key, one.email, "restored", reason="restored",
                                   error=f"restored by restore run {run_id}" + (f" ({news})" if news else ""))
        finally:
            journal.close()
    except (JournalError, OSError) as exc:
        log.error("the merge savepoint %s could not be told which sets were restored (%s): its --status and "
                  "previews still say merged", merge_savepoint, exc)
        return 0
    log.info("the merge savepoint %s now shows %d merge set(s) as restored", merge_savepoint, len(marks))
    return len(marks)
