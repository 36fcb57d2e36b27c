"""Reliability gauntlet, part 1: a full merge through production's bad days.

A preview and a real run of 50+ merge sets against an emulator that fails ~10% of calls
(500/503), drops connections before and after writes, and throttles in bursts must end
exactly where a fault-free run of the same data ends: exit 0, the same final state,
every backup verified, and no ticket or conversation ever written without its customer.

Also here: a full disk during a backup (that set fails cleanly; nothing changes for it).

The invariants checked here (`owners_of`, `ownership_violations`, `MergeGuard`, `journal_problems`)
live in tests/helpers.py, shared with the other merge tests.
"""
from __future__ import annotations

import errno
import os
import time

import pytest

import backup
from backup_checks import verification
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults
from helpers import (
    MergeGuard,
    MergeRun,
    expected_after_merge,
    journal_problems,
    normalized,
    owners_of,
    ownership_violations,
)
from plumbing import files

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the faulty full merge
FAULTS = Faults(error_rate=0.10, drop_rate=0.02, drop_after_write_rate=0.02, burst_429_rate=0.01,
                burst_429_length=3, burst_retry_after=0, latency=0.0005, latency_jitter=0.002, seed=20240611)


@pytest.fixture(scope="module")
def dataset50():
    return build_dataset(50, seed=57, tickets=(0, 3), conversations=(0, 2), comments=(0, 2), two_duplicate_sets=3)


def test_faulty_full_merge_ends_exactly_like_a_clean_one(tmp_path, monkeypatch, make_sandbox, dataset50,
                                                        fast_backoff):
    assert len(dataset50.merge_sets) >= 50
    guard = MergeGuard()
    sandbox = make_sandbox(dataset50.seed, faults=FAULTS, on_request=guard)
    owners = owners_of(sandbox, dataset50)
    # The fault-free final state: what test_merge.py proves a clean run ends in (a clean run
    # of this dataset ends in exactly this; computing it saves a second full run here).
    before = normalized(sandbox.dump())
    reference = expected_after_merge(before, sandbox, dataset50, {ms["email"] for ms in dataset50.merge_sets})
    assert reference != before
    (tmp_path / "faulty").mkdir()
    run = MergeRun(tmp_path / "faulty", sandbox, dataset50, monkeypatch)
    started = time.monotonic()
    assert run.preview() == 0           # the preview too runs through the faults
    preview = run.latest_report("preview")
    assert preview["complete"] and preview["totals"]["failed"] == 0
    assert sandbox.write_attempts() == []
    assert run.run() == 0, [(s["email"], s.get("error")) for s in run.latest_report()["sets"]
                            if s["status"] == "failed"]
    elapsed = time.monotonic() - started

    assert normalized(sandbox.dump()) == reference
    report = run.latest_report()
    assert {s["status"] for s in report["sets"] if s["email"] in {m["email"] for m in dataset50.merge_sets}} \
        == {"merged"}
    assert report["totals"]["failed"] == 0
    folders = run.backups()
    assert len(folders) >= sum(len(ms["duplicates"]) for ms in dataset50.merge_sets)
    assert not [f for f in folders if f.endswith(backup.PARTIAL_SUFFIX)]
    bad = {f: verification.verify_backup(f).problems for f in folders if not verification.verify_backup(f).ok}
    assert not bad
    assert ownership_violations(sandbox, owners) == []
    assert guard.merges >= sum(len(ms["duplicates"]) for ms in dataset50.merge_sets) and guard.violations == []
    assert journal_problems(tmp_path / "faulty" / "savepoints" / "j.sqlite3") == []

    # the faults really happened, writes included. (Which call meets which fault depends on how
    # the 4 workers interleave, so only counts that cannot come out zero are asserted here; the
    # lost answers to applied writes get a deterministic test of their own below.)
    faults = [e.get("fault") for e in sandbox.request_log if e.get("fault")]
    for kind in ("500", "503", "drop", "429"):
        assert faults.count(kind) > 0, (kind, {k: faults.count(k) for k in set(faults)})
    assert len(faults) > 150
    failed_writes = [e for e in sandbox.write_attempts() if e.get("fault") in ("500", "503", "drop", "429")]
    assert len(failed_writes) > 5
    assert elapsed < 60


def test_writes_whose_answer_is_lost_end_exactly_like_a_clean_run(tmp_path, monkeypatch, make_sandbox, fast_backoff):
    """DevRev applies a write and the connection drops before the answer: the client or the
    engine must confirm (a fresh read, or a `set` that is safe to repeat) rather than fail or
    double-apply. Only this fault is on and one worker writes, so which write loses its
    answer is fixed by the seed (each kind of write meets it at least once)."""
    dataset = build_dataset(6, seed=71, tickets=(1, 3), conversations=(1, 2), comments=(0, 1), two_duplicate_sets=2,
                            skipped=False)
    guard = MergeGuard()
    sandbox = make_sandbox(dataset.seed, faults=Faults(drop_after_write_rate=0.3, seed=4), on_request=guard)
    owners = owners_of(sandbox, dataset)
    before = normalized(sandbox.dump())
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run("--workers", "1") == 0
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, dataset,
                                                              {ms["email"] for ms in dataset.merge_sets})
    lost = {}
    for entry in sandbox.request_log:
        if entry.get("fault") == "drop_after_write":
            lost[entry["endpoint"]] = lost.get(entry["endpoint"], 0) + 1
    assert {"works.update", "conversations.update", "rev-users.merge", "rev-users.update"} <= set(lost), lost
    assert ownership_violations(sandbox, owners) == [] and guard.violations == []
    assert all(verification.verify_backup(f).ok for f in run.backups())
    assert journal_problems(tmp_path / "savepoints" / "j.sqlite3") == []


# --------------------------------------------------------------------------- a full disk
def test_disk_full_during_a_backup_fails_that_set_and_changes_nothing_for_it(tmp_path, monkeypatch, make_sandbox,
                                                                            capsys):
    dataset = build_dataset(3, seed=15, tickets=(2, 3), conversations=(1, 2), comments=(1, 2), attachment_rate=0.8,
                            two_duplicate_sets=0, skipped=False)
    victim = dataset.merge_sets[1]
    sandbox = make_sandbox(dataset.seed)
    owners = owners_of(sandbox, dataset)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = sandbox.dump()
    assert run.preview() == 0
    victim_prefix = backup.folder_prefix(victim["email"])
    real_open = files.open_private
    filled = []

    class FullDisk:
        """A file on a disk that fills up after its first few bytes."""

        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written + len(data) > 100:
                filled.append(self.fh.name)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def open_on_full_disk(path, mode="xb"):
        fh = real_open(path, mode)
        rel = os.path.relpath(path, tmp_path / "backups")
        return FullDisk(fh) if rel.startswith(victim_prefix + "_") else fh

    monkeypatch.setattr(files, "open_private", open_on_full_disk)
    capsys.readouterr()
    assert run.run("--workers", "2") == 1
    assert filled, "the full disk was never hit"
    err = capsys.readouterr().err
    report = run.latest_report()
    outcome = next(s for s in report["sets"] if s["email"] == victim["email"])
    assert outcome["status"] == "failed"
    assert "disk is full" in outcome["error"] and "\n" not in outcome["error"]
    assert "disk is full" in err and "Traceback" not in err
    assert {s["status"] for s in report["sets"] if s["email"] != victim["email"]} == {"merged"}

    # nothing was written to DevRev for the victim's contacts or objects
    victim_ids = {sandbox.key_id(victim["primary"])} | {sandbox.key_id(d) for d in victim["duplicates"]}
    victim_objects = {oid for oid, contacts in owners.items() if contacts & victim_ids}
    assert victim_objects
    for entry in sandbox.write_attempts():
        body = entry["body"]
        touched = {body.get("id"), body.get("primary_user"), body.get("secondary_user")}
        assert not touched & (victim_ids | victim_objects), entry
    after = sandbox.dump()
    for uid in victim_ids:
        assert after["rev_users"][uid] == before["rev_users"][uid]
    for oid in victim_objects:
        kind = "works" if oid in before["works"] else "conversations"
        assert after[kind][oid] == before[kind][oid]
    assert not [n for n in os.listdir(tmp_path / "backups") if n.endswith(backup.PARTIAL_SUFFIX)]
    assert not [n for n in os.listdir(tmp_path / "backups") if n.startswith(victim_prefix + "_")]

    # space freed: the re-run finishes the job exactly like a clean run
    monkeypatch.setattr(files, "open_private", real_open)
    assert run.run() == 0
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(normalized(before), sandbox, dataset, merged)
    assert all(verification.verify_backup(f).ok for f in run.backups())
    assert journal_problems(tmp_path / "savepoints" / "j.sqlite3") == []
