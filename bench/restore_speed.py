"""Restore speed: one big duplicate given back at the rate limit, the baseline and this code side by side.

Each repetition merges one duplicate on --objects tickets and conversations (bench/scale.py's
big_duplicate dataset) into a fresh emulator, with the baseline checkout's merge_contacts.py, no
latency and no limit; then the emulator answers every call after --latency seconds and allows
--rate calls per --window, and restore_contacts.py --preview and restore_contacts.py (--workers,
--rate-limit R) run against it, each in a child process in its checkout's folder (its own code
on sys.path). For each side it prints the calls (preview + restore, as the emulator served
them), the items written (tickets and conversations given back), calls per item written, the
restore's calls per minute as a share of R (over the span of its calls), the 429s and the wall
time of preview + restore (child processes, start-up included); medians of --repeat.

The baseline restores one call at a time (its wall is its latency times its calls, about four
minutes for 500 objects), so its repetitions run at the same time as each other, each on its
own emulator and limit, while this code's repetitions run one after another beside them: one
bench run of about five minutes here. Not a test: a shared 2-core machine is noisy.

    python bench/restore_speed.py                   # 500 objects, 3 repetitions, about 5 minutes
    python bench/restore_speed.py --quick           # 140 objects, 1 repetition, about a minute
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from devrev_sandbox.faults import Faults, RateLimiter
from devrev_sandbox.server import DevRevSandbox
from scale import big_duplicate

TOKEN = "bench-token-of-a-plausible-length-0001"
ITEM_WRITES = {"works.update": "reported_by", "conversations.update": "members"}


def _child(checkout: str, script: str, args: list[str], base_url: str, workdir: str) -> tuple[int, float]:
    """`script` of `checkout` in a child process in that folder: (exit code, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVREV_")}
    env.update(DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=base_url,
               DEVREV_MERGE_LOCK_DIR=os.path.join(workdir, "locks"), PYTHONPATH=checkout)
    started = time.monotonic()
    with open(os.path.join(workdir, f"{script}.out"), "ab") as out:
        code = subprocess.run([sys.executable, os.path.join(checkout, script), *args], cwd=checkout, env=env,
                              stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    return code, time.monotonic() - started


def _dirs(workdir: str, savepoint: str) -> list[str]:
    return ["--report-dir", os.path.join(workdir, "reports"), "--log-dir", os.path.join(workdir, "logs"),
            "--backup-dir", os.path.join(workdir, "backups"),
            "--savepoint", os.path.join(workdir, "savepoints", savepoint)]


class SideRun:
    """One side's repetition: its emulator, merged by the baseline's code, then restored by `checkout`."""

    def __init__(self, name: str, checkout: str, dataset, args):
        self.name, self.checkout, self.args = name, checkout, args
        self.workdir = tempfile.mkdtemp(prefix=f"restore-speed-{name.replace(' ', '-')}-")
        self.csv = os.path.join(self.workdir, "contacts.csv")
        with open(self.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(dataset.csv_text())
        self.sandbox = DevRevSandbox(dataset.seed, token=TOKEN, merge_retire_after_gets=1).start()

    def merge(self, baseline: str) -> int:
        code, _ = _child(baseline, "merge_contacts.py", ["--csv", self.csv, "--skip-preview-check", "--workers", "4",
                                                         *_dirs(self.workdir, "j.sqlite3")],
                         self.sandbox.base_url, self.workdir)
        # from here on the emulator is DevRev at its limit: --latency per call, --rate calls per --window
        self.sandbox.set_faults(Faults(latency=self.args.latency))
        self.sandbox._limiter = RateLimiter((self.args.rate, self.args.window), self.sandbox.clock)
        return code

    def restore(self) -> dict:
        a = self.args
        per_minute = a.rate * 60 / a.window
        common = [*_dirs(self.workdir, "restore.sqlite3"), "--workers", str(a.workers), "--rate-limit",
                  f"{per_minute:g}", "--merge-savepoint", os.path.join(self.workdir, "savepoints", "j.sqlite3")]
        self.sandbox.clear_log()
        preview_code, preview_wall = _child(self.checkout, "restore_contacts.py", ["--preview", *common],
                                            self.sandbox.base_url, self.workdir)
        preview = self.sandbox.api_calls()
        self.sandbox.clear_log()
        code, wall = _child(self.checkout, "restore_contacts.py", common, self.sandbox.base_url, self.workdir)
        calls = self.sandbox.api_calls()
        served = [c for c in calls if c.get("status") != 429]
        items = sum(1 for c in calls if c.get("applied") and ITEM_WRITES.get(c["endpoint"]) in (c.get("body") or {}))
        span = max(c["t"] for c in served) - min(c["t"] for c in served) + a.latency if served else wall
        total = len(served) + sum(1 for c in preview if c.get("status") != 429)
        return {"side": self.name, "exit": baseline.worst([preview_code, code]), "id": id(self),
                "workdir": self.workdir, "calls": total, "items": items,
                "per_item": total / max(1, items), "share": 100 * len(served) / span * 60 / per_minute,
                "throttled": sum(1 for c in preview + calls if c.get("status") == 429),
                "wall": preview_wall + wall, "restore_wall": wall}

    def close(self, keep: bool = False) -> None:
        """Stop the emulator; remove the folder unless `keep` (a failed run's logs, named on the console)."""
        self.sandbox.stop()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def median_row(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in ("calls", "items", "per_item", "share", "throttled",
                                                              "wall", "restore_wall")}
    return dict(out, side=runs[0]["side"], exit=baseline.worst(r["exit"] for r in runs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="140 objects, 1 repetition: a smoke run of the bench")
    p.add_argument("--objects", type=int, default=500, help="tickets and conversations of the duplicate (500)")
    p.add_argument("--rate", type=int, default=1200, help="server limit: calls per window (default 1200)")
    p.add_argument("--window", type=float, default=60.0, help="server window in seconds (default 60: R=1200/min)")
    p.add_argument("--latency", type=float, default=0.15, help="seconds per call (default 0.15)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    baseline.add_option(p)
    args = p.parse_args(argv)
    if args.quick:
        args.objects, args.repeat = 140, 1
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python bench/restore_speed.py {argv_text}".rstrip())
    per_minute = args.rate * 60 / args.window
    print(f"one duplicate on {args.objects} objects merged, then restore --preview and restore with --workers "
          f"{args.workers}; R = {per_minute:.0f} calls/min ({args.rate} per {args.window:g} s), "
          f"{args.latency * 1000:.0f} ms per call, --rate-limit {per_minute:.0f}; medians of "
          f"{baseline.plural(args.repeat, 'repetition')}")
    dataset = big_duplicate(args.objects)
    sides: list[SideRun] = []
    keep: set[int] = set()   # id() of the runs whose folder is kept: a failed run's
    base = baseline.checkout(args.baseline)
    try:
        for _ in range(args.repeat):
            sides += [SideRun("baseline", base, dataset, args),
                      SideRun("this code", ROOT, dataset, args)]
        merged = [s.merge(base) for s in sides]
        if any(merged):
            kept = [s for s, code in zip(sides, merged) if code != 0]
            keep.update(id(s) for s in kept)   # kept by the cleanup below: the folders named here
            print(f"a merge failed (exit codes {merged}): see {', '.join(s.workdir for s in kept)}")
            return 1
        lock = threading.Lock()
        results: dict[str, list[dict]] = {"baseline": [], "this code": []}

        def one(side: SideRun) -> None:
            r = side.restore()
            with lock:
                results[side.name].append(r)
        with ThreadPoolExecutor(max_workers=args.repeat) as pool:   # the baseline's, all at once
            futures = [pool.submit(one, s) for s in sides if s.name == "baseline"]
            for s in sides:
                if s.name == "this code":
                    one(s)
            for f in futures:
                f.result()
        for side_runs in results.values():   # a failed restore's folder stays, named below
            keep.update(r["id"] for r in side_runs if r["exit"] != 0)
    finally:
        for s in sides:
            s.close(keep=id(s) in keep)
    print(f"\n{'code':>10} {'exit':>4} {'calls':>6} {'items':>6} {'calls/item':>10} {'% of R':>6} {'429s':>5} "
          f"{'restore s':>9} {'wall s':>7}")
    rows = {}
    for name, side_runs in results.items():
        good = [r for r in side_runs if r["exit"] == 0]   # medians of the successful runs only
        lost = [r for r in side_runs if r["exit"] != 0]
        note = (f"  {len(lost)} of {len(side_runs)} {baseline.failed_text(r['exit'] for r in lost)}: see "
                f"{', '.join(r['workdir'] for r in lost)}") if lost else ""
        if not good:
            print(f"{name:>10} {baseline.failed_text(r['exit'] for r in lost)}: see "
                  f"{', '.join(r['workdir'] for r in lost)}")
            continue
        r = rows[name] = median_row(good)
        print(f"{r['side']:>10} {r['exit']:>4} {r['calls']:>6.0f} {r['items']:>6.0f} {r['per_item']:>10.2f} "
              f"{r['share']:>5.0f}% {r['throttled']:>5.0f} {r['restore_wall']:>9.1f} {r['wall']:>7.1f}{note}")
    if "baseline" in rows and "this code" in rows:
        old, new = rows["baseline"], rows["this code"]
        print(f"\nthis code / baseline: calls {new['calls'] / old['calls']:.2f}x, calls per item "
              f"{new['per_item'] / old['per_item']:.2f}x, share of R {new['share'] / old['share']:.1f}x, wall "
              f"{new['wall'] / old['wall']:.2f}x ({old['wall'] / new['wall']:.1f} times as fast)")
    else:
        print(f"\nthis code / baseline: {baseline.NOT_COMPUTED}")
    print("(calls: served by the emulator in the preview and the restore; % of R: the restore's calls per minute "
          "over the span of its calls; wall: both child processes, start-up included)")
    return 0 if all(r["exit"] == 0 for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
