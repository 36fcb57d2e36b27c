"""Issue 22 section 4: what changes under the tool while a set runs. The primary deactivated or
given another email between the live checks and the merge (or the reference), and lists that lag
behind writes (emulator mode listing_lag_seconds). Each runs merge_contacts.py against the
emulator and checks what DevRev holds afterwards and the set's line."""
from __future__ import annotations

import collections

import pytest

import devrev_client
from devrev_sandbox.dataset import build_dataset
from helpers import FakeClock, MergeRun
from plumbing.cli import ExitCode


def _dataset():
    return build_dataset(2, seed=41, tickets=(2, 3), conversations=(1, 2), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=0, skipped=False)


def _owned_by(sandbox, dup: str) -> set[str]:
    return {oid for kind, fld in (("works", "reported_by"), ("conversations", "members"))
            for oid, o in sandbox.dump()[kind].items() if dup in {u["id"] for u in o[fld]}}


def _names(sandbox, oid: str) -> set[str]:
    dump = sandbox.dump()
    obj = dump["works"].get(oid) or dump["conversations"][oid]
    return {u["id"] for u in obj.get("reported_by") or obj.get("members") or []}


@pytest.mark.parametrize("change, said", [
    (lambda user: user.update(state="deactivated"), "is 'deactivated' now"),
    (lambda user: user.update(email="someone.else@example.com"), "has email 'someone.else@example.com' now"),
])
def test_a_primary_changed_after_the_live_checks_is_not_merged_into(tmp_path, monkeypatch, make_sandbox, change,
                                                                    said):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    first = dataset.merge_sets[0]
    primary, dup = sandbox.key_id(first["primary"]), sandbox.key_id(first["duplicates"][0])
    owned = _owned_by(sandbox, dup)
    assert run.preview() == 0
    done = []

    def admin_changes_the_primary(sb, entry):   # while the tool moves the first ticket
        if entry["endpoint"] == "works.update" and entry.get("applied") and not done:
            with sb.state.lock:
                change(sb.state.users[primary])
            done.append(True)
    sandbox.on_request = admin_changes_the_primary
    assert run.run() == ExitCode.FAILED
    lines = {s["email"]: s for s in run.latest_report()["sets"]}
    line = lines[first["email"]]
    assert line["status"] == "failed" and said in line["error"]
    assert "was not merged into it and nothing was retired" in line["error"]
    merges = [e["body"]["secondary_user"] for e in sandbox.write_attempts() if e["endpoint"] == "rev-users.merge"]
    assert dup not in merges and not sandbox.dump()["rev_users"][dup]["_retired"]
    # what was moved before the change stays on the primary, nothing is lost
    assert all(primary in _names(sandbox, oid) or dup in _names(sandbox, oid) for oid in owned)


def test_a_primary_changed_before_the_reference_keeps_its_own(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    first = dataset.merge_sets[0]
    primary, dup = sandbox.key_id(first["primary"]), sandbox.key_id(first["duplicates"][0])
    own_ref = sandbox.dump()["rev_users"][primary]["external_ref"]
    assert run.preview() == 0

    def deactivated_while_merging(sb, entry):
        if entry["endpoint"] == "rev-users.merge" and entry["body"].get("secondary_user") == dup:
            with sb.state.lock:
                sb.state.users[primary]["state"] = "deactivated"
    sandbox.on_request = deactivated_while_merging
    assert run.run() == ExitCode.FAILED
    line = {s["email"]: s for s in run.latest_report()["sets"]}[first["email"]]
    assert "is 'deactivated' now" in line["error"] and "was not given the duplicates' reference" in line["error"]
    state = sandbox.dump()["rev_users"]
    assert state[dup]["_retired"] and state[primary]["external_ref"] == own_ref
    assert not [e for e in sandbox.write_attempts() if e["endpoint"] == "rev-users.update"
                and e["body"].get("id") == primary]


def test_a_list_lagging_behind_the_moves_is_not_new_work(tmp_path, monkeypatch, make_sandbox, caplog):
    dataset = _dataset()
    clock = FakeClock()
    sandbox = make_sandbox(dataset.seed, clock=clock, merge_retire_after_gets=1, listing_lag_seconds=5.0)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda _client, seconds: clock.wait(seconds))
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    assert {s["status"] for s in run.latest_report()["sets"]} == {"merged"}
    sent = collections.Counter(e["body"]["id"] for e in sandbox.write_attempts()
                               if e["endpoint"] == "works.update" and "reported_by" in e["body"])
    assert sent and max(sent.values()) == 1        # no ticket's reporters sent twice
    assert "appeared under" not in caplog.text      # nothing called new that was not
    assert "DevRev's list lags behind its writes" in caplog.text   # the lag was met, and told apart
    report = run.latest_report()
    assert all(len(d["backups"]) == 1 for s in report["sets"] for d in s["duplicates"])   # one round each


def test_the_newest_duplicate_is_found_by_instant_not_by_text(tmp_path, monkeypatch, make_sandbox):
    """`10:00:00Z` sorts after `10:00:00.500Z` as text, but is half a second older: the primary
    takes the reference of the duplicate modified last."""
    dataset = build_dataset(1, seed=42, tickets=(1, 1), conversations=(0, 0), two_duplicate_sets=1,
                            skipped=False)
    (first,) = dataset.merge_sets
    later, earlier = first["duplicates"]
    dates = {later: "2026-03-01T10:00:00.500Z", earlier: "2026-03-01T10:00:00Z"}
    for rev in dataset.seed["rev_users"]:
        if rev["key"] in dates:
            rev["modified_date"] = dates[rev["key"]]
    assert dates[earlier] > dates[later]   # as text, the wrong one is "newest"
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    refs = {key: sandbox.dump()["rev_users"][sandbox.key_id(key)]["external_ref"] for key in dates}
    assert run.preview() == 0 and run.run() == 0
    (line,) = run.latest_report()["sets"]
    assert line["external_ref_set"] == refs[later]
    assert sandbox.dump()["rev_users"][sandbox.key_id(first["primary"])]["external_ref"] == refs[later]
