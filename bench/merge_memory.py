"""Memory bench: the peak RSS of the merge of one huge duplicate, per object, old and new code.

For each size (3,500 and 7,000 objects; 14,000 too with --big) it merges one duplicate owning
that many tickets and conversations (bench/scale.py's big_duplicate), no latency, 4 workers,
default options, with the code of this checkout and of --baseline side by side (interleaved,
each in its own child process running its own checkout's merge_contacts.py). The emulator runs
in this process; the tool's peak is its own VmHWM, read by the child itself at exit (this file
run as `--run-child SCRIPT ARGS`), never os.wait4's figure, which also counts this parent.
Prints the peak, and KiB per object above a 20-object merge of the same code (the interpreter
and modules). Medians of --repeat runs for the first size, one run for the larger ones (time).
Exits 1 if any merge fails.

    python bench/merge_memory.py [--baseline DIR|COMMIT] [--repeat 3] [--big] [--no-canary] [--quick]
"""
from __future__ import annotations

import argparse
import os
import resource
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKEN = "bench-token-of-a-plausible-length-0001"
PEAK_TAG = "PEAK_RSS_KIB"


def peak_kib() -> int:
    """This process's own peak RSS in KiB: VmHWM, or ru_maxrss where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def run_child(script: str, argv: list[str]) -> None:
    """Run `script` as __main__ (its checkout first on sys.path) and print its peak on stderr."""
    script = os.path.abspath(script)
    sys.argv = [script, *argv]
    sys.path[0] = os.path.dirname(script)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.stderr.flush()
        os.write(2, f"\n{PEAK_TAG} {peak_kib()}\n".encode())


def measured(root: str, script: str, argv: list[str], env: dict, cwd: str) -> tuple[int, float, float]:
    """(exit code, the child's own peak RSS in MiB, wall seconds) of `root`/`script` with argv."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-child", os.path.join(root, script), *argv],
                          cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tags = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith(PEAK_TAG + " ")]
    return proc.returncode, (int(tags[-1]) / 1024 if tags else float("nan")), time.monotonic() - started


def merge_once(root: str, objects: int, extra: list[str]) -> dict:
    sys.path[:0] = [ROOT, HERE]
    from devrev_sandbox.server import DevRevSandbox
    from scale import big_duplicate  # this checkout's dataset and emulator for both sides
    dataset = big_duplicate(objects)
    work = tempfile.mkdtemp(prefix="merge-memory-")
    try:
        csv_path = os.path.join(work, "contacts.csv")
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(dataset.csv_text())
        with DevRevSandbox(dataset.seed, token=TOKEN, rate_limit=None, merge_retire_after_gets=1) as sandbox:
            env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url,
                       DEVREV_RATE_LIMIT="100000", PYTHONPATH=root)
            code, rss, wall = measured(root, "merge_contacts.py", [
                "--csv", csv_path, "--skip-preview-check", "--workers", "4",
                "--report-dir", os.path.join(work, "reports"), "--log-dir", os.path.join(work, "logs"),
                "--backup-dir", os.path.join(work, "backups"),
                "--savepoint", os.path.join(work, "savepoints", "j.sqlite3"), *extra], env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"exit": code, "rss": rss, "wall": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    baseline.add_option(p)
    p.add_argument("--repeat", type=int, default=3, help="runs of the first size per side (median; default 3)")
    p.add_argument("--big", action="store_true", help="also 14,000 objects (one run per side)")
    p.add_argument("--quick", action="store_true", help="700 and 1,400 objects, one run: a smoke run")
    p.add_argument("--no-canary", action="store_true",
                   help="pass --no-canary to both sides: the merge itself, without the first-set re-read")
    args = p.parse_args(argv)
    sizes = [700, 1400] if args.quick else [3500, 7000] + ([14000] if args.big else [])
    repeat = 1 if args.quick else args.repeat
    sides = {"old": baseline.checkout(args.baseline), "new": ROOT}
    print(f"command: python bench/merge_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"old = {sides['old']}, new = {sides['new']}; one duplicate, 4 workers, no latency, default options; "
          f"peak RSS = the tool's own VmHWM" + (", --no-canary" if args.no_canary else ""))
    extra = ["--no-canary"] if args.no_canary else []
    failed = False
    floor: dict[str, float | None] = {}
    floor_text = []
    for side, root in sides.items():   # the interpreter and modules: a 20-object merge
        r = merge_once(root, 20, extra)
        failed |= r["exit"] != 0
        floor[side] = r["rss"] if r["exit"] == 0 else None
        floor_text.append(f"{side} " + (f"{r['rss']:.1f} MiB" if r["exit"] == 0 else baseline.failed_text([r["exit"]])))
    print(f"20-object merge (the floor): {', '.join(floor_text)}")
    print(f"{'objects':>7} {'runs':>4} {'old MiB':>8} {'new MiB':>8} {'new/old':>7} {'old KiB/obj':>11} "
          f"{'new KiB/obj':>11} {'old s':>6} {'new s':>6}")
    for n, objects in enumerate(sizes):
        runs = repeat if n == 0 else 1
        got: dict[str, list[dict]] = {"old": [], "new": []}
        for _ in range(runs):
            for side, root in sides.items():   # interleaved
                r = merge_once(root, objects, extra)
                failed |= r["exit"] != 0
                got[side].append(r)
        good = {s: [r for r in got[s] if r["exit"] == 0] for s in got}   # medians of the successful runs only
        med = {s: statistics.median(r["rss"] for r in good[s]) for s in got if good[s]}
        wall = {s: statistics.median(r["wall"] for r in good[s]) for s in got if good[s]}
        cell = {s: f"{med[s]:.1f}" if s in med else "failed" for s in got}
        per = {s: "-" for s in got}
        for s, base_rss in floor.items():
            if s in med and base_rss is not None:
                per[s] = f"{(med[s] - base_rss) * 1024 / objects:.1f}"
        secs = {s: f"{wall[s]:.1f}" if s in wall else "-" for s in got}
        ratio = f"{med['new'] / med['old']:.2f}" if "new" in med and "old" in med else "-"
        lost = {s: [r["exit"] for r in got[s] if r["exit"] != 0] for s in got}
        notes = [f"{s} {len(lost[s])} of {len(got[s])} {baseline.failed_text(lost[s])}" for s in got if lost[s]]
        print(f"{objects:>7} {runs:>4} {cell['old']:>8} {cell['new']:>8} {ratio:>7} "
              f"{per['old']:>11} {per['new']:>11} {secs['old']:>6} {secs['new']:>6}"
              + (f"  {'; '.join(notes)}; {baseline.NOT_COMPUTED}" if ratio == "-" else
                 f"  {'; '.join(notes)}" if notes else ""))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--run-child":
        run_child(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(main())
