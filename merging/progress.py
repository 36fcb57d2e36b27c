"""Where a merge set stands, read from the savepoint journal, said for the admin.

Used when a run resumes (which sets, where each stood) and by `--status`.
"""
from __future__ import annotations

from operator_view.summary import plural
from runs.journal import Journal, parse_step


def resume_point(journal: Journal, key: str) -> str | None:
    """Where the set with this set_key stood, said for the admin (None: the set starts afresh), e.g.
    `was failed; REVU-12: backed up, 3 items moved, 1 write to re-check; REVU-13: not started`."""
    record = journal.set_record(key)
    ctx = (record or {}).get("context")
    if not ctx:
        return None
    steps = {parse_step(name): r["status"] for name, r in journal.steps(key).items()}
    parts = []
    for dup in ctx.get("duplicates", []):
        mine = {step: status for step, status in steps.items() if step.duplicate == dup["id"]}
        parts.append(f"{dup['display_id']}: {_stood(mine)}")
    if any(step.kind == "external_ref" for step in steps):
        parts.append("the primary's reference " + ("set" if steps.get(parse_step("external_ref")) == "done"
                                                   else "sent, to re-check"))
    head = "" if record["status"] == "in_progress" else f"was {record['status']}; "
    return head + "; ".join(parts)


def _stood(steps: dict) -> str:
    """One duplicate's furthest step (`steps`: parsed step -> "intent" or "done")."""
    kinds = {}
    for step, status in steps.items():
        kinds.setdefault(step.kind, []).append(status)
    if "done" in kinds.get("retired", []):
        return "retired" + (", last look done" if "swept" in kinds else "")
    if "merge" in kinds:
        return "merge asked" if "done" in kinds["merge"] else "merge sent, answer not seen (re-checked first)"
    if not kinds:
        return "not started"
    moves = kinds.get("ticket", []) + kinds.get("conversation", [])
    said = ["backed up" if "done" in kinds.get("backup", []) else "backup interrupted (redone first)"]
    if moves:
        said.append(plural(moves.count("done"), "item") + " moved")
    if moves.count("intent"):
        said.append(plural(moves.count("intent"), "write") + " to re-check")
    if "done" in kinds.get("verify", []):
        said.append("owned nothing at the last look")
    return ", ".join(said)
