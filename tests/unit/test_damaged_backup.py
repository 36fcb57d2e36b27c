"""backup_checks.damaged: which journal steps count as writes, and how a folder is set aside."""
from __future__ import annotations

import errno
import os
from datetime import datetime, timezone

import pytest

import backup_checks.damaged
from backup import BackupFolderError
from runs.journal import step_name

NOW = datetime(2026, 11, 30, 10, 15, 7, tzinfo=timezone.utc)


def test_writes_sent_counts_moves_merge_and_the_primary_reference_of_that_duplicate_only():
    steps = {step_name("backup", "d1", 1): {}, step_name("verify", "d1", 1): {},
             step_name("backup", "d2", 1): {}, step_name("ticket", "d2", 1, "t1"): {}}
    assert backup_checks.damaged.writes_sent(steps, "d1") == []
    moved = {**steps, step_name("conversation", "d1", 2, "c1"): {}, step_name("merge", "d1"): {}}
    assert backup_checks.damaged.writes_sent(moved, "d1") == [step_name("conversation", "d1", 2, "c1"),
                                                       step_name("merge", "d1")]
    assert backup_checks.damaged.writes_sent({**steps, "external_ref": {}}, "d1") == ["external_ref"]


def test_set_aside_renames_never_deletes_and_takes_the_acceptance_file_along(tmp_path):
    folder = tmp_path / "ben_20261130_100000_REVU-1"
    folder.mkdir()
    (folder / "tickets.json").write_text("[]")
    (tmp_path / "ben_20261130_100000_REVU-1.accept-loss").write_text("")
    taken = tmp_path / "ben_20261130_100000_REVU-1.damaged-20261130T101507Z"
    taken.mkdir()                                               # an earlier set-aside in the same second
    moved = backup_checks.damaged.set_aside(str(folder), NOW)
    assert moved == str(taken) + "-2" and (tmp_path / moved / "tickets.json").read_text() == "[]"
    assert not folder.exists() and os.path.exists(moved + ".accept-loss")
    assert not os.path.exists(backup_checks.damaged.accept_path(str(folder)))
    assert backup_checks.damaged.set_aside(str(folder), NOW) is None   # missing: nothing to rename


def test_set_aside_in_a_folder_that_cannot_be_written_is_a_backup_folder_error(tmp_path, monkeypatch):
    folder = tmp_path / "ben_20261130_100000_REVU-1"
    folder.mkdir()

    def refuse(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(backup_checks.damaged.os, "rename", refuse)
    with pytest.raises(BackupFolderError, match="could not set the damaged backup .* aside: Permission denied"):
        backup_checks.damaged.set_aside(str(folder), NOW)
    assert folder.is_dir()
