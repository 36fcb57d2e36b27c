"""The emulator's behaviour modes: where DevRev's real behaviour is unknown, each answer
can be chosen per emulator (constructor or `--mode name=value`)."""
from __future__ import annotations

from dataclasses import fields

import pytest

from devrev_sandbox import BehaviourModes, DevRevSandbox
from devrev_sandbox.__main__ import main
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
