"""The note a merge and a restore leave on the primary contact's timeline (runs.notes, issue 21 §4):
one per set, with what happened, never two, none with --no-merge-note."""
from __future__ import annotations

import os

import pytest

import devrev_client
from devrev_api.errors import TransportError
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Scripted
from helpers import MergeRun, tool_notes


def _dataset():
    return build_dataset(3, seed=11, tickets=(1, 2), conversations=(0, 1), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=1, skipped=False)


def test_each_merged_primary_gets_one_internal_note_saying_what_was_merged(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    preview = run.latest_report("preview")
    assert all(s["merge_note"] is True for s in preview["sets"])
    assert run.run() == 0
    report = run.latest_report()
    dump = sandbox.dump()
    notes = tool_notes(dump)
    assert set(notes) == {sandbox.key_id(ms["primary"]) for ms in dataset.merge_sets}
    for ms, line in zip(dataset.merge_sets, report["sets"]):
        (note,) = notes[sandbox.key_id(ms["primary"])]
        assert note["visibility"] == "internal" and note["id"] == line["merge_note"]
        for dup in ms["duplicates"]:
            user = dump["rev_users"][sandbox.key_id(dup)]
            assert user["display_id"] in note["body"] and user["external_ref"] in note["body"]
        assert report["run_id"] in note["body"]
        moved = len(line["moved_ticket_ids"])
        assert f"Moved here: {moved} ticket{'' if moved == 1 else 's'} and " in note["body"]
        assert all(os.path.basename(b) in note["body"] for d in line["duplicates"] for b in d["backups"])
    sandbox.clear_log()
    assert run.run() == 0                            # a finished run writes no second note
    assert [e for e in sandbox.writes() if e["endpoint"] == "timeline-entries.create"] == []


def test_a_note_whose_answer_was_lost_is_found_not_written_twice(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    real = devrev_client.DevRevClient.create_timeline_note
    lost = []

    def answer_lost(self, *args, **kwargs):
        entry = real(self, *args, **kwargs)
        if not lost:                                 # DevRev wrote the first; its answer never came back
            lost.append(True)
            raise TransportError("the connection dropped after the request was sent",
                                 endpoint="timeline-entries.create")
        return entry

    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", answer_lost)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda self, seconds: None)
    assert run.preview() == 0
    assert run.run() == 0                            # found on the timeline after the lost answer
    assert lost and all(len(notes) == 1 for notes in tool_notes(sandbox.dump()).values())
    assert len(tool_notes(sandbox.dump())) == len(dataset.merge_sets)
    creates = [e for e in sandbox.writes() if e["endpoint"] == "timeline-entries.create"]
    assert len(creates) == len(dataset.merge_sets)   # none written twice


def test_a_run_stopped_between_writing_the_note_and_journaling_it_finds_it(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    real = devrev_client.DevRevClient.create_timeline_note

    def then_stop(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise KeyboardInterrupt                      # Ctrl-C twice: the journal never hears of it

    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", then_stop)
    assert run.preview() == 0
    assert run.run("--workers", "1") == 130          # stopped at once, the first note written
    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", real)
    assert run.run() == 0
    notes = tool_notes(sandbox.dump())
    assert len(notes) == len(dataset.merge_sets) and all(len(n) == 1 for n in notes.values())


def test_no_merge_note_writes_none_and_is_part_of_the_previews_scope(tmp_path, monkeypatch, make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview("--no-merge-note") == 0
    assert run.run() == 2                            # would write notes the preview did not show
    assert run.run("--no-merge-note") == 0
    assert tool_notes(sandbox.dump()) == {}


@pytest.mark.parametrize("note", [True, False])
def test_the_restore_leaves_its_own_note_unless_asked_not_to(note, tmp_path, monkeypatch, make_sandbox):
    from test_restore import RestoreRun
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    restore = RestoreRun(run)
    extra = [] if note else ["--no-restore-note"]
    assert restore.run("--preview", *extra) == 0 and restore.run(*extra) == 0
    notes = tool_notes(sandbox.dump())
    restored = [n for listed in notes.values() for n in listed if ":restore:" in n["external_ref"]]
    assert len(restored) == (len(dataset.merge_sets) if note else 0)
    assert all("Restored by devrev-contact-merge" in n["body"] for n in restored)


@pytest.mark.parametrize("status, kind", [(403, "forbidden"), (400, "bad_request")])
def test_a_note_devrev_refuses_leaves_the_merged_sets_merged_and_says_so(status, kind, tmp_path, monkeypatch,
                                                                         make_sandbox):
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    sandbox.script("timeline-entries.create",
                   *[Scripted(status, {"type": kind, "message": "not allowed here"})] * len(dataset.merge_sets))
    assert run.run() == 0                            # the merges are done; the note is not the set's failure
    report = run.latest_report()
    assert {s["status"] for s in report["sets"]} == {"merged"}
    assert report["totals"]["merge_notes_refused"] == len(dataset.merge_sets)
    assert all(s.get("merge_note") is None and "not allowed here" in s["merge_note_refused"] for s in report["sets"])
    assert report["journal_problems"] == [] and tool_notes(sandbox.dump()) == {}
    sandbox.clear_log()
    assert run.run() == 0                            # not asked again: the refusal is journaled
    assert [e for e in sandbox.writes() if e["endpoint"] == "timeline-entries.create"] == []
    assert run.latest_report()["totals"]["merge_notes_refused"] == len(dataset.merge_sets)


def test_a_restore_that_would_write_notes_its_preview_did_not_show_is_refused(tmp_path, monkeypatch, make_sandbox):
    from test_restore import RestoreRun
    dataset = _dataset()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    restore = RestoreRun(run)
    assert restore.run("--preview", "--no-restore-note") == 0
    sandbox.clear_log()
    assert restore.run() == 2 and sandbox.write_attempts() == []
    assert restore.run("--no-restore-note") == 0


def test_sandbox_mode_goes_with_sandbox_only_in_the_restore_too(tmp_path, capsys):
    import restore_contacts
    assert restore_contacts.main(["--backup-dir", str(tmp_path), "--sandbox-mode", "contact_external_refs=true"]) == 2
    assert "--sandbox-mode only goes with --sandbox" in capsys.readouterr().err
