"""What else a duplicate may own in the 2026 API (issue 21 §5): work items that are not tickets, and
frozen tickets and conversations. The preview names them per set; the merge stops at the first,
naming its type and id, before the duplicate is merged."""
from __future__ import annotations

import copy

import pytest

from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun


def _dataset(kind: str):
    data = build_dataset(2, seed=13, tickets=(1, 2), conversations=(1, 1), comments=(0, 1), attachment_rate=0,
                         skipped=False)
    data = copy.deepcopy(data)
    dup = data.merge_sets[0]["duplicates"][0]
    data.seed["tickets"].append({"key": "other-w", "type": kind, "title": "reported by the copy",
                                 "reported_by": [dup], "owned_by": ["agent1"]})
    frozen = next(t for t in data.seed["tickets"] if data.merge_sets[1]["duplicates"][0] in t.get("reported_by", []))
    frozen["is_frozen"] = True
    return data


# the 2026 public spec knows issue and ticket; opportunity and task are the beta's (S16)
@pytest.mark.parametrize("kind, exempt", [("issue", ()), ("opportunity", ("works.list response",)),
                                          ("task", ("works.list response",))])
def test_the_preview_names_other_work_items_and_frozen_ones_and_the_merge_stops_at_the_first(
        kind, exempt, tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset(kind)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1, spec_exempt=exempt)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    preview = run.latest_report("preview")
    first, second = (next(s for s in preview["sets"] if s["email"] == ms["email"]) for ms in dataset.merge_sets)
    other = sandbox.dump()["works"][sandbox.key_id("other-w")]
    assert [w for d in first["duplicates"] for w in d["other_works"]] == [f"{kind} {other['display_id']}"]
    assert preview["totals"]["sets_with_other_works"] == 1 and preview["totals"]["frozen"] == 1
    assert len([f for d in second["duplicates"] for f in d["frozen"]]) == 1
    assert first["status"] == "skipped" and first["reason"] == "other_work_items"
    assert f"{kind} {other['display_id']}" in first["detail"]
    before = sandbox.dump()
    assert run.run() == 0                            # skipped as the preview showed: nothing of it touched
    report = run.latest_report()
    line = next(s for s in report["sets"] if s["email"] == first["email"])
    assert line["status"] == "skipped" and line["reason"] == "other_work_items"
    dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    after = sandbox.dump()
    assert after["rev_users"][dup]["_retired"] is False
    for kind_, field in (("works", "reported_by"), ("conversations", "members")):
        assert {i for i, o in after[kind_].items() if dup in [u["id"] for u in o[field]]} == \
            {i for i, o in before[kind_].items() if dup in [u["id"] for u in o[field]]}


def test_the_merge_still_stops_at_one_that_appeared_after_the_preview(tmp_path, monkeypatch, make_sandbox):
    """The late check stays: an issue filed under the duplicate after the preview stops the set."""
    dataset = _dataset("issue")
    dataset.seed["tickets"] = [t for t in dataset.seed["tickets"] if t.get("key") != "other-w"]
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    dup = dataset.merge_sets[0]["duplicates"][0]
    sandbox.add_ticket({"title": "an issue filed meanwhile", "type": "issue", "reported_by": [dup],
                        "owned_by": ["agent1"]})
    assert run.run() == 1
    line = next(s for s in run.latest_report()["sets"] if s["email"] == dataset.merge_sets[0]["email"])
    assert line["status"] == "failed" and "issue ISS-" in line["error"]
    assert sandbox.dump()["rev_users"][sandbox.key_id(dup)]["_retired"] is False
