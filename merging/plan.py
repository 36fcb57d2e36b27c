"""Where each merge set of a run stands, decided once from the savepoint journal.

The engine owns the resume decision: which sets this run processes and which earlier runs
finished (they cost no call and keep their place in the report), and, for a set a run did
not finish, what its journal says DevRev holds. Kept apart from merging/engine.py, which
merges one set, so the CLI and the report read the plan without the merge machinery.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from contacts.csv_reader import MergeSet, user_id_key
from merging.set_numbers import journal_numbers
from runs.journal import Journal, is_finished
from runs.outcomes import SetOutcome, SetStatus

log = logging.getLogger(__name__)


def set_key(ms: MergeSet) -> str:
    """Identifies a set across runs: its email and the contacts it holds."""
    dups = ",".join(sorted(user_id_key(d.rev_user_id) for d in ms.duplicates))
    return f"{ms.key}|{user_id_key(ms.primary.rev_user_id)}|{dups}"


@dataclass
class RunPlan:
    """What one run does with the CSV's merge sets, decided once from the savepoint journal.

    todo: the unfinished sets this run processes, in CSV order (the first `max_merges`).
    finished: MergeSet.key -> the journal's set record, for each set an earlier run finished;
        they cost no API call and keep their place in the report.
    order: todo and finished together, in CSV order (the sets a preview reports on).
    """
    todo: list[MergeSet]
    finished: dict[str, dict]
    order: list[MergeSet]
    skipped_earlier: dict[str, dict] = field(default_factory=dict)
    refused_earlier: dict[str, dict] = field(default_factory=dict)   # to do, DevRev refused its merge before


def plan_run(journal: Journal | None, merge_sets: list[MergeSet], *, max_merges: int | None,
             keep_duplicate: bool, retry_skipped: bool = False) -> RunPlan:
    """Split `merge_sets` into finished (per the journal; None: nothing ran yet), skipped by an
    earlier run's live checks (skipped_earlier: the journal's record; not tried again unless
    `retry_skipped`, so each batch of --max-merges goes on with sets it has not tried) and to do."""
    records = {ms.key: (journal.set_record(set_key(ms)) if journal else None) for ms in merge_sets}
    finished = {key: r for key, r in records.items() if r and is_finished(r["status"], keep_duplicate)}
    skipped = {} if retry_skipped else {key: r for key, r in records.items() if r and r["status"] == "skipped"}
    # merged, then put back by restore_contacts.py: its duplicate is a new contact, which these rows do not name
    skipped.update({key: r for key, r in records.items() if r and r["status"] == "restored"})
    # with --retry-skipped, the sets skipped before come after the untried ones: batches still go on
    was_skipped = {key for key, r in records.items() if r and r["status"] == "skipped"}
    todo = [ms for ms in merge_sets if ms.key not in finished and ms.key not in skipped]
    todo = sorted(todo, key=lambda ms: ms.key in was_skipped)[: max_merges or None]
    chosen = {ms.key for ms in todo} | set(finished) | set(skipped)
    refused = {ms.key: record for ms in todo for record in [records[ms.key]]
               if record is not None and record.get("reason") == "merge_refused"}
    return RunPlan(todo, finished, [ms for ms in merge_sets if ms.key in chosen], skipped, refused)


def refused_preview(record: dict, journal_record: dict, *, ask_again: bool) -> dict:
    """A would-merge preview line of a set whose merge DevRev refused in an earlier run: a run
    fails it again at once without asking (status merge_refused), unless --ask-refused-merges-again."""
    why = journal_record.get("error") or "DevRev refused the merge"
    if ask_again:
        return dict(record, refused_earlier=why, detail=f"asks DevRev to merge again (refused earlier: {why})")
    return dict(record, status="merge_refused", refused_earlier=why,
                detail=f"refused earlier, not asked again (--ask-refused-merges-again asks once more): {why}")


SKIPPED_EARLIER_NOTE = "skipped by an earlier run's live checks (not tried again; --retry-skipped tries it)"


RESTORED_NOTE = ("put back by restore_contacts.py: its duplicate was created again as a new contact; run "
                 "find_duplicates.py again to find and merge it")


def skipped_earlier_outcome(ms: MergeSet, record: dict) -> SetOutcome:
    """The merge report line of a set an earlier run's live checks skipped, or a restore put
    back (status restored), from its journal record; no call made."""
    if record.get("status") == "restored":
        return SetOutcome(ms.email, set_key(ms), SetStatus.RESTORED, primary=ms.primary.rev_user_id,
                          finished_earlier=True, note=f"{RESTORED_NOTE} ({record.get('error')})", duration_s=0.0)
    return SetOutcome(ms.email, set_key(ms), SetStatus.SKIPPED, reason=record.get("reason"),
                      error=record.get("error"), primary=ms.primary.rev_user_id, finished_earlier=True,
                      note=f"{SKIPPED_EARLIER_NOTE}, run {record.get('run_id')}", duration_s=0.0)


def skipped_earlier_preview(ms: MergeSet, record: dict) -> dict:
    """The preview line of a set an earlier run's live checks skipped (not tried again), or
    a restore put back (a set to find again)."""
    if record.get("status") == "restored":
        return {"email": ms.email, "set_key": set_key(ms), "status": "restored", "reason": "restored",
                "detail": f"{RESTORED_NOTE} ({record.get('error')})"}
    return {"email": ms.email, "set_key": set_key(ms), "status": "skipped", "reason": record.get("reason"),
            "skipped_earlier": True, "detail": f"{record.get('error') or ''} ({SKIPPED_EARLIER_NOTE}, run "
                                               f"{record.get('run_id')})".strip()}


def journal_line(journal: Journal, ms: MergeSet) -> dict[str, Any]:
    """What the journal says DevRev holds for a set this run did not finish (stopped,
    interrupted, a run-wide fault): its numbers (journal_numbers), {} if it never started.
    Never raises: the journal may be what failed."""
    try:
        key = set_key(ms)
        ctx = (journal.set_record(key) or {}).get("context")
        return journal_numbers(journal.steps(key), ctx.get("duplicates") or [], journal.run_id) if ctx else {}
    except Exception:  # noqa: BLE001 - a report line without numbers beats no report
        log.debug("no journal numbers for %s", ms.email, exc_info=True)
        return {}


def finished_outcome(ms: MergeSet, record: dict, steps: dict[str, dict] | None = None) -> SetOutcome:
    """The merge report line of a set an earlier run finished (from its journal record and,
    given its `steps`, what it moved: see journal_numbers)."""
    ctx = record["context"] or {}
    numbers = journal_numbers(steps, ctx.get("duplicates") or []) if steps is not None else {}
    return SetOutcome(ms.email, set_key(ms), SetStatus(record["status"]),
                      primary=ctx.get("primary", {}).get("display_id"), resumed=True, finished_earlier=True,
                      note="already finished in an earlier run", external_ref_set=ctx.get("external_ref_set"),
                      external_refs_kept=ctx.get("external_refs_kept"),
                      refs_without_contact=ctx.get("refs_without_contact"), merge_note=ctx.get("merge_note"),
                      merge_note_refused=ctx.get("merge_note_refused"), duration_s=0.0, **numbers)


def blank_line(ms: MergeSet) -> SetOutcome:
    """A set's merge report line before anything is known of it (runs.over_sets.SetRunKind)."""
    return SetOutcome(ms.email, set_key(ms), primary=ms.primary.rev_user_id)


def finished_preview(ms: MergeSet, record: dict) -> dict:
    """The preview line of a set an earlier run finished: nothing would move."""
    return {"email": ms.email, "set_key": set_key(ms), "status": "already_" + record["status"],
            "detail": f"finished in run {record['run_id']} (savepoint)"}
