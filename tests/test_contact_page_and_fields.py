"""What DevRev's merge touches beyond tickets and conversations, on the emulator: the duplicate's own
contact page (its notes and files) and contact references in custom fields. Each is backed up, moved
or given back, and a merge followed by a restore leaves the emulator as it was, but for what the API
cannot give back (new ids; a note's author and date, written into its text)."""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import os

import pytest

import devrev_client
import verify_backups
from backup import SavedContactPage, load_contact_page
from backup_checks.verification import verify_backup
from devrev_api.errors import TransportError
from devrev_sandbox.dataset import DEMO_SEED, build_dataset
from devrev_sandbox.modes import BehaviourModes
from helpers import MergeRun, is_tool_note, normalized
from test_restore import RestoreRun, _merge, expected_after_restore, recreated


def _pages(dump: dict) -> dict[str, list[dict]]:
    """Each contact's own timeline entries, the tool's notes left out."""
    return {uid: [e for e in dump["timeline_entries"].get(uid, []) if not is_tool_note(e)]
            for uid in dump["rev_users"]}


def _bytes(sandbox, artifact_id: str) -> str:
    with sandbox.state.lock:
        art = sandbox.state.artifacts[artifact_id]
        return hashlib.sha256(sandbox.state.artifact_bytes(art, 0, art["_size"])).hexdigest()


def _field_holders(dump: dict, contact_id: str) -> set[str]:
    return {oid for kind in ("works", "conversations") for oid, obj in dump[kind].items()
            if any(v == contact_id or (isinstance(v, list) and contact_id in v)
                   for v in (obj.get("custom_fields") or {}).values())}


def _without_pages(state: dict, contacts: set[str]) -> dict:
    """A normalized state without these contacts' timelines and without artifacts (compared apart)."""
    out = copy.deepcopy(state)
    out["timeline_entries"] = {p: e for p, e in out["timeline_entries"].items() if p not in contacts}
    out.pop("artifacts")
    return out


def _map_fields(state: dict, mapping: dict[str, str]) -> dict:
    for kind in ("works", "conversations"):
        for obj in state[kind].values():
            for name, value in (obj.get("custom_fields") or {}).items():
                if isinstance(value, list):
                    obj["custom_fields"][name] = [mapping.get(v, v) for v in value]
                elif isinstance(value, str):
                    obj["custom_fields"][name] = mapping.get(value, value)
    return state


@pytest.mark.parametrize("page_mode", ["deleted", "moved"])
def test_demo_merge_then_restore_gives_back_contact_pages_files_and_custom_fields(
        tmp_path, monkeypatch, make_sandbox, page_mode):
    sandbox = make_sandbox(DEMO_SEED, modes=BehaviourModes(contact_timeline_on_merge=page_mode,
                                                           works_custom_fields_filter="accepted"))
    before_dump = sandbox.dump()
    before = normalized(before_dump)
    pages_before = {uid: entries for uid, entries in _pages(before_dump).items() if entries}
    assert pages_before, "the demo data has a note on a duplicate's own page"
    holders = {uid: _field_holders(before_dump, uid) for uid in before_dump["rev_users"]}
    contents = {aid: _bytes(sandbox, aid) for aid in before_dump["artifacts"]}   # the merge may delete some

    run = _merge(tmp_path, monkeypatch, sandbox)
    preview = run.latest_report("preview")
    dups = {d["id"]: d for s in preview["sets"] for d in s.get("duplicates") or []}
    for uid, entries in pages_before.items():
        if uid in dups:
            assert dups[uid]["contact_entries"] == len(entries)
            assert dups[uid]["contact_files"] >= 1 and dups[uid]["contact_file_bytes"] > 0
    merged = sandbox.dump()
    report = run.latest_report()
    merged_dups = {d["id"] for s in report["sets"] for d in s["duplicates"] if s["status"] == "merged"}
    assert merged_dups & set(pages_before)
    # every backup holds and verifies the duplicate's own page
    for folder in run.backups():
        assert verify_backup(folder).ok
        page = load_contact_page(folder)
        meta_dup = json.load(open(f"{folder}/metadata.json", encoding="utf-8"))["duplicate"]["id"]
        if page is not None and meta_dup in pages_before:
            assert sorted(e["id"] for e in page.entries) == sorted(e["id"] for e in pages_before[meta_dup])
            assert page.files
    # custom fields: no merged duplicate is named in one any more; the primary is, where it was
    for uid in merged_dups:
        assert not _field_holders(merged, uid)
    assert sum(len(holders[uid]) for uid in merged_dups) >= 2
    moved = [x for s in report["sets"] for d in s["duplicates"] for x in d.get("custom_fields_moved", [])]
    assert len(moved) == sum(len(holders[uid]) for uid in merged_dups)

    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    assert restore.run() == 0
    rreport = restore.report()
    mapping = recreated(rreport)
    after_dump = sandbox.dump()
    after = normalized(after_dump)
    expected = _map_fields(expected_after_restore(before, after, mapping), mapping)
    # DevRev deletes a merged contact's page or moves it to the primary: either way the restore writes it
    # again on the re-created contact; moved notes stay on the primary too (the API cannot tell them apart)
    pages = set(pages_before) | set(mapping.values()) | {s["primary"]["id"] for s in rreport["sets"]}
    assert _without_pages(after, pages) == _without_pages(expected, pages)
    for old, new in mapping.items():
        originals = [e for e in pages_before.get(old, []) if e["type"] == "timeline_comment"]
        written = [e for e in after_dump["timeline_entries"].get(new, []) if is_tool_note(e)
                   and ":note-back:" in e["external_ref"]]
        written_notes = [e for e in written if "files that were on the contact itself" not in e["body"]]
        assert len(written_notes) == len(originals)
        for original, again in zip(originals, written_notes):
            assert again["body"].endswith(original["body"]) and again["visibility"] == "internal"
            assert original["created_date"] in again["body"]
            assert sorted(_bytes(sandbox, a["id"]) for a in again.get("artifacts", [])) == \
                sorted(contents[a["id"]] for a in original.get("artifacts", []))
    totals = rreport["totals"]
    assert totals["notes_back"] == sum(1 for uid in merged_dups for e in pages_before.get(uid, [])
                                       if e["type"] == "timeline_comment")
    assert totals["custom_fields_back"] == len(moved)
    assert "new id" in rreport["not_given_back"]
    on_primary = sum(d.get("notes_found_on_primary", 0) for s in rreport["sets"] for d in s["duplicates"])
    assert on_primary == (sum(len(pages_before.get(uid, [])) for uid in merged_dups) if page_mode == "moved" else 0)

    sandbox.clear_log()                       # a finished restore re-run writes nothing
    assert restore.run() == 0 and sandbox.write_attempts() == []



def _small(**kwargs):
    """Two merge sets; the first duplicate has a contact page and email tickets (build_dataset extras)."""
    return build_dataset(2, seed=3, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=0, skipped=False,
                         extras=True, **kwargs)


def test_a_restore_stopped_by_lost_answers_writes_each_note_and_file_once(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    real = devrev_client.DevRevClient.create_timeline_note
    lost: list[str] = []

    def answer_lost(self, object_id, body, *, external_ref, artifacts=None):
        entry = real(self, object_id, body, external_ref=external_ref, artifacts=artifacts)
        if ":note-back:" in external_ref and external_ref not in lost:   # written; the answer never came
            lost.append(external_ref)
            raise TransportError("the connection dropped after the request was sent",
                                 endpoint="timeline-entries.create")
        return entry

    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", answer_lost)
    monkeypatch.setattr(devrev_client.DevRevClient, "wait", lambda self, seconds: None)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    preview_dup = next(d for s in restore.report("restore_preview")["sets"] for d in s["duplicates"] if d["notes"])
    assert preview_dup["notes"] == 2 and preview_dup["files"] == 2
    assert restore.run() == 0
    report = restore.report()
    new = next(d["new_id"] for s in report["sets"] for d in s["duplicates"] if d["notes_back"])
    written = [e for e in sandbox.dump()["timeline_entries"][new] if ":note-back:" in (e.get("external_ref") or "")]
    assert len(lost) == 3 and len(written) == 3          # two notes and the record's file, each once
    assert len({e["external_ref"] for e in written}) == 3
    assert sum(len(e.get("artifacts", [])) for e in written) == 2
    creates = [e for e in sandbox.writes() if e["endpoint"] == "timeline-entries.create"
               and ":note-back:" in e["body"]["external_ref"]]
    assert len(creates) == 3
    sandbox.clear_log()
    assert restore.run() == 0 and sandbox.write_attempts() == []


def test_verify_backups_names_a_missing_contact_file_and_an_edited_page(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    folder = next(f for f in run.backups() if (load_contact_page(f) or SavedContactPage([], {}, [])).files)
    assert verify_backup(folder).ok
    page = load_contact_page(folder)
    assert page is not None and len(page.entries) == 2 and len(page.files) == 2
    victim = next(iter(page.files.values())).path
    os.remove(os.path.join(folder, *victim.split("/")))
    problems = dict(verify_backup(folder).problems)
    assert victim in problems and "missing" in problems[victim]
    assert verify_backups.main(["--backup-dir", folder]) == 1


def test_a_custom_field_whose_schema_cannot_be_told_fails_its_set_and_names_it(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    dup = dataset.merge_sets[0]["duplicates"][0]
    ticket = next(t for t in dataset.seed["tickets"] if dup in t.get("reported_by", []))
    ticket["custom_fields"] = {"watchers": [dup]}         # no `__`: no schema can be named for it
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.run() == 1
    line = next(s for s in run.latest_report()["sets"] if s["email"] == dataset.merge_sets[0]["email"])
    assert line["status"] == "failed" and "'watchers'" in line["error"] and "by hand" in line["error"]
    assert not sandbox.dump()["rev_users"][sandbox.key_id(dup)]["_retired"]   # not merged with a dangling reference


def test_the_preview_screen_names_contact_pages_custom_fields_and_a_refused_filter(tmp_path, monkeypatch,
                                                                                  make_sandbox, capsys):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)   # the default: the filter is refused
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    out = capsys.readouterr().out
    assert "own contact pages hold 2 notes (2 timeline entries) and 2 files" in out
    assert "1 ticket or conversation names a duplicate in a custom field: the primary would be put in its " \
           "place" in out
    assert "refuses works.list's custom_fields filter" in out
    totals = run.latest_report("preview")["totals"]
    assert totals["contact_notes"] == 2 and totals["contact_files"] == 2 and totals["custom_fields_filter"] is False


def test_a_run_finds_no_ticket_by_custom_field_when_its_preview_could_not(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)   # the preview meets a refusing tenant
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.latest_report("preview")["totals"]["custom_fields_filter"] is False
    sandbox.works_custom_fields_filter = "accepted"                     # ...and the run one that takes it
    assert run.run() == 0
    dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    only_there = [w for w in sandbox.dump()["works"].values()
                  if dup in (w.get("custom_fields") or {}).get("app_email_integration__members", [])]
    assert len(only_there) == 1                         # the preview could not show it: left as it was
    assert run.latest_report()["totals"]["custom_fields_moved"] == 1
    listings = [e for e in sandbox.api_calls() if e["endpoint"] == "works.list" and e["status"] == 200
                and "custom_fields" in (e.get("body") or {}) and e["body"].get("limit") != 1]   # not the probe
    assert listings == []


def test_a_fifo_or_a_link_planted_in_a_backup_is_reported_at_once(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    folder = next(f for f in run.backups() if (load_contact_page(f) or SavedContactPage([], {}, [])).files)
    page = os.path.join(folder, "contact", "messages.json")
    os.remove(page)
    os.mkfifo(page)                                     # would hang a reader that waits for a writer
    assert dict(verify_backup(folder).problems)["contact/messages.json"] == "not a regular file"
    os.remove(page)
    os.symlink("/etc/hostname", page)
    problems = verify_backup(folder).problems
    assert ("contact/messages.json", "not a regular file") in problems and len(problems) == 1


def test_a_partly_restored_set_whose_backup_stops_verifying_says_so(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    real = devrev_client.DevRevClient.create_timeline_note

    def stop_at_the_first_note_back(self, object_id, body, *, external_ref, artifacts=None):
        if ":note-back:" in external_ref:
            raise KeyboardInterrupt
        return real(self, object_id, body, external_ref=external_ref, artifacts=artifacts)

    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", stop_at_the_first_note_back)
    assert restore.run() != 0                           # stopped before the first note was written
    folder = next(f for f in run.backups() if (load_contact_page(f) or SavedContactPage([], {}, [])).files)
    os.remove(os.path.join(folder, *next(iter(load_contact_page(folder).files.values())).path.split("/")))
    monkeypatch.setattr(devrev_client.DevRevClient, "create_timeline_note", real)
    assert restore.run("--skip-preview-check") == 1
    report = restore.report()
    assert not [s for s in report["sets"] if s["email"] == dataset.merge_sets[0]["email"]]   # its only folder
    assert [f["partly_restored"] for f in report["failed_folders"]] == [True]
    logs = "".join(open(p, encoding="utf-8").read() for p in glob.glob(str(tmp_path / "logs" / "*.log")))
    assert logs.count("an earlier restore run already restored part of its merge set") == 1


def test_a_restored_set_whose_folder_stops_verifying_stays_restored(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=3, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=1, skipped=False,
                            extras=True)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0 and restore.run() == 0
    folder = next(f for f in run.backups() if (load_contact_page(f) or SavedContactPage([], {}, [])).files)
    os.remove(os.path.join(folder, *next(iter(load_contact_page(folder).files.values())).path.split("/")))
    sandbox.clear_log()
    assert restore.run("--skip-preview-check") == 1          # a folder is not used: exit 1, as always
    assert sandbox.write_attempts() == []
    line = next(s for s in restore.report()["sets"] if s["email"] == dataset.merge_sets[0]["email"])
    assert line["status"] == "restored" and not line.get("error") and "nothing to do" in line["note"]


def test_a_fifo_in_place_of_metadata_never_hangs_the_restore(tmp_path, monkeypatch, make_sandbox):
    import threading

    from restoring import backup_sets
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    metadata = os.path.join(run.backups()[0], "metadata.json")
    os.remove(metadata)
    os.mkfifo(metadata)
    found: list = []
    reader = threading.Thread(target=lambda: found.append(backup_sets.load_backup_sets(str(tmp_path / "backups"))),
                              daemon=True)
    reader.start()
    reader.join(timeout=20)
    alive = reader.is_alive()
    os.remove(metadata)                                   # (a reader still blocked on it would be freed)
    assert not alive and found
    assert [f.path for f in found[0][1]] == ["metadata.json"]
