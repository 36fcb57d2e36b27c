"""Secrets, privacy and the safety rules the code enforces (not just the README).

Secrets: after a preview, a merge, verify_backups and runs whose token DevRev rejects
(even when the server echoes it back), the token is in no file the tool wrote and in
nothing it printed; everything it wrote is readable by its owner only; the attachment
host never saw an Authorization header.

Safety rules: no real run without a preview of the same CSV (covering the sets it will
merge) unless --skip-preview-check; a backup that does not verify stops the run before
anything changes for its contact, and no option skips that check. A backup that stops
verifying later is set aside and taken again while nothing was written for its contact;
after a write it fails that set only, until it is put back or its loss is accepted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

import backup
import merge_contacts
import verify_backups
from backup_checks import verification
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Scripted
from helpers import (
    TEST_TOKEN,
    MergeRun,
    assert_private_tree,
    expected_after_merge,
    journal_problems,
    normalized,
    owners_of,
)
from merging import engine
from plumbing import cli

# the token whole, and pieces of it long enough to identify it
TOKEN_PIECES = [TEST_TOKEN, TEST_TOKEN[4:], "SECRET-7f3a9c"]


def _files_holding_token(root) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                data = fh.read()
            if any(piece.encode() in data for piece in TOKEN_PIECES):
                found.append(os.path.join(dirpath, name))
    return found


@pytest.fixture
def small():
    return build_dataset(3, seed=52, tickets=(1, 3), conversations=(1, 2), comments=(1, 2), attachment_rate=0.8,
                         two_duplicate_sets=1, skipped=True)


# --------------------------------------------------------------------------- secrets and privacy
def test_token_never_written_or_printed_and_everything_is_private(tmp_path, monkeypatch, make_sandbox, small,
                                                                  capfd):
    sandbox = make_sandbox(small.seed)
    run = MergeRun(tmp_path, sandbox, small, monkeypatch)
    outputs = []

    def step(code, expected):
        out, err = capfd.readouterr()
        outputs.append(out + err)
        assert code == expected, (out, err)

    step(run.preview(), 0)
    # a token DevRev rejects mid-run, with the server echoing it back in its error
    sandbox.script("works.update", Scripted(401, {"type": "unauthenticated",
                                                  "message": f"token {TEST_TOKEN} expired",
                                                  "detail": f"Bearer {TEST_TOKEN}"}))
    step(run.run("--workers", "1"), 2)
    assert "DevRev rejected the token" in outputs[-1]
    step(run.run(), 0)
    step(merge_contacts.main(["--status", "--savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]), 0)
    step(verify_backups.main(["--backup-dir", str(tmp_path / "backups"), "--report-dir",
                              str(tmp_path / "reports")]), 0)
    # and a DevRev that refuses the token outright, with the token in its 401 answer
    refusing = make_sandbox(small.seed, token="some-other-token")
    refusing.script("rev-users.get", Scripted(401, {"type": "unauthenticated", "message": f"bad token {TEST_TOKEN}"}))
    monkeypatch.setenv("DEVREV_BASE_URL", refusing.base_url)
    step(run.run("--skip-preview-check", "--retry-skipped"), 2)   # the sets the live checks skipped make calls
    assert "DevRev rejected the token" in outputs[-1]
    step(run.preview("--retry-skipped"), 2)

    # the token is in no log, report, backup, savepoint file or output
    assert [p for p in outputs if any(piece in p for piece in TOKEN_PIECES)] == []
    for folder in ("logs", "reports", "backups", "savepoints"):
        assert (tmp_path / folder).is_dir()
        assert _files_holding_token(tmp_path / folder) == [], folder
    assert len(list((tmp_path / "logs").iterdir())) == 5   # one per run (--status writes none)

    # owner-only: every folder 0700, every file 0600 (backups, savepoints, and the rest too)
    for folder in ("backups", "savepoints", "logs", "reports"):
        assert_private_tree(tmp_path / folder)
    journal = tmp_path / "savepoints" / "j.sqlite3"
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(journal.parent).st_mode) == 0o700
    assert all(verification.verify_backup(f).ok for f in run.backups())

    # the attachment host was used, and never with an Authorization header
    downloads = [e for e in sandbox.request_log if e["server"] == "files"]
    assert downloads and not [e for e in downloads if e["auth"]]
    # while every API call did carry one
    assert all(e["auth"] for e in sandbox.request_log if e["server"] == "api")


def test_private_modes_hold_under_a_permissive_umask(tmp_path, monkeypatch, make_sandbox, small):
    """A shell with umask 000 still gets owner-only backups, savepoints, logs and reports."""
    old = os.umask(0)
    try:
        sandbox = make_sandbox(small.seed)
        run = MergeRun(tmp_path, sandbox, small, monkeypatch)
        assert run.preview() == 0 and run.run() == 0
    finally:
        os.umask(old)
    for folder in ("backups", "savepoints", "logs", "reports"):
        assert_private_tree(tmp_path / folder)


# --------------------------------------------------------------------------- the preview rule
def test_real_run_needs_a_preview_of_the_same_csv(tmp_path, monkeypatch, make_sandbox, small, capsys):
    sandbox = make_sandbox(small.seed)
    run = MergeRun(tmp_path, sandbox, small, monkeypatch)
    before = normalized(sandbox.dump())

    assert run.run() == 2                                        # no preview at all
    assert "run with --preview first" in capsys.readouterr().err
    # a preview kept elsewhere does not count
    assert merge_contacts.main(run.paths()[:2] + ["--preview", "--report-dir", str(tmp_path / "elsewhere"),
                                                  "--log-dir", str(tmp_path / "logs")]) == 0
    assert run.run() == 2
    # a preview of only one set does not cover the others
    first = small.merge_sets[0]["email"]
    assert run.preview("--only", first) == 0
    capsys.readouterr()
    assert run.run() == 2
    assert "does not cover" in capsys.readouterr().err
    assert run.preview("--max-merges", "1") == 0
    assert run.run() == 2
    assert sandbox.write_attempts() == []
    # ... but it covers that set
    assert run.run("--only", first) == 0
    # a preview of other bytes does not count
    assert run.preview() == 0
    with open(run.csv, "ab") as fh:
        fh.write(b"\r\n")
    sandbox.clear_log()
    assert run.run() == 2
    assert sandbox.api_calls() == []
    # --skip-preview-check is the one way around it
    assert run.run("--skip-preview-check") == 0
    merged = {ms["email"] for ms in small.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, small, merged)


# --------------------------------------------------------------------------- backups must verify
def _flip_a_byte(folder: str) -> str:
    """Change one byte of one saved attachment (or of tickets.json when there is none)."""
    attachments = sorted(os.path.join(d, n) for d, _, files in os.walk(folder) if d.endswith("attachments")
                         for n in files)
    target = attachments[0] if attachments else os.path.join(folder, "tickets.json")
    with open(target, "r+b") as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0x01]))
    return target


def test_backup_that_does_not_verify_stops_the_run_before_any_write(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(3, seed=61, tickets=(2, 3), conversations=(1, 1), comments=(1, 2), attachment_rate=1.0,
                            two_duplicate_sets=0, skipped=False)
    victim = dataset.merge_sets[0]
    sandbox = make_sandbox(dataset.seed)
    owners = owners_of(sandbox, dataset)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = sandbox.dump()
    assert run.preview() == 0
    real_write = engine.write_backup
    corrupted = []

    def write_then_corrupt(client, root, **kw):
        result = real_write(client, root, **kw)
        if kw["email"] == victim["email"] and not corrupted:
            corrupted.append(_flip_a_byte(result.folder))
        return result

    monkeypatch.setattr(engine, "write_backup", write_then_corrupt)
    capsys.readouterr()
    assert run.run("--workers", "1") == 1
    assert "/attachments/" in corrupted[0]
    err = capsys.readouterr().err
    assert "does not verify" in err and "Traceback" not in err
    # nothing was written to DevRev for that contact (the run stopped: nothing at all was)
    contacts = {sandbox.key_id(victim["primary"])} | {sandbox.key_id(d) for d in victim["duplicates"]}
    objects = {oid for oid, c in owners.items() if c & contacts}
    for entry in sandbox.write_attempts():
        body = entry["body"]
        assert not {body.get("id"), body.get("primary_user"), body.get("secondary_user")} & (contacts | objects)
    assert sandbox.write_attempts() == []
    assert sandbox.dump() == before
    report = run.latest_report()
    outcome = next(s for s in report["sets"] if s["email"] == victim["email"])
    assert outcome["status"] == "failed" and "does not verify" in outcome["error"]
    assert report["exit_code"] == 1
    # the bad folder stays, as evidence, and verify_backups names the changed file
    assert verify_backups.main(["--backup-dir", str(tmp_path / "backups"), "--report-dir",
                                str(tmp_path / "reports")]) == 1
    assert "sha256 does not match" in capsys.readouterr().out

    # a re-run writes a fresh backup, verifies it, and finishes the job
    monkeypatch.setattr(engine, "write_backup", real_write)
    assert run.run() == 0
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(normalized(before), sandbox, dataset, merged)
    assert journal_problems(tmp_path / "savepoints" / "j.sqlite3") == []


class Crash(BaseException):
    """A crash (not an Exception: nothing in the tool handles it)."""


def _damage(folder: str, how: str) -> str | None:
    """Change one byte of the backup, or move the whole folder away: the path changed."""
    if how == "byte":
        return _flip_a_byte(folder)
    os.rename(folder, folder + ".elsewhere")
    return None


@pytest.mark.parametrize("how", ["byte", "moved away"])
def test_backup_damaged_before_any_write_is_set_aside_and_taken_again(tmp_path, monkeypatch, make_sandbox, capsys,
                                                                      how):
    """The journal says the backup was verified; it was changed (or moved away) since, but no
    write was sent for its duplicate yet: it protects nothing, so the resume sets it aside
    (renamed, never deleted), backs the contact up afresh and finishes the merge."""
    dataset = build_dataset(1, seed=62, tickets=(2, 2), conversations=(0, 1), comments=(1, 1), attachment_rate=1.0,
                            two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = sandbox.dump()
    assert run.preview() == 0

    def crash(*a, **kw):
        raise Crash("killed right after the backup was verified")

    monkeypatch.setattr(engine.SetMerger, "_move_all", crash)
    with pytest.raises(Crash):
        run.run()
    monkeypatch.undo()
    run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=open(run.csv, encoding="utf-8", newline="").read())
    [folder] = run.backups()
    changed = _damage(folder, how)
    assert sandbox.write_attempts() == []
    capsys.readouterr()
    assert run.run() == 0
    err = capsys.readouterr().err
    assert f"the backup {folder} no longer verifies" in err and "taking a fresh backup" in err
    assert normalized(sandbox.dump()) == expected_after_merge(normalized(before), sandbox, dataset,
                                                              {dataset.merge_sets[0]["email"]})
    folders = run.backups()
    fresh = [f for f in folders if not f.endswith(".elsewhere") and ".damaged-" not in f]
    assert len(fresh) == 1 and verification.verify_backup(fresh[0]).ok   # (the same name, when in the same second)
    aside = [f for f in folders if ".damaged-" in f]
    if how == "byte":
        assert "set aside as" in err
        assert len(aside) == 1 and aside[0].startswith(folder + ".damaged-")   # kept, as evidence
        assert os.path.exists(aside[0] + changed[len(folder):])
        assert not verification.verify_backup(aside[0]).ok
    else:
        assert "nothing to set aside" in err and aside == [] and folder + ".elsewhere" in folders
    assert journal_problems(tmp_path / "savepoints" / "j.sqlite3") == []


def test_backup_damaged_after_writes_fails_that_set_only_until_restored_or_its_loss_accepted(
        tmp_path, monkeypatch, make_sandbox, capsys):
    """The backup is the only before-image once items were moved: the set fails (and only
    it: the other sets merge), its folder untouched; the message names both ways on. With
    the acceptance file the next run sets the folder aside and finishes the set."""
    dataset = build_dataset(3, seed=63, tickets=(2, 2), conversations=(1, 1), comments=(1, 1), attachment_rate=1.0,
                            two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0

    def crash(*a, **kw):
        raise Crash("killed after the first set's moves, before its check")

    monkeypatch.setattr(engine.SetMerger, "_verify", crash)
    with pytest.raises(Crash):
        run.run("--workers", "1")
    monkeypatch.undo()
    run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=open(run.csv, encoding="utf-8", newline="").read())
    [folder] = run.backups()
    victim = backup.load_metadata(folder)["merge_set"]["email"]
    others = {ms["email"] for ms in dataset.merge_sets} - {victim}
    _flip_a_byte(folder)
    capsys.readouterr()
    assert run.run() == 1
    err = capsys.readouterr().err
    outcome = {s["email"]: s for s in run.latest_report()["sets"]}
    assert outcome[victim]["status"] == "failed" and all(outcome[e]["status"] == "merged" for e in others)
    message = outcome[victim]["error"]
    assert f"the backup {folder} of {victim} no longer verifies" in message and message in err
    assert "from your own copy" in message and f"create the file {folder}.accept-loss" in message
    # the victim's items are moved (before the damage) but its duplicate is kept; the others merged
    [victim_set] = [ms for ms in dataset.merge_sets if ms["email"] == victim]
    [dup] = [sandbox.key_id(k) for k in victim_set["duplicates"]]
    primary = sandbox.key_id(victim_set["primary"])
    expected = expected_after_merge(before, sandbox, dataset, others | {victim})
    expected["rev_users"][dup] = before["rev_users"][dup]
    expected["rev_users"][primary] = before["rev_users"][primary]
    assert normalized(sandbox.dump()) == expected
    assert run.backups()[0] == folder and not verification.verify_backup(folder).ok   # untouched, still there
    assert not [f for f in run.backups() if ".damaged-" in f]

    # the operator cannot restore it and accepts the loss: the set finishes
    open(folder + ".accept-loss", "w").close()
    assert run.run() == 0
    assert "its loss was accepted" in capsys.readouterr().err
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, dataset, others | {victim})
    [aside] = [f for f in run.backups() if ".damaged-" in f and os.path.isdir(f)]
    # a fresh backup taken in the same second as the damaged one has its name: then it verifies
    assert aside.startswith(folder + ".damaged-")
    assert not os.path.exists(folder) or verification.verify_backup(folder).ok
    assert os.path.exists(aside + ".accept-loss") and not os.path.exists(folder + ".accept-loss")   # used once
    assert journal_problems(tmp_path / "savepoints" / "j.sqlite3") == []

    # a restore preview says that part of the set cannot be undone: what moved before the loss is in no backup
    import shutil

    import restore_contacts
    shutil.move(aside, tmp_path / "lost")                # the operator keeps the damaged folder elsewhere
    moved = {oid for kind, field in (("works", "reported_by"), ("conversations", "members"))
             for oid, obj in before[kind].items() if dup in obj[field]}
    paths = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
             "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "r.sqlite3"),
             "--merge-savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]
    assert restore_contacts.main(paths + ["--preview", "--only", victim]) == 0
    preview = max((tmp_path / "reports").glob("restore_preview_*.json"), key=os.path.getmtime)
    (line,) = json.loads(preview.read_text(encoding="utf-8"))["sets"]
    assert line["status"] == "would_restore" and "part of this set cannot be undone" in line["note"]
    assert set(line["duplicates"][0]["not_in_backups"]) == moved and moved
    assert f"Part of 1 merge set cannot be undone ({victim})" in capsys.readouterr().out


def test_no_option_skips_backup_verification():
    parser = merge_contacts.build_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    assert "--skip-preview-check" in options
    risky = [o for o in options if any(word in o for word in ("verif", "backup", "skip", "force", "unsafe", "yes",
                                                              "no-", "trust", "check"))]
    # --check is the read-only preflight; --no-canary skips the re-read after the first set, not a backup check;
    # --no-merge-note skips the note on the primary's timeline (a write fewer); --retry-skipped runs the live
    # checks again on sets they skipped (they still decide); --list-skipped lists the CSV rows in no merge set
    assert sorted(risky) == ["--backup-dir", "--check", "--list-skipped", "--no-canary", "--no-merge-note",
                             "--retry-skipped", "--skip-preview-check"]
    for attempt in (["--skip-verify"], ["--no-verify"], ["--skip-backup"], ["--force"], ["--no-backup"]):
        with pytest.raises(cli.UsageError, match="unrecognized arguments"):
            parser.parse_args(["--csv", "x.csv", *attempt])
    fields = {f.name for f in dataclasses.fields(engine.MergeOptions)}
    assert not [f for f in fields if "verif" in f or ("backup" in f and f != "backup_dir")]
