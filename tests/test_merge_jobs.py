"""Issue 22 section 1: a merge is a job that can fail, hang, or be refused with a reason.

Each test runs merge_contacts.py against the emulator in one `merge_job` mode ([C] S15 jobs.get /
jobs.list, devrev_api.assumptions.MERGE_JOB_*) and checks what DevRev holds afterwards, the set's
line, and what a re-run does. Waits are fake: the client's wait moves the emulator's clock.
"""
from __future__ import annotations

import time

import pytest

import devrev_client
from devrev_api import assumptions as facts
from devrev_sandbox.dataset import build_dataset
from helpers import FakeClock, MergeRun
from plumbing.cli import ExitCode


@pytest.fixture
def one_set(tmp_path, monkeypatch, make_sandbox):
    """make(mode) -> (run, sandbox, clock, primary id, duplicate id, ids the duplicate owns)."""
    def make(mode: str):
        dataset = build_dataset(1, seed=22, tickets=(2, 2), conversations=(1, 1), two_duplicate_sets=0,
                                skipped=False)
        clock = FakeClock()
        sandbox = make_sandbox(dataset.seed, clock=clock, merge_job=mode, merge_retire_after_gets=1)
        monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda _client, seconds: clock.wait(seconds))
        run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
        primary = sandbox.key_id(dataset.merge_sets[0]["primary"])
        dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
        owned = {oid for kind, fld in (("works", "reported_by"), ("conversations", "members"))
                 for oid, o in sandbox.dump()[kind].items() if dup in {u["id"] for u in o[fld]}}
        assert len(owned) == 3
        return run, sandbox, clock, primary, dup, owned
    return make


def _on_primary(sandbox, owned: set[str], primary: str, dup: str) -> bool:
    """Every item the duplicate owned lists the primary and not the duplicate."""
    dump = sandbox.dump()
    for oid in owned:
        obj = dump["works"].get(oid) or dump["conversations"][oid]
        people = {u["id"] for u in obj.get("reported_by") or obj.get("members") or []}
        if primary not in people or dup in people:
            return False
    return True


def _merges(sandbox) -> int:
    return sum(1 for e in sandbox.api_calls() if e["endpoint"] == "rev-users.merge")


def test_a_merge_job_still_running_says_so_and_a_later_run_finishes_it(one_set):
    run, sandbox, clock, primary, dup, owned = one_set("in_progress")
    assert run.preview() == 0
    assert run.run() == ExitCode.TEMPORARY == 75   # the scheduler's "try again later", apart from 1
    assert run.latest_report()["totals"]["retry_later"] == 1
    (line,) = run.latest_report()["sets"]
    assert line["status"] == "failed" and line["retry_later"] is True
    assert "DevRev's merge job don:core:" in line["error"] and "in_progress, 40 %" in line["error"]
    assert "re-run later" in line["error"]
    assert _on_primary(sandbox, owned, primary, dup)   # moved, and nothing lost
    assert not sandbox.dump()["rev_users"][dup]["_retired"]
    assert _merges(sandbox) == 1      # a running job is not asked again
    sandbox.merge_job = "completed"   # DevRev's job ends
    assert run.run() == 0
    (line,) = run.latest_report()["sets"]
    assert line["status"] == "merged"
    assert sandbox.dump()["rev_users"][dup]["_retired"] and _merges(sandbox) == 1


def test_a_failed_merge_job_is_asked_again_and_the_set_merges(one_set, caplog):
    run, sandbox, clock, primary, dup, owned = one_set("failed_first")
    assert run.preview() == 0 and run.run() == 0
    assert sandbox.dump()["rev_users"][dup]["_retired"] and _merges(sandbox) == 2
    jobs = sorted(sandbox.state.jobs.values(), key=lambda j: j["_seq"])
    assert [j["state"] for j in jobs] == ["failed", "completed"]
    assert f"failed, 40 %): asking again (attempt 2 of {facts.MERGE_ATTEMPTS})" in caplog.text


def test_merge_attempts_are_bounded_across_runs(one_set, monkeypatch):
    monkeypatch.setattr(facts, "MERGE_ATTEMPTS", 1)
    run, sandbox, clock, primary, dup, owned = one_set("failed_first")
    assert run.preview() == 0 and run.run() == ExitCode.FAILED
    (line,) = run.latest_report()["sets"]
    assert "still active after 1 merge request" in line["error"] and "failed, 40 %" in line["error"]
    assert not line.get("retry_later")
    assert _on_primary(sandbox, owned, primary, dup)
    assert run.run() == ExitCode.FAILED and _merges(sandbox) == 1   # the bound holds on a re-run too


def test_an_acknowledged_merge_with_no_job_is_asked_again(one_set, caplog):
    run, sandbox, clock, primary, dup, owned = one_set("lost_first")
    assert run.preview() == 0 and run.run() == 0
    assert sandbox.dump()["rev_users"][dup]["_retired"] and _merges(sandbox) == 2
    assert "DevRev shows no merge job): asking again" in caplog.text


def test_a_merge_refused_with_a_reason_is_final_and_never_waited_out(one_set):
    run, sandbox, clock, primary, dup, owned = one_set("refused")
    assert run.preview() == 0 and run.run() == ExitCode.FAILED
    (line,) = run.latest_report()["sets"]
    assert "merge limit exceeded" in line["error"] and "400 bad_request" in line["error"]
    assert "final for this set" in line["error"]
    assert _on_primary(sandbox, owned, primary, dup)
    assert not sandbox.dump()["rev_users"][dup]["_retired"]
    merges, waited = _merges(sandbox), sum(clock.waits)
    assert merges == 1 and waited < 1    # no poll after a refusal
    assert run.run() == ExitCode.FAILED
    (again,) = run.latest_report()["sets"]
    assert again["error"] == line["error"]
    assert _merges(sandbox) == merges and sum(clock.waits) == waited   # not asked again, nothing waited out


def test_a_merge_refused_for_one_contact_fails_that_set_only(tmp_path, monkeypatch, make_sandbox):
    """A 403 on rev-users.merge naming the duplicate (`object_ids`) is about that contact: its set
    fails with the line, every other set merges (a 403 naming nothing means the token may not
    merge at all: moved_only for every set, tested elsewhere)."""
    from devrev_sandbox.faults import Faults
    dataset = build_dataset(3, seed=23, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    target = dataset.merge_sets[1]
    dup = sandbox.key_id(target["duplicates"][0])
    sandbox.set_faults(Faults(forbidden_objects=(dup,)))
    assert run.preview() == 0 and run.run() == ExitCode.FAILED
    lines = {s["email"]: s for s in run.latest_report()["sets"]}
    assert lines[target["email"]]["status"] == "failed"
    assert f"the token may not write {dup}" in lines[target["email"]]["error"]
    assert {s["status"] for e, s in lines.items() if e != target["email"]} == {"merged"}
    assert not sandbox.dump()["rev_users"][dup]["_retired"]


def test_a_refusal_on_the_first_set_stops_the_run_and_can_be_asked_again(tmp_path, monkeypatch, make_sandbox,
                                                                          capsys):
    dataset = build_dataset(3, seed=24, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1, merge_job="refused")
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run() == ExitCode.FAILED
    assert "the first set's merge did not complete (merge refused" in capsys.readouterr().err
    lines = run.latest_report()["sets"]
    assert [s["status"] for s in lines] == ["failed", "pending", "pending"] and lines[0]["reason"] == "merge_refused"
    others = {sandbox.key_id(d) for ms in dataset.merge_sets[1:] for d in ms["duplicates"]}
    assert not any(e["endpoint"] == "works.update" and set(e["body"].get("reported_by", {}).get("set", [])) & others
                   for e in sandbox.write_attempts())
    earlier = len(lines[0]["moved_ticket_ids"]) + len(lines[0]["moved_conversation_ids"])
    assert earlier > 0
    capsys.readouterr()
    assert run.preview() == 0                   # the preview says what a run would do: not ask again
    first = run.latest_report("preview")["sets"][0]
    assert first["status"] == "merge_refused" and "--ask-refused-merges-again" in first["detail"]
    out = capsys.readouterr().out
    assert "refused earlier" in out and "whose merge DevRev refused earlier" in out and "3 would be merged" not in out
    assert run.run("--ask-refused-merges-again") == ExitCode.USAGE     # that preview did not show asking again
    assert run.preview("--ask-refused-merges-again") == 0
    assert run.latest_report("preview")["sets"][0]["status"] == "would_merge"
    assert run.preview() == 0
    sandbox.merge_job = "completed"           # DevRev's reason is gone
    assert run.run() == ExitCode.FAILED         # a re-run alone does not ask again...
    mine = run.latest_report()["totals"]["this_run"]     # ...and moved nothing: "this run" says so
    assert (mine["tickets_moved"], mine["conversations_moved"]) == (0, 0)
    assert "0 tickets and 0 conversations moved" in capsys.readouterr().out.split("So far")[0]
    assert run.preview("--ask-refused-merges-again") == 0
    assert run.run("--ask-refused-merges-again") == 0   # ...this does
    report = run.latest_report()
    assert {s["status"] for s in report["sets"]} == {"merged"}
    totals = report["totals"]       # the first set's moves were the first run's: only "so far" counts them
    assert totals["this_run"]["tickets_moved"] + totals["this_run"]["conversations_moved"] == \
        totals["tickets_moved"] + totals["conversations_moved"] - earlier


def test_a_re_run_reads_a_pending_merge_job_at_once_instead_of_waiting_again(one_set, monkeypatch):
    run, sandbox, clock, primary, dup, owned = one_set("in_progress")
    assert run.preview() == 0 and run.run() == ExitCode.TEMPORARY
    from merging import engine
    later = time.time() + 3600
    monkeypatch.setattr(engine, "_wall", lambda: later)   # an hour later: the request is older than the timeout
    clock.waits.clear()
    assert run.run() == ExitCode.TEMPORARY
    (line,) = run.latest_report()["sets"]
    assert line["reason"] == "merge_pending" and "in_progress" in line["error"]
    assert sum(clock.waits) < 1          # read the job at once, no second 120 s wait
