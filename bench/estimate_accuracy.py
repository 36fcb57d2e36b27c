"""How close the preview's estimate of the whole job comes to the merge it describes.

For each scenario a fresh emulator (a server-side rate limit R per 60 s window and a latency
per call) holds the same dataset (the demo's shape: `--sets` merge sets, seed `--seed`, with the
demo's extras); merge_contacts.py runs in-process, the real code path: the default (sampled)
preview with `--rate-limit R --workers W`, then the merge with the same options. It prints the
preview's `estimate` (calls, seconds) against what the merge measured (the calls the emulator
served, the wall time of the run from start to exit) and the error in % of the measured value.
One scenario is bound by the rate, one by the latency (too few workers to reach the rate).

    python3 bench/estimate_accuracy.py              # 2 scenarios on the demo's shape, ~3 min
    python3 bench/estimate_accuracy.py --quick      # 4 sets, for a smoke run
    python3 bench/estimate_accuracy.py --repeat 3   # medians of 3

Exits 1 if a run fails (exit code not 0) or an error is over --limit (default 15 %).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import merge_contacts  # noqa: E402
from devrev_sandbox.dataset import build_dataset  # noqa: E402
from devrev_sandbox.faults import Faults  # noqa: E402
from devrev_sandbox.server import DevRevSandbox  # noqa: E402

TOKEN = "bench-token-of-a-plausible-length-0002"
# (name, R calls per minute, latency s, workers): one bound by the rate, one by the latency
SCENARIOS = [("rate-bound", 600, 0.05, 4), ("latency-bound", 6000, 0.15, 2)]


def run_scenario(dataset, rate: int, latency: float, workers: int) -> dict:
    """Preview then merge on a fresh emulator; the estimate and what was measured."""
    workdir = tempfile.mkdtemp(prefix="estimate-")
    sandbox = DevRevSandbox(dataset.seed, token=TOKEN, rate_limit=(rate, 60.0), faults=Faults(latency=latency),
                            merge_retire_after_gets=1).start()
    csv_path = os.path.join(workdir, "contacts.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    saved = {k: os.environ.get(k) for k in ("DEVREV_API_TOKEN", "DEVREV_BASE_URL", "DEVREV_RATE_LIMIT")}
    os.environ.update(DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url)
    os.environ.pop("DEVREV_RATE_LIMIT", None)
    common = ["--csv", csv_path, "--rate-limit", str(rate), "--workers", str(workers),
              "--report-dir", os.path.join(workdir, "reports"), "--log-dir", os.path.join(workdir, "logs"),
              "--backup-dir", os.path.join(workdir, "backups"),
              "--savepoint", os.path.join(workdir, "savepoints", "journal.sqlite3")]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            preview_code = merge_contacts.main(common + ["--preview"])
            preview_calls = len(sandbox.api_calls())
            sandbox.clear_log()
            started = time.monotonic()
            code = merge_contacts.main(common)
            wall = time.monotonic() - started
        with open(glob.glob(os.path.join(workdir, "reports", "preview_*.json"))[0], encoding="utf-8") as fh:
            estimate = json.load(fh)["estimate"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sandbox.stop()
    calls = sum(1 for c in sandbox.api_calls() if c.get("status") != 429)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"exit": max(preview_code, code), "preview_calls": preview_calls, "estimate_calls": estimate["calls"],
            "estimate_s": estimate["seconds"], "latency_s": estimate["latency_s"], "calls": calls, "wall": wall}


def error(estimate: float, measured: float) -> float:
    """The estimate's error in % of the measured value (negative: it said less)."""
    return 100.0 * (estimate - measured) / measured if measured else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", type=int, default=None, help="merge sets (default 12, the demo's; --quick 4)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians are printed (default 1)")
    p.add_argument("--limit", type=float, default=15.0, help="largest error allowed, in %% (default 15)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    sets = a.sets or (4 if a.quick else 12)
    dataset = build_dataset(sets, seed=a.seed, extras=True)
    print(f"command: python3 bench/estimate_accuracy.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"dataset: {len(dataset.merge_sets)} merge sets (seed {a.seed}, the demo's shape), "
          f"{len(dataset.seed['tickets'])} tickets, {len(dataset.seed['conversations'])} conversations; the default "
          f"(sampled) preview, then the merge, on a fresh emulator each; medians of {a.repeat}")
    header = (f"{'scenario':<14} {'R/min':>6} {'latency':>7} {'workers':>7} {'exit':>4} | {'est calls':>9} "
              f"{'calls':>6} {'err %':>6} | {'est s':>7} {'wall s':>7} {'err %':>6}")
    print(header)
    print("-" * len(header))
    failed = False
    for name, rate, latency, workers in SCENARIOS:
        runs = [run_scenario(dataset, rate, latency, workers) for _ in range(a.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("estimate_calls", "calls", "estimate_s", "wall")}
        code = max(r["exit"] for r in runs)
        calls_err, time_err = error(med["estimate_calls"], med["calls"]), error(med["estimate_s"], med["wall"])
        print(f"{name:<14} {rate:>6} {latency * 1000:>5.0f}ms {workers:>7} {code:>4} | {med['estimate_calls']:>9.0f} "
              f"{med['calls']:>6.0f} {calls_err:>+6.1f} | {med['estimate_s']:>7.1f} {med['wall']:>7.1f} "
              f"{time_err:>+6.1f}", flush=True)
        failed |= code != 0 or abs(calls_err) > a.limit or abs(time_err) > a.limit
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
