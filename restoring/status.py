"""`restore_contacts.py --status`: the restore's progress read from its savepoint, with no API call.

The merge has had one since its first release; an admin who restored sets needs the same
answer ("which sets are back, which failed, which are half way") without reading logs.
"""
from __future__ import annotations

import os

from operator_view import screens
from operator_view.summary import plural
from plumbing import json_summary
from plumbing.cli import ExitCode
from runs.journal import Journal

STATES = ("restored", "failed", "in_progress")


def print_restore_status(savepoint: str) -> int:
    """Each set the restore savepoint knows (email, status, steps done, open intents, updated,
    note) and the counts: restored, failed, not finished. 0, or 1 when the journal has problems."""
    if not os.path.exists(savepoint):
        json_summary.record("status", totals={}, savepoint=os.path.abspath(savepoint), sets=[])
        print(f"No restore savepoint at {savepoint}: no restore has run with it yet.")
        return ExitCode.OK
    journal = Journal(savepoint, "status")
    try:
        records = journal.all_sets()
        counts = journal.step_counts()
        problems = journal.check()
    finally:
        journal.close()
    rows = [{"email": r["email"], "status": r["status"], "done": counts.get(r["set_key"], {}).get("done", 0),
             "intents": counts.get(r["set_key"], {}).get("intent", 0), "updated_at": r["updated_at"],
             "note": r.get("error") or ""} for r in records]
    totals = {"sets": len(rows), "restored": sum(1 for r in rows if r["status"] == "restored"),
              "failed": sum(1 for r in rows if r["status"] == "failed")}
    totals["not_finished"] = totals["sets"] - totals["restored"] - totals["failed"]
    json_summary.record("status", totals=totals, savepoint=os.path.abspath(savepoint), sets=rows,
                        journal_problems=problems)
    print(f"Restore savepoint {savepoint}: {plural(totals['sets'], 'merge set')} worked on: {totals['restored']} "
          f"restored, {totals['failed']} failed, {totals['not_finished']} not finished (re-run the restore to "
          f"finish them).")
    print(screens.format_status(rows))
    if problems:
        print("Journal problems: " + "; ".join(problems))
        return ExitCode.FAILED
    return ExitCode.OK
