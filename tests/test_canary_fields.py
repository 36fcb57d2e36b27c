"""Issue 22 section 3: the first set's comparison tells a side effect of the tool's writes from a
field that DevRev changes by itself (devrev_api.assumptions.FIELDS_THAT_CHANGE_BY_THEMSELVES)."""
from __future__ import annotations

from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun
from merging import canary


def _dataset():
    return build_dataset(3, seed=23, tickets=(2, 3), conversations=(1, 2), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=0, skipped=False)


def test_fields_that_change_by_themselves_are_reported_and_do_not_stop_the_run(tmp_path, monkeypatch,
                                                                                make_sandbox, capsys):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1, fields_change_by_themselves=True)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run() == 0
    report = run.latest_report()
    assert report["canary"]["differences"] == []
    moved = report["canary"]["moved_by_themselves"]
    assert {c["field"] for c in moved} == {"custom_fields.tnt__work_duration_counter", "sync_metadata",
                                           "sentiment_modified_date"}
    assert all(c["why"] for c in moved)
    assert {s["status"] for s in report["sets"]} == {"merged"}
    seen = capsys.readouterr()
    (line,) = [e for e in (seen.out + seen.err).splitlines() if "canary" in e]
    assert "3 fields that DevRev changes by itself also changed" in line and "as expected" in line


def test_a_side_effect_still_stops_the_run_among_fields_that_tick(tmp_path, monkeypatch, make_sandbox):
    """An automation renaming a ticket when its reporters change: stopped, ticking fields or not."""
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1, fields_change_by_themselves=True)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    renamed = []

    def automation(sb, entry):
        if entry["endpoint"] == "works.update" and entry.get("applied") and not renamed:
            with sb.state.lock:
                sb.state.works[entry["body"]["id"]]["stage"] = {"name": "awaiting_customer_response"}
            renamed.append(entry["body"]["id"])
    sandbox.on_request = automation
    assert run.run() == 1
    report = run.latest_report()
    assert [d["field"] for d in report["canary"]["differences"]] == ["stage"]
    assert report["canary"]["moved_by_themselves"]
    assert [s["status"] for s in report["sets"]] == ["merged", "pending", "pending"]


def test_which_fields_change_by_themselves():
    assert canary.changes_by_itself("custom_fields.tnt__work_duration")
    assert canary.changes_by_itself("custom_fields.tnt__work_duration_counter")
    assert canary.changes_by_itself("sentiment_summary") and canary.changes_by_itself("sla_summary")
    for field in ("stage", "title", "owned_by", "custom_fields.app_email_integration__members", "severity",
                  "state_display", "custom_fields"):
        assert canary.changes_by_itself(field) is None, field
    before = {"id": "t1", "display_id": "TKT-1", "custom_fields": {"tnt__work_duration": 5, "tnt__x": "a"}}
    after = dict(before, custom_fields={"tnt__work_duration": 9, "tnt__x": "b"})
    changes = canary.all_changes("ticket", before, after, {})
    assert [(c["field"], "why" in c) for c in changes] == [("custom_fields.tnt__work_duration", True),
                                                           ("custom_fields.tnt__x", False)]
    assert [d["field"] for d in canary.differences("ticket", before, after, {})] == ["custom_fields.tnt__x"]
