"""The emulator's behaviour modes: where DevRev's real behaviour is unknown, each answer
can be chosen per emulator (constructor or `--mode name=value`)."""
from __future__ import annotations

from dataclasses import fields

import pytest

from devrev_sandbox.__main__ import main
from devrev_sandbox.modes import BehaviourModes
from devrev_sandbox.server import DevRevSandbox
from helpers import call, ok, references, seed


def test_modes_keyword_and_the_old_keywords_agree_and_keywords_win():
    modes = BehaviourModes(merge_outcome="deactivated", merge_retire_after_gets=5)
    assert DevRevSandbox(modes=modes).modes == modes
    assert DevRevSandbox(merge_outcome="deactivated", merge_retire_after_gets=5).modes == modes
    assert DevRevSandbox(modes=modes, merge_retire_after_gets=1).modes.merge_retire_after_gets == 1
    assert DevRevSandbox().modes == BehaviourModes()


def test_unknown_keywords_and_bad_values_are_refused():
    with pytest.raises(TypeError, match="merge_outcomes"):
        DevRevSandbox(merge_outcomes="404")
    with pytest.raises(ValueError, match="merge_outcome"):
        DevRevSandbox(merge_outcome="gone")
    with pytest.raises(ValueError, match="400 or 409"):
        BehaviourModes(external_ref_conflict_status=404)


def test_a_mode_set_as_an_attribute_replaces_the_frozen_modes():
    sandbox = DevRevSandbox()
    sandbox.merge_outcome = "primary_identity"
    assert sandbox.modes.merge_outcome == "primary_identity" and sandbox.merge_outcome == "primary_identity"


def test_pairs_parse_every_mode_and_round_trip_the_defaults():
    defaults = BehaviourModes()
    assert defaults.with_pairs([f"{f.name}={f.default}" for f in fields(BehaviourModes)]) == defaults
    changed = defaults.with_pairs(["merge_retire_after_gets=none", "merge_retire_delay=2.5",
                                   "merge_moves_references=true", "external_ref_conflict_status=400"])
    assert (changed.merge_retire_after_gets, changed.merge_retire_delay) == (None, 2.5)
    assert changed.merge_moves_references is True and changed.external_ref_conflict_status == 400


@pytest.mark.parametrize("pair", ["merge_outcome", "nope=1", "merge_retire_delay=soon", "merge_moves_references=1"])
def test_bad_pairs_name_the_pair(pair):
    with pytest.raises(ValueError, match="--mode"):
        BehaviourModes().with_pairs([pair])


def test_command_line_refuses_a_bad_mode_with_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--mode", "merge_outcome=gone"])
    assert stop.value.code == 2 and "merge_outcome must be one of" in capsys.readouterr().err


def test_modes_drive_the_api(make_sandbox):
    sb = make_sandbox(seed(), modes=BehaviourModes(merge_retire_after_gets=1, merge_outcome="primary_identity",
                                                   merge_moves_references=True))
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    ok(call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup}))
    answer = ok(call(sb, "rev-users.get", {"id": dup}))
    assert answer["rev_user"]["primary_identity"]["id"] == jane
    assert all(dup not in ids for ids in references(sb).values())


@pytest.mark.parametrize("answer, status", [("empty", 200), ("400", 400), ("404", 404)])
def test_lists_filtered_by_a_retired_contact(make_sandbox, answer, status):
    exempt = ("works.list response 404", "conversations.list response 404")
    sb = make_sandbox(seed(), spec_exempt=exempt, modes=BehaviourModes(merge_retire_after_gets=1,
                                                                       merge_outcome="deleted",
                                                                       retired_filter_answer=answer))
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    ok(call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup}))
    assert ok(call(sb, "rev-users.get", {"id": dup}))["rev_user"]["state"] == "deleted"   # readable, deleted
    for endpoint, name in (("works.list", "reported_by"), ("conversations.list", "members")):
        assert call(sb, endpoint, {name: [dup]}).status_code == status   # "empty": filtered as usual
    assert call(sb, "works.list", {"reported_by": [jane]}).status_code == 200


def test_token_permissions_refuse_writes_with_403(make_sandbox):
    sb = make_sandbox(seed(), token_permissions="no_merge")
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    refused = call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup})
    assert refused.status_code == 403 and "rev_user:all" in refused.json()["message"]
    ok(call(sb, "works.update", {"id": sb.key_id("t1"), "reported_by": {"set": [jane]}}))
    sb.token_permissions = "read_only"
    assert call(sb, "works.update", {"id": sb.key_id("t1"), "reported_by": {"set": [dup]}}).status_code == 403
    assert ok(call(sb, "dev-users.self", {}))["dev_user"]["display_id"] == "DEVU-1"


def test_offset_paging_shifts_when_an_item_is_written_between_pages(make_sandbox):
    tickets = [{"key": f"t{n}", "reported_by": ["jane-dup"], "owned_by": ["agent1"], "workspace": "acme",
                "created_date": f"2024-01-0{n}T00:00:00.000Z"} for n in range(1, 6)]
    sb = make_sandbox(dict(seed(), tickets=tickets, conversations=[]), page_cap=2, list_paging="offset")
    dup = sb.key_id("jane-dup")
    first = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 2}))
    oldest = sb.key_id("t1")
    ok(call(sb, "works.update", {"id": oldest, "reported_by": {"set": [dup]}}))   # now the newest modified
    seen = [w["id"] for w in first["works"]]
    cursor = first["next_cursor"]
    while cursor:
        page = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 2, "cursor": cursor}))
        seen += [w["id"] for w in page["works"]]
        cursor = page.get("next_cursor")
    assert len(set(seen)) == 4 and oldest not in seen   # one item skipped by the shift


def test_locate_may_omit_expires_at(make_sandbox):
    sb = make_sandbox(seed(), locate_expires_at=False)
    located = ok(call(sb, "artifacts.locate", {"id": sb.key_id("artifact-9001")}))
    assert set(located) == {"url"}
