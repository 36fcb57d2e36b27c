"""fanout.Fanout: --workers slots shared by sets and by the independent calls inside one set."""
from __future__ import annotations

import os
import threading
import time

import pytest

from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults
from helpers import MergeRun, normalized
from plumbing.fanout import Fanout, fan_map


class Gauge:
    """Counts how many calls run at once (the highest count seen)."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def __call__(self, item):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
        return item * 2


def test_map_keeps_order_and_uses_the_free_slots():
    pool, gauge = Fanout(4), Gauge()
    try:
        with pool.slot():
            assert pool.map(gauge, range(20)) == [i * 2 for i in range(20)]
        assert gauge.peak == 4
        assert fan_map(None, gauge, [1, 2]) == [2, 4]
    finally:
        pool.close()


def test_sets_and_their_fan_out_never_exceed_the_workers():
    pool, gauge = Fanout(3), Gauge()

    def one_set(n):
        with pool.slot():
            gauge(n)
            return pool.map(gauge, range(10))

    try:
        threads = [threading.Thread(target=one_set, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 2 <= gauge.peak <= 3
    finally:
        pool.close()


def test_first_error_in_item_order_is_raised_and_the_rest_is_not_started():
    pool, started = Fanout(2), []

    def work(i):
        started.append(i)
        if i in (3, 5):
            raise ValueError(i)
        time.sleep(0.005)
        return i

    try:
        with pool.slot(), pytest.raises(ValueError, match="3"):
            pool.map(work, range(40))
        assert len(started) < 40
    finally:
        pool.close()


def _updates(sandbox) -> list[dict]:
    return [c for c in sandbox.api_calls() if c["endpoint"] in ("works.update", "conversations.update")]


def test_one_big_set_moves_in_parallel_and_ends_like_one_worker(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=8, big_set_tickets=40, conversations=(3, 3), comments=(1, 2),
                            attachment_rate=0.3, skipped=False)
    ends = {}
    for workers in ("1", "4"):
        sandbox = make_sandbox(dataset.seed, faults=Faults(latency=0.03))
        (tmp_path / workers).mkdir()
        run = MergeRun(tmp_path / workers, sandbox, dataset, monkeypatch)
        assert run.run("--skip-preview-check", "--workers", workers) == 0
        ends[workers] = normalized(sandbox.dump())
        arrivals = sorted(c["t"] for c in _updates(sandbox))
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        if workers == "1":
            assert min(gaps) >= 0.025           # one at a time: each waits for the last answer
        else:
            assert sorted(gaps)[len(gaps) // 2] < 0.02   # several in flight at once
            timelines = sorted(c["t"] for c in sandbox.api_calls() if c["endpoint"] == "timeline-entries.list")
            assert min(b - a for a, b in zip(timelines, timelines[1:])) < 0.02
        items = [c["body"]["id"] for c in _updates(sandbox)]
        assert len(items) == len(set(items))      # each item written once
    assert ends["1"] == ends["4"]


def test_streamed_parallel_backup_holds_exactly_what_the_in_memory_one_holds(tmp_path, make_sandbox):
    import json

    import backup
    from backup_checks import verification
    from devrev_client import DevRevClient
    from helpers import TEST_TOKEN

    dataset = build_dataset(1, seed=12, big_set_tickets=45, conversations=(4, 4), comments=(1, 3),
                            attachment_rate=0.4, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    client, pool = DevRevClient(TEST_TOKEN, sandbox.base_url, calls_per_minute=1e9), Fanout(4)
    ms = dataset.merge_sets[0]
    primary = client.get_rev_user(sandbox.key_id(ms["primary"]))
    duplicate = client.get_rev_user(sandbox.key_id(ms["duplicates"][0]))
    try:
        results = []
        for name, snapshot, fan in (("memory", backup.collect(client, duplicate["id"]), None),
                                    ("streamed", None, pool)):
            results.append(backup.write_backup(client, str(tmp_path / name), email=ms["email"], csv_rows=[],
                                               primary=primary, duplicate=duplicate, run_id="r", snapshot=snapshot,
                                               pool=fan))
    finally:
        pool.close()
        client.close()
    memory, streamed = results
    assert streamed.snapshot.entries == {} and memory.counts == streamed.counts
    assert memory.counts["attachments"] > 3 and memory.counts["tickets"] == 45
    manifests = [json.loads(open(os.path.join(r.folder, backup.MANIFEST), "rb").read()) for r in results]
    assert [(f["path"], f["sha256"]) for f in manifests[0]["files"] if f["path"] != backup.METADATA] == \
        [(f["path"], f["sha256"]) for f in manifests[1]["files"] if f["path"] != backup.METADATA]
    metadata = [backup.load_metadata(r.folder) for r in results]
    for m in metadata:
        del m["started_at"], m["finished_at"]
    assert metadata[0] == metadata[1]
    assert all(verification.verify_backup(r.folder).ok for r in results)


def test_workers_of_a_pool_is_its_slots_and_one_without_one():
    from plumbing.fanout import workers_of
    pool = Fanout(6)
    try:
        assert workers_of(pool) == 6 and workers_of(None) == 1
    finally:
        pool.close()
