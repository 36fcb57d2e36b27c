"""`merge_contacts.py --status`: a run's progress read from its savepoint, with no API call.

Its own module because it only reads: the savepoint journal and, when given, the CSV (to
count the sets not started yet); the merge's orchestration never calls it.
"""
from __future__ import annotations

import os

from contacts.csv_reader import email_key
from contacts.index import index_contacts
from merging.plan import set_key
from merging.progress import resume_point
from operator_view import screens, summary
from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from runs.journal import Journal, earlier_primaries
from runs.support import SANDBOX_DIR


def print_status(savepoint: str, csv_path: str | None = None, *, sandbox_hint: bool = False,
                 csv_is_default: bool = False, only: str | None = None) -> int:
    """Progress from the savepoint, no API call: the counts in the run's vocabulary (against
    the CSV's merge sets when `csv_path` is given) and each set's state. sandbox_hint: with
    no savepoint here, point to the sandbox rehearsal's one when it exists. csv_is_default:
    `csv_path` was not given but assumed (the sandbox's demo CSV): when the savepoint holds
    sets that CSV does not, its sets are counted instead, and the line says so. only: the one
    email (--only) whose sets are shown and counted."""
    if not os.path.exists(savepoint):
        json_summary.record("status", totals={}, savepoint=os.path.abspath(savepoint), sets=[])
        print(f"No savepoint file at {savepoint}: no merge has run with it yet.")
        sandbox_savepoint = os.path.join(SANDBOX_DIR, "savepoints.sqlite3")
        if sandbox_hint and os.path.exists(sandbox_savepoint):
            print(f"The sandbox rehearsal's savepoint is {sandbox_savepoint}: add --sandbox "
                  f"({cli.command_for('merge_contacts.py')} --sandbox --status) to see it.")
        return ExitCode.OK
    journal = Journal(savepoint, "status")
    try:
        records = {s["set_key"]: s for s in journal.all_sets()}
        counts = journal.step_counts()
        problems = journal.check()
        wanted, not_merge_sets = _status_sets(csv_path, records, savepoint)
        fell_back = csv_is_default and bool(set(records) - {key for key, _ in wanted})
        if fell_back:
            print(f"(The savepoint holds merge sets that {os.path.basename(str(csv_path))} does not: counting the "
                  f"savepoint's sets; add --csv FILE to count against the CSV the rehearsal used.)")
            csv_path = None
            wanted, not_merge_sets = _status_sets(None, records, savepoint)
        in_csv = len(wanted)
        if only:
            wanted = [(key, email) for key, email in wanted if email_key(email) == email_key(only)]
            not_merge_sets = 0
            if not wanted:
                raise UsageError(f"no merge set with email {only!r} " + (f"in {csv_path}" if csv_path else
                                                                        f"in the savepoint {savepoint}"))
        rows = [_status_row(journal, key, email, records.get(key), counts) for key, email in wanted]
    finally:
        journal.close()
    source = "from the CSV" if csv_path else "in the savepoint"
    counts_now = summary.count_merge_sets(((records.get(key) or {}).get("status") for key, _ in wanted),
                                          not_merge_sets)
    if csv_path:
        counts_now["csv_merge_sets"] = in_csv
    line = summary.describe_counts(counts_now, source=source)
    json_summary.record("status", totals=counts_now, savepoint=os.path.abspath(savepoint), source=source,
                        sets=rows, journal_problems=problems)
    print(f"Savepoint {savepoint}: {line}.")
    if csv_is_default and csv_path:
        print(f"(Counted against {csv_path}, the CSV of the newest sandbox run; --csv FILE counts against another.)")
    if not csv_path and not fell_back:
        print("(Add --csv FILE to count the CSV's sets not started yet and its groups that are not merge sets.)")
    print(screens.format_status(rows))
    if problems:
        print("Journal problems: " + "; ".join(problems))
        return ExitCode.FAILED
    return ExitCode.OK


def _status_sets(csv_path: str | None, records: dict, savepoint: str) -> tuple[list[tuple[str, str]], int]:
    """[(set_key, email)] to show, in CSV order when the CSV is given (grouped as the run
    groups it: with the primaries of the savepoint's merges), and how many of the CSV's
    groups are not merge sets (0 without a CSV)."""
    if not csv_path:
        return [(key, r["email"]) for key, r in records.items()], 0
    index = index_contacts(csv_path, earlier_primaries(savepoint))
    return [(set_key(ms), ms.email) for ms in index.merge_sets], index.skipped_total


def _status_row(journal: Journal, key: str, email: str, record: dict | None, counts: dict) -> dict:
    if record is None:
        return {"email": email, "status": "not started", "done": 0, "intents": 0, "note": ""}
    c = counts.get(key, {"done": 0, "intent": 0})
    note = record.get("reason") or record.get("error") or ""
    if record["status"] not in ("merged", "moved_only", "skipped"):
        note = resume_point(journal, key) or note
    return {"email": email, "status": record["status"], "done": c["done"], "intents": c["intent"],
            "updated_at": record["updated_at"], "note": note}

