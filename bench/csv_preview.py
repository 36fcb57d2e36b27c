"""Memory and time of a preview of a huge contacts CSV (bench, not a test).

Writes a CSV of --rows contacts (a dataset's --sets merge sets, then contacts alone with
their email), starts the emulator in this process, runs `merge_contacts.py --preview` in a
child process and reports the child's peak RSS (os.wait4) and the time from its start to
the first API call the emulator receives (reading, checking and grouping the CSV).
Medians over --repeat runs.

    python bench/csv_preview.py --rows 500000 --sets 20 --repeat 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bigcsv import write_big_csv
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.server import DevRevSandbox

TOKEN = "bench-token-of-a-plausible-length-0001"


def preview_once(csv_path: str, seed: dict, workdir: str) -> dict:
    """One preview in a child process: its exit code, peak RSS (MiB), seconds to the first API call."""
    with DevRevSandbox(seed, token=TOKEN, merge_retire_after_gets=1) as sandbox:
        env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url, DEVREV_RATE_LIMIT="1000000")
        reports = tempfile.mkdtemp(dir=workdir)
        started = time.time()
        child = subprocess.Popen([sys.executable, os.path.join(ROOT, "merge_contacts.py"), "--csv", csv_path,
                                  "--preview", "--report-dir", reports, "--log-dir", reports],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.time() - started
        calls = sandbox.api_calls()
    return {"exit": os.waitstatus_to_exitcode(status), "rss_mib": usage.ru_maxrss / 1024,
            "first_call_s": (calls[0]["t"] - started) if calls else float("nan"), "wall_s": wall,
            "calls": len(calls)}


def measure(rows: int, sets: int, repeat: int, workdir: str) -> dict:
    """Medians of `repeat` previews of a `rows`-row CSV holding `sets` merge sets."""
    dataset = build_dataset(sets, seed=1, skipped=False)
    csv_path = os.path.join(workdir, f"contacts_{rows}.csv")
    write_big_csv(csv_path, dataset, rows)
    runs = [preview_once(csv_path, dataset.seed, workdir) for _ in range(repeat)]
    return {"rows": rows, "sets": sets, "exit": max(r["exit"] for r in runs), "calls": runs[0]["calls"],
            **{k: statistics.median(r[k] for r in runs) for k in ("rss_mib", "first_call_s", "wall_s")}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="csv-preview-")
    try:
        r = measure(args.rows, args.sets, args.repeat, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{r['rows']} rows, {r['sets']} merge sets: exit {r['exit']}, peak RSS {r['rss_mib']:.0f} MiB, "
          f"first API call after {r['first_call_s']:.2f} s, preview {r['wall_s']:.1f} s (medians of {args.repeat})")
    return 0 if r["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
