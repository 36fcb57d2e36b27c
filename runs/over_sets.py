"""The run over sets that the merge and the restore share: workers, results, stop, exit code.

Both runs hand each merge set to a worker, turn what comes back (a SetOutcome, or the exception
the set raised) into the set's report line, stop starting sets when the token is refused, a
fault hits every set alike or the admin presses Ctrl-C, and end with one exit code and a report
line for every set, including those the run never reached. Written once, so the two cannot
drift; what differs on purpose is a `SetRunKind`.
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Generic, Iterable, Protocol, TypeVar

from devrev_api.errors import (
    AuthError,
    DevRevError,
    RateLimitError,
    RunInterrupted,
    RunWideFault,
    ServerError,
    TransportError,
)
from plumbing import cli
from plumbing.cli import ExitCode
from runs.journal import Journal, JournalError
from runs.outcomes import SetOutcome, SetStatus
from runs.support import reraise_fatal, run_sets

log = logging.getLogger(__name__)


class RunStopped(cli.UserError):
    """The run stopped on a fault that every set would meet (DevRev unreachable, a folder
    that can no longer be written): one line, exit 1, or 75 when the fault is DevRev's and a
    later run may get past it alone (`temporary`); re-run the same command to resume."""

    def __init__(self, message: str, *, temporary: bool = False):
        super().__init__(message)
        self.exit_code = ExitCode.TEMPORARY if temporary else ExitCode.FAILED


def is_temporary(exc: BaseException | None) -> bool:
    """A failure a later run may get past without a person: DevRev unreachable or failing
    every call (RunWideFault), or a call that ran out of retries on throttling, 5xx answers or
    a broken connection (RateLimitError, ServerError, TransportError)."""
    return isinstance(exc, (RunWideFault, RateLimitError, ServerError, TransportError))


def set_code(outcome: SetOutcome) -> ExitCode:
    """A failed set's exit code: 75 when a later run may finish it alone (a merge job still
    running, DevRev throttling), else 1 (a person must look)."""
    return ExitCode.TEMPORARY if outcome.retry_later else ExitCode.FAILED


class MergeSetLike(Protocol):
    """What the runner needs of a set: its CSV key (an email key) and its email."""

    @property
    def key(self) -> str: ...

    @property
    def email(self) -> str: ...


S = TypeVar("S", bound=MergeSetLike)


@dataclass(frozen=True)
class SetRunKind(Generic[S]):
    """What differs, on purpose, between the merge's run and the restore's.

    - `name`: the progress bar's word ("merge", "restore").
    - `blank_line(set)`: the set's report line before anything is known (email, set key,
      and the merge's primary).
    - `progress(set)`: what the journal says DevRev holds for a set the run left unfinished,
      as SetOutcome fields ({} if nothing); never raises.
    - `stopping_errors`: a set's error that stops the whole run with exit 1 (the merge's
      RunAborted: a backup folder that cannot be written would fail every set alike); the
      restore writes no backups and has none.
    """
    name: str
    blank_line: Callable[[S], SetOutcome]
    progress: Callable[[S], dict[str, Any]]
    stopping_errors: tuple[type[Exception], ...] = ()


def wall_clock() -> float:
    """The clock --until is read against (seconds since the epoch; tests replace it)."""
    return time.time()


def parse_until(text: str) -> str:
    """argparse type of --until: `HH:MM` (local time, the next time the clock shows it) or an ISO
    8601 instant (`2026-12-07T06:00`, local time without an offset); kept as given (the reports
    and the preview's scope record it), checked here."""
    try:
        at = until_instant(text, wall_clock())
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"takes HH:MM (local time) or an ISO instant such as "
                                         f"2026-12-07T06:00+01:00, not {text!r}") from None
    if at <= wall_clock():   # an instant already past would stop every run at once, and cron reads 75 as "go on"
        shown = datetime.fromtimestamp(at).astimezone().isoformat(timespec="minutes")
        raise argparse.ArgumentTypeError(f"{text!r} ({shown}) is already past: give a time to come (HH:MM is the "
                                         f"next time the clock shows it)")
    return text


def until_instant(text: str, now: float) -> float:
    """--until as seconds since the epoch: an ISO instant as it says (local time without an
    offset); `HH:MM` the next time the local clock shows it after `now` (within 24 hours).
    ValueError if it is neither."""
    hours, colon, minutes = text.strip().partition(":")
    if colon and len(text.strip()) <= 5 and hours.isdigit() and minutes.isdigit() and len(minutes) == 2:
        h, m = int(hours), int(minutes)
        if not (0 <= h <= 23 and 0 <= m <= 59):
            raise ValueError(text)
        local = datetime.fromtimestamp(now).astimezone()
        at = local.replace(hour=h, minute=m, second=0, microsecond=0)
        if at <= local:
            at = (at.replace(tzinfo=None) + timedelta(days=1)).astimezone()
        return at.timestamp()
    instant = datetime.fromisoformat(text.strip())
    return (instant if instant.tzinfo else instant.astimezone()).timestamp()


@dataclass(frozen=True)
class SetCost:
    """What one set is expected to cost: calls (None: unknown), and seconds of wall time when it
    shares the run's rate with `in_flight` sets (None: unknown)."""
    calls: int | None
    seconds: float | None


class NotTaken(Exception):
    """A set the budget did not start (--max-calls, --until): it stays for the next run."""


class Budget(Generic[S]):
    """--max-calls and --until: the run stops taking new sets when the next set would not
    finish within the calls left or before the deadline; the sets in flight finish.

    `calls()`: the calls this run has made so far (the client's count, preflight included);
    `cost(set, in_flight)`: the set's expected cost when it runs beside `in_flight` - 1 other
    sets (its preview line's calls at the run's rate; None fields where unknown). A set of
    unknown cost is expected to cost what this run's finished sets cost on average. The
    decision is taken as each set would start, once refused for good (later sets are not
    taken either: the order of the CSV is kept)."""

    def __init__(self, *, max_calls: int | None, until: float | None, calls: Callable[[], int],
                 cost: Callable[[S, int], SetCost], clock: Callable[[], float] | None = None):
        self.max_calls = max_calls
        self.until = until
        self._calls = calls
        self._cost = cost
        self._clock = clock or (lambda: wall_clock())
        self._lock = threading.Lock()
        self._in_flight: dict[str, tuple[int, int, float]] = {}   # key -> (estimated calls, calls then, start)
        self._done = [0, 0.0]         # sets finished by this run, their seconds
        self._start_calls = 0
        self.stopped_by: str | None = None   # "max_calls" or "until" once a set was refused
        self.refused: S | None = None        # the first set not taken
        self.needed: SetCost | None = None   # what it was expected to cost
        self.too_small = False               # the first set of the run alone is over --max-calls
        self.not_taken = 0

    def gate(self, work: Callable[[S], SetOutcome]) -> Callable[[S], SetOutcome]:
        """work(set), started only if the budget allows it (NotTaken otherwise)."""
        def gated(item: S) -> SetOutcome:
            if not self._take(item):
                raise NotTaken(item.key)
            try:
                return work(item)
            finally:
                self._finish(item)
        return gated

    def _take(self, item: S) -> bool:
        with self._lock:
            if self.stopped_by is not None:
                self.not_taken += 1
                return False
            cost = self._cost(item, len(self._in_flight) + 1)
            seconds = cost.seconds if cost.seconds is not None else self._average_seconds()
            calls = cost.calls if cost.calls is not None else self._average_calls()
            now, made = self._clock(), self._calls()
            reason = None
            if self.until is not None and now + (seconds or 0.0) > self.until:
                reason = "until"
            elif self.max_calls is not None and made + self._in_flight_left(made) + (calls or 0) > self.max_calls:
                reason = "max_calls"   # with nothing in flight or done, no run of this --max-calls gets past it
                self.too_small = not self._in_flight and self._done[0] == 0
            if reason is not None:
                self.stopped_by, self.refused, self.needed = reason, item, SetCost(calls, seconds)
                self.not_taken += 1
                return False
            self._in_flight[item.key] = (calls or 0, made, now)
            return True

    def _finish(self, item: S) -> None:
        with self._lock:
            _, _, start = self._in_flight.pop(item.key)
            self._done[0] += 1
            self._done[1] += max(0.0, self._clock() - start)

    def _in_flight_left(self, made: int) -> int:
        """Calls the sets in flight are still expected to make: each one's estimate less an
        equal share of the calls made since it started (the client's count is not per set)."""
        share = max(1, len(self._in_flight))
        return sum(max(0, est - (made - then) // share) for est, then, _ in self._in_flight.values())

    def _average_seconds(self) -> float | None:
        return self._done[1] / self._done[0] if self._done[0] else None

    def _average_calls(self) -> int | None:
        return round((self._calls() - self._start_calls) / self._done[0]) if self._done[0] else None

    def start(self) -> None:
        """Count this run's average calls per set from here (after the preflight)."""
        self._start_calls = self._calls()

    def line(self, left: int) -> str | None:
        """The one line that says why the run stopped taking sets (None: it did not)."""
        if self.stopped_by is None or self.refused is None:
            return None
        needed = self.needed or SetCost(None, None)
        if self.stopped_by == "until":
            when = datetime.fromtimestamp(self.until or 0).astimezone().isoformat(timespec="minutes")
            about = f" (it needs about {needed.seconds:.0f} s)" if needed.seconds is not None else ""
            head = f"--until {when}: the next set, {self.refused.email}, would not finish in time{about}"
        else:
            about = f" needs about {needed.calls} calls" if needed.calls is not None else " would not fit"
            head = (f"--max-calls {self.max_calls}: {self._calls()} calls made, the next set, {self.refused.email},"
                    f"{about}")
        if self.too_small:
            least = self._calls() + (needed.calls or 0)
            return head + f"; no run of this --max-calls can take it: raise --max-calls to at least {least}"
        return (head + f"; {left} merge set{'s' if left != 1 else ''} left for the next run: re-run the same command "
                       f"(exit 75)")

    def to_json(self, left: int) -> dict[str, Any]:
        """The report's and the --json summary's `budget`."""
        return {"max_calls": self.max_calls,
                "until": datetime.fromtimestamp(self.until).astimezone().isoformat(timespec="seconds")
                if self.until is not None else None,
                "calls": self._calls(), "stopped_by": self.stopped_by,
                "next_set": self.refused.email if self.refused is not None else None,
                "next_set_calls": self.needed.calls if self.needed else None,
                "next_set_seconds": round(self.needed.seconds, 1) if self.needed and self.needed.seconds is not None
                else None, "sets_left": left if self.stopped_by else 0, "line": self.line(left)}


class SetRun(Generic[S]):
    """The sets' report lines as the workers hand results back, and the run's exit code."""

    def __init__(self, kind: SetRunKind[S], stop: cli.StopSignal, *, code: ExitCode = ExitCode.OK,
                 budget: Budget[S] | None = None):
        """`code`: the exit code before any set runs (the restore's is 1 when a backup folder
        does not verify). `budget`: --max-calls / --until (None: every set is taken)."""
        self.kind = kind
        self.stop = stop
        self.lines: dict[str, SetOutcome] = {}
        self.code = code
        self.stopped_by: str | None = None   # "auth", "abort", "fault" or "canary" when the tool stopped the run
        self.fault: Exception | None = None  # a run-wide fault (DevRev unreachable, the savepoint unwritable)
        self.budget = budget

    def run(self, sets: Iterable[S], work: Callable[[S], SetOutcome], workers: int, desc: str | None = None) -> None:
        """work(set) for each set on `workers` threads (none starts once the run stops, or once
        the budget refuses one: those stay for the next run, as sets not reached)."""
        if self.budget is not None:
            if self.budget.stopped_by is not None:
                return                # refused before: none of these is taken (no pool, no progress bar)
            work = self.budget.gate(work)
        for item, result in run_sets(sets, work, workers, self.stop, desc or self.kind.name):
            if isinstance(result, NotTaken):
                continue
            self.add(item, result)

    def add(self, item: S, result: SetOutcome | BaseException) -> None:
        """Record one set's result: its outcome, or the exception its work raised. A set the
        run did not finish still reports what DevRev holds (from the journal)."""
        line = self._line(item, result)
        if line.status is not None and line.status.unfinished and not line.duplicates:
            line = replace(line, **self.kind.progress(item))
        self.lines[item.key] = line

    def _line(self, item: S, result: SetOutcome | BaseException) -> SetOutcome:
        reraise_fatal(result, self.stop)
        if isinstance(result, RunInterrupted):
            if self.stopped_by is None:
                self.code = self.code.worse(ExitCode.INTERRUPTED)
                return self._unfinished(item, SetStatus.INTERRUPTED,
                                        f"stopped by {self.stop.reason}; re-run to resume")
            return self._unfinished(item, SetStatus.PENDING, "stopped with the run; re-run to resume")
        if isinstance(result, (RunWideFault, JournalError)):
            # in flight when the fault hit: resumable from its journal, the fault said once at the end
            self.fault = self.fault or result
            self.stopped_by = self.stopped_by or "fault"
            self.code = self.code.worse(ExitCode.TEMPORARY if is_temporary(result) else ExitCode.FAILED)
            self.stop.set()
            return self._unfinished(item, SetStatus.PENDING, f"stopped with the run ({result}); re-run to resume")
        if isinstance(result, AuthError):
            if self.stopped_by != "auth":
                log.error("%s; stopping the run (no further set is started)", result)
            self.stopped_by = "auth"
            self.code = ExitCode.USAGE
            self.stop.set()
            return self._unfinished(item, SetStatus.PENDING, str(result))
        if isinstance(result, self.kind.stopping_errors):
            log.error("%s; stopping the run", result)
            self.stopped_by = self.stopped_by or "abort"
            self.code = self.code.worse(ExitCode.FAILED)
            self.stop.set()
            return replace(self.kind.blank_line(item), status=SetStatus.FAILED, error=str(result))
        if isinstance(result, BaseException):
            log.debug("unexpected error", exc_info=result)
            result = replace(self.kind.blank_line(item), status=SetStatus.FAILED,
                             error=f"unexpected error: {type(result).__name__}: {result}")
        if result.status == SetStatus.FAILED:
            self.code = self.code.worse(set_code(result))
        with cli.log_subject(item.email):
            log.info("%s%s", result.status, f" ({result.reason or result.error})"
                     if result.status in (SetStatus.SKIPPED, SetStatus.FAILED) else "")
        return result

    def _unfinished(self, item: S, status: SetStatus, note: str) -> SetOutcome:
        return replace(self.kind.blank_line(item), status=status, note=note)

    def stop_for_canary(self, code: ExitCode = ExitCode.FAILED) -> None:
        """The canary saw changes the tool did not make, or the first set's merge did not
        complete: no further set starts; exit `code` (1, or 75 for a merge still running)."""
        self.stopped_by = self.stopped_by or "canary"
        self.code = self.code.worse(code)
        self.stop.set()

    def exit_code(self) -> ExitCode:
        """The run's code: a stop nobody but the admin asked for is an interruption (130); a
        budget that left sets for the next run is 75 (2 when not even one set fits in it)."""
        if self.stop.is_set() and self.stopped_by is None:
            return self.code.worse(ExitCode.INTERRUPTED)
        if self.budget is not None and self.budget.stopped_by is not None:
            return self.code.worse(ExitCode.USAGE if self.budget.too_small else ExitCode.TEMPORARY)
        return self.code

    def report_lines(self, order: list[S]) -> list[SetOutcome]:
        """Every set's line in the input's order; a set this run never started says so."""
        return [self.lines.get(item.key) or replace(self.kind.blank_line(item), status=SetStatus.PENDING,
                                                    note="not processed in this run", not_reached=True)
                for item in order]


class PreviewRun(Generic[S]):
    """A preview's run over sets: read only, so what comes back is each set's preview record
    (a dict, as the preview report holds it) and a failure is that set's line, not a stop.

    The same stops as a real run: a refused token (exit 2, no further set), a fault every set
    would meet (`fault`: the caller says it once and writes no report), Ctrl-C (130). What a
    stopped preview writes is the caller's: the merge writes an incomplete preview, which
    unlocks nothing; the restore writes none."""

    def __init__(self, stop: cli.StopSignal, failed_record: Callable[[S, str], dict[str, Any]], *,
                 code: ExitCode = ExitCode.OK):
        """`failed_record(set, error)`: the preview line of a set whose preview raised."""
        self.stop = stop
        self.failed_record = failed_record
        self.records: dict[str, dict[str, Any]] = {}
        self.code = code
        self.fault: Exception | None = None

    def run(self, sets: Iterable[S], work: Callable[[S], dict[str, Any]], workers: int) -> None:
        for item, result in run_sets(sets, work, workers, self.stop, "preview"):
            self.add(item, result)

    def add(self, item: S, result: dict[str, Any] | BaseException) -> None:
        reraise_fatal(result, self.stop)
        if isinstance(result, RunWideFault):
            self.fault = self.fault or result   # said once by the caller; no set is started after it
            self.stop.set()
            return
        if isinstance(result, RunInterrupted):
            self.code = self.code.worse(ExitCode.INTERRUPTED)
            return
        if isinstance(result, AuthError):
            if self.code != ExitCode.USAGE:
                log.error("%s", result)
            self.code = ExitCode.USAGE
            self.stop.set()
            return
        if isinstance(result, BaseException):
            if not isinstance(result, DevRevError):
                log.debug("unexpected error", exc_info=result)
            result = self.failed_record(item, str(result))
        if result.get("status") == SetStatus.FAILED:
            with cli.log_subject(item.email):
                log.error("preview failed: %s", result.get("error"))
            self.code = self.code.worse(ExitCode.FAILED)
        self.records[item.key] = result

    def exit_code(self) -> ExitCode:
        """2 after a refused token; 130 if the run was stopped otherwise; else 1 if a set failed."""
        if self.stop.is_set() and self.code != ExitCode.USAGE:
            return ExitCode.INTERRUPTED
        return self.code


def journal_problems(journal: Journal) -> list[str]:
    """journal.check(), or the reason it could not be read (a savepoint that failed mid-run)."""
    try:
        return journal.check()
    except (sqlite3.Error, JournalError) as exc:
        return [f"the savepoint could not be checked ({exc})"]
