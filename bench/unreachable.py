"""Run-wide fault bench: how fast and how quietly does a preview stop when DevRev is unreachable?

Issue 12 measured a 17-set preview with `DEVREV_BASE_URL=http://127.0.0.1:1` (nothing
listening): 95 s and 409 error lines before exit 1. This script writes a 17-set contacts
CSV (the dataset builder's) into a temporary folder, runs `merge_contacts.py --preview`
on it in a subprocess against --url, and prints the wall time, the exit code and the
console's lines (all of them, and those that are not INFO). Exits 1 unless the preview exited 75
with exactly one line that is not INFO (README: "the run prints one line ... and exits 75").

    python bench/unreachable.py [--url http://127.0.0.1:1] [--sets 17] [--workers 4]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from devrev_sandbox.dataset import build_dataset

# a token of a plausible length (the tool refuses shorter ones); nothing is ever sent
BENCH_TOKEN = "eyJhbGciOiJIUzI1NiJ9.bench-token-never-sent.signature"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:1", help="DEVREV_BASE_URL to try (default: nothing listening)")
    p.add_argument("--sets", type=int, default=17)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="bench-unreachable-")
    try:
        with open(os.path.join(folder, "contacts.csv"), "w", encoding="utf-8", newline="") as fh:
            fh.write(build_dataset(args.sets, seed=3, skipped=False).csv_text())
        env = dict(os.environ, DEVREV_API_TOKEN=BENCH_TOKEN, DEVREV_BASE_URL=args.url)
        command = [sys.executable, os.path.join(ROOT, "merge_contacts.py"), "--csv", "contacts.csv", "--preview",
                   "--workers", str(args.workers)]
        started = time.monotonic()
        proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = proc.stderr.splitlines()
    others = [line for line in lines if not line.startswith("INFO ")]
    print(f"{args.sets}-set preview against {args.url} with {args.workers} workers: exit {proc.returncode} "
          f"in {wall:.2f} s; {len(lines)} console line{'' if len(lines) == 1 else 's'}, {len(others)} not INFO:")
    for line in others:
        print(f"  {line}")
    # README: the run stops with one line (`error: cannot reach DevRev at <url>: ...`) and exits 75
    problems = []
    if proc.returncode != 75:
        problems.append(f"exit {proc.returncode}, not 75")
    if len(others) != 1:
        problems.append(f"{len(others)} lines that are not INFO, not exactly one")
    if problems:
        print(f"FAILED: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
