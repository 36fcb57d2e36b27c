"""The mode matrix: the whole merge of the demo data (devrev_sandbox/demo/) under every way DevRev may
plausibly answer where its behaviour is unknown (devrev_sandbox/modes.py), each ending in
the expected state. Sources for each row: ../shared/devrev-api.md section 14."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

import devrev_client
import merge_contacts
from devrev_api import assumptions as facts
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.modes import BehaviourModes
from helpers import FakeClock, MergeRun, expected_after_merge, normalized

DEMO = build_dataset(12, seed=7)   # devrev_sandbox/demo/ without its extras (dataset.build_demo; CONTRIBUTING)
CUSTOM_FIELD = "app_email_integration__members"


def _with_custom_fields(dataset, count: int = 6):
    """The demo data with `count` duplicates' tickets also naming the duplicate (and the
    primary) in an email integration's custom field, as real email tickets do (S10)."""
    data = copy.deepcopy(dataset)
    owner = {d: ms["primary"] for ms in data.merge_sets for d in ms["duplicates"]}
    tagged = 0
    for ticket in data.seed["tickets"]:
        dups = [k for k in ticket.get("reported_by", []) if k in owner]
        if dups and tagged < count:
            ticket["custom_fields"] = {CUSTOM_FIELD: [dups[0], owner[dups[0]]]}
            tagged += 1
    # and one ticket naming a duplicate only there: only works.list's custom_fields filter finds it
    # (mode works_custom_fields_filter=accepted), or DevRev's own merge in the mode that moves references
    dup = next(iter(owner))
    data.seed["tickets"].append({"key": "unlisted-t", "title": "names the copy only in a custom field",
                                 "reported_by": [owner[dup]], "owned_by": ["agent1"],
                                 "custom_fields": {CUSTOM_FIELD: [dup]}})
    return data


def _expected(before: dict, sandbox, dataset, modes: BehaviourModes) -> dict:
    """expected_after_merge, with how a retired duplicate reads in this mode and, if DevRev's
    merge moves references itself, the custom fields naming the primary instead."""
    state = expected_after_merge(before, sandbox, dataset, {ms["email"] for ms in dataset.merge_sets})
    retired_state = {"primary_identity": "active", "deactivated": "deactivated"}.get(modes.merge_outcome, "deleted")
    renames = {sandbox.key_id(d): sandbox.key_id(ms["primary"]) for ms in dataset.merge_sets for d in ms["duplicates"]}
    for uid in renames:
        state["rev_users"][uid]["state"] = retired_state
    if modes.contact_external_refs:   # the primary keeps every other duplicate's reference, newest first
        seeds = {u["key"]: u for u in dataset.seed["rev_users"]}
        for ms in dataset.merge_sets:
            others = sorted(ms["duplicates"], key=lambda k: seeds[k].get("modified_date") or "", reverse=True)[1:]
            own = before["rev_users"][sandbox.key_id(ms["primary"])]["external_ref"]   # the primary keeps its own
            state["rev_users"][sandbox.key_id(ms["primary"])]["external_refs_extra"] = \
                [seeds[k]["external_ref"] for k in others] + [own]
    for wid, work in state["works"].items():
        # the tool moves the custom fields of the tickets it lists (a duplicate reports them, or, where
        # works.list takes the custom_fields filter, names it there); DevRev's own merge, in the mode
        # that moves references, those of every ticket
        if modes.merge_moves_references or modes.works_custom_fields_filter == "accepted" \
                or set(before["works"][wid]["reported_by"]) & set(renames):
            for name, ids in (work.get("custom_fields") or {}).items():
                work["custom_fields"][name] = list(dict.fromkeys(renames.get(i, i) for i in ids))
    return json.loads(json.dumps(state, sort_keys=True))


MODES = {
    "lists_by_retired_contact_empty": dict(retired_filter_answer="empty"),
    "lists_by_retired_contact_400": dict(retired_filter_answer="400", merge_outcome="deleted"),
    "lists_by_retired_contact_404": dict(retired_filter_answer="404"),
    "merged_contact_reads_404": dict(merge_outcome="404"),
    "merged_contact_reads_state_deleted": dict(merge_outcome="deleted"),
    "merged_contact_reads_primary_identity": dict(merge_outcome="primary_identity"),
    "merged_contact_retires_after_2_s": dict(merge_retire_after_gets=None,
                                             merge_retire_delay=facts.MERGE_RETIRE_SECONDS_OBSERVED),
    "merge_moves_every_reference_itself": dict(merge_moves_references=True),
    "offset_paging_that_shifts": dict(list_paging="offset"),
    "locate_without_expires_at": dict(locate_expires_at=False),
    "contacts_keep_several_references": dict(contact_external_refs=True),
    "merged_contact_page_moved_to_primary": dict(contact_timeline_on_merge="moved"),
    "works_list_takes_the_custom_fields_filter": dict(works_custom_fields_filter="accepted"),
    "timeline_pages_short_and_empty": dict(timeline_empty_pages=8),   # S15: fewer, or none, while more exist
    # S15: merges run as merge_revuser jobs that can fail; the tool reads the job and asks again
    "merge_job_fails_the_first_time": dict(merge_job="failed_first"),
    "merge_acknowledged_then_lost_without_a_job": dict(merge_job="lost_first"),
    # S15/S10: timers, sync bookkeeping and sentiment change by themselves; the canary reports, not stops
    "fields_that_change_by_themselves": dict(fields_change_by_themselves=True),
    "lists_lag_behind_writes": dict(listing_lag_seconds=5.0),   # old reporters listed for 5 s after a move
    "fresh_download_url_refused_for_2_s": dict(download_url_refused_seconds=2.0),
    "rate_limit_reset_on_a_clock_an_hour_ahead": dict(server_clock_skew=3600.0),
    "rate_limit_reset_on_a_clock_an_hour_behind": dict(server_clock_skew=-3600.0),
    "rate_limit_reset_fractional": dict(rate_limit_reset="fractional"),   # [I] a reset to the millisecond
}


@pytest.mark.parametrize("name", list(MODES))
def test_the_demo_merge_ends_in_the_expected_state(name, tmp_path, monkeypatch, make_sandbox):
    modes = dataclasses.replace(BehaviourModes(merge_retire_after_gets=1), **MODES[name])
    dataset = _with_custom_fields(DEMO)
    clock = FakeClock()
    kwargs = {"clock": clock, "modes": modes}
    if modes.retired_filter_answer == "404":   # a status the spec does not declare on these lists
        kwargs["spec_exempt"] = ("works.list response 404", "conversations.list response 404")
    if name == "offset_paging_that_shifts":
        kwargs["page_cap"] = 2
    if name == "locate_without_expires_at":
        kwargs["url_ttl"] = 1.0                   # and a short lifetime
    sandbox = make_sandbox(dataset.seed, **kwargs)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda self, s: setattr(clock, "offset", clock.offset + s))
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    if name == "offset_paging_that_shifts":
        shifted = _shift_pages_while_listing(sandbox)
    assert run.run() == 0
    assert normalized(sandbox.dump()) == _expected(before, sandbox, dataset, modes)
    if modes.retired_filter_answer != "empty":   # the mode was met, and taken as "owns nothing"
        refused = [e for e in sandbox.api_calls() if e["endpoint"] in ("works.list", "conversations.list")
                   and e["status"] == int(modes.retired_filter_answer)]
        assert refused
    report = run.latest_report()
    assert report["canary"]["differences"] == [] and report["canary"]["checked"] > 0
    if modes.fields_change_by_themselves:   # seen, reported in the canary's section, and not a stop
        assert {c["field"] for c in report["canary"]["moved_by_themselves"]} >= {
            "custom_fields.tnt__work_duration_counter", "sync_metadata", "sentiment_modified_date"}
    found_by_filter = modes.works_custom_fields_filter == "accepted"   # the ticket naming it only there
    assert report["totals"]["custom_field_refs"] == 6 + found_by_filter == report["totals"]["custom_fields_moved"]
    several = [ms for ms in dataset.merge_sets if len(ms["duplicates"]) > 1]
    assert several   # the demo has sets with two duplicates: what becomes of the second one's reference
    preview = run.latest_report("preview")
    if modes.contact_external_refs:   # kept by the primary: no reference is left without a contact
        assert report["totals"]["refs_without_contact"] == 0 == preview["totals"]["refs_without_contact"]
        assert all(len(s["external_refs_kept"]) == 3 for s in report["sets"] if len(s["duplicates"]) == 2)
    else:                              # named in the preview and the report, one per extra duplicate
        assert report["totals"]["refs_without_contact"] == len(several) == preview["totals"]["refs_without_contact"]
    if name == "offset_paging_that_shifts":
        assert shifted["n"] > 0
        rounds = max(len(d["backups"]) for s in report["sets"] for d in s["duplicates"])
        assert rounds >= 2   # a later verification round caught what a shifted page hid


def _shift_pages_while_listing(sandbox) -> dict:
    """Another integration edits a ticket between two pages of a listing: right after the
    first page of works.list by a contact, the oldest-modified ticket it reports is written
    (so, newest modified first, it moves to the front and the next page skips one)."""
    shifted = {"n": 0, "seen": set()}

    def hook(sb, entry):
        body = entry.get("body") or {}
        if entry["endpoint"] != "works.list" or body.get("cursor") or not body.get("reported_by"):
            return
        contact = body["reported_by"][0]
        if contact in shifted["seen"]:
            return
        with sb.state.lock:
            mine = [w for w in sb.state.works.values() if contact in w["reported_by"]]
            if len(mine) > 2:
                shifted["seen"].add(contact)
                shifted["n"] += 1
                oldest = min(mine, key=lambda w: (w["modified_date"], w["_seq"]))
                sb.state.clock = lambda base=sb.clock: base() + 0.002   # a distinct, newer stamp
                sb.state.touch(oldest)
                sb.state.clock = sb.clock

    sandbox.on_request = hook
    return shifted


def test_custom_field_references_are_listed_in_preview_backup_and_report(tmp_path, monkeypatch, make_sandbox):
    dataset = _with_custom_fields(DEMO)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    shown = [r for s in run.latest_report("preview")["sets"] for d in s.get("duplicates") or []
             for r in d["custom_field_refs"]]
    assert len(shown) == 6 and run.latest_report("preview")["totals"]["custom_field_refs"] == 6
    assert run.run() == 0
    listed = []
    for folder in run.backups():
        with open(f"{folder}/metadata.json", encoding="utf-8") as fh:
            listed += [r["object"] for r in json.load(fh)["custom_field_refs"]
                       if r["fields"] == [CUSTOM_FIELD]]
    assert sorted(listed) == sorted(shown)
    assert run.latest_report()["totals"]["custom_field_refs"] == 6


def test_a_token_that_may_not_merge_ends_moved_only_then_a_better_one_finishes(tmp_path, monkeypatch,
                                                                              make_sandbox, capsys):
    sandbox = make_sandbox(DEMO.seed, merge_retire_after_gets=1, token_permissions="no_merge")
    run = MergeRun(tmp_path, sandbox, DEMO, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    assert sum("rev_user:all" in line for line in err.splitlines()) == 1
    statuses = {s["status"] for s in run.latest_report()["sets"]}
    assert statuses == {"moved_only", "skipped"}   # skipped: the demo's groups live DevRev disagrees with
    merges = [e for e in sandbox.write_attempts() if e["endpoint"] == "rev-users.merge"]
    assert len(merges) == 1   # asked once; the other sets are moved and kept without asking
    assert run.latest_report()["journal_problems"] == []
    sandbox.token_permissions = "all"
    assert run.run() == 0
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, DEMO,
                                                              {ms["email"] for ms in DEMO.merge_sets})


def test_a_403_on_the_first_write_stops_the_run_before_any_other_set(tmp_path, monkeypatch, make_sandbox):
    sandbox = make_sandbox(DEMO.seed, merge_retire_after_gets=1, token_permissions="read_only")
    run = MergeRun(tmp_path, sandbox, DEMO, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run() == 2
    first = {sandbox.key_id(d) for d in DEMO.merge_sets[0]["duplicates"]}
    first_items = {w["id"] for w in before["works"].values() if first & set(w["reported_by"])} | \
                  {c["id"] for c in before["conversations"].values() if first & set(c["members"])}
    attempts = {e["body"]["id"] for e in sandbox.write_attempts()}
    # the first round's updates of the first set may go out together (--workers); nothing else
    assert attempts and attempts <= first_items and sandbox.writes() == []
    statuses = [s["status"] for s in run.latest_report()["sets"]]
    assert statuses.count("pending") == len(statuses) - statuses.count("skipped")
    assert statuses.index("pending") < len(statuses) - 1
    assert normalized(sandbox.dump()) == before


def test_the_pace_follows_the_rate_limit_devrev_announces(tmp_path, monkeypatch, make_sandbox):
    sandbox = make_sandbox(DEMO.seed, merge_retire_after_gets=1, rate_limit=150_000)   # per 5 minutes
    run = MergeRun(tmp_path, sandbox, DEMO, monkeypatch)
    monkeypatch.delenv("DEVREV_RATE_LIMIT")
    paces = []
    real = devrev_client.DevRevClient._set_pace
    monkeypatch.setattr(devrev_client.DevRevClient, "_set_pace", lambda self, n: (paces.append(n), real(self, n)))
    assert run.preview() == 0 and run.run() == 0
    assert paces[-1] == 30_000   # 150,000 per 300 s spread evenly
    assert not [e for e in sandbox.api_calls() if e.get("status") == 429]
    assert all(e["status"] == 200 for e in sandbox.api_calls() if e["endpoint"] == "dev-users.self")


def test_sandbox_mode_option_rehearses_a_mode_and_refuses_a_bad_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert merge_contacts.main(["--sandbox", "--check", "--sandbox-mode", "list_paging=offset",
                                "--sandbox-mode", "retired_filter_answer=400"]) == 0
    assert "FAILED" not in capsys.readouterr().out
    assert merge_contacts.main(["--sandbox", "--preview", "--sandbox-mode", "merge_outcome=gone"]) == 2
    err = capsys.readouterr().err
    assert "--sandbox-mode" in err and "merge_outcome" in err and len(err.strip().splitlines()) == 1
    assert merge_contacts.main(["--csv", "x.csv", "--sandbox-mode", "list_paging=offset"]) == 2


def test_a_rate_given_is_kept_and_none_given_follows_the_announced_limit(make_sandbox, make_client):
    sandbox = make_sandbox(DEMO.seed, rate_limit=1000)
    given = make_client(sandbox, calls_per_minute=50)
    given.get_self()
    assert given.calls_per_minute == 50 and given.pacer.announced_limit == 1000
    announced = devrev_client.DevRevClient(sandbox.token, sandbox.base_url)
    try:
        assert announced.calls_per_minute == facts.DEFAULT_CALLS_PER_MINUTE
        announced.get_self()
        assert announced.calls_per_minute == 1000 * 60 / facts.RATE_LIMIT_WINDOW_SECONDS
    finally:
        announced.close()


@pytest.mark.slow  # waits for real 1 s windows to reset
def test_a_quota_shared_with_other_integrations_is_waited_for_not_met(tmp_path, monkeypatch, make_sandbox):
    """Other clients of the same token spend most of each window; the run reads what is left
    from X-Ratelimit-Remaining and waits for the reset instead of meeting 429s."""
    sandbox = make_sandbox(DEMO.seed, merge_retire_after_gets=1, rate_limit=(500, 1.0), rate_limit_shared=300)
    run = MergeRun(tmp_path, sandbox, DEMO, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run("--workers", "4") == 0
    assert not [e for e in sandbox.api_calls() if e.get("status") == 429]
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, DEMO,
                                                              {ms["email"] for ms in DEMO.merge_sets})
