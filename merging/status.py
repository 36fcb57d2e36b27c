"""`merge_contacts.py --status`: a run's progress read from its savepoint, with no API call.

Its own module because it only reads: the savepoint journal and, when given, the CSV (to
count the sets not started yet); the merge's orchestration calls it only to record what each
run did (`record_run`: the runs' rate and the estimated finish across runs). It reads only
what it shows: each set's record without its context (streamed, `Journal.status_rows`), the
context and steps only of the sets it shows a resume point for; a savepoint of 100,000 sets
is shown in bounded memory.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from contacts.csv_reader import email_key
from contacts.index import index_contacts
from merging.call_estimates import duration
from merging.plan import set_key
from merging.progress import resume_point
from operator_view import screens, summary
from operator_view.summary import plural
from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from runs import over_sets
from runs.journal import Journal, JournalError, RunRecord, StatusRow, earlier_primaries
from runs.support import SANDBOX_DIR

log = logging.getLogger(__name__)
FINISHED = ("merged", "moved_only", "skipped", "restored")   # a set no later run works on (failed: a person)


def print_status(savepoint: str, csv_path: str | None = None, *, sandbox_hint: bool = False,
                 csv_is_default: bool = False, only: str | None = None, sets_in_json: bool = True) -> int:
    """Progress from the savepoint, no API call: the counts in the run's vocabulary (against
    the CSV's merge sets when `csv_path` is given), the progress across runs (sets done and
    left, the rate the runs achieved, the estimated finish) and each set's state. sandbox_hint:
    with no savepoint here, point to the sandbox rehearsal's one when it exists. csv_is_default:
    `csv_path` was not given but assumed (the sandbox's demo CSV): when the savepoint holds
    sets that CSV does not, its sets are counted instead, and the line says so. only: the one
    email (--only) whose sets are shown and counted. sets_in_json: the --json summary lists every
    set (as dicts; without --json the rows stay compact)."""
    if not os.path.exists(savepoint):
        json_summary.record("status", totals={}, savepoint=os.path.abspath(savepoint), sets=[])
        print(f"No savepoint file at {savepoint}: no merge has run with it yet.")
        sandbox_savepoint = os.path.join(SANDBOX_DIR, "savepoints.sqlite3")
        if sandbox_hint and os.path.exists(sandbox_savepoint):
            print(f"The sandbox rehearsal's savepoint is {sandbox_savepoint}: add --sandbox "
                  f"({cli.command_for('merge_contacts.py')} --sandbox --status) to see it.")
        return ExitCode.OK
    journal = Journal(savepoint, "status")
    records: dict[str, StatusRow] = {}
    wanted: list[tuple[str, str]] = []
    try:
        fell_back = False
        if csv_path:
            wanted, not_merge_sets = _csv_sets(csv_path, savepoint)
            in_csv = len(wanted)
            keys = {key for key, _ in wanted}
            records = {row.set_key: row for row in journal.status_rows()}
            fell_back = csv_is_default and any(key not in keys for key in records)
            del keys
            if fell_back:
                print(f"(The savepoint holds merge sets that {os.path.basename(str(csv_path))} does not: counting "
                      f"the savepoint's sets; add --csv FILE to count against the CSV the rehearsal used.)")
                csv_path, not_merge_sets = None, 0
                shown: Iterable[tuple[str, str, StatusRow | None]] = ((r.set_key, r.email, r)
                                                                       for r in records.values())
            else:
                shown = ((key, email, records.get(key)) for key, email in wanted)
        else:
            not_merge_sets = in_csv = 0
            shown = ((r.set_key, r.email, r) for r in journal.status_rows())
        if only:
            shown = [(key, email, row) for key, email, row in shown if email_key(email) == email_key(only)]
            not_merge_sets = 0
            if not shown:
                raise UsageError(f"no merge set with email {only!r} " + (f"in {csv_path}" if csv_path else
                                                                        f"in the savepoint {savepoint}"))
        rows: list[StatusLine] = []
        statuses: list[str | None] = []
        for _key, email, row in shown:
            rows.append(_status_row(journal, email, row))
            statuses.append(row.status if row is not None else None)
        records.clear()   # what is shown is in rows now
        wanted.clear()
        runs = journal.runs()
        problems = journal.check()
    finally:
        journal.close()
    source = "from the CSV" if csv_path else "in the savepoint"
    counts_now = summary.count_merge_sets(statuses, not_merge_sets)
    if csv_path:
        counts_now["csv_merge_sets"] = in_csv
    line = summary.describe_counts(counts_now, source=source)
    progress = progress_across_runs(statuses, runs, over_sets.wall_clock())
    json_summary.record("status", totals=counts_now, savepoint=os.path.abspath(savepoint), source=source,
                        sets=[row.as_dict() for row in rows] if sets_in_json else [], journal_problems=problems,
                        progress=progress)
    print(f"Savepoint {savepoint}: {line}.")
    if csv_is_default and csv_path:
        print(f"(Counted against {csv_path}, the CSV of the newest sandbox run; --csv FILE counts against another.)")
    if not csv_path and not fell_back:
        print("(Add --csv FILE to count the CSV's sets not started yet and its groups that are not merge sets.)")
    for part in status_table(rows):
        print(part)
    if not only:   # under the table: the last thing on screen, however long the table
        print(screens.wrap_text(progress["line"]))
    if problems:
        print("Journal problems: " + "; ".join(problems))
        return ExitCode.FAILED
    return ExitCode.OK


class StatusLine:
    """One set's line of the table, read like the dict screens.format_status takes; slots, not a
    dict: a savepoint of 100,000 sets holds 100,000 of them."""
    __slots__ = ("email", "status", "done", "intents", "updated_at", "note")

    def __init__(self, email: str, status: str, done: int, intents: int, updated_at: str | None, note: str):
        self.email, self.status, self.done, self.intents = email, status, done, intents
        self.updated_at, self.note = updated_at, note

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        line = {name: getattr(self, name) for name in self.__slots__}
        if line["updated_at"] is None:
            del line["updated_at"]
        return line


TABLE_CHUNK = 2000   # rows formatted at once: the table of 100,000 sets is printed in parts


def status_table(rows: list[StatusLine]) -> Iterator[str]:
    """screens.format_status(rows), in parts that print as the whole table would (the same
    widths, one header), so a savepoint of 100,000 sets is not formatted in memory at once.
    Each part is formatted behind a first row as wide as the widest cell of each column (so
    every part gets the whole table's widths) whose lines are then left out."""
    if len(rows) <= TABLE_CHUNK:
        yield screens.format_status(rows)   # type: ignore[arg-type]  # StatusLine reads as the dict it takes
        return
    widest = [0] * 6
    for row in rows:
        for i, value in enumerate((row.email, row.status, row.done, row.intents, (row.updated_at or "")[:19],
                                   row.note)):
            widest[i] = max(widest[i], len(screens.cell(value)))
    first = StatusLine("~" * widest[0], "~" * widest[1], int("9" * widest[2]), int("9" * widest[3]),
                       "~" * widest[4] or None, "~" * widest[5])
    own = len(screens.format_status([first]).split("\n")) - 2   # type: ignore[list-item]
    for start in range(0, len(rows), TABLE_CHUNK):
        part: list[Any] = [first, *rows[start:start + TABLE_CHUNK]]   # StatusLine reads as the dict it takes
        lines = screens.format_status(part).split("\n")
        yield "\n".join((lines[:2] if start == 0 else []) + lines[2 + own:])


def _csv_sets(csv_path: str, savepoint: str) -> tuple[list[tuple[str, str]], int]:
    """[(set_key, email)] of the CSV's merge sets in its order (grouped as the run groups it:
    with the primaries of the savepoint's merges), and how many of its groups are not merge sets."""
    index = index_contacts(csv_path, earlier_primaries(savepoint))
    return [(set_key(ms), ms.email) for ms in index.merge_sets], index.skipped_total


def _status_row(journal: Journal, email: str, row: StatusRow | None) -> StatusLine:
    if row is None:
        return StatusLine(email, "not started", 0, 0, None, "")
    note = row.reason or row.error or ""
    if row.status not in ("merged", "moved_only", "skipped"):
        note = resume_point(journal, row.set_key) or note   # the one place a set's context is read
    return StatusLine(email, row.status, row.done, row.intents, row.updated_at, note)


def progress_across_runs(statuses: list[str | None], runs: list[RunRecord], now: float) -> dict[str, Any]:
    """Sets done and left, the rate the recorded runs achieved (sets an hour, calls a minute, over
    their own running time) and the estimated finish: the running time left at that rate, and
    when that is reached: one run after another as often as they came so far (two runs or more),
    else running from `now` without a break. A run's record comes from its merge (record_run)."""
    done = sum(1 for s in statuses if s in FINISHED)
    failed = sum(1 for s in statuses if s == "failed")
    left = len(statuses) - done - failed
    seconds = sum(r.seconds for r in runs)
    sets = sum(r.sets_done for r in runs)
    out: dict[str, Any] = {"sets_done": done, "sets_failed": failed, "sets_left": left, "runs": len(runs),
                           "running_seconds": round(seconds, 1), "sets_per_hour": None, "calls_per_minute": None,
                           "seconds_left": None, "runs_left": None, "finish_at": None}
    head = f"Progress: {done} of {plural(len(statuses), 'merge set')} done, {left} left" + \
        (f", {failed} failed (a person must look)" if failed else "")
    if not runs or seconds <= 0 or sets <= 0:
        why = "no run recorded its time yet" if not runs else "no recorded run finished a set yet"
        out["line"] = f"{head}; rate and finish not known ({why})."
        return out
    per_set = seconds / sets
    out.update(sets_per_hour=round(sets / seconds * 3600, 1),
               calls_per_minute=round(sum(r.calls for r in runs) / seconds * 60, 1),
               seconds_left=round(left * per_set, 1))
    rate = (f"{plural(len(runs), 'run')}, {duration(seconds)} of running: {out['sets_per_hour']:g} sets an hour, "
            f"{out['calls_per_minute']:g} calls a minute")
    if not left:
        out["line"] = f"{head}; {rate}."
        return out
    worked = [r for r in runs if r.sets_done > 0]   # a run that did no set (stopped at once, Ctrl-C) tells nothing
    last = worked[-1]
    cut = last.stopped_by is not None     # the last run stopped taking sets (--max-calls, --until)
    starts = [_epoch(r.started_at) for r in worked]
    known = [s for s in starts if s is not None]
    runs_left: int | None
    finish: float | None
    if cut and len(worked) >= 2 and len(known) == len(worked):
        per_run = sum(r.sets_done for r in worked if r.stopped_by) / max(1, sum(1 for r in worked if r.stopped_by))
        runs_left = math.ceil(left / per_run) if per_run > 0 else None
        cadence = (known[-1] - known[0]) / (len(worked) - 1)
        finish = known[-1] + runs_left * cadence if runs_left else None
        when = f"{runs_left} more runs like the last ones, one every {duration(cadence)}" if runs_left else \
            "runs like the last ones"
    elif cut:    # one run so far: how many more, but not how often they come
        runs_left = math.ceil(left / last.sets_done) if last.sets_done else None
        finish = None
        when = f"{runs_left} more runs like the last" if runs_left else "runs like the last one"
    else:
        runs_left, finish = None, now + left * per_set
        when = "running without a break from now"
    out.update(runs_left=runs_left, finish_at=_iso(finish) if finish is not None else None)
    at = f", finishing about {out['finish_at']}" if finish is not None else ""
    out["line"] = (f"{head}; {rate}; at that rate about {duration(out['seconds_left'])} of running left "
                   f"({when}){at}.")
    return out


def _epoch(text: str | None) -> float | None:
    try:
        instant = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)).timestamp()


def _iso(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "an unknown date"


def record_run(journal: Journal, report: dict) -> None:
    """Record in the savepoint what this merge run did (its time, calls, the sets it finished,
    why it stopped taking sets) for --status's rate and estimated finish. A savepoint that can no
    longer be written is said, not fatal: the report has the same numbers."""
    mine = (report.get("totals") or {}).get("this_run") or {}
    run = RunRecord(run_id=str(report.get("run_id")), started_at=str(report.get("started_at")),
                    finished_at=str(report.get("finished_at")), seconds=float(report.get("duration_s") or 0.0),
                    calls=int((report.get("api") or {}).get("calls") or 0),
                    sets_done=sum(int(mine.get(k) or 0) for k in ("merged", "moved_only", "skipped")),
                    stopped_by=(report.get("budget") or {}).get("stopped_by"), exit_code=report.get("exit_code"))
    try:
        journal.record_run(run)
    except (JournalError, sqlite3.Error) as exc:
        log.warning("this run's time and calls could not be recorded in the savepoint (%s); --status's rate "
                    "leaves it out", exc)
