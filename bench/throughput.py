"""Throughput near the API's limit: the real merge against a rate-limited, slow emulator.

Starts the emulator with a server-side limit R (calls per window) and a per-call latency
L, generates a dataset, and runs merge_contacts.py (in-process, the real code path) with
each worker count. For every run it prints the calls made, the minimum calls possible
for the dataset, calls per set, the achieved rate as a share of R, the 429s received
and the wall time. Not a test: timings depend on the machine.

    python bench/throughput.py --rate 600 --latency 0.15 --sets 40 --workers 1,8
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import merge_contacts
from backup import collect
from devrev_client import DevRevClient
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults
from devrev_sandbox.server import DevRevSandbox
from merging.call_estimates import minimum_calls, set_overhead_calls

TOKEN = "bench-token-of-a-plausible-length-0001"


def dataset_for(args):
    return build_dataset(args.sets, seed=args.seed, tickets=(0, 4), conversations=(0, 2), comments=(0, 3),
                         attachment_rate=0.25, attachment_size=(500, 20_000), two_duplicate_sets=args.sets // 10,
                         skipped=False)


def minimum_for(dataset) -> int:
    """The least calls a careful merge of this dataset can make (see merging.call_estimates.minimum_calls)."""
    with DevRevSandbox(dataset.seed, token=TOKEN) as sandbox:
        client = DevRevClient(TOKEN, sandbox.base_url, calls_per_minute=1e9)
        total = 0
        for ms in dataset.merge_sets:
            total += set_overhead_calls(len(ms["duplicates"]))
            for dup in ms["duplicates"]:
                total += minimum_calls(collect(client, sandbox.key_id(dup)), client.page_limit)
        client.close()
        return total


def run_once(args, dataset, workers: int, *, client_cap: float, pacing: bool) -> dict:
    workdir = tempfile.mkdtemp(prefix="throughput-")
    sandbox = DevRevSandbox(dataset.seed, token=TOKEN, rate_limit=(args.rate, args.window),
                            faults=Faults(latency=args.latency), merge_retire_after_gets=1).start()
    csv_path = os.path.join(workdir, "contacts.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    saved_env = {k: os.environ.get(k) for k in ("DEVREV_API_TOKEN", "DEVREV_BASE_URL", "DEVREV_RATE_LIMIT")}
    os.environ.update(DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url)
    os.environ.pop("DEVREV_RATE_LIMIT", None)
    original_reserve = pacing.ServerPacer.reserve
    if not pacing:
        def no_pacing(self):
            original_reserve(self)
            return 0.0
        pacing.ServerPacer.reserve = no_pacing
    started = time.monotonic()
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = merge_contacts.main([
                "--csv", csv_path, "--skip-preview-check", "--workers", str(workers), "--rate-limit", str(client_cap),
                "--report-dir", os.path.join(workdir, "reports"), "--log-dir", os.path.join(workdir, "logs"),
                "--backup-dir", os.path.join(workdir, "backups"),
                "--savepoint", os.path.join(workdir, "savepoints", "journal.sqlite3")])
        wall = time.monotonic() - started
    finally:
        pacing.ServerPacer.reserve = original_reserve
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sandbox.stop()
    calls = sandbox.api_calls()
    throttled = sum(1 for c in calls if c.get("status") == 429)
    shutil.rmtree(workdir, ignore_errors=True)
    served = len(calls) - throttled
    return {"workers": workers, "exit": code, "calls": served, "throttled": throttled, "wall": wall,
            "per_minute": served / wall * 60, "client_cap": client_cap, "pacing": pacing}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=600, help="server limit R: calls per window (default 600)")
    parser.add_argument("--window", type=float, default=60.0, help="server window in seconds (default 60)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per call (default 0.15)")
    parser.add_argument("--sets", type=int, default=40, help="merge sets in the dataset (default 40)")
    parser.add_argument("--workers", default="1,8", help="worker counts to run, comma-separated (default 1,8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra", action="store_true",
                        help="also run with the client cap off: pacing from headers alone, and no pacing at all")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    per_minute = args.rate * 60.0 / args.window
    print(f"command: python bench/throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"server: {args.rate} calls per {args.window:.0f} s window (R = {per_minute:.0f}/min), "
          f"latency {args.latency * 1000:.0f} ms per call; client cap --rate-limit {per_minute:.0f}")
    dataset = dataset_for(args)
    minimum = minimum_for(dataset)
    sets = len(dataset.merge_sets)
    print(f"dataset: {sets} merge sets, {sum(len(m['duplicates']) for m in dataset.merge_sets)} duplicates, "
          f"{len(dataset.seed['tickets'])} tickets, {len(dataset.seed['conversations'])} conversations; "
          f"minimum calls {minimum} ({minimum / sets:.1f} per set)")
    runs = [run_once(args, dataset, w, client_cap=per_minute, pacing=True) for w in workers]
    if args.extra:
        top = max(workers)
        runs.append(run_once(args, dataset, top, client_cap=1e6, pacing=True))
        runs.append(run_once(args, dataset, top, client_cap=1e6, pacing=False))
    header = (f"{'workers':>7} {'client cap':>10} {'pacing':>6} {'exit':>4} {'calls':>6} {'min':>6} {'over/set':>8} "
              f"{'calls/set':>9} {'calls/min':>9} {'% of R':>6} {'429s':>5} {'429/1k':>6} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    for r in runs:
        cap = "off" if r["client_cap"] >= 1e6 else f"{r['client_cap']:.0f}"
        print(f"{r['workers']:>7} {cap:>10} {'on' if r['pacing'] else 'off':>6} {r['exit']:>4} {r['calls']:>6} "
              f"{minimum:>6} {(r['calls'] - minimum) / sets:>8.2f} {r['calls'] / sets:>9.1f} "
              f"{r['per_minute']:>9.0f} {100 * r['per_minute'] / per_minute:>5.0f}% {r['throttled']:>5} "
              f"{1000 * r['throttled'] / max(1, r['calls']):>6.2f} {r['wall']:>7.1f}")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
