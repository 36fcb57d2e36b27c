"""Reliability gauntlet, part 2: SIGKILL at seeded random moments, then resume.

merge_contacts.py runs as a real subprocess against an emulator in this process. It is
killed with SIGKILL (no handler, no cleanup, no flush) at 20+ moments drawn with a fixed
seed across what one uninterrupted run costs, restarted after each kill, and finally
run to completion. The end state must equal the uninterrupted run's; no write may ever
have left a ticket without its reporter or a conversation without its customer; backups
verify and no `.partial` survives; the journal is consistent with no open intent; and a
re-run after completion writes nothing.
"""
from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

import backup
from backup_checks import verification
from devrev_sandbox.dataset import build_dataset
from helpers import (
    ROOT,
    TEST_TOKEN,
    MergeGuard,
    MergeRun,
    journal_problems,
    normalized,
    owners_of,
    ownership_violations,
)

SCRIPT = os.path.join(ROOT, "merge_contacts.py")
pytestmark = pytest.mark.slow

KILL_SEED = 424242
KILLS = 24


def _start(run: MergeRun, sandbox, log_name: str) -> subprocess.Popen:
    env = dict(os.environ, DEVREV_API_TOKEN=TEST_TOKEN, DEVREV_BASE_URL=sandbox.base_url,
               DEVREV_RATE_LIMIT="1000000")
    out = open(run.dir / "out" / log_name, "wb")
    try:
        return subprocess.Popen([sys.executable, SCRIPT, *run.paths(), "--workers", "4"], cwd=run.dir, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def _epoch(at: str) -> float:
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def kill_points(twin, journal_path, moments: list[int]) -> list[tuple[int, int]]:
    """Where moment m (the m-th call of the uninterrupted run) lies in terms a resumed run
    also reaches: (D, r) = after D journal steps are done, r more calls.

    Counting raw calls across restarts would not do: every resume re-reads what the killed
    run was in the middle of (a whole backup is redone), so cumulative call counts drawn
    over one run's length all land in its first phase and no kill ever hits a write.
    """
    con = sqlite3.connect(str(journal_path))
    try:
        done_at = [_epoch(r[0]) for r in con.execute("SELECT at FROM events WHERE step IS NOT NULL "
                                                       "AND status = 'done' ORDER BY id")]
    finally:
        con.close()
    times = [e["t"] for e in twin.request_log]
    points = []
    for m in moments:
        t = times[m - 1]
        done = sum(1 for at in done_at if at < t)
        before = sum(1 for u in times if done and u < done_at[done - 1])
        points.append((done, m - before))
    return points


def _done_steps(path) -> int:
    if not os.path.exists(path):
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM steps WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                              make_sandbox):
    dataset = build_dataset(8, seed=33, tickets=(1, 3), conversations=(0, 2), comments=(0, 2), attachment_rate=0.5,
                            two_duplicate_sets=2, skipped=False)

    # the uninterrupted run, on a twin emulator: its cost (API + file calls) and its end state
    twin = make_sandbox(dataset.seed)
    (tmp_path / "twin").mkdir()
    twin_run = MergeRun(tmp_path / "twin", twin, dataset, monkeypatch)
    assert twin_run.preview() == 0
    twin.clear_log()
    assert twin_run.run() == 0
    total = len(twin.request_log)
    reference = normalized(twin.dump())
    assert total > 3 * KILLS

    guard = MergeGuard()
    sandbox = make_sandbox(dataset.seed, on_request=guard)
    owners = owners_of(sandbox, dataset)
    work = tmp_path / "crash"
    work.mkdir()
    (work / "out").mkdir()
    run = MergeRun(work, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    sandbox.clear_log()

    moments = sorted(random.Random(KILL_SEED).sample(range(1, total + 1), KILLS))
    points = kill_points(twin, tmp_path / "twin" / "savepoints" / "j.sqlite3", moments)
    journal_path = work / "savepoints" / "j.sqlite3"
    killed_at, exited = [], []
    for n, (done, extra) in enumerate(points):
        proc = _start(run, sandbox, f"run{n}.txt")
        deadline = time.monotonic() + 60
        while _done_steps(journal_path) < done and proc.poll() is None:
            assert time.monotonic() < deadline, f"run {n} hung before step {done}"
            time.sleep(0.002)
        target = len(sandbox.request_log) + max(1, extra)   # each run gets at least one call in
        while len(sandbox.request_log) < target and proc.poll() is None:
            assert time.monotonic() < deadline, f"run {n} hung before call {target}"
            time.sleep(0.0005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at.append(len(sandbox.request_log))
        else:
            exited.append((n, proc.returncode))
        proc.wait(timeout=30)
    assert len(killed_at) >= 20, (killed_at, exited)
    # the kills fell before any write (backups, live checks) and between the writes
    writes_at_kill = [sum(1 for e in sandbox.request_log[:k] if e.get("applied")) for k in killed_at]
    assert writes_at_kill[0] == 0 and any(0 < w < len(twin.writes()) for w in writes_at_kill), writes_at_kill
    assert len(set(writes_at_kill)) >= 5, writes_at_kill
    assert all(code == 0 for _, code in exited), exited   # a run that beat its kill finished cleanly

    # after the last kill: run to completion
    proc = _start(run, sandbox, "final.txt")
    assert proc.wait(timeout=120) == 0, (work / "out" / "final.txt").read_text()
    assert normalized(sandbox.dump()) == reference

    # at no moment did a ticket lose its reporter or a conversation its customer
    assert ownership_violations(sandbox, owners) == []
    assert guard.merges >= 1 and guard.violations == []     # no duplicate was merged while still owning
    # every backup verifies; the .partial folders of killed backups are gone
    folders = run.backups()
    assert not [f for f in folders if f.endswith(backup.PARTIAL_SUFFIX)]
    bad = {f: verification.verify_backup(f).problems for f in folders if not verification.verify_backup(f).ok}
    assert not bad
    names = [os.path.basename(f) for f in folders]
    for ms in dataset.merge_sets:  # every duplicate has its verified backup
        for dup in ms["duplicates"]:
            display = sandbox.dump()["rev_users"][sandbox.key_id(dup)]["display_id"]
            assert any(re.fullmatch(rf".*_{re.escape(display)}(-\d+)?", name) for name in names), display
    # the kills really hit backups in progress (their .partial was removed on resume) and writes
    logs = "".join(p.read_text(errors="replace") for p in (work / "logs").iterdir())
    assert "removed the interrupted backup" in logs
    # the journal is consistent and holds no open intent
    assert journal_problems(work / "savepoints" / "j.sqlite3") == []

    # a re-run after completion makes no write attempt (and changes nothing)
    sandbox.clear_log()
    proc = _start(run, sandbox, "rerun.txt")
    assert proc.wait(timeout=60) == 0
    assert sandbox.write_attempts() == []
    assert normalized(sandbox.dump()) == reference
    report = run.latest_report()
    assert {s["status"] for s in report["sets"]} == {"merged"}
    for name in os.listdir(work / "out"):
        text = (work / "out" / name).read_text(errors="replace")
        assert "Traceback" not in text, (name, text[-2000:])


PARALLEL_KILLS = 8


def test_sigkill_during_parallel_moves_of_one_set_resumes_with_nothing_done_twice(tmp_path, monkeypatch,
                                                                                 make_sandbox):
    """One duplicate with many tickets: its timeline reads, downloads and moves run on the
    --workers slots at once; kills that land among those parallel moves leave several
    intents open at a time, and the resumed runs still write each item exactly once."""
    dataset = build_dataset(2, seed=35, big_set_tickets=36, tickets=(6, 8), conversations=(2, 3), comments=(0, 2),
                            attachment_rate=0.4, skipped=False)
    twin = make_sandbox(dataset.seed)
    (tmp_path / "twin").mkdir()
    twin_run = MergeRun(tmp_path / "twin", twin, dataset, monkeypatch)
    twin.clear_log()
    assert twin_run.run("--skip-preview-check", "--workers", "4") == 0
    reference = normalized(twin.dump())
    moves = [n for n, e in enumerate(twin.request_log, 1)
             if e.get("endpoint") in ("works.update", "conversations.update")]
    moments = sorted(random.Random(KILL_SEED).sample(moves, PARALLEL_KILLS))
    points = kill_points(twin, tmp_path / "twin" / "savepoints" / "j.sqlite3", moments)

    sandbox = make_sandbox(dataset.seed)
    owners = owners_of(sandbox, dataset)
    work = tmp_path / "crash"
    work.mkdir()
    (work / "out").mkdir()
    run = MergeRun(work, sandbox, dataset, monkeypatch)
    run.paths = lambda: MergeRun.paths(run) + ["--skip-preview-check"]
    journal_path = work / "savepoints" / "j.sqlite3"
    open_intents = []
    for n, (done, extra) in enumerate(points):
        proc = _start(run, sandbox, f"run{n}.txt")
        deadline = time.monotonic() + 60
        while _done_steps(journal_path) < done and proc.poll() is None:
            assert time.monotonic() < deadline, f"run {n} hung before step {done}"
            time.sleep(0.002)
        target = len(sandbox.request_log) + max(1, extra)
        while len(sandbox.request_log) < target and proc.poll() is None:
            assert time.monotonic() < deadline, f"run {n} hung before call {target}"
            time.sleep(0.0005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        con = sqlite3.connect(str(journal_path))
        try:
            open_intents.append(con.execute("SELECT COUNT(*) FROM steps WHERE status = 'intent'").fetchone()[0])
        finally:
            con.close()
    assert max(open_intents) >= 2, open_intents      # kills fell among moves in flight together
    proc = _start(run, sandbox, "final.txt")
    assert proc.wait(timeout=120) == 0, (work / "out" / "final.txt").read_text()
    assert normalized(sandbox.dump()) == reference
    assert ownership_violations(sandbox, owners) == []
    # a body cut off by a kill mid-send is refused unparsed (nothing applied): only applied writes count
    written = [e["body"]["id"] for e in sandbox.request_log
               if e.get("endpoint") in ("works.update", "conversations.update") and e.get("applied")]
    assert sorted(written) == sorted(set(written)), "an item was written twice"
    assert journal_problems(journal_path) == []
    assert not [f for f in run.backups() if f.endswith(backup.PARTIAL_SUFFIX)]
