"""`merge_contacts.py --check` (the read-only preflight, also run before every preview and
real run) and the canary (the first set's objects re-read and compared with its backup)."""
from __future__ import annotations

import merge_contacts
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Scripted
from helpers import MergeRun
from merging import canary


def _dataset():
    return build_dataset(3, seed=23, tickets=(2, 3), conversations=(1, 2), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=0, skipped=False)


def _check(run, *args) -> int:
    return merge_contacts.main(["--check", "--log-dir", str(run.dir / "logs"), *args])


def test_check_passes_with_one_line_per_check_and_writes_nothing(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, rate_limit=1000)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert _check(run, "--csv", run.csv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok") and "token" in lines[0] and "DEVU-1" in lines[0]
    assert "1000 calls per window" in lines[1]
    first = dataset.merge_sets[0]
    filters = [line for line in lines if "reported_by" in line or "members" in line]
    assert len(filters) == 2 * (1 + len(first["duplicates"])) and all(line.startswith("ok") for line in filters)
    assert sandbox.write_attempts() == []
    assert not (tmp_path / "reports").exists() and not (tmp_path / "savepoints").exists()


def test_check_without_a_csv_checks_token_and_rate_limit_only(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox(_dataset().seed)
    run = MergeRun(tmp_path, sandbox, _dataset(), monkeypatch)
    assert _check(run) == 0
    out = capsys.readouterr().out
    assert "token" in out and "rate limit" in out and "not checked" in out
    assert {e["endpoint"] for e in sandbox.api_calls()} == {"dev-users.self"}


def test_a_base_url_with_a_wrong_path_is_named_not_only_the_token(tmp_path, monkeypatch, make_sandbox, capsys):
    """Issue 24: DEVREV_BASE_URL with a path (https://api.devrev.ai/internal) made every call fail
    and was reported as a token failure alone: the line names the path too."""
    sandbox = make_sandbox(_dataset().seed)
    run = MergeRun(tmp_path, sandbox, _dataset(), monkeypatch)
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url + "/internal")
    capsys.readouterr()
    assert run.preview() == 2
    err = capsys.readouterr().err
    assert "DEVREV_BASE_URL has the path /internal" in err and "DevRev's API takes none" in err
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    assert run.preview() == 0


def test_check_fails_on_a_rejected_token_and_on_a_filter_not_applied(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    wrong = "wrong-token-of-a-plausible-length-0123456789"
    monkeypatch.setenv("DEVREV_API_TOKEN", wrong)
    assert _check(run, "--csv", run.csv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("FAILED token") and wrong not in out[0]
    monkeypatch.setenv("DEVREV_API_TOKEN", sandbox.token)
    # a tenant where the members filter is ignored: every conversation comes back
    everyone = {"conversations": [{k: v for k, v in c.items() if k != "_retired"}
                                  for c in sandbox.dump()["conversations"].values()]}
    sandbox.script("conversations.list", Scripted(200, everyone))
    assert _check(run, "--csv", run.csv) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "conversations.list members" in failed[0] and "not applied" in failed[0]


def test_a_failing_preflight_starts_no_set(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    everyone = {"works": list(sandbox.dump()["works"].values())}
    sandbox.script("works.list", Scripted(200, everyone))
    assert run.run() == 1
    assert sandbox.write_attempts() == []


def _changes_a_title_on_the_first_move(sandbox):
    """A DevRev automation that, when a ticket's reporters change, renames it."""
    done = []

    def hook(sb, entry):
        if entry["endpoint"] == "works.update" and entry.get("applied") and not done:
            with sb.state.lock:
                sb.state.works[entry["body"]["id"]]["title"] = "renamed by an automation"
            done.append(entry["body"]["id"])

    sandbox.on_request = hook
    return done


def test_the_canary_stops_the_run_on_a_change_the_tool_did_not_make(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    first_dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    first_items = {oid for kind, field in (("works", "reported_by"), ("conversations", "members"))
                   for oid, obj in sandbox.dump()[kind].items() if first_dup in [u["id"] for u in obj[field]]}
    first_items.add(sandbox.key_id(dataset.merge_sets[0]["primary"]))
    assert run.preview() == 0
    changed = _changes_a_title_on_the_first_move(sandbox)
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    report = run.latest_report()
    diffs = report["canary"]["differences"]
    assert [d["field"] for d in diffs] == ["title"] and diffs[0]["after"] == "renamed by an automation"
    assert sum(line.startswith("canary") for line in err.splitlines()) == 1
    html = (tmp_path / "reports" / f"merge_report_{report['run_id']}.html").read_text(encoding="utf-8")
    canary_part = html.split("Canary: the first set re-read", 1)[1].split("<h2>", 1)[0]   # its own section
    assert "renamed by an automation" in canary_part and "not written by the tool" in canary_part
    statuses = [s["status"] for s in report["sets"]]
    assert statuses == ["merged", "pending", "pending"]
    assert changed and {e["body"].get("secondary_user") for e in sandbox.write_attempts()
                        if e["endpoint"] == "rev-users.merge"} == {first_dup}
    assert {e["body"].get("id") or e["body"].get("object") for e in sandbox.write_attempts()
            if e["endpoint"] != "rev-users.merge"} <= first_items   # the merge note is on the first primary
    # a re-run accepts the first set as it is and goes on
    assert run.run() == 0


def test_no_canary_skips_the_comparison(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    _changes_a_title_on_the_first_move(sandbox)
    assert run.run("--no-canary") == 0
    assert run.latest_report()["canary"] is None
    assert {s["status"] for s in run.latest_report()["sets"]} == {"merged"}


def test_expected_changes_are_not_differences():
    dup, primary = "don:dup", "don:primary"
    before = {"id": "t1", "display_id": "TKT-1", "title": "x", "modified_date": "a",
              "reported_by": [{"type": "rev_user", "id": dup, "state": "active"}],
              "custom_fields": {"members": [dup, primary]},
              "created_by": {"type": "rev_user", "id": primary, "external_ref": "REVU-1"}}
    after = dict(before, modified_date="b", reported_by=[{"type": "rev_user", "id": primary}],
                 custom_fields={"members": [primary]},
                 created_by={"type": "rev_user", "id": primary, "external_ref": "user_1"})
    assert canary.differences("ticket", before, after, {dup: primary}) == []
    assert [d["field"] for d in canary.differences("ticket", before, dict(after, title="y"), {dup: primary})] \
        == ["title"]
