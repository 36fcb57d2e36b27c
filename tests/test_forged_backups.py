"""Issue 23 section 1: a restore writes only what the merge did. Backups edited and resealed by
someone who can write the backup folder (but not read this installation's manifest key) are
refused, the set untouched, and no foreign object is written."""
from __future__ import annotations

import hashlib
import json
import os

import backup
import verify_backups
from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun
from plumbing.files import json_bytes
from test_restore import RestoreRun


def _reseal(folder: str, edit, *, keep_mac: bool = False) -> None:
    """Edit metadata.json as an attacker would, then recompute every sum the manifest holds."""
    path = os.path.join(folder, backup.METADATA)
    with open(path, encoding="utf-8") as fh:
        metadata = json.load(fh)
    edit(metadata)
    data = json_bytes(metadata)
    with open(path, "wb") as fh:
        fh.write(data)
    manifest_path = os.path.join(folder, backup.MANIFEST)
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    for item in manifest["files"]:
        if item["path"] == backup.METADATA:
            item.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if not keep_mac:
        manifest.pop("mac", None)
    manifest["manifest_sha256"] = backup.manifest_digest(manifest)
    with open(manifest_path, "wb") as fh:
        fh.write(json_bytes(manifest))


def _forget_manifest_sums(path) -> None:
    """The merge journal as versions before 1.3.0 wrote it: backup steps without manifest_sha256."""
    import sqlite3
    db = sqlite3.connect(str(path))
    with db:
        rows = db.execute("SELECT set_key, step, data FROM steps WHERE step LIKE '%|backup|%'").fetchall()
        for key, step, data in rows:
            value = json.loads(data)
            value.pop("manifest_sha256", None)
            db.execute("UPDATE steps SET data = ? WHERE set_key = ? AND step = ?", (json.dumps(value), key, step))
    db.close()


def _merged(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=61, tickets=(2, 2), conversations=(1, 1), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    # a ticket of another contact, in no backup: the second set's primary's own
    other_primary = sandbox.key_id(dataset.merge_sets[1]["primary"])
    foreign = next(w for w, obj in sandbox.dump()["works"].items()
                   if [u["id"] for u in obj["reported_by"]] == [other_primary])
    assert run.preview() == 0 and run.run() == 0
    first = dataset.merge_sets[0]
    (folder,) = [f for f in run.backups() if os.path.basename(f).startswith(backup.folder_prefix(first["email"]))]
    return run, sandbox, dataset, first, folder, foreign


def test_a_foreign_ticket_added_to_a_resealed_backup_is_refused(tmp_path, monkeypatch, make_sandbox, capsys):
    run, sandbox, dataset, first, folder, foreign = _merged(tmp_path, monkeypatch, make_sandbox)
    dup = sandbox.key_id(first["duplicates"][0])
    _reseal(folder, lambda m: m["moves"]["tickets"].append(
        {"id": foreign, "display_id": "TKT-FOREIGN", "reported_by": [dup]}))
    capsys.readouterr()
    # the sums match again: it verifies, but not as authentic
    assert verify_backups.main(["--backup-dir", folder, "--report-dir", str(tmp_path / "audit")]) == 0
    assert "not authenticated: the manifest carries no MAC" in capsys.readouterr().out
    before = sandbox.dump()
    restore = RestoreRun(run)
    assert restore.run("--preview") == 1
    line = {s["email"]: s for s in restore.report("restore_preview")["sets"]}[first["email"]]
    assert line["status"] == "failed" and line["reason"] == "not_what_the_merge_did"
    assert "the backup was changed after the merge made it" in line["error"]   # the journal's manifest sha256
    _forget_manifest_sums(tmp_path / "savepoints" / "j.sqlite3")    # a journal from before 1.3.0: items decide
    assert restore.run("--preview") == 1
    line = {s["email"]: s for s in restore.report("restore_preview")["sets"]}[first["email"]]
    assert "TKT-FOREIGN" in line["error"] and "records no move of it" in line["error"]
    assert restore.run() == 1
    after = sandbox.dump()
    assert [u["id"] for u in after["works"][foreign]["reported_by"]] == \
        [u["id"] for u in before["works"][foreign]["reported_by"]]
    lines = {s["email"]: s for s in restore.report()["sets"]}
    assert lines[first["email"]]["status"] == "failed"
    assert lines[dataset.merge_sets[1]["email"]]["status"] == "restored"   # the untouched set is restored
    # nothing was created for the refused set: no contact with its email beyond the retired duplicate
    created = [u for u in after["rev_users"].values() if u.get("email") == first["email"] and not u["_retired"]]
    assert len(created) == 1   # the primary alone


def test_an_attacker_chosen_email_is_refused(tmp_path, monkeypatch, make_sandbox):
    run, sandbox, dataset, first, folder, foreign = _merged(tmp_path, monkeypatch, make_sandbox)
    _reseal(folder, lambda m: m["duplicate"].update(email="attacker@evil.example"))
    restore = RestoreRun(run)
    assert restore.run("--skip-preview-check") == 1
    line = {s["email"]: s for s in restore.report()["sets"]}[first["email"]]
    assert "email as 'attacker@evil.example'" in line["error"]
    assert not any(u.get("email") == "attacker@evil.example" for u in sandbox.dump()["rev_users"].values())


def test_a_resealed_manifest_keeping_its_mac_fails_verification(tmp_path, monkeypatch, make_sandbox, capsys):
    run, sandbox, dataset, first, folder, foreign = _merged(tmp_path, monkeypatch, make_sandbox)
    _reseal(folder, lambda m: m["duplicate"].update(display_name="someone else"), keep_mac=True)
    capsys.readouterr()
    assert verify_backups.main(["--backup-dir", folder, "--report-dir", str(tmp_path / "audit")]) == 1
    assert "resealed: its MAC does not match this installation's key" in capsys.readouterr().out


def test_without_the_merge_journal_only_authentic_backups_are_restored(tmp_path, monkeypatch, make_sandbox):
    run, sandbox, dataset, first, folder, foreign = _merged(tmp_path, monkeypatch, make_sandbox)
    restore = RestoreRun(run)
    args = [a if a != str(tmp_path / "savepoints" / "j.sqlite3") else str(tmp_path / "nowhere.sqlite3")
            for a in restore.paths()]
    import restore_contacts
    assert restore_contacts.main(args + ["--preview"]) == 0          # this installation's own backups
    _reseal(folder, lambda m: None)                                   # no longer authenticated
    assert restore_contacts.main(args + ["--preview"]) == 1
    with open(sorted((tmp_path / "reports").glob("restore_preview_*.json"), key=os.path.getmtime)[-1]) as fh:
        line = {s["email"]: s for s in json.load(fh)["sets"]}[first["email"]]
    assert "not authenticated by this installation's key" in line["error"]


def _renamed(folder: str) -> str:
    """The folder under another timestamp (a second earlier), as an attacker can rename it."""
    head, stamp, tail = folder.rsplit("_", 2)
    moved = f"{head}_{int(stamp) - 1:06d}_{tail}"
    os.rename(folder, moved)
    return moved


def test_a_renamed_resealed_backup_folder_is_not_one_the_merge_made(tmp_path, monkeypatch, make_sandbox, capsys):
    """The trial's hole: a folder renamed after editing (its manifest resealed, no MAC) escaped
    the journal's checksum, and its notes and the primary's reference were written. A folder
    whose name the merge journal does not record is refused, the set untouched."""
    run, sandbox, dataset, first, folder, _foreign = _merged(tmp_path, monkeypatch, make_sandbox)
    _reseal(folder, lambda m: m["primary"].update(external_ref="user_ATTACKER0000000000000"))
    moved = _renamed(folder)
    restore = RestoreRun(run)
    sandbox.clear_log()
    capsys.readouterr()
    restore.run("--preview")
    restore.run("--skip-preview-check")
    err = capsys.readouterr().err
    assert f"{moved}: the merge's savepoint" in err and "records no backup folder of that name" in err
    line = next(s for s in restore.report()["sets"] if s["email"] == first["email"])
    assert line["status"] == "failed" and "renamed or added" in line["error"]
    primary = sandbox.key_id(first["primary"])
    assert not any(e["body"].get("id") == primary or e["body"].get("object") == primary
                   for e in sandbox.write_attempts())


def test_a_set_is_restored_whole_or_not_at_all_whatever_its_backups_rows_say(tmp_path, monkeypatch, make_sandbox):
    """A set of two duplicates, one's folder moved away and the other's rows edited to forget it
    (a journal from before 1.3.0, which records no manifest sums): the merge journal knows both
    were backed up and merged together, so the set is refused."""
    dataset = build_dataset(1, seed=62, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=1, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    first, second = run.backups()
    kept_dup = backup.load_metadata(first)["duplicate"]["id"]
    os.rename(second, tmp_path / "elsewhere")
    _forget_manifest_sums(tmp_path / "savepoints" / "j.sqlite3")
    _reseal(first, lambda m: m["merge_set"].update(csv_rows=[r for r in m["merge_set"]["csv_rows"]
                                                             if not r.get("EXTERNAL_REF", "").startswith("user_")
                                                             or r.get("REV_USER_ID") in (kept_dup,)]))
    restore = RestoreRun(run)
    sandbox.clear_log()
    restore.run("--skip-preview-check")
    (line,) = restore.report()["sets"]
    assert line["status"] == "failed" and "whose backup is not here" in line["error"]
    assert sandbox.write_attempts() == []
