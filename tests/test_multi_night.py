"""Issue 26 part 2: a merge that spans nights on its own, and a --status that scales (issue 25 row 7).

--max-calls and --until stop a run from taking new sets (the sets in flight finish, exit 75)
so one cron line carries a job over several runs; the preview estimates the whole job; --status
shows the progress across runs and reads only what it shows from a journal of many sets.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import time
from datetime import datetime

import pytest

from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun, expected_after_merge, journal_problems, normalized
from merging import call_estimates, status
from merging.call_estimates import JobEstimate, job_estimate, job_seconds
from runs import journal as journal_module
from runs import over_sets
from runs.journal import Journal, RunRecord
from runs.over_sets import Budget, SetCost


def _reports(run: MergeRun, kind: str = "merge_report") -> list[dict]:
    paths = sorted((run.dir / "reports").glob(f"{kind}_*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


@pytest.fixture
def nights(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(8, seed=7, tickets=(1, 4), conversations=(0, 2))
    sandbox = make_sandbox(dataset.seed)
    return MergeRun(tmp_path, sandbox, dataset, monkeypatch), dataset


def test_max_calls_carries_the_merge_over_several_runs(nights, capsys):
    """Each run stops taking sets before its budget, exits 75 while sets are left and 0 at the
    end; the end state is one complete merge, and the reports add up to it."""
    run, dataset = nights
    before = normalized(run.sandbox.dump())
    assert run.preview("--max-calls", "100") == 0
    preview = _reports(run, "preview")[-1]
    assert preview["scope"]["max_calls"] == 100 and preview["estimate"]["calls"] > 200
    assert "The whole job (8 merge sets): about" in capsys.readouterr().out
    codes = []
    for _ in range(12):
        codes.append(run.run("--max-calls", "100"))
        if codes[-1] != 75:
            break
    assert codes[-1] == 0 and set(codes[:-1]) == {75} and len(codes) >= 3, codes
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(run.sandbox.dump()) == expected_after_merge(before, run.sandbox, dataset, merged)
    assert journal_problems(run.dir / "savepoints" / "j.sqlite3") == []
    reports = _reports(run)
    assert [r["exit_code"] for r in reports] == codes
    # every set merged by exactly one run; each run's this_run counts its own
    merged_by = [s["email"] for r in reports for s in r["sets"]
                 if s["status"] == "merged" and not s.get("finished_earlier")]
    assert sorted(merged_by) == sorted(merged)
    assert sum(r["totals"]["this_run"]["merged"] for r in reports) == len(merged)
    assert reports[-1]["totals"]["merged"] == len(merged) and reports[-1]["budget"]["stopped_by"] is None
    for r in reports[:-1]:
        budget = r["budget"]
        assert budget["stopped_by"] == "max_calls" and budget["sets_left"] > 0
        assert budget["line"].startswith("--max-calls 100:") and "re-run the same command" in budget["line"]
        assert r["api"]["calls"] <= 100 * 1.15, r["api"]["calls"]   # estimates, not a hard cap (docs/scheduling.md)
    # --status: every set done, the rate of the recorded runs
    capsys.readouterr()
    assert run.run("--status", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    progress = summary["details"]["progress"]
    assert progress["runs"] == len(codes) and progress["sets_left"] == 0 and progress["sets_per_hour"] > 0
    assert progress["calls_per_minute"] > 0


def test_until_in_the_past_stops_before_the_first_set(nights, monkeypatch, capsys):
    run, _ = nights
    assert run.preview() == 0
    run.sandbox.clear_log()
    # the deadline passes while the run starts (still to come when the options were read): it stops
    # before the first set, exit 75
    times = iter([datetime(2026, 12, 7, 6, 29).astimezone().timestamp()] * 2)
    monkeypatch.setattr(over_sets, "wall_clock",
                        lambda: next(times, datetime(2026, 12, 7, 6, 31).astimezone().timestamp()))
    assert run.run("--until", "2026-12-07T06:30") == 75
    assert run.sandbox.write_attempts() == []
    report = _reports(run)[-1]
    assert report["budget"]["stopped_by"] == "until" and report["totals"]["this_run"]["merged"] == 0
    assert all(s.get("not_reached") for s in report["sets"])
    assert "would not finish in time" in capsys.readouterr().out
    # an instant already past is a usage error, before any call: exit 75 would make cron go on for ever
    monkeypatch.setattr(over_sets, "wall_clock", lambda: datetime(2026, 12, 7, 7, 0).astimezone().timestamp())
    run.sandbox.clear_log()
    assert run.run("--until", "2026-12-07T06:30") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is already past" in errors[0]
    assert run.sandbox.request_log == []


def test_max_calls_below_what_one_set_needs_is_one_line_exit_2(nights, capsys):
    run, _ = nights
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run("--max-calls", "5") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "raise --max-calls to at least" in errors[0]
    assert run.sandbox.write_attempts() == []


def test_the_preview_says_how_many_runs_of_max_calls_the_job_takes_or_that_none_can(nights, capsys):
    run, _ = nights
    assert run.preview("--max-calls", "150") == 0
    preview = _reports(run, "preview")[-1]
    runs = preview["estimate"]["runs_of_max_calls"]
    assert runs and runs >= 2 and f"With --max-calls 150: about {runs} runs" in capsys.readouterr().out
    assert run.preview("--max-calls", "20") == 0
    assert _reports(run, "preview")[-1]["estimate"]["runs_of_max_calls"] is None
    assert "--max-calls 20 is too small for" in capsys.readouterr().err


def test_until_hh_mm_is_the_next_time_the_clock_shows_it():
    five = datetime(2026, 12, 7, 5, 0).astimezone().timestamp()
    seven = datetime(2026, 12, 7, 7, 0).astimezone().timestamp()
    assert over_sets.until_instant("06:00", five) - five == pytest.approx(3600)
    assert over_sets.until_instant("06:00", seven) - seven == pytest.approx(23 * 3600)
    assert over_sets.until_instant("2026-12-07T06:00Z", 0) == datetime.fromisoformat("2026-12-07T06:00+00:00"
                                                                                     ).timestamp()
    for bad in ("25:00", "6pm", "tomorrow"):
        with pytest.raises(argparse.ArgumentTypeError):
            over_sets.parse_until(bad)


class _Set:
    def __init__(self, key):
        self.key = self.email = key


def test_the_budget_keeps_the_sets_in_flight_and_stops_for_good():
    """With a fake clock: a set that would end after --until is not taken, nor any after it; the
    calls the sets in flight still owe count against --max-calls."""
    now = [1000.0]
    calls = [0]
    budget: Budget = Budget(max_calls=100, until=1100.0, calls=lambda: calls[0],
                            cost=lambda item, in_flight: SetCost(30, 20.0 * in_flight), clock=lambda: now[0])
    assert budget._take(_Set("a")) and budget._take(_Set("b"))   # 0 + 30 + 30 <= 100; 1000 + 40 < 1100
    calls[0] = 20                                                 # 10 each made: 20 + 20 + 20 + 30 <= 100
    assert budget._take(_Set("c"))
    assert not budget._take(_Set("d")) and budget.stopped_by == "max_calls"
    budget._finish(_Set("a"))
    assert not budget._take(_Set("e")), "refused once, refused for good"
    late: Budget = Budget(max_calls=None, until=1100.0, calls=lambda: 0,
                          cost=lambda item, in_flight: SetCost(None, 60.0 * in_flight), clock=lambda: now[0])
    assert late._take(_Set("a"))                     # 1000 + 60 <= 1100
    assert not late._take(_Set("b"))                 # 1000 + 120 > 1100
    assert late.stopped_by == "until" and "would not finish in time" in (late.line(3) or "")


def test_the_estimate_says_calls_time_and_nights():
    # 2,361,600 calls at 200 a minute: 11,808 minutes, 8.2 days, 25 nights of 8 hours
    estimate = JobEstimate(sets=80_000, calls=2_361_600, seconds=job_seconds(2_361_600, 200, workers=4),
                           calls_per_minute=200, workers=4, latency_s=None)
    line = estimate.line()
    assert "about 2,361,600 API calls, about 8.2 days at 200 calls a minute" in line and "25 nights of 8" in line
    # latency-bound: 4 workers at 2 s an answer make 120 calls a minute, below the rate
    assert job_seconds(1200, 200, workers=4, latency_s=2.0) == pytest.approx(600)
    assert job_seconds(1200, 200, workers=16, latency_s=2.0) == pytest.approx(360)
    records = [{"status": "would_merge", "estimated_calls": 30, "duplicates": [{"ticket_ids": ["t"],
                                                                               "conversation_ids": []}]},
               {"status": "would_merge", "estimated_calls": 20}, {"status": "skipped"}]
    job = job_estimate(records, 600, 4, None)
    # each merging set re-reads its primary before each merge and before the reference: duplicates + 1
    assert job.sets == 2 and job.calls == call_estimates.PREFLIGHT_CALLS + (30 + 2) + 2 + (20 + 1)
    assert job.line().endswith("fits in one night of 8 hours.")


def test_status_progress_across_runs_with_a_fake_clock():
    day = 86400.0
    start = datetime(2026, 12, 1, 22, 0).astimezone().timestamp()
    runs = [RunRecord(f"r{i}", datetime.fromtimestamp(start + i * day).astimezone().isoformat(), "",
                      8 * 3600.0, 96_000, 400, "until", 75) for i in range(3)]
    statuses = ["merged"] * 1200 + [None] * 1000 + ["failed"] * 2
    progress = status.progress_across_runs(statuses, runs, now=start + 3 * day)
    assert (progress["sets_done"], progress["sets_left"], progress["sets_failed"]) == (1200, 1000, 2)
    assert progress["sets_per_hour"] == 50 and progress["calls_per_minute"] == 200
    assert progress["runs_left"] == 3 and progress["seconds_left"] == 20 * 3600
    assert progress["finish_at"] == time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start + 5 * day))
    assert "3 more runs like the last ones, one every 24.0 hours" in progress["line"]
    # one run cut by --until so far: how many more, not when
    alone = status.progress_across_runs(statuses, runs[:1], now=start)
    assert alone["runs_left"] == 3 and alone["finish_at"] is None and "3 more runs like the last" in alone["line"]
    # one run that was not cut: the rest running from now
    whole = status.progress_across_runs(statuses, [runs[0]._replace(stopped_by=None)], now=start)
    assert whole["finish_at"] == time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start + 20 * 3600))
    assert "running without a break from now" in whole["line"]
    unknown = status.progress_across_runs(statuses, [], now=start)
    assert "rate and finish not known" in unknown["line"]


def test_status_of_many_sets_reads_only_what_it_shows(tmp_path, monkeypatch, capsys):
    """A savepoint of 3,000 sets whose finished sets' contexts are not even JSON: --status shows
    them all (the context is parsed only for the set it shows a resume point for)."""
    path = str(tmp_path / "big.sqlite3")
    journal = Journal(path, "r1", exclusive=True)
    journal.set_status("k0", "first@x.example", "in_progress", context={"duplicates": [
        {"id": "d1", "display_id": "REVU-9"}]})
    journal.done("k0", "d1|backup|1")
    journal.close()
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO sets VALUES (?, ?, 'merged', NULL, NULL, ?, '2026-12-06T01:00:00Z', 'r1')",
                       [(f"k{i}", f"p{i}@x.example", "{" + "x" * 3000) for i in range(1, 3000)])
        db.executemany("INSERT INTO steps VALUES (?, 'external_ref', 'done', NULL, '2026-12-06T01:00:00Z', 'r1')",
                       [(f"k{i}",) for i in range(1, 3000)])
    loads = []
    real_load = journal_module._load
    monkeypatch.setattr(journal_module, "_load", lambda text: loads.append(1) or real_load(text))
    capsys.readouterr()
    assert status.print_status(path) == 0
    out = capsys.readouterr().out
    assert "2999 merged" in out and "REVU-9: backed up" in out and out.count("@x.example") == 3000
    assert len(loads) <= 3   # the one in-progress set's context and steps


def test_the_status_table_printed_in_parts_is_the_whole_table():
    rows = [status.StatusLine(f"{'x' * (i % 37)}{i}@example.com", ("merged", "in_progress", "not started")[i % 3],
                              i % 13 * (1 + (i == 4000) * 10**6), i % 2, None if i % 3 == 2 else
                              f"2026-12-06T01:{i % 60:02d}:00.123456", "" if i % 5 else
                              f"REVU-{i}: backed up, {i % 7} items moved " * (1 + i % 4)) for i in range(5001)]
    assert "\n".join(status.status_table(rows)) == status.screens.format_status(rows)


def test_a_plan_binds_its_budget_so_an_approval_covers_the_nightly_runs(nights, capsys):
    """--max-calls and --until are in the plan's scope: a run under --plan takes exactly them."""
    run, _ = nights
    plan = str(run.dir / "PLAN.json")
    assert run.preview("--max-calls", "150", "--until", "23:59", "--plan-out", plan) == 0
    capsys.readouterr()
    assert run.run("--plan", plan, "--until", "23:59") == 2
    assert "made with --max-calls 150, this run goes without --max-calls" in capsys.readouterr().err
    assert run.run("--plan", plan, "--max-calls", "100000", "--until", "23:59") == 2
    assert "this run goes with --max-calls 100000" in capsys.readouterr().err
    assert run.run("--plan", plan, "--max-calls", "150") == 2
    assert "without --until" in capsys.readouterr().err
    assert run.run("--plan", plan, "--max-calls", "150", "--until", "23:59") in (0, 75)
