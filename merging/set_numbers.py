"""A merge set's numbers, read back from its savepoint journal alone.

What a report says a set moved must be what DevRev holds, whatever the set's outcome
(merged, failed half-way, finished in an earlier run): so the numbers are never added up
as the run goes, but read from the journal's done steps, where a move is recorded only
once DevRev's answer (or a fresh read) confirmed it.
"""
from __future__ import annotations

from typing import Any

from runs.journal import parse_step
from runs.outcomes import DuplicateOutcome


def journal_numbers(steps: dict[str, dict], duplicates: list[dict], run_id: str | None = None) -> dict[str, Any]:
    """A set's numbers from its journal alone, whatever its outcome, so a report says what
    DevRev holds, as SetOutcome fields: {"duplicates": [DuplicateOutcome, one per duplicate in
    `duplicates` (the context's idents)], "moved_ticket_ids": [DON, ...],
    "moved_conversation_ids": [DON, ...]}, and given `run_id`, the moves that run confirmed
    ("this_run_ticket_ids", "this_run_conversation_ids": a resumed set's earlier moves are not
    this run's). A move counts once DevRev's answer (or a fresh read) confirmed it; an item
    moved for two duplicates of the set counts once in the set's lists (each duplicate's own
    count still has it)."""
    outs, moved = [], {"ticket": {}, "conversation": {}}
    for dup in duplicates:
        out = DuplicateOutcome(dup["id"], dup.get("display_id") or dup["id"], dup.get("external_ref"))
        _fill_from_journal(steps, dup["id"], out, moved)
        outs.append(out)
    numbers: dict[str, Any] = {"duplicates": outs, "moved_ticket_ids": list(moved["ticket"]),
                               "moved_conversation_ids": list(moved["conversation"])}
    if run_id is not None:
        mine = {item for name, record in steps.items() if record.get("run_id") == run_id
                for item in [parse_step(name).item] if item}
        numbers["this_run_ticket_ids"] = [i for i in moved["ticket"] if i in mine]
        numbers["this_run_conversation_ids"] = [i for i in moved["conversation"] if i in mine]
    return numbers


def _fill_from_journal(steps: dict, d: str, out: DuplicateOutcome, moved: dict[str, dict]) -> None:
    """Add duplicate `d`'s done steps to `out`, and its moved items to `moved[kind]` (ordered)."""
    for name, record in steps.items():
        step = parse_step(name)
        if step.duplicate != d or record["status"] != "done":
            continue
        data = record["data"] or {}
        if step.kind == "backup":
            if data.get("folder") not in out.backups:
                out.backups.append(data["folder"])
            out.backups_verified = True  # a backup step is done only once its folder verified
            out.messages += data.get("messages", 0)
            out.attachments += data.get("attachments", 0)
            out.custom_field_refs += [r for r in data.get("custom_field_refs", []) if r not in out.custom_field_refs]
            out.contact_entries = max(out.contact_entries, data.get("contact_entries") or 0)
            out.contact_files = max(out.contact_files, data.get("contact_files") or 0)
            if step.round == 1:
                out.drift_appeared = data.get("drift_appeared", [])
                out.drift_vanished = data.get("drift_vanished", [])
        elif step.kind in moved and data.get("after") is not None:
            if step.kind == "ticket":
                out.tickets_moved += 1
            else:
                out.conversations_moved += 1
            moved[step.kind][step.item] = True
        elif step.kind == "custom_fields" and data.get("after") is not None:
            shown = str(data.get("display_id") or step.item)
            if shown not in out.custom_fields_moved:
                out.custom_fields_moved.append(shown)
        elif step.kind == "retired":
            out.retired = True
