"""durable_file: the one write-flush-fsync-rename every file of the tool goes through."""
from __future__ import annotations

import os
import stat

import pytest

import plumbing.files
from plumbing.files import atomic_write_bytes, durable_file


class Boom(Exception):
    pass


def test_a_finished_block_replaces_the_file_privately_and_durably(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    target = tmp_path / "report.json"
    target.write_bytes(b"old")
    with durable_file(str(target)) as fh:
        fh.write(b"new ")
        fh.write(b"content")
        assert target.read_bytes() == b"old"          # nothing visible until the block ends
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["report.json"]     # no temporary file left
    assert len(synced) == 2                            # the file, then its folder


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(Boom):
        with durable_file(str(target)) as fh:
            fh.write(b"half")
            raise Boom()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    with pytest.raises(Boom):
        with durable_file(str(tmp_path / "new.bin")):
            raise Boom()
    assert os.listdir(tmp_path) == ["a.bin"]


def test_sync_dir_false_leaves_the_folder_sync_to_the_caller(tmp_path, monkeypatch):
    synced_dirs = []
    monkeypatch.setattr(plumbing.files, "fsync_dir", synced_dirs.append)
    with durable_file(str(tmp_path / "x"), sync_dir=False) as fh:
        fh.write(b"x")
    assert synced_dirs == []
    atomic_write_bytes(str(tmp_path / "y"), b"y")
    assert synced_dirs == [str(tmp_path)] and (tmp_path / "y").read_bytes() == b"y"


def test_a_failed_fsync_is_an_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a"
    target.write_bytes(b"old")

    def fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(str(target), b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a"]


def test_write_json_list_writes_exactly_json_bytes_of_the_list():
    import hashlib
    import io

    from plumbing.files import json_bytes, write_json_list
    for items in ([], [{}], [{"b": [1, {"x": "é\n"}], "a": None}], [{"k": i, "v": [i] * 3} for i in range(5)],
                  [1, "s"]):
        out = io.BytesIO()
        size, sha = write_json_list(out, iter(items))
        assert out.getvalue() == json_bytes(items)
        assert (size, sha) == (len(json_bytes(items)), hashlib.sha256(json_bytes(items)).hexdigest())
