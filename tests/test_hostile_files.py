"""Issue 23 §2 and §4: planted and damaged files end in one line, quickly; a savepoint that lost
rows is refused; one run per DevRev tenant and token on this machine.

Each planted case is tried against verify_backups.py, the restore and a resumed merge: the
run ends (no hang, no memory run-away, no traceback) and names the file. Timing is asserted
with a generous bound, never by sleeping."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import backup
import restore_contacts
import verify_backups
from devrev_sandbox.dataset import build_dataset
from helpers import ROOT, MergeRun
from merging import canary, engine
from runs import journal as journal_module
from runs import support

QUICK = 20.0     # seconds: each case takes well under one; a hang or a read of /dev/zero never ends


@pytest.fixture
def dataset():
    return build_dataset(2, seed=5, tickets=(1, 2), conversations=(1, 1), two_duplicate_sets=0, skipped=False)


def _deep(folder: str, name: str) -> None:
    """`name` rewritten as JSON nested 100,000 deep (exactly its old size: the size check passes)."""
    path = backup.file_path(folder, name)
    size = os.path.getsize(path)
    depth = max(1, size // 2)
    os.chmod(path, 0o600)
    with open(path, "w") as fh:
        fh.write(("[" * depth + "]" * depth).ljust(size))


def _huge(folder: str, name: str) -> None:
    os.truncate(backup.file_path(folder, name), backup.MAX_JSON_BYTES + (64 << 20))   # sparse: no disk used


def _dev_zero(folder: str, name: str) -> None:
    path = backup.file_path(folder, name)
    os.remove(path)
    os.symlink("/dev/zero", path)


def _fifo(folder: str, name: str) -> None:
    path = backup.file_path(folder, name)
    os.remove(path)
    os.mkfifo(path, 0o600)


PLANTED = {
    "symlink to /dev/zero": (_dev_zero, backup.TICKETS, "not a regular file"),
    "FIFO": (_fifo, backup.METADATA, "not a regular file"),
    "deeply nested JSON": (_deep, backup.CONVERSATIONS, "nested deeper than 200 levels"),
    "huge file": (_huge, backup.TICKETS, "size is"),
    "huge manifest": (_huge, backup.MANIFEST, "larger than the 256 MiB"),
    "deeply nested manifest": (_deep, backup.MANIFEST, "nested deeper than 200 levels"),
}


def _merged(tmp_path, monkeypatch, make_sandbox, dataset) -> MergeRun:
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run("--workers", "1") == 0
    return run


@pytest.mark.parametrize("case", list(PLANTED))
def test_verify_backups_and_the_restore_end_in_one_line_on_a_planted_file(tmp_path, monkeypatch, make_sandbox,
                                                                          dataset, capsys, case):
    plant, name, reason = PLANTED[case]
    run = _merged(tmp_path, monkeypatch, make_sandbox, dataset)
    folder = run.backups()[0]
    planted_ids = [m.id for m in backup.load_moves(folder)] + [backup.load_metadata(folder)["duplicate"]["id"]]
    assert planted_ids
    plant(folder, name)
    capsys.readouterr()

    started = time.monotonic()
    code = verify_backups.main(["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports")])
    out, err = capsys.readouterr()
    assert time.monotonic() - started < QUICK
    assert code == 1 and "Traceback" not in out + err
    failed = [line for line in out.splitlines() if line.startswith(f"FAILED {folder}")]
    assert failed and any(name in line and reason in line for line in failed), out

    restore = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
               "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "savepoints" / "restore.sqlite3")]
    run.sandbox.clear_log()
    started = time.monotonic()
    restore_contacts.main(restore + ["--preview"])      # no exception escapes, nothing hangs
    restore_contacts.main(restore)
    out, err = capsys.readouterr()
    assert time.monotonic() - started < QUICK and "Traceback" not in out + err
    assert f"FAILED {folder}: {name}: " in err and "(not used)" in err     # named in one line, its set held back
    writes = json.dumps(run.sandbox.write_attempts())
    assert all(i not in writes for i in planted_ids)


@pytest.mark.parametrize("case", ["symlink to /dev/zero", "FIFO", "deeply nested JSON", "huge file"])
def test_a_resumed_merge_ends_quickly_on_a_planted_backup_file(tmp_path, monkeypatch, make_sandbox, dataset,
                                                               capsys, case):
    plant, name, _reason = PLANTED[case]
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0

    class Crash(BaseException):
        pass

    def crash_after_backup(folder):
        raise Crash("killed after the backup was written")

    monkeypatch.setattr(engine, "load_moves", crash_after_backup)
    with pytest.raises(Crash):
        run.run("--workers", "1")
    monkeypatch.undo()
    run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=open(run.csv, encoding="utf-8").read())
    folder = run.backups()[0]
    plant(folder, name)
    capsys.readouterr()
    started = time.monotonic()
    code = run.run("--workers", "1", "--skip-preview-check")
    out, err = capsys.readouterr()
    assert time.monotonic() - started < QUICK and "Traceback" not in out + err
    assert code in (0, 1)     # nothing was moved yet: the damaged backup is set aside and taken afresh
    assert any(n.startswith(os.path.basename(folder) + ".damaged-") for n in os.listdir(tmp_path / "backups"))


@pytest.mark.parametrize("case", ["symlink to /dev/zero", "FIFO", "deeply nested JSON"])
def test_the_canary_ends_in_one_line_on_a_backup_file_planted_before_its_read(tmp_path, monkeypatch, make_sandbox,
                                                                              dataset, capsys, case):
    """The canary re-reads the first set's backups: a file planted there between the backup and
    that read stops the run before the next set, in one line, without a hang or a traceback."""
    plant, name, reason = PLANTED[case]
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    real = canary.check_set

    def planted_first(client, outcome):
        plant(outcome.duplicates[0].backups[0], name)
        return real(client, outcome)

    monkeypatch.setattr(canary, "check_set", planted_first)
    capsys.readouterr()
    started = time.monotonic()
    code = run.run("--workers", "1")
    out, err = capsys.readouterr()
    assert time.monotonic() - started < QUICK and "Traceback" not in out + err
    log = "".join(open(p, encoding="utf-8").read() for p in (tmp_path / "logs").glob("*.log"))
    assert code == 1 and "could not read its backups" in log and reason in log
    merged = [s for s in run.latest_report()["sets"] if s["status"] == "merged"]
    assert len(merged) == 1        # the first set only: the run stopped before the next


# --------------------------------------------------------------------------- a savepoint that lost rows
def test_a_savepoint_truncated_after_merging_is_refused_and_nothing_is_sent(tmp_path, monkeypatch, make_sandbox,
                                                                            dataset, capsys):
    run = _merged(tmp_path, monkeypatch, make_sandbox, dataset)
    savepoint = tmp_path / "savepoints" / "j.sqlite3"
    os.truncate(savepoint, 0)
    run.sandbox.clear_log()
    capsys.readouterr()
    assert run.run("--workers", "1") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost rows: it holds 0 of the" in lines[0] and "Traceback" not in err
    assert run.sandbox.api_calls() == [] and os.path.getsize(savepoint) == 0     # the journal left as it is


def test_a_savepoint_whose_wal_held_the_rows_and_was_deleted_is_refused(tmp_path, monkeypatch, make_sandbox,
                                                                        dataset, capsys):
    savepoint = tmp_path / "savepoints" / "j.sqlite3"
    real_close = journal_module.Journal.close

    def crash_then_lose_the_wal(self):          # a crash leaves the -wal file with the rows in it...
        if self.path == str(savepoint):
            shutil.copy(savepoint, tmp_path / "main-file-at-crash")
        real_close(self)

    monkeypatch.setattr(journal_module.Journal, "close", crash_then_lose_the_wal)
    run = _merged(tmp_path, monkeypatch, make_sandbox, dataset)
    monkeypatch.setattr(journal_module.Journal, "close", real_close)
    shutil.copy(tmp_path / "main-file-at-crash", savepoint)      # ...and then the -wal file is deleted
    for side in ("-wal", "-shm"):
        assert not os.path.exists(str(savepoint) + side)
    run.sandbox.clear_log()
    capsys.readouterr()
    assert run.run("--workers", "1") == 2
    err = capsys.readouterr().err
    assert "lost rows" in err and "-wal file deleted" in err and run.sandbox.api_calls() == []


# --------------------------------------------------------------------------- one run per tenant and token
HOLD = """
import sys
from runs import support
with support.tenant_held(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_process_on_the_same_tenant_and_token_is_refused_until_the_first_ends(tmp_path, monkeypatch):
    monkeypatch.setenv(support.TENANT_LOCK_DIR_ENV, str(tmp_path / "locks"))
    url, token = "https://api.devrev.ai", "tok-" + "z" * 30
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, token], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(support.UsageError, match=rf"another run \(pid {holder.pid}, "):
            with support.tenant_held(url, token):
                raise AssertionError("must not get here")
    finally:
        holder.communicate("\n", timeout=30)
    with support.tenant_held(url, token):      # released when the first run ended
        pass


def test_two_merges_with_different_savepoints_on_one_tenant_cannot_run_at_once(tmp_path, monkeypatch, make_sandbox,
                                                                               dataset, capsys):
    monkeypatch.setenv(support.TENANT_LOCK_DIR_ENV, str(tmp_path / "locks"))
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    with support.tenant_held(sandbox.base_url, os.environ["DEVREV_API_TOKEN"]):   # the other run, mid-merge
        sandbox.clear_log()
        capsys.readouterr()
        assert run.run("--savepoint", str(tmp_path / "other.sqlite3")) == 2
        err = capsys.readouterr().err
        assert "another run (pid" in err and "with this token on this machine" in err
        assert sandbox.write_attempts() == []
    assert run.run("--workers", "1") == 0
