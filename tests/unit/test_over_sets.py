"""The one run over sets (runs.over_sets): what each kind of result makes of a set's line and
of the run's exit code, for the merge's kind and the restore's (no emulator, no threads beyond
the runner's own)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from devrev_api.errors import AuthError, RunInterrupted, RunWideFault
from merging.engine import RunAborted
from plumbing import cli
from plumbing.cli import ExitCode
from runs.journal import JournalError
from runs.outcomes import DuplicateOutcome, SetOutcome, SetStatus, to_json
from runs.over_sets import PreviewRun, SetRun, SetRunKind


@dataclass(frozen=True)
class FakeSet:
    key: str
    email: str


SETS = [FakeSet(f"k{n}", f"s{n}@example.com") for n in range(4)]
DONE = DuplicateOutcome("d1", "REVU-d1", "user_1", tickets_moved=2)


def _kind(stopping=(RunAborted,)) -> SetRunKind[FakeSet]:
    return SetRunKind("merge", lambda s: SetOutcome(s.email, "key-" + s.key, primary="REVU-p"),
                      lambda s: {"duplicates": [DONE]} if s.key == "k1" else {}, stopping_errors=stopping)


def _run(results: dict[str, object], kind=None, workers: int = 1) -> tuple[SetRun[FakeSet], cli.StopSignal]:
    stop = cli.StopSignal()
    run = SetRun(kind or _kind(), stop)

    def work(item: FakeSet):
        result = results[item.key]
        if isinstance(result, BaseException):
            raise result
        return result

    run.run(SETS, work, workers)
    return run, stop


def _merged(s: FakeSet) -> SetOutcome:
    return SetOutcome(s.email, "key-" + s.key, SetStatus.MERGED, duplicates=[DONE])


def test_every_set_merged_is_exit_0_and_every_line_in_input_order():
    run, _ = _run({s.key: _merged(s) for s in SETS})
    assert run.exit_code() == ExitCode.OK
    assert [line.email for line in run.report_lines(SETS)] == [s.email for s in SETS]


def test_a_refused_token_stops_the_run_with_exit_2_and_no_further_set_starts():
    run, stop = _run({"k0": _merged(SETS[0]), "k1": AuthError("the token was refused", status=401)})
    assert run.exit_code() == ExitCode.USAGE and stop.is_set()
    lines = run.report_lines(SETS)
    assert lines[1].status == SetStatus.PENDING and lines[1].duplicates == [DONE]   # what the journal says
    assert [(line.status, line.not_reached) for line in lines[2:]] == [(SetStatus.PENDING, True)] * 2


def test_a_stopping_error_is_exit_1_and_named_parameter_of_the_kind():
    results = {"k0": RunAborted("the backup folder cannot be written"), **{s.key: _merged(s) for s in SETS[1:]}}
    run, _ = _run(results)
    assert run.exit_code() == ExitCode.FAILED and run.stopped_by == "abort"
    assert run.report_lines(SETS)[0].status == SetStatus.FAILED and run.report_lines(SETS)[1].not_reached
    # the restore's kind has no stopping error: the same exception is one set's unexpected failure
    run, _ = _run(results, kind=_kind(stopping=()))
    assert run.exit_code() == ExitCode.FAILED and run.stopped_by is None
    assert "unexpected error: RunAborted" in run.report_lines(SETS)[0].error
    assert [line.status for line in run.report_lines(SETS)[1:]] == [SetStatus.MERGED] * 3


def test_a_fault_every_set_would_meet_stops_the_run_once_with_exit_75():
    """DevRev unreachable: a later run may get through without a person (75), kept apart from 1."""
    run, _ = _run({"k0": RunWideFault("DevRev is unreachable"), **{s.key: _merged(s) for s in SETS[1:]}})
    assert run.exit_code() == ExitCode.TEMPORARY and str(run.fault) == "DevRev is unreachable"
    assert "re-run to resume" in run.report_lines(SETS)[0].note


def test_an_interruption_is_130_and_the_set_in_flight_says_interrupted():
    stop_at = {"k1"}

    def interrupted(item):
        raise RunInterrupted()

    stop = cli.StopSignal()
    run = SetRun(_kind(), stop)
    for item in SETS:
        if stop.is_set():
            break
        try:
            result = interrupted(item) if item.key in stop_at else _merged(item)
        except RunInterrupted as exc:
            stop.set()
            result = exc
        run.add(item, result)
    assert run.exit_code() == ExitCode.INTERRUPTED
    assert [line.status for line in run.report_lines(SETS)] == [SetStatus.MERGED, SetStatus.INTERRUPTED,
                                                               SetStatus.PENDING, SetStatus.PENDING]


def test_a_failed_set_is_exit_1_but_the_others_go_on():
    failed = SetOutcome(SETS[0].email, "key-k0", SetStatus.FAILED, error="409 conflict")
    run, _ = _run({"k0": failed, **{s.key: _merged(s) for s in SETS[1:]}})
    assert run.exit_code() == ExitCode.FAILED
    assert [line.status for line in run.report_lines(SETS)] == [SetStatus.FAILED] + [SetStatus.MERGED] * 3


def test_a_set_a_later_run_may_finish_alone_is_75_and_one_needing_a_person_wins():
    later = SetOutcome(SETS[0].email, "key-k0", SetStatus.FAILED, error="merge job running", retry_later=True)
    person = SetOutcome(SETS[1].email, "key-k1", SetStatus.FAILED, error="409 conflict")
    run, _ = _run({"k0": later, **{s.key: _merged(s) for s in SETS[1:]}})
    assert run.exit_code() == ExitCode.TEMPORARY == 75
    run, _ = _run({"k0": later, "k1": person, **{s.key: _merged(s) for s in SETS[2:]}})
    assert run.exit_code() == ExitCode.FAILED
    assert ExitCode.TEMPORARY.worse(ExitCode.INTERRUPTED) == ExitCode.INTERRUPTED
    assert ExitCode.OK.worse(ExitCode.TEMPORARY) == ExitCode.TEMPORARY


def test_a_savepoint_fault_needs_a_person_not_a_later_run():
    run, _ = _run({"k0": JournalError("the savepoint cannot be written"), **{s.key: _merged(s) for s in SETS[1:]}})
    assert run.exit_code() == ExitCode.FAILED


def test_a_keyboard_interrupt_in_a_worker_stops_the_run_as_in_the_main_thread():
    with pytest.raises(KeyboardInterrupt):
        _run({s.key: KeyboardInterrupt() for s in SETS})


def test_the_one_serialiser_keeps_the_report_format():
    line = SetOutcome("a@example.com", "k", SetStatus.MERGED, duplicates=[DONE], resumed=False)
    data = to_json(line)
    assert data["status"] == "merged" and data["reason"] is None and data["resumed"] is False
    assert "note" not in data and "not_reached" not in data
    assert data["duplicates"][0]["tickets_moved"] == 2 and data["duplicates"][0]["display_id"] == "REVU-d1"


def _preview(results: dict[str, object]) -> PreviewRun[FakeSet]:
    run = PreviewRun(cli.StopSignal(), lambda s, error: {"email": s.email, "status": "failed", "error": error})

    def work(item: FakeSet):
        result = results[item.key]
        if isinstance(result, BaseException):
            raise result
        return result

    run.run(SETS, work, 1)
    return run


def test_a_preview_records_a_failed_set_and_goes_on_with_exit_1():
    run = _preview({"k0": ValueError("boom"), **{s.key: {"status": "would_merge"} for s in SETS[1:]}})
    assert run.exit_code() == ExitCode.FAILED and run.fault is None
    assert run.records["k0"] == {"email": "s0@example.com", "status": "failed", "error": "boom"}
    assert [run.records[s.key]["status"] for s in SETS[1:]] == ["would_merge"] * 3


def test_a_preview_stops_at_a_refused_token_or_a_fault_or_ctrl_c():
    refused = _preview({**{s.key: {"status": "would_merge"} for s in SETS}, "k0": AuthError("refused", status=401)})
    assert refused.exit_code() == ExitCode.USAGE and refused.records == {}
    fault = _preview({"k0": RunWideFault("DevRev is unreachable"), **{s.key: {} for s in SETS[1:]}})
    assert str(fault.fault) == "DevRev is unreachable" and fault.records == {}
    stopped = _preview({"k0": {"status": "would_merge"}, "k1": RunInterrupted(), "k2": {}, "k3": {}})
    stopped.stop.set()
    assert stopped.exit_code() == ExitCode.INTERRUPTED and "k1" not in stopped.records
