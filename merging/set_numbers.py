"""A merge set's numbers, read back from its savepoint journal alone.

What a report says a set moved must be what DevRev holds, whatever the set's outcome
(merged, failed half-way, finished in an earlier run): so the numbers are never added up
as the run goes, but read from the journal's done steps, where a move is recorded only
once DevRev's answer (or a fresh read) confirmed it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from runs.journal import parse_step


@dataclass
class DuplicateOutcome:
    """One duplicate's part of a set's report line (its numbers from the journal)."""
    id: str
    display_id: str
    external_ref: str
    tickets_moved: int = 0
    conversations_moved: int = 0
    messages: int = 0
    attachments: int = 0
    backups: list[str] = field(default_factory=list)
    backups_verified: bool = False
    drift_appeared: list[str] = field(default_factory=list)
    drift_vanished: list[str] = field(default_factory=list)
    custom_field_refs: list[str] = field(default_factory=list)   # objects naming it in custom fields
    retired: bool = False


def journal_numbers(steps: dict[str, dict], duplicates: list[dict]) -> dict:
    """A set's numbers from its journal alone, whatever its outcome, so a report says what
    DevRev holds: {"duplicates": [DuplicateOutcome as a dict, one per duplicate in
    `duplicates` (the context's idents)], "moved_ticket_ids": [DON, ...],
    "moved_conversation_ids": [DON, ...]}. A move counts once DevRev's answer (or a fresh
    read) confirmed it; an item moved for two duplicates of the set counts once in the
    set's lists (each duplicate's own count still has it)."""
    outs, moved = [], {"ticket": {}, "conversation": {}}
    for dup in duplicates:
        out = DuplicateOutcome(dup["id"], dup.get("display_id") or dup["id"], dup.get("external_ref"))
        _fill_from_journal(steps, dup["id"], out, moved)
        outs.append(out.__dict__)
    return {"duplicates": outs, "moved_ticket_ids": list(moved["ticket"]),
            "moved_conversation_ids": list(moved["conversation"])}


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
            if step.round == 1:
                out.drift_appeared = data.get("drift_appeared", [])
                out.drift_vanished = data.get("drift_vanished", [])
        elif step.kind in moved and data.get("after") is not None:
            if step.kind == "ticket":
                out.tickets_moved += 1
            else:
                out.conversations_moved += 1
            moved[step.kind][step.item] = True
        elif step.kind == "retired":
            out.retired = True
