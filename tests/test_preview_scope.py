"""A real run does exactly what its preview showed, or refuses (exit 2, one line naming
the difference); narrower runs and batches of --max-merges work."""
from __future__ import annotations

import pytest

from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun
from merging.preview_scope import Scope, choose_preview, scope_difference

SHA, TARGET = "ab" * 32, "https://api.devrev.ai"


def _preview(sets, complete=True, **scope) -> dict:
    return {"complete": complete, "csv": {"sha256": SHA}, "target": TARGET,
            "scope": Scope(SHA, TARGET, **scope).to_json(), "sets": sets}


def _set(email, status="would_merge", reason=None):
    return {"email": email, "status": status, "reason": reason}


TODO = [("a@x.example", "a@x.example"), ("b@x.example", "b@x.example")]
BOTH = [_set("a@x.example"), _set("b@x.example")]


def test_the_same_scope_or_a_narrower_run_is_shown():
    assert scope_difference(_preview(BOTH), Scope(SHA, TARGET), TODO) is None
    assert scope_difference(_preview(BOTH), Scope(SHA, TARGET, keep_duplicate=True), TODO) is None
    assert scope_difference(_preview(BOTH, allow_cross_org=True), Scope(SHA, TARGET), TODO) is None
    assert scope_difference(_preview(BOTH), Scope(SHA, TARGET, only="a@x.example"), TODO[:1]) is None
    skipped = [_set("a@x.example", "skipped", "email_mismatch"), _set("b@x.example")]
    assert scope_difference(_preview(skipped), Scope(SHA, TARGET), TODO) is None


@pytest.mark.parametrize("preview, run, todo, words", [
    (_preview(BOTH, keep_duplicate=True), Scope(SHA, TARGET), TODO, "--keep-duplicate"),
    (_preview([_set("a@x.example", "skipped", "cross_workspace"), _set("b@x.example")]),
     Scope(SHA, TARGET, allow_cross_org=True), TODO, "would merge it"),
    (_preview(BOTH[:1], only="a@x.example"), Scope(SHA, TARGET), TODO, "--only a@x.example"),
    (_preview(BOTH[:1], max_merges=1), Scope(SHA, TARGET), TODO, "--max-merges 1"),
    (_preview(BOTH), Scope("cd" * 32, TARGET), TODO, "other CSV bytes"),
    (_preview(BOTH), Scope(SHA, "sandbox"), TODO, "this run goes to sandbox"),
    (_preview(BOTH, complete=False), Scope(SHA, TARGET), TODO, "incomplete"),
    (_preview([_set("a@x.example", "already_merged"), _set("b@x.example")]), Scope(SHA, TARGET), TODO,
     "finished by an earlier run"),
])
def test_a_run_doing_more_than_shown_gets_one_line_naming_it(preview, run, todo, words):
    difference = scope_difference(preview, run, todo)
    assert difference is not None and words in difference and "\n" not in difference


def test_only_the_newest_complete_preview_counts():
    """An older, wider preview does not unlock what the admin's latest preview did not show;
    an interrupted newer one unlocks nothing and hides nothing."""
    narrow, wide = _preview(BOTH[:1], only="a@x.example"), _preview(BOTH)
    path, _, difference = choose_preview([("new", narrow), ("old", wide)], Scope(SHA, TARGET), TODO)
    assert path is None and "(new, the newest complete preview)" in difference
    interrupted = dict(_preview(BOTH[:1]), complete=False)
    assert choose_preview([("cut", interrupted), ("old", wide)], Scope(SHA, TARGET), TODO)[0] == "old"
    assert choose_preview([("new", wide), ("old", narrow)], Scope(SHA, TARGET), TODO)[0] == "new"


@pytest.fixture
def dataset():
    return build_dataset(5, seed=21, tickets=(1, 2), conversations=(0, 1), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=0, skipped=True)


def _statuses(run) -> dict:
    return {s["email"]: s["status"] for s in run.latest_report()["sets"]}


def test_batches_of_max_merges_preview_then_run(tmp_path, monkeypatch, make_sandbox, dataset):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    emails = [ms["email"] for ms in dataset.merge_sets]
    for batch in (emails[:2], emails[2:4]):
        assert run.preview("--max-merges", "2") == 0
        assert run.run("--max-merges", "2") == 0
        assert [e for e, s in _statuses(run).items() if s == "merged"][-2:] == batch
    # one more set than the last preview showed is refused before any call
    sandbox.clear_log()
    assert run.run("--max-merges", "3") == 2
    assert sandbox.api_calls() == []


def test_keep_duplicate_preview_never_unlocks_a_retiring_run(tmp_path, monkeypatch, make_sandbox, dataset, capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview("--keep-duplicate") == 0
    capsys.readouterr()
    assert run.run() == 2
    err = capsys.readouterr().err
    assert "--keep-duplicate" in err and len(err.strip().splitlines()) == 1
    assert sandbox.write_attempts() == []
    assert run.run("--keep-duplicate") == 0                      # the run it showed is allowed
    assert not any(e["endpoint"] == "rev-users.merge" for e in sandbox.write_attempts())


def test_cross_org_run_needs_a_cross_org_preview_and_skipped_sets_stay_skipped(tmp_path, monkeypatch,
                                                                                 make_sandbox, dataset, capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run("--allow-cross-org") == 2
    assert "cross_workspace" in capsys.readouterr().err and sandbox.write_attempts() == []
    cross = [e for e, r in dataset.skipped.items() if r == "cross_workspace"][0]
    assert run.preview("--allow-cross-org") == 0
    shown = {s["email"]: s["status"] for s in run.latest_report("preview")["sets"]}
    assert shown[cross] == "would_merge"
    # a preview without the option, newer, shows the set skipped: the run skips it without a call
    assert run.preview() == 0
    sandbox.clear_log()
    assert run.run() == 0
    assert _statuses(run)[cross] == "skipped"
    cross_ids = {sandbox.key_id(k) for k in ("split-primary", "split-dup0")}
    assert all(i.startswith("don:") for i in cross_ids)
    assert not any(e.get("body", {}).get("id") in cross_ids for e in sandbox.api_calls())


def test_a_preview_older_than_the_limit_unlocks_nothing():
    """Issue 24: a preview a day old shows a DevRev that has moved on: it no longer unlocks a run."""
    from datetime import datetime, timezone

    from runs.preview_gate import too_old
    now = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    fresh, stale = dict(_preview(BOTH), created_at="2026-12-05T00:00:00Z"), \
        dict(_preview(BOTH), created_at="2026-12-04T11:00:00.000Z")
    assert too_old(fresh, 24, now) is None and too_old(stale, None, now) is None
    assert "25.0 hours old, older than the 24 hours" in too_old(stale, 24, now)
    assert too_old(stale, 26, now) is None
    assert "unknown age" in too_old(_preview(BOTH), 24, now)   # no readable time: too old
    assert choose_preview([("new", stale)], Scope(SHA, TARGET), TODO, max_age_hours=24)[0] is None


def test_a_real_run_refuses_a_preview_older_than_a_day_in_one_line(tmp_path, monkeypatch, make_sandbox, capsys):
    from datetime import timedelta

    from runs import preview_gate
    dataset = build_dataset(2, seed=37, skipped=False, two_duplicate_sets=0)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    later = preview_gate.utc_now() + timedelta(hours=25)
    monkeypatch.setattr(preview_gate, "utc_now", lambda: later)
    sandbox.clear_log()
    capsys.readouterr()
    assert run.run() == 2 and sandbox.api_calls() == []
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "hours old, older than the 24 hours a preview unlocks a run for" in line
    assert run.run("--preview-max-age", "48") == 0


def test_a_preview_dated_in_the_future_unlocks_nothing():
    """A planted preview dated 2099 would never expire and would hide every real one."""
    from datetime import datetime, timezone

    from runs.preview_gate import too_old
    now = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    assert "dated in the future" in too_old(dict(_preview(BOTH), created_at="2099-01-01T00:00:00Z"), 24, now)
    assert too_old(dict(_preview(BOTH), created_at="2026-12-05T12:02:00Z"), 24, now) is None   # a clock skew
