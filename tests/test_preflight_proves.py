"""The preflight proves what it says (issue 22 section 5): the members filter of
conversations.list is tested on a known conversation of the set's workspace, and a check
that could not run says "not checked", is counted apart and does not stop a run."""
from __future__ import annotations

import pytest

import merge_contacts
from devrev_api.errors import BadRequestError
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.modes import BehaviourModes
from helpers import MergeRun

CONTROL = "conversations.list by a known member"


def _dataset(conversations=(1, 2)):
    return build_dataset(3, seed=23, tickets=(1, 2), conversations=conversations, comments=(0, 0),
                         attachment_rate=0, two_duplicate_sets=0, skipped=False)


def _check(run) -> tuple[int, list[str]]:
    code = merge_contacts.main(["--check", "--csv", run.csv, "--log-dir", str(run.dir / "logs")])
    return code, run.capsys.readouterr().out.splitlines()


def _run(tmp_path, monkeypatch, make_sandbox, capsys, dataset, **modes):
    sandbox = make_sandbox(dataset.seed, modes=BehaviourModes(merge_retire_after_gets=1, **modes))
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    run.capsys = capsys
    return run


def _line(lines: list[str], name: str) -> str:
    found = [line for line in lines if f" {name}: " in line]
    assert len(found) == 1, lines
    return found[0]


def test_a_members_filter_that_works_finds_the_known_conversation(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset()
    run = _run(tmp_path, monkeypatch, make_sandbox, capsys, dataset)
    code, lines = _check(run)
    assert code == 0
    control = _line(lines, CONTROL)
    assert control.startswith("ok ") and "is returned when listing" in control
    # the known conversation is one of the set's own duplicate's
    dup = run.sandbox.dump()["rev_users"][run.sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])]
    assert f"which {dup['display_id']} is in" in control
    assert not [line for line in lines if line.startswith(("not checked", "FAILED", "note"))]
    assert run.sandbox.write_attempts() == []


def test_a_members_filter_answering_nothing_fails_the_check_and_merges_nothing(tmp_path, monkeypatch, make_sandbox,
                                                                               capsys):
    run = _run(tmp_path, monkeypatch, make_sandbox, capsys, _dataset(), conversations_members_filter="empty")
    code, lines = _check(run)
    assert code == 1
    control = _line(lines, CONTROL)
    assert control.startswith("FAILED ") and "is not returned" in control
    # the contacts' own listings came back empty: no longer "ok", nothing was compared
    members = [line for line in lines if " conversations.list members: " in line]
    assert members and all(line.startswith("not checked ") and "nothing to compare" in line for line in members)
    assert lines[-1] == "note   5 ok, 2 not checked, 1 failed: a check not checked is not a pass"
    # the preview and the real run stop in their preflight: nothing is written, no contact merged
    assert run.preview() == 1
    assert run.run("--skip-preview-check") == 1
    err = capsys.readouterr().err
    assert f"FAILED {CONTROL}" in err and "nothing was started" in err
    assert run.sandbox.write_attempts() == []


def test_no_conversation_to_test_with_is_not_checked_and_the_run_goes_on(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset(conversations=(0, 0))
    run = _run(tmp_path, monkeypatch, make_sandbox, capsys, dataset)
    code, lines = _check(run)
    assert code == 0
    workspace = run.sandbox.dump()["rev_users"][run.sandbox.key_id(dataset.merge_sets[0]["primary"])]["rev_org"]
    assert _line(lines, CONTROL) == (f"not checked {CONTROL}: no conversation of {workspace['display_id']} with a "
                                     f"contact member to test the filter with")
    assert lines[-1].startswith("note   ") and " not checked, 0 failed" in lines[-1]
    assert not [line for line in lines if line.startswith("FAILED")]
    # a check that could not run is shown and counted, and does not stop the run
    assert run.preview() == 0 and run.run() == 0
    err = capsys.readouterr().err
    assert f"not checked {CONTROL}" in err and "not checked, 0 failed; the run goes on" in err
    assert {s["status"] for s in run.latest_report()["sets"]} == {"merged"}


def test_a_stale_first_set_is_not_checked_rather_than_ok(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset()
    run = _run(tmp_path, monkeypatch, make_sandbox, capsys, dataset)
    first = dataset.merge_sets[0]
    assert run.run("--skip-preview-check", "--only", first["email"]) == 0   # merged before: its duplicate is gone
    sandbox = run.sandbox
    with sandbox.state.lock:   # and its primary deleted since
        sandbox.state.users[sandbox.key_id(first["primary"])]["state"] = "deleted"
    capsys.readouterr()
    code, lines = _check(run)
    assert code == 0
    stale = [line for line in lines if " filters on " in line]
    assert len(stale) == 2 and all(line.startswith("not checked ") for line in stale)
    assert any(line.endswith("merged already") for line in stale)
    assert _line(lines, CONTROL) == f"not checked {CONTROL}: no contact of the set is in DevRev to find a workspace by"
    assert not [line for line in lines if "reported_by" in line or " members: " in line]
    assert lines[-1] == "note   3 ok, 3 not checked, 0 failed: a check not checked is not a pass"


def test_the_emulator_filters_conversations_by_account_and_workspace_as_specified(make_sandbox, make_client):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, spec_requests=False)
    client = make_client(sandbox)
    conversations = list(sandbox.dump()["conversations"].values())
    accounts = {c["account"]["id"] for c in conversations}
    assert len(accounts) == 2 and all(c["account"]["display_id"].startswith("ACC-") for c in conversations)
    for account in accounts:
        listed = client.paginate("conversations.list", {"account": [account]}, "conversations")
        assert sorted(c["id"] for c in listed) == sorted(c["id"] for c in conversations
                                                         if c["account"]["id"] == account)
    org = sandbox.dump()["rev_users"][sandbox.key_id(dataset.merge_sets[0]["primary"])]["rev_org"]["id"]
    by_org = [c["id"] for c in client.list_conversations(None, rev_org=org)]
    assert by_org and len(by_org) < len(conversations)
    for refused in ({"account": [org]}, {"rev_orgs": [next(iter(accounts))]}, {"account": "not-a-list"},
                    {"accounts": [next(iter(accounts))]}):
        with pytest.raises(BadRequestError):
            client.call("conversations.list", refused, retry_transient=False)
