"""What changes under the tool while a set runs (issue 22 §4), each played by the emulator and met
by a whole run of the tool: a fresh download URL refused for a moment, rate-limit headers from a
clock that is not ours, a 401 that names its cause, a 403 that names its object. Fake clocks: the
client's waits move the emulator's time on, nothing really sleeps."""
from __future__ import annotations

import re

import pytest

import devrev_client
from devrev_api import assumptions as facts
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults
from helpers import FakeClock, MergeRun, expected_after_merge, normalized

DATA = build_dataset(4, seed=7, tickets=(1, 3), attachment_rate=0.6)


def _run(tmp_path, monkeypatch, make_sandbox, dataset=DATA, **kwargs):
    clock = FakeClock()
    sandbox = make_sandbox(dataset.seed, clock=clock, merge_retire_after_gets=1, **kwargs)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda _client, seconds: clock.wait(seconds))
    return sandbox, clock, MergeRun(tmp_path, sandbox, dataset, monkeypatch)


def _merged_all(before, sandbox, dataset=DATA) -> dict:
    return expected_after_merge(before, sandbox, dataset, {ms["email"] for ms in dataset.merge_sets})


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "ERROR" in line or line.startswith("error:")]


# --------------------------------------------------------------------------- 1. a fresh URL refused
def test_a_fresh_url_refused_for_two_seconds_is_located_again_and_every_file_is_backed_up(
        tmp_path, monkeypatch, make_sandbox):
    sandbox, clock, run = _run(tmp_path, monkeypatch, make_sandbox, download_url_refused_seconds=2.0)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run() == 0
    assert normalized(sandbox.dump()) == _merged_all(before, sandbox)
    files = [e for e in sandbox.request_log if e["server"] == "files"]
    refused = [e for e in files if e.get("fault") == "fresh_url_refused"]
    assert refused and any(e["status"] == 200 for e in files)
    # every attachment is in the backup on disk, byte for byte what DevRev holds
    held = [p for p in (tmp_path / "backups").rglob("attachments/artifact-*") if p.is_file()]
    assert len({p.name for p in held}) == len({e["path"] for e in files})
    for path in held:
        art = sandbox.state.artifact_copy(re.match(r"artifact-(\d+)_", path.name).group(1))
        assert path.read_bytes() == sandbox.state.artifact_bytes(art, 0, art["_size"])
    assert max(clock.waits) <= 4.0   # backing off over a few seconds, not a long wait


def test_a_url_refused_past_the_bound_fails_its_set_without_claiming_it_expired(
        tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox, clock, run = _run(tmp_path, monkeypatch, make_sandbox, download_url_refused_seconds=3600.0)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    report = run.latest_report()
    failed = [s for s in report["sets"] if s["status"] == "failed"]
    assert failed
    for line in failed:
        assert "kept refusing" in line["error"] and "a freshly located one each time" in line["error"]
        assert "expire" not in line["error"]
    assert "kept refusing" in err and "expire" not in err
    # a duplicate whose backup could not be made was not merged: each failed set keeps one
    after = normalized(sandbox.dump())
    for ms in DATA.merge_sets:
        if ms["email"] in {s["email"] for s in failed}:
            assert any(after["rev_users"][sandbox.key_id(d)] == before["rev_users"][sandbox.key_id(d)]
                       for d in ms["duplicates"])
    # each download was tried for the bound, and not much longer (one artifact at a time per set)
    assert sum(clock.waits) >= facts.PRESIGNED_URL_REFUSAL_SECONDS


# --------------------------------------------------------------------------- 2. DevRev's clock is off
def test_rate_limit_resets_an_hour_off_are_not_waited_for_and_each_long_wait_is_said(
        tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox, clock, run = _run(tmp_path, monkeypatch, make_sandbox, rate_limit=(40, 300.0),
                               server_clock_skew=3600.0)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run() == 0
    err = capsys.readouterr().err
    assert normalized(sandbox.dump()) == _merged_all(before, sandbox)
    assert [e for e in sandbox.api_calls() if e.get("status") == 429]   # the window was met
    said = [line for line in err.splitlines() if "DevRev's rate limit: waiting" in line]
    assert said and all("(Retry-After)" in line for line in said)
    assert "clocks disagree" in err
    # no wait for a reset an hour away: every long wait is a 429's Retry-After, each said on screen
    long_waits = [w for w in clock.waits if w > facts.LONG_WAIT_SECONDS]
    assert long_waits and len(long_waits) <= len(said)
    assert max(long_waits) <= facts.RATE_LIMIT_WINDOW_SECONDS


def test_with_clocks_that_agree_the_pacer_waits_for_the_reset_and_says_so(
        tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox, clock, run = _run(tmp_path, monkeypatch, make_sandbox, rate_limit=(40, 300.0))
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run() == 0
    err = capsys.readouterr().err
    assert normalized(sandbox.dump()) == _merged_all(before, sandbox)
    assert "(X-Ratelimit-Reset" in err and "clocks disagree" not in err
    assert max(clock.waits) <= facts.RATE_LIMIT_WINDOW_SECONDS + 1


# --------------------------------------------------------------------------- 3. a 401 names its cause
@pytest.mark.parametrize("cause, says", [
    ("token_expired", ["has expired", "make a new personal access token", "Personal Access Token", "DEVREV_API_TOKEN",
                       ".env"]),
    ("token_revoked", ["was revoked", "make a new personal access token", "DEVREV_API_TOKEN"]),
    ("dev_org_deactivated", ["organization of this token is deactivated", "a new token will not help"]),
    ("unauthenticated", ["check DEVREV_API_TOKEN"]),
])
def test_a_refused_token_says_why_in_one_line(cause, says, tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox, _clock, run = _run(tmp_path, monkeypatch, make_sandbox, faults=Faults(token_refusal=cause))
    assert run.run("--check") == 1           # the check's own line
    assert run.preview() == 2                 # a preview (or run) stops at once: exit 2
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        lines = [line for line in text.splitlines() if f"401 {cause}" in line]
        assert len(lines) == 1, text
        assert all(said in lines[0] for said in says), lines[0]
    if cause != "token_expired":
        assert "expired" not in captured.out + captured.err
    assert "Traceback" not in captured.err and sandbox.writes() == []


def test_a_token_that_expires_mid_run_stops_it_saying_so_and_a_new_token_finishes_it(
        tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox, _clock, run = _run(tmp_path, monkeypatch, make_sandbox)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    served = len(sandbox.api_calls())
    sandbox.set_faults(Faults(token_refusal="token_expired", token_refusal_after=served // 2))
    capsys.readouterr()
    assert run.run() == 2
    err = capsys.readouterr().err
    assert "the token has expired: make a new personal access token" in err and "DEVREV_API_TOKEN" in err
    assert "Traceback" not in err
    sandbox.set_faults(Faults())   # the admin made a new token
    assert run.run() == 0
    assert normalized(sandbox.dump()) == _merged_all(before, sandbox)


# --------------------------------------------------------------------------- 4. a 403 names its object
DEMO = build_dataset(12, seed=7)


def test_a_403_naming_one_ticket_fails_that_set_only(tmp_path, monkeypatch, make_sandbox, capsys):
    clock = FakeClock()
    sandbox = make_sandbox(DEMO.seed, clock=clock, merge_retire_after_gets=1)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda _client, seconds: clock.wait(seconds))
    run = MergeRun(tmp_path, sandbox, DEMO, monkeypatch)
    before = normalized(sandbox.dump())
    # a ticket of the third set (not the first, which runs alone as the canary)
    target = DEMO.merge_sets[2]
    dups = {sandbox.key_id(d) for d in target["duplicates"]}
    ticket = next(w for w in sorted(before["works"]) if dups & set(before["works"][w]["reported_by"]))
    sandbox.set_faults(Faults(forbidden_objects=(ticket,)))
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    report = run.latest_report()
    by_email = {s["email"]: s for s in report["sets"]}
    assert by_email[target["email"]]["status"] == "failed"
    line = by_email[target["email"]]["error"]
    assert f"the token may not write {ticket}" in line and "403 forbidden" in line
    assert f"the token may not write {ticket}" in err
    others = {ms["email"] for ms in DEMO.merge_sets} - {target["email"]}
    assert {by_email[e]["status"] for e in others} <= {"merged"}
    after = normalized(sandbox.dump())
    assert after["works"][ticket] == before["works"][ticket]
    expected = expected_after_merge(before, sandbox, DEMO, others)
    # the failed set's other items may have moved already (backed up, resumable): compare the rest
    for kind in ("works", "conversations"):
        for oid, item in expected[kind].items():
            if not dups & set(before[kind][oid].get("reported_by", before[kind][oid].get("members", []))):
                assert after[kind][oid] == item, oid
    # the token's user is given access: the re-run finishes the set
    sandbox.set_faults(Faults())
    assert run.run() == 0
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, DEMO,
                                                              {ms["email"] for ms in DEMO.merge_sets})


def test_a_403_naming_no_object_still_stops_the_run(tmp_path, monkeypatch, make_sandbox):
    sandbox, _clock, run = _run(tmp_path, monkeypatch, make_sandbox, token_permissions="read_only")
    assert run.preview() == 0
    assert run.run() == 2
    statuses = [s["status"] for s in run.latest_report()["sets"]]
    assert "failed" not in statuses and "pending" in statuses
