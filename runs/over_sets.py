"""The run over sets that the merge and the restore share: workers, results, stop, exit code.

Both runs hand each merge set to a worker, turn what comes back (a SetOutcome, or the exception
the set raised) into the set's report line, stop starting sets when the token is refused, a
fault hits every set alike or the admin presses Ctrl-C, and end with one exit code and a report
line for every set, including those the run never reached. Written once, so the two cannot
drift; what differs on purpose is a `SetRunKind`.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, replace
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


class SetRun(Generic[S]):
    """The sets' report lines as the workers hand results back, and the run's exit code."""

    def __init__(self, kind: SetRunKind[S], stop: cli.StopSignal, *, code: ExitCode = ExitCode.OK):
        """`code`: the exit code before any set runs (the restore's is 1 when a backup folder
        does not verify)."""
        self.kind = kind
        self.stop = stop
        self.lines: dict[str, SetOutcome] = {}
        self.code = code
        self.stopped_by: str | None = None   # "auth", "abort", "fault" or "canary" when the tool stopped the run
        self.fault: Exception | None = None  # a run-wide fault (DevRev unreachable, the savepoint unwritable)

    def run(self, sets: Iterable[S], work: Callable[[S], SetOutcome], workers: int, desc: str | None = None) -> None:
        """work(set) for each set on `workers` threads (none starts once the run stops)."""
        for item, result in run_sets(sets, work, workers, self.stop, desc or self.kind.name):
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
        """The run's code: a stop nobody but the admin asked for is an interruption (130)."""
        if self.stop.is_set() and self.stopped_by is None:
            return self.code.worse(ExitCode.INTERRUPTED)
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
