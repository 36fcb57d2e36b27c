"""Issue 23 §2/§4: a savepoint that lost rows is refused, a symlink cannot pass a lock, a
planted `.sandbox` link is never emptied, one run per DevRev tenant and token on this machine."""
from __future__ import annotations

import os
import shutil

import pytest

from plumbing.cli import UsageError
from runs import support
from runs.journal import ROWS_SUFFIX, Journal, JournalError


def _written(path: str, sets: int = 4) -> None:
    journal = Journal(path, "run1", exclusive=True)
    for i in range(sets):
        journal.set_status(f"set{i}", f"p{i}@x.example", "merged")
        journal.done(f"set{i}", "external_ref", {"before": "a", "after": "b"})
    journal.close()


def test_a_savepoint_truncated_to_nothing_is_refused_and_left_as_it_is(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    _written(path)
    assert open(path + ROWS_SUFFIX).read().split()[-1] == "00000000000000000008"   # 4 statuses + 4 steps
    os.truncate(path, 0)
    with pytest.raises(JournalError, match=r"lost rows: it holds 0 of the 8 changes"):
        Journal(path, "run2", exclusive=True)
    assert os.path.getsize(path) == 0 and not os.path.exists(path + "-wal")   # nothing written to it
    with pytest.raises(JournalError, match="lost rows"):
        Journal(path, "status")                              # --status and previews refuse it too
    Journal(path + "-other", "run3", exclusive=True).close()   # the refused open kept no lock of another


def test_a_savepoint_whose_wal_was_deleted_after_a_crash_is_refused(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    journal = Journal(path, "run1", exclusive=True)
    for i in range(3):
        journal.set_status(f"set{i}", "p@x.example", "merged")
    shutil.copy(path, tmp_path / "main-file-only")     # the rows are in the -wal file, not yet checkpointed
    journal.close()
    shutil.copy(tmp_path / "main-file-only", path)     # a crash left the -wal file; then it was deleted
    with pytest.raises(JournalError, match=r"holds 0 of the 3 changes .*-wal file deleted"):
        Journal(path, "run2", exclusive=True)


def test_a_deleted_or_older_savepoint_is_refused_a_whole_one_resumes(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    _written(path, sets=1)
    shutil.copy(path, tmp_path / "older")
    _written(path, sets=3)                            # (set0 again, then set1 and set2)
    whole = tmp_path / "whole"
    shutil.copy(path, whole)
    shutil.copy(tmp_path / "older", path)
    with pytest.raises(JournalError, match="holds 2 of the 8"):
        Journal(path, "r", exclusive=True)
    os.remove(path)
    with pytest.raises(JournalError, match="lost rows"):
        Journal(path, "r", exclusive=True)
    assert not os.path.exists(path)
    shutil.copy(whole, path)
    resumed = Journal(path, "r", exclusive=True)
    assert [s["set_key"] for s in resumed.all_sets()] == ["set0", "set1", "set2"]
    resumed.close()


def test_a_savepoint_from_before_the_row_count_is_accepted_and_counted_from_then_on(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    _written(path, sets=2)
    os.remove(path + ROWS_SUFFIX)                    # as a savepoint written by an older version
    Journal(path, "r", exclusive=True).close()       # accepted, and its rows counted at once
    assert open(path + ROWS_SUFFIX).read().split()[-1] == "00000000000000000004"
    os.truncate(path, 0)
    with pytest.raises(JournalError, match="lost rows"):
        Journal(path, "r", exclusive=True)


def test_a_row_count_that_is_not_ours_is_refused_in_one_line(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    _written(path, sets=1)
    with open(path + ROWS_SUFFIX, "w") as fh:
        fh.write("rows: lots\n")
    with pytest.raises(JournalError, match="is not one this tool wrote"):
        Journal(path, "r", exclusive=True)


def test_a_symlinked_savepoint_takes_the_lock_of_the_file_it_names(tmp_path):
    path = str(tmp_path / "j.sqlite3")
    link = str(tmp_path / "other-name.sqlite3")
    holder = Journal(path, "first", exclusive=True)
    os.symlink(path, link)
    try:
        with pytest.raises(JournalError, match="another run is using the savepoint"):
            Journal(link, "second", exclusive=True)
    finally:
        holder.close()
    second = Journal(link, "second", exclusive=True)
    with pytest.raises(JournalError, match="another run is using the savepoint"):
        Journal(path, "third", exclusive=True)
    second.close()


# --------------------------------------------------------------------------- the sandbox's folder
def test_sandbox_reset_refuses_a_planted_sandbox_link_and_deletes_nothing(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    os.symlink(victim, ".sandbox")
    with pytest.raises(UsageError, match=r"\.sandbox is a link"):
        with support.sandbox_held(support.RunTarget(sandbox=True, sandbox_reset=True)):
            raise AssertionError("must not get here")
    assert (victim / "precious.txt").read_text() == "keep me" and sorted(os.listdir(victim)) == ["precious.txt"]


def test_sandbox_reset_removes_links_inside_the_sandbox_never_what_they_name(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    os.makedirs(".sandbox/sub", mode=0o700)
    os.symlink(outside, ".sandbox/savepoints")
    os.symlink(outside / "precious.txt", ".sandbox/sub/file")
    with support.sandbox_held(support.RunTarget(sandbox=True, sandbox_reset=True)):
        assert sorted(os.listdir(".sandbox")) == sorted([support.SANDBOX_LOCK, support.SANDBOX_EPOCH])   # a new life
        assert not os.path.islink(os.path.join(".sandbox", support.SANDBOX_EPOCH))
    assert (outside / "precious.txt").read_text() == "keep me"


def test_a_planted_lock_link_in_the_sandbox_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir(".sandbox", 0o700)
    os.symlink(tmp_path / "elsewhere.lock", os.path.join(".sandbox", support.SANDBOX_LOCK))
    with pytest.raises(UsageError, match="run.lock cannot be used"):
        with support.sandbox_held(support.RunTarget(sandbox=True)):
            raise AssertionError("must not get here")
    assert not (tmp_path / "elsewhere.lock").exists()


# --------------------------------------------------------------------------- one run per tenant and token
TOKEN = "tok-" + "x" * 30


def test_a_second_run_on_the_same_tenant_and_token_is_refused_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.setenv(support.TENANT_LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv("DEVREV_API_TOKEN", TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", "https://api.devrev.ai")
    target = support.RunTarget(sandbox=False)
    with support.sandbox_held(target):
        names = os.listdir(tmp_path / "locks")
        assert len(names) == 1 and TOKEN not in names[0] and "x" * 8 not in open(tmp_path / "locks" / names[0]).read()
        with pytest.raises(UsageError, match=rf"another run \(pid {os.getpid()}, .*since .*\) is using DevRev "
                                             r"https://api.devrev.ai with this token on this machine"):
            with support.sandbox_held(target):
                raise AssertionError("must not get here")
        with support.tenant_held("https://api.devrev.ai", TOKEN + "y"):   # another token: another lock
            pass
        with support.tenant_held("https://other.devrev.ai", TOKEN):       # another tenant: another lock
            pass
    assert os.listdir(tmp_path / "locks") == []        # released and removed at the end of the run
    with support.sandbox_held(target):                  # so the next run gets it
        pass

