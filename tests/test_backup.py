"""Backups against the emulator: what is written, how it is checked, and how it fails.

A round trip over a duplicate whose tickets span several pages, compared file by file
with what the emulator holds; every kind of tampering, each detected and named by its
path; hostile names that must stay inside the backup folder; downloads, disks and
writes that fail part-way (never leaving a folder behind); remove_partials; and the
verify_backups.py command line (line formats, JSON, the integrity report, exit codes).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections import namedtuple
from datetime import datetime, timezone

import pytest

import backup
import plumbing.files
import verify_backups
from backup import MANIFEST, PARTIAL_SUFFIX, BackupError
from backup_checks import verification
from devrev_sandbox import dataset
from helpers import ROOT, MergeRun
from plumbing import clock
from plumbing.files import safe_name


# --------------------------------------------------------------------------- helpers
def contacts(client, sandbox, merge_set: dict, dup_index: int = 0) -> tuple[dict, dict]:
    """The primary and one duplicate, live, as the merge engine passes them."""
    primary = client.get_rev_user(sandbox.key_id(merge_set["primary"]))
    duplicate = client.get_rev_user(sandbox.key_id(merge_set["duplicates"][dup_index]))
    return primary, duplicate


def run_backup(client, sandbox, root: str, merge_set: dict, dup_index: int = 0, email: str | None = None):
    primary, duplicate = contacts(client, sandbox, merge_set, dup_index)
    return backup.write_backup(client, root, email=email or merge_set["email"],
                               csv_rows=[{"EMAIL": merge_set["email"]}], primary=primary, duplicate=duplicate,
                               run_id="run-test")


def problem_paths(result) -> list[str]:
    return [path for path, _ in result.problems]


def reasons_for(result, path: str) -> list[str]:
    return [reason for p, reason in result.problems if p == path]


def all_files(folder: str) -> list[str]:
    """Every file under `folder`, as a path relative to it with `/`."""
    out = []
    for dirpath, _, filenames in os.walk(folder):
        out += [os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/") for f in filenames]
    return sorted(out)


def load(folder: str, relpath: str):
    with open(os.path.join(folder, *relpath.split("/")), encoding="utf-8") as fh:
        return json.load(fh)


def rewrite_manifest(folder: str, edit, *, rehash: bool) -> None:
    """Apply `edit` to verification.json; `rehash` recomputes its own sha256 (a careful forger)."""
    manifest = load(folder, MANIFEST)
    edit(manifest)
    if rehash:
        manifest["manifest_sha256"] = backup.manifest_digest(manifest)
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)


def first_attachment(folder: str) -> str:
    return next(p for p in all_files(folder) if "/attachments/" in p)


def small_dataset(**kw):
    options = dict(seed=5, tickets=(4, 4), conversations=(2, 2), comments=(2, 3), attachment_rate=0.7,
                   two_duplicate_sets=0, skipped=False)
    options.update(kw)
    return dataset.build_dataset(1, **options)


@pytest.fixture
def small_backup(make_sandbox, make_client, tmp_path):
    """A verified backup of a duplicate with 4 tickets, 2 conversations and attachments."""
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    result = run_backup(client, sandbox, str(tmp_path / "backups"), data.merge_sets[0])
    assert verification.verify_backup(result.folder).ok
    assert result.counts["attachments"] >= 2 and result.counts["messages"] >= 2
    return result.folder


# --------------------------------------------------------------------------- round trip
def test_round_trip_matches_the_emulator_file_by_file(make_sandbox, make_client, tmp_path):
    data = dataset.build_dataset(1, seed=11, big_set_tickets=120, conversations=(3, 3), comments=(1, 3),
                                         attachment_rate=0.9, two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    root = str(tmp_path / "backups")
    merge_set = data.merge_sets[0]
    primary, duplicate = contacts(client, sandbox, merge_set)
    result = backup.write_backup(client, root, email=merge_set["email"], csv_rows=[{"EMAIL": merge_set["email"]}],
                                 primary=primary, duplicate=duplicate, run_id="run-1")
    folder = result.folder

    check = verification.verify_backup(folder)
    assert check.ok, check.problems
    assert os.listdir(root) == [os.path.basename(folder)]  # no .partial left
    assert not folder.endswith(PARTIAL_SUFFIX)

    dump = sandbox.dump()
    dup_id = duplicate["id"]
    my_tickets = {i: w for i, w in dump["works"].items() if dup_id in [u["id"] for u in w["reported_by"]]}
    my_convs = {i: c for i, c in dump["conversations"].items() if dup_id in [u["id"] for u in c["members"]]}
    assert len(my_tickets) == 120  # more than two pages of 50
    assert len(my_convs) == 3

    tickets = load(folder, "tickets.json")
    conversations = load(folder, "conversations.json")
    assert {t["id"] for t in tickets} == set(my_tickets)
    assert {t["id"]: t for t in tickets} == my_tickets
    assert {c["id"]: c for c in conversations} == my_convs

    # each messages.json holds exactly the emulator's entries of that object
    messages = 0
    for obj in tickets + conversations:
        saved = load(folder, f"conversations/{backup.object_folder(obj['display_id'])}/messages.json")
        expected = dump["timeline_entries"].get(obj["id"], [])
        assert sorted(saved, key=lambda e: e["id"]) == sorted(expected, key=lambda e: e["id"])
        messages += sum(1 for e in saved if e["type"] == "timeline_comment")
    assert messages == result.counts["messages"] > 0

    # every attachment's bytes are the emulator's bytes
    metadata = load(folder, "metadata.json")
    referenced = set()
    for obj_id in list(my_tickets) + list(my_convs):
        holders = [dump["works"].get(obj_id) or dump["conversations"][obj_id]]
        holders += dump["timeline_entries"].get(obj_id, [])
        referenced |= {(obj_id, a["id"]) for h in holders for a in h.get("artifacts", [])}
    assert len(metadata["attachments"]) == len(referenced) == result.counts["attachments"] > 120
    for item in metadata["attachments"]:
        art = sandbox.state.artifacts[item["artifact_id"]]
        expected = hashlib.sha256(sandbox.state.artifact_bytes(art, 0, art["_size"])).hexdigest()
        with open(os.path.join(folder, *item["path"].split("/")), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == expected == item["sha256"]
        assert item["declared_size"] == art["_size"]

    # both contacts, and the original references needed to undo the merge
    assert metadata["primary"] == primary and metadata["duplicate"] == duplicate
    assert metadata["merge_set"]["email"] == merge_set["email"]
    assert metadata["original_external_refs"] == {"primary": primary["external_ref"],
                                                  "duplicate": duplicate["external_ref"]}
    moved = {m["id"]: m["reported_by"] for m in metadata["moves"]["tickets"]}
    assert moved == {i: [u["id"] for u in w["reported_by"]] for i, w in my_tickets.items()}
    members = {m["id"]: m["members"] for m in metadata["moves"]["conversations"]}
    assert members == {i: [u["id"] for u in c["members"]] for i, c in my_convs.items()}

    # the manifest lists exactly the files on disk
    manifest = load(folder, MANIFEST)
    assert sorted(f["path"] for f in manifest["files"]) == [p for p in all_files(folder) if p != MANIFEST]
    assert manifest["counts"]["tickets"] == 120 and manifest["counts"] == result.counts

    # private: the folder and everything in it
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o700, name
        for name in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o600, name


def test_backup_reads_change_nothing_in_devrev(make_sandbox, make_client, tmp_path):
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    before = sandbox.dump()
    run_backup(client, sandbox, str(tmp_path), data.merge_sets[0])
    assert sandbox.writes() == [] and sandbox.dump() == before


# --------------------------------------------------------------------------- tampering
def _flip_byte(folder):
    path = first_attachment(folder)
    full = os.path.join(folder, *path.split("/"))
    with open(full, "r+b") as fh:
        fh.seek(os.path.getsize(full) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return path, "sha256 does not match"


def _truncate(folder):
    path = first_attachment(folder)
    full = os.path.join(folder, *path.split("/"))
    os.truncate(full, os.path.getsize(full) // 2)
    return path, "(truncated)"


def _delete(folder):
    path = next(p for p in all_files(folder) if p.endswith("/messages.json"))
    os.remove(os.path.join(folder, *path.split("/")))
    return path, "missing"


def _delete_attachment(folder):
    path = first_attachment(folder)
    os.remove(os.path.join(folder, *path.split("/")))
    return path, "missing"


def _extra_file(folder):
    attachments = os.path.dirname(os.path.join(folder, *first_attachment(folder).split("/")))
    with open(os.path.join(attachments, "planted.exe"), "wb") as fh:
        fh.write(b"MZ")
    return os.path.relpath(os.path.join(attachments, "planted.exe"), folder).replace(os.sep, "/"), "not listed"


def _edit_manifest_size(folder):
    def edit(manifest):
        manifest["files"][0]["size"] += 1
    rewrite_manifest(folder, edit, rehash=False)
    return MANIFEST, "its own sha256 does not match"


def _edit_count_rehashed(folder):
    def edit(manifest):
        manifest["counts"]["tickets"] += 1
    rewrite_manifest(folder, edit, rehash=True)
    return "tickets.json", "the manifest counts"


def _edit_entries_count_rehashed(folder):
    path = next(p for p in all_files(folder) if p.startswith("conversations/") and p.endswith("/messages.json"))
    display_id = path.split("/")[1]

    def edit(manifest):
        manifest["counts"]["entries"][display_id] += 2
    rewrite_manifest(folder, edit, rehash=True)
    return path, "the manifest counts"


def _edit_messages_count_rehashed(folder):
    def edit(manifest):
        manifest["counts"]["messages"] -= 1
    rewrite_manifest(folder, edit, rehash=True)
    return MANIFEST, "messages"


def _edit_attachments_count_rehashed(folder):
    def edit(manifest):
        manifest["counts"]["attachments"] += 1
    rewrite_manifest(folder, edit, rehash=True)
    return MANIFEST, "attachments"


def _drop_from_manifest_rehashed(folder):
    """Delete an attachment *and* its manifest line: only the references catch it."""
    path = first_attachment(folder)
    os.remove(os.path.join(folder, *path.split("/")))

    def edit(manifest):
        manifest["files"] = [f for f in manifest["files"] if f["path"] != path]
    rewrite_manifest(folder, edit, rehash=True)
    return path, "missing: attachment"


def _world_readable(folder):
    path = first_attachment(folder)
    os.chmod(os.path.join(folder, *path.split("/")), 0o644)
    return path, "readable by other users"


def _manifest_deleted(folder):
    os.remove(os.path.join(folder, MANIFEST))
    return MANIFEST, "missing"


def _tickets_json_not_objects(folder):
    """Garbage where tickets were: reported, never a crash."""
    with open(os.path.join(folder, "tickets.json"), "w") as fh:
        json.dump([{}, [1], {"display_id": ["x"]}], fh)
    return "tickets.json", "no id"


TAMPERINGS = {
    "changed byte": _flip_byte,
    "truncated file": _truncate,
    "deleted messages.json": _delete,
    "deleted attachment": _delete_attachment,
    "extra file": _extra_file,
    "edited manifest size": _edit_manifest_size,
    "edited ticket count (rehashed)": _edit_count_rehashed,
    "edited entries count (rehashed)": _edit_entries_count_rehashed,
    "edited messages count (rehashed)": _edit_messages_count_rehashed,
    "edited attachments count (rehashed)": _edit_attachments_count_rehashed,
    "file and manifest line removed (rehashed)": _drop_from_manifest_rehashed,
    "world-readable file": _world_readable,
    "manifest deleted": _manifest_deleted,
    "tickets.json garbage": _tickets_json_not_objects,
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS.values()), ids=list(TAMPERINGS))
def test_tampering_is_detected_and_named(small_backup, tamper):
    path, reason_part = tamper(small_backup)
    check = verification.verify_backup(small_backup)
    assert not check.ok
    assert path in problem_paths(check), check.problems
    assert any(reason_part in r for r in reasons_for(check, path)), check.problems


def test_a_rehashed_count_edit_is_caught_by_the_count_check_alone(small_backup):
    _edit_count_rehashed(small_backup)
    check = verification.verify_backup(small_backup)
    # the manifest's own hash still matches: the count check catches it, and the MAC (this installation's key)
    assert problem_paths(check) == [MANIFEST, "tickets.json"], check.problems
    assert check.problems[0][1].startswith("resealed: its MAC does not match")


def test_an_edited_manifest_names_itself_and_the_file(small_backup):
    _edit_manifest_size(small_backup)
    first = load(small_backup, MANIFEST)["files"][0]["path"]
    check = verification.verify_backup(small_backup)
    assert set(problem_paths(check)) == {MANIFEST, first}


def test_a_leftover_partial_folder_is_incomplete(small_backup):
    partial = small_backup + PARTIAL_SUFFIX
    shutil.copytree(small_backup, partial)
    check = verification.verify_backup(partial)
    assert check.problems == [(".", "incomplete backup: interrupted before it was finished (.partial)")]
    assert partial in verification.find_backups(os.path.dirname(small_backup))


def test_quick_catches_truncation_but_not_a_same_size_change(make_sandbox, make_client, tmp_path):
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    merge_set = data.merge_sets[0]
    truncated = run_backup(client, sandbox, str(tmp_path / "a"), merge_set).folder
    changed = run_backup(client, sandbox, str(tmp_path / "b"), merge_set).folder
    path, _ = _truncate(truncated)
    assert path in problem_paths(verification.verify_backup(truncated, quick=True))
    _flip_byte(changed)
    assert verification.verify_backup(changed, quick=True).ok  # sizes only: documented blind spot
    assert not verification.verify_backup(changed).ok


def test_an_unreadable_file_is_a_problem_not_a_crash(small_backup, monkeypatch):
    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(verification, "_sha256_file", refuse)
    check = verification.verify_backup(small_backup)
    assert not check.ok
    assert all("cannot be read (Permission denied)" in r for _, r in check.problems)


def test_a_folder_swapped_for_a_link_outside_is_caught(small_backup, tmp_path):
    relpath = first_attachment(small_backup)
    inner = os.path.join(small_backup, *relpath.split("/")[:2])  # conversations/<object>
    outside = str(tmp_path / "elsewhere")
    shutil.move(inner, outside)
    os.symlink(outside, inner)
    check = verification.verify_backup(small_backup)
    assert relpath in problem_paths(check)
    assert any("outside the backup folder" in r for r in reasons_for(check, relpath))


# --------------------------------------------------------------------------- hostile names
HOSTILE_NAMES = ["../../../etc/passwd", "a/b\\c", "..", ".", "", "/etc/shadow", "\x1b[31mred\x1b[0m.txt",
                 "y" * 300 + ".pdf", "\u202egnp.exe", "\U0001F600 smile \U0001F389.png",
                 "e\u0301x\u0301\u0308 combining.txt", "nul\x00byte", "\u05e9\u05dc\u05d5\u05dd.txt",
                 "con:a?b*c|d<e>f\"g", "-rf", "\u0000", "a\nb\rc\td"]


def hostile_seed() -> dict:
    arts = [{"number": 9000 + i, "name": n, "size": 100 + i} for i, n in enumerate(HOSTILE_NAMES)]
    return {
        "workspaces": [{"key": "acme"}],
        "dev_users": [{"key": "agent1", "email": "agent1@support.example"}],
        "rev_users": [
            {"key": "p", "email": "x@evil.com", "workspace": "acme", "full_name": "P"},
            {"key": "d", "email": "x@evil.com", "workspace": "acme", "suffix": "..\\..\\evil\u202e\x1b[2J",
             "external_ref": "user_Ab3dE6gH9jK2mN5pQ8sT1v"}],
        "tickets": [{"key": "t", "number": "../../../tmp/evil", "reported_by": ["d"], "owned_by": ["agent1"],
                     "workspace": "acme",
                     "comments": [{"by": "d", "body": "hostile", "artifacts": arts}],
                     "artifacts": [{"number": 9100, "name": "..", "size": 5}]},
                    {"key": "t2", "number": "\x1b]0;pwned\x07", "reported_by": ["d"], "owned_by": ["agent1"],
                     "workspace": "acme",
                     "comments": [{"by": "d", "artifacts": [{"number": 9101, "name": "../../x", "size": 7}]}]}],
        "conversations": [{"key": "c", "number": "..", "members": ["d", "agent1"], "owned_by": ["agent1"],
                           "comments": [{"by": "d", "artifacts": [{"number": 9200, "name": "../x", "size": 10}]}]}],
    }


def test_hostile_names_stay_inside_the_backup_folder(make_sandbox, make_client, tmp_path):
    sandbox = make_sandbox(hostile_seed())
    client = make_client(sandbox)
    root = tmp_path / "deep" / "backups"
    primary = client.get_rev_user(sandbox.key_id("p"))
    duplicate = client.get_rev_user(sandbox.key_id("d"))
    result = backup.write_backup(client, str(root), email="../../etc/x@evil.com", csv_rows=[],
                                 primary=primary, duplicate=duplicate, run_id="r")
    folder = os.path.realpath(result.folder)
    assert os.path.dirname(folder) == os.path.realpath(root)
    assert os.listdir(tmp_path) == ["deep"] and os.listdir(tmp_path / "deep") == ["backups"]
    assert os.listdir(root) == [os.path.basename(folder)]

    created = []
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        created += [os.path.join(dirpath, n) for n in dirnames + filenames]
    inside = [p for p in created if os.path.realpath(p).startswith(folder + os.sep)]
    assert len(inside) == len(created) - 3  # all but deep/, deep/backups/ and the folder itself
    for path in created:
        name = os.path.basename(path)
        assert name not in (".", "..") and not name.startswith(".")
        assert all(ch.isprintable() for ch in name), repr(name)
        assert len(name.encode()) <= 255

    attachments = [p for p in all_files(folder) if "/attachments/" in p]
    assert len(attachments) == len(HOSTILE_NAMES) + 3 == result.counts["attachments"]
    assert len(all_files(folder)) == len(attachments) + 3 + 1 + 4  # messages, contact page, JSON, manifest
    check = verification.verify_backup(folder)
    assert check.ok, check.problems
    # the names are kept, as they were, in the metadata
    assert sorted(a["file_name"] for a in load(folder, "metadata.json")["attachments"]) == \
        sorted([n or "attachment" for n in HOSTILE_NAMES] + ["..", "../../x", "../x"])  # "" is named by collect()


@pytest.mark.parametrize("name", HOSTILE_NAMES + ["." * 300, "\u00e9" * 200 + ".txt", "a" * 119 + ".tar.gz"])
def test_safe_name_is_one_harmless_component(name):
    out = safe_name(name)
    assert out and out not in (".", "..") and not out.startswith(".")
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert all(ch.isprintable() and not ch.isspace() for ch in out)
    assert len(out.encode()) <= 120


# --------------------------------------------------------------------------- failures
def test_a_short_download_fails_the_backup_and_leaves_nothing(make_sandbox, make_client, tmp_path):
    seed = hostile_seed()
    seed["tickets"][1]["comments"][0]["artifacts"].append({"number": 9300, "name": "short.bin", "size": 1000,
                                                           "declared_size": 2000})
    sandbox = make_sandbox(seed)
    client = make_client(sandbox)
    root = tmp_path / "backups"
    with pytest.raises(BackupError, match=r"artifact-9300.*shorter than its declared 2000"):
        backup.write_backup(client, str(root), email="x@evil.com", csv_rows=[],
                            primary=client.get_rev_user(sandbox.key_id("p")),
                            duplicate=client.get_rev_user(sandbox.key_id("d")), run_id="r")
    assert os.listdir(root) == []


def test_too_little_free_space_refuses_before_writing(make_sandbox, make_client, tmp_path, monkeypatch):
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    usage = namedtuple("usage", "total used free")
    asked = []

    def tiny_disk(path):
        asked.append(path)
        return usage(100 << 20, 80 << 20, (16 << 20) + 1000)   # above the margin, below the margin + backup
    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    root = tmp_path / "backups"
    with pytest.raises(BackupError, match=r"not enough free disk space in .*backups: the backup needs about "
                                          r"[\d.]+ MiB \(\+16\.0 MiB margin\), 16\.0 MiB are free"):
        run_backup(client, sandbox, str(root), data.merge_sets[0])
    assert set(asked) == {str(root)}
    assert os.listdir(root) == []
    assert [c for c in sandbox.request_log if c["server"] == "files"] == []  # not one attachment fetched


def test_a_disk_too_small_for_any_backup_stops_the_run_once_with_the_real_figure(tmp_path, monkeypatch,
                                                                                 make_sandbox, capsys):
    """Issue 24 §3: below the margin no backup can fit: one line for the run (exit 1), naming the
    free space, instead of one failed line per set; nothing is written to DevRev."""
    usage = namedtuple("usage", "total used free")
    data = dataset.build_dataset(4, seed=5, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(data.seed)
    run = MergeRun(tmp_path, sandbox, data, monkeypatch)
    assert run.preview() == 0
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100 << 20, 97 << 20, 3 << 20)
                        if "backups" in str(path) else real(path))
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "not enough free disk space" in x]
    assert len(lines) == 1 and "3.0 MiB are free" in lines[0] and "for any backup" in lines[0], err
    assert sandbox.write_attempts() == []


@pytest.mark.parametrize("target", ["open_private", "fsync_after_some_files", "mkdir"])
def test_a_full_disk_is_a_backup_error_and_leaves_no_folder(make_sandbox, make_client, tmp_path, monkeypatch,
                                                            target):
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    root = tmp_path / "backups"
    root.mkdir(mode=0o700)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if target == "open_private":
        def refuse(*args, **kwargs):
            raise full
        monkeypatch.setattr(plumbing.files, "open_private", refuse)
    elif target == "fsync_after_some_files":
        real_fsync, calls = os.fsync, []

        def fsync(fd):
            calls.append(fd)
            if len(calls) > 3:
                raise full
            return real_fsync(fd)
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        def mkdir(*args, **kwargs):
            raise full
        monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(BackupError, match="the disk is full") as caught:
        run_backup(client, sandbox, str(root), data.merge_sets[0])
    assert data.merge_sets[0]["email"] in str(caught.value)
    assert os.listdir(root) == []


def test_remove_partials_removes_only_that_email_and_duplicate(tmp_path):
    root = str(tmp_path)
    moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    name = backup.backup_folder_name
    mine = [name("Ana@X.example", "REVU-abc", moment) + PARTIAL_SUFFIX,
            name("ana@x.example", "REVU-abc", moment) + "-2" + PARTIAL_SUFFIX]
    others = [name("ana@x.example", "REVU-abc", moment),                     # a complete backup
              name("ana@x.example", "REVU-abcd", moment) + PARTIAL_SUFFIX,   # another duplicate
              name("ana@x.example", "REVU-ab", moment) + PARTIAL_SUFFIX,
              name("bob@x.example", "REVU-abc", moment) + PARTIAL_SUFFIX,    # another email
              name("ana@x.example.org", "REVU-abc", moment) + PARTIAL_SUFFIX,
              "notes" + PARTIAL_SUFFIX]
    for folder in mine + others:
        os.mkdir(os.path.join(root, folder))
        with open(os.path.join(root, folder, "f"), "w") as fh:
            fh.write("x")
    removed = backup.remove_partials(root, " ANA@x.example ", "REVU-abc")
    assert sorted(removed) == sorted(mine)
    assert sorted(os.listdir(root)) == sorted(others)
    assert backup.remove_partials(str(tmp_path / "missing"), "ana@x.example", "REVU-abc") == []


def test_remove_partials_clears_a_crashed_backup_then_a_new_one_verifies(make_sandbox, make_client, tmp_path):
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    merge_set = data.merge_sets[0]
    root = str(tmp_path)
    primary, duplicate = contacts(client, sandbox, merge_set)
    # a crash mid-backup (a kill -9) leaves its .partial folder behind
    _, partial = backup._reserve_folder(root, backup.backup_folder_name(merge_set["email"], duplicate["display_id"],
                                                                        clock.utc_now()))
    assert verification.verify_backup(partial).problems[0][1].startswith("incomplete backup")
    assert backup.remove_partials(root, merge_set["email"], duplicate["display_id"]) == [os.path.basename(partial)]
    folder = run_backup(client, sandbox, root, merge_set).folder
    assert os.listdir(root) == [os.path.basename(folder)] and verification.verify_backup(folder).ok


# --------------------------------------------------------------------------- verify_backups.py
@pytest.fixture
def backups_dir(make_sandbox, make_client, tmp_path):
    """backups/ with two verified backups (a set with two duplicates)."""
    data = small_dataset(two_duplicate_sets=1, tickets=(2, 3))
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    root = str(tmp_path / "backups")
    for index in range(2):
        run_backup(client, sandbox, root, data.merge_sets[0], dup_index=index)
    assert len(verification.find_backups(root)) == 2
    return root


def run_cli(capsys, *argv) -> tuple[int, list[str], str]:
    code = verify_backups.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_cli_all_ok(backups_dir, tmp_path, capsys):
    reports = str(tmp_path / "reports")
    code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", reports)
    folders = verification.find_backups(backups_dir)
    assert code == 0 and err == ""
    assert lines[:2] == [f"OK {f} (authentic: made by this installation)" for f in folders]
    assert lines[2] == "2 backups checked: 2 OK (2 authentic, made by this installation), 0 FAILED"
    assert re.fullmatch(r"integrity report: .*/reports/integrity_\d{8}T\d{6}Z\.json", lines[3])
    report_file = lines[3].split(": ", 1)[1]
    assert os.path.dirname(report_file) == reports and len(lines) == 4
    report = load(reports, os.path.basename(report_file))
    assert report["totals"] == {"backups": 2, "ok": 2, "failed": 0}
    assert [b["folder"] for b in report["backups"]] == folders and all(b["ok"] for b in report["backups"])
    assert report["backups"][0]["counts"]["tickets"] >= 2
    assert stat.S_IMODE(os.stat(report_file).st_mode) == 0o600


def test_cli_failed_lines_name_each_file(backups_dir, tmp_path, capsys):
    good, bad = verification.find_backups(backups_dir)
    flipped, _ = _flip_byte(bad)
    deleted, _ = _delete(bad)
    partial = good + PARTIAL_SUFFIX
    shutil.copytree(good, partial)
    code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", str(tmp_path / "r"))
    assert code == 1 and err == ""
    expected = []
    for folder in verification.find_backups(backups_dir):  # the order the command checks them in
        check = verification.verify_backup(folder)
        expected += [f"OK {folder} (authentic: made by this installation)"] if check.ok \
            else [f"FAILED {folder}: {p}: {r}" for p, r in check.problems]
    assert lines[:-2] == expected and len(expected) >= 4
    assert f"OK {good} (authentic: made by this installation)" in lines
    assert f"FAILED {bad}: {flipped}: content changed: sha256 does not match the manifest" in lines
    assert f"FAILED {bad}: {deleted}: missing" in lines
    assert f"FAILED {partial}: .: incomplete backup: interrupted before it was finished (.partial)" in lines
    for line in lines[:-2]:
        assert re.fullmatch(r"OK \S+ \(authentic: made by this installation\)|FAILED \S+: [^:]+: .+", line), line
    assert lines[-2] == "3 backups checked: 1 OK (1 authentic, made by this installation), 2 FAILED"
    assert lines[-1].startswith("integrity report: ")


def test_cli_json_and_quick(backups_dir, tmp_path, capsys):
    good, bad = verification.find_backups(backups_dir)
    _flip_byte(bad)  # same size: --quick does not see it, a full check does
    reports = str(tmp_path / "reports")
    code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", reports, "--json", "--quick")
    (line,) = lines                     # one JSON object on stdout, the human text on stderr
    result = json.loads(line)
    assert code == 0 and result["totals"] == {"backups": 2, "ok": 2, "failed": 0}
    assert result["kind"] == "verify_backups" and result["exit_code"] == 0 and result["schema_version"] == 1
    assert result["details"]["mode"].startswith("quick")
    path = result["reports"]["json"]
    assert err.strip() == f"integrity report: {path}" and os.path.isfile(path)

    code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", reports, "--json")
    result = json.loads("\n".join(lines))
    assert code == 1 and result["totals"] == {"backups": 2, "ok": 1, "failed": 1}
    failed = next(b for b in result["details"]["backups"] if not b["ok"])
    assert failed["folder"] == bad and failed["problems"][0]["reason"].startswith("content changed")
    assert len(os.listdir(reports)) == 2  # one report per run, never overwritten
    assert load(reports, os.path.basename(result["reports"]["json"]))["totals"] == result["totals"]


def test_cli_skips_a_report_folder_kept_inside_the_backup_folder(backups_dir, capsys):
    reports = os.path.join(backups_dir, "reports")
    for _ in range(2):
        code, lines, _ = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", reports)
        assert code == 0 and lines[-2] == "2 backups checked: 2 OK (2 authentic, made by this installation), 0 FAILED"
    assert len(os.listdir(reports)) == 2


def test_cli_escapes_control_characters(backups_dir, tmp_path, capsys):
    good, _ = verification.find_backups(backups_dir)
    with open(os.path.join(good, "\x1b[2Jevil\u202e.txt"), "w") as fh:
        fh.write("x")
    code, lines, _ = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", str(tmp_path / "r"))
    assert code == 1
    assert f"FAILED {good}: \\x1b[2Jevil\\u202e.txt: not listed in the manifest (added after the backup)" in lines
    assert all(ch.isprintable() for line in lines for ch in line)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no-arguments", "report-dir-is-a-file"])
def test_cli_bad_usage_exits_2_with_one_error_line(tmp_path, capsys, case):
    target = tmp_path / "backups"
    argv = ["--backup-dir", str(target), "--report-dir", str(tmp_path / "reports")]
    if case == "file":
        target.write_text("not a folder")
    elif case == "empty":
        target.mkdir()
        (target / ".hidden").mkdir()
    elif case == "no-arguments":
        argv = []
    elif case == "report-dir-is-a-file":
        target.mkdir()
        (target / "x").mkdir()
        (tmp_path / "reports").write_text("")
    code, lines, err = run_cli(capsys, *argv)
    assert code == 2 and lines == []
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert {"missing": "not found", "file": "not a folder", "empty": "no backups in",
            "no-arguments": "--backup-dir", "report-dir-is-a-file": "--report-dir"}[case] in err
    assert not (tmp_path / "reports").is_dir()


def test_cli_as_a_command(backups_dir, tmp_path):
    """The script itself: exit codes and the default report folder, in a subprocess."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    ok = subprocess.run([sys.executable, os.path.join(ROOT, "verify_backups.py"), "--backup-dir", backups_dir],
                        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-2] == "2 backups checked: 2 OK (2 authentic, made by this installation), 0 FAILED"
    assert len(os.listdir(tmp_path / "reports")) == 1
    _truncate(verification.find_backups(backups_dir)[0])
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "verify_backups.py"), "--backup-dir", backups_dir,
                          "--quick"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "(truncated)" in bad.stdout and bad.stderr == ""
    usage = subprocess.run([sys.executable, os.path.join(ROOT, "verify_backups.py"), "--backup-dir",
                            str(tmp_path / "nope")], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=60)
    assert usage.returncode == 2 and usage.stdout == ""
    assert usage.stderr == f"error: backup folder not found: {tmp_path / 'nope'}\n"


# --------------------------------------------------------------------------- layout and moves
def test_load_moves_reads_back_what_the_backup_wrote(small_backup):
    metadata = load(small_backup, backup.METADATA)
    moves = backup.load_moves(small_backup)
    assert [m.to_json() for m in moves if m.kind == "ticket"] == metadata["moves"]["tickets"]
    assert [m.to_json() for m in moves if m.kind == "conversation"] == metadata["moves"]["conversations"]
    assert [m.kind for m in moves] == sorted((m.kind for m in moves), key=["ticket", "conversation"].index)
    assert moves and all(m.users for m in moves)
    assert {m.field_name for m in moves} == {"reported_by", "members"}


@pytest.mark.parametrize("moves", [None, {"tickets": []}, {"tickets": [{"id": "x"}], "conversations": []},
                                   {"tickets": [{"id": "x", "reported_by": "y"}], "conversations": []},
                                   {"tickets": [], "conversations": [{"id": 3, "members": []}]}])
def test_load_moves_refuses_a_metadata_file_without_the_moves_shape(tmp_path, moves):
    (tmp_path / backup.METADATA).write_text(json.dumps({"format": 1, "moves": moves}))
    with pytest.raises(BackupError, match="no readable list of moves"):
        backup.load_moves(str(tmp_path))


def test_load_moves_of_a_missing_or_broken_metadata_file_is_a_backup_error(tmp_path):
    with pytest.raises(BackupError, match="cannot read metadata.json"):
        backup.load_moves(str(tmp_path))
    (tmp_path / backup.METADATA).write_text("{not json")
    with pytest.raises(BackupError, match="no readable list of moves"):
        backup.load_moves(str(tmp_path))


def test_layout_paths_are_the_ones_the_writer_uses(small_backup):
    files = all_files(small_backup)
    assert set(backup.JSON_FILES) | {backup.MANIFEST} <= set(files)
    for obj in load(small_backup, backup.TICKETS) + load(small_backup, backup.CONVERSATIONS):
        assert backup.messages_path(obj["display_id"]) in files
    for item in load(small_backup, backup.METADATA)["attachments"]:
        assert item["path"] == backup.attachment_path(item["object"], item["display_id"], item["file_name"])
        assert backup.is_attachment(item["path"]) and item["path"] in files
    metadata = load(small_backup, backup.METADATA)
    email, duplicate = metadata["merge_set"]["email"], metadata["duplicate"]["display_id"]
    name = os.path.basename(small_backup)
    assert name.startswith(backup.folder_prefix(email) + "_")
    assert backup.is_partial_of(backup.partial_path(name), email, duplicate)
    assert not backup.is_partial_of(name, email, duplicate)                       # complete: not a partial
    assert not backup.is_partial_of(backup.partial_path(name), "other@x.example", duplicate)


# --------------------------------------------------------------------------- verify_backups.py --jobs
def _many_backups(backups_dir: str, copies: int) -> list[str]:
    """backups_dir's backups copied under new names (a copy verifies as its original)."""
    originals = verification.find_backups(backups_dir)
    for n in range(copies):
        source = originals[n % len(originals)]
        shutil.copytree(source, f"{source}-copy{n}")
    return verification.find_backups(backups_dir)


@pytest.mark.parametrize("damaged", [False, True])
def test_cli_jobs_gives_the_same_lines_report_and_exit_code_as_one_job(backups_dir, tmp_path, capsys, monkeypatch,
                                                                       damaged):
    folders = _many_backups(backups_dir, 5)
    if damaged:
        _flip_byte(folders[1])
        _delete(folders[4])
        _truncate(folders[6])
        shutil.copytree(folders[0], folders[0] + PARTIAL_SUFFIX)
    pools = []
    real_pool = verification.ProcessPoolExecutor

    def counted_pool(*args, **kwargs):
        pools.append(kwargs.get("max_workers"))
        return real_pool(*args, **kwargs)
    monkeypatch.setattr(verification, "ProcessPoolExecutor", counted_pool)
    monkeypatch.setattr(verification, "PARALLEL_FROM", 2)
    monkeypatch.setattr(verification, "_CHUNK", 1)   # one folder per task: the results come back interleaved
    runs = {}
    for jobs in ("1", "3"):
        reports = str(tmp_path / f"reports{jobs}")
        code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", reports, "--jobs", jobs)
        report = load(reports, os.listdir(reports)[0])
        runs[jobs] = (code, lines[:-1], err, report["totals"], report["backups"])
    assert pools == [3]   # --jobs 1 checks in this process; --jobs 3 on three worker processes
    assert runs["1"] == runs["3"]
    code, lines, _, totals, results = runs["3"]
    assert [r["folder"] for r in results] == verification.find_backups(backups_dir)
    if damaged:
        assert code == 1 and totals == {"backups": 8, "ok": 4, "failed": 4}
        assert f"FAILED {folders[0] + PARTIAL_SUFFIX}: .: incomplete backup: interrupted before it was finished " \
               f"(.partial)" in lines
        assert any(line.startswith(f"FAILED {folders[1]}: ") and "sha256" in line for line in lines)
    else:
        assert code == 0 and totals == {"backups": 7, "ok": 7, "failed": 0}
        assert lines[-1] == "7 backups checked: 7 OK (7 authentic, made by this installation), 0 FAILED"


def test_cli_jobs_must_be_a_positive_number(backups_dir, tmp_path, capsys):
    code, lines, err = run_cli(capsys, "--backup-dir", backups_dir, "--report-dir", str(tmp_path / "r"), "--jobs", "0")
    assert code == 2 and lines == [] and "--jobs" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- memory of a big backup
def test_a_list_read_item_by_item_verifies_and_fails_exactly_as_a_list_read_whole(small_backup, monkeypatch):
    """Every JSON list of the backup read item by item (the way a huge tickets.json is read):
    the same counts, problems and values as read whole, on a good backup and a damaged one."""
    def checked():
        result = verification.verify_backup(small_backup)
        return result.ok, result.problems, result.counts, backup.load_json(os.path.join(small_backup, backup.TICKETS))
    whole = checked()
    monkeypatch.setattr(backup, "STREAM_LIST_BYTES", 0)
    monkeypatch.setattr(backup, "_SLICE", 7)   # items cut across slices everywhere
    assert checked() == whole and whole[0]
    path = os.path.join(small_backup, backup.TICKETS)
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:   # one ticket fewer, and the manifest's size and sha256 kept
        fh.write(data[:data.rindex(b",\n  {")] + b"\n]\n" + b" " * (len(data) - data.rindex(b",\n  {") - 4))
    streamed = checked()
    monkeypatch.setattr(backup, "STREAM_LIST_BYTES", 1 << 20)
    assert checked() == streamed and not streamed[0]
    assert (backup.TICKETS, f"holds {whole[2]['tickets'] - 1} tickets, the manifest counts {whole[2]['tickets']}") \
        in streamed[1]
    with open(path, "wb") as fh:
        fh.write(data[:-3] + b",]\n")   # not JSON any more: the same problem either way
    monkeypatch.setattr(backup, "STREAM_LIST_BYTES", 0)
    assert (backup.TICKETS, "not valid JSON") in verification.verify_backup(small_backup).problems


def test_a_streamed_backup_keeps_ids_not_records_of_what_it_listed(make_sandbox, make_client, tmp_path):
    """What write_backup keeps of each listed object until the backup is sealed: ids and the
    artifact summaries' names and sizes, never DevRev's user records (memory per object)."""
    data = small_dataset()
    sandbox = make_sandbox(data.seed)
    client = make_client(sandbox)
    result = run_backup(client, sandbox, str(tmp_path / "backups"), data.merge_sets[0])
    assert result.snapshot.tickets and result.snapshot.conversations
    for kind, objects in (("reported_by", result.snapshot.tickets), ("members", result.snapshot.conversations)):
        for obj in objects:
            assert set(obj) <= {"id", "display_id", kind, "artifacts", "custom_fields", "subtype"}
            assert obj[kind] and all(set(user) == {"id"} for user in obj[kind])
            assert all(set(a) <= {"id", "display_id", "file"} and set(a.get("file", {})) <= {"name", "size", "type"}
                       for a in obj.get("artifacts", []))
    listed = load(result.folder, backup.TICKETS)   # the backup itself holds the whole records
    assert any(len(user) > 1 for ticket in listed for user in ticket["reported_by"])
    assert verification.verify_backup(result.folder).ok
