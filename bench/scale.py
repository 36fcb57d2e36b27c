"""Scale bench: one huge duplicate at the rate limit, its memory, a huge CSV, a cheap preview.

One command prints, side by side:
  1. the share of the rate limit R one big duplicate (--objects tickets and conversations)
     reaches with 1, 4 and 8 workers at --latency per call, and its calls against the
     minimum (merging.call_estimates.minimum_calls), and the calls per set of --sets ordinary sets;
  2. peak RSS and time of the merge of a huge duplicate (--big objects) at 1x, 2x and 4x
     a quarter of its size (the tool in a child process, its own VmHWM; the emulator here),
     and KiB per object between 1x and 4x;
  3. peak RSS and time to the first API call of a preview of a --rows-row CSV;
  4. the default preview's calls (and --full's) as a share of the merge's, on the demo data.
Medians of --repeat runs where a run is short (3, 4); one run each for 1 and 2.
Not a test: a shared 2-core machine is noisy.

    python bench/scale.py                      # everything, about 10 minutes here
    python bench/scale.py --quick              # smaller sizes, a minute or two
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import csv_preview
import merge_memory
import throughput
from devrev_sandbox.dataset import DEMO_CSV, DEMO_SEED, build_dataset
from devrev_sandbox.server import DevRevSandbox

TOKEN = "bench-token-of-a-plausible-length-0001"


def big_duplicate(objects: int, seed: int = 1):
    """One merge set whose duplicate is on `objects` tickets and conversations (5 in 7 tickets)."""
    tickets = objects * 5 // 7
    convs = objects - tickets
    return build_dataset(1, seed=seed, big_set_tickets=tickets, conversations=(convs, convs), comments=(0, 2),
                         attachment_rate=0.05, attachment_size=(200, 4000), two_duplicate_sets=0, skipped=False)


def _child(args_list: list[str], base_url: str, cwd: str) -> tuple[int, float, float]:
    """merge_contacts.py in a child process: (exit code, the child's own peak RSS MiB, wall seconds).
    The peak is the child's VmHWM, read by the child at exit (bench/merge_memory.py's wrapper):
    os.wait4 after Popen would report this parent's peak too (the emulator, section 1's runs)."""
    env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=base_url, DEVREV_RATE_LIMIT="100000")
    return merge_memory.measured(ROOT, "merge_contacts.py", args_list, env, cwd)


def _dirs(workdir: str) -> list[str]:
    return ["--report-dir", os.path.join(workdir, "reports"), "--log-dir", os.path.join(workdir, "logs"),
            "--backup-dir", os.path.join(workdir, "backups"),
            "--savepoint", os.path.join(workdir, "savepoints", "j.sqlite3")]


def merge_memory_of(objects: int, workers: int) -> dict:
    """Peak RSS and wall time of the real merge of one `objects`-object duplicate (no latency)."""
    dataset = big_duplicate(objects)
    workdir = tempfile.mkdtemp(prefix="scale-mem-")
    try:
        csv_path = os.path.join(workdir, "contacts.csv")
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(dataset.csv_text())
        with DevRevSandbox(dataset.seed, token=TOKEN, merge_retire_after_gets=1) as sandbox:
            code, rss, wall = _child(["--csv", csv_path, "--skip-preview-check", "--workers", str(workers),
                                      *_dirs(workdir)], sandbox.base_url, workdir)
            calls = len(sandbox.api_calls())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"objects": objects, "exit": code, "rss": rss, "wall": wall, "calls": calls}


def preview_share(workers: int) -> dict:
    """Calls of the default preview, of --full, and of the merge, on the demo data."""
    out = {}
    workdir = tempfile.mkdtemp(prefix="scale-demo-")
    try:
        with DevRevSandbox(DEMO_SEED, token=TOKEN, merge_retire_after_gets=1) as sandbox:
            for name, extra in (("preview", ["--preview"]), ("full", ["--preview", "--full"]),
                                ("merge", ["--skip-preview-check"])):
                sandbox.clear_log()
                code, _, _ = _child(["--csv", DEMO_CSV, *extra, "--workers", str(workers), *_dirs(workdir)],
                                    sandbox.base_url, workdir)
                out[name] = len(sandbox.api_calls())
                out[name + "_exit"] = code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _rate_run(seed_path: str, csv_path: str, workers: int, rate: int, window: float, latency: float) -> dict:
    """throughput.run_once: the emulator and this checkout's merge in processes of their own."""
    cap = max(1, int(rate * 60 / window))
    run = throughput.run_once({"root": ROOT, "seed": seed_path, "csv": csv_path, "rate": rate, "window": window,
                               "latency": latency, "cap": cap, "workers": workers, "pacing": True})
    return dict(run, workers=workers)


def rate_share(objects: int, workers: list[int], rate: int, window: float, latency: float,
               folder: str) -> tuple[list, int]:
    """throughput.run_once on one big duplicate for each worker count; with the minimum calls."""
    dataset = big_duplicate(objects)
    seed_path, csv_path = os.path.join(folder, "big_seed.json"), os.path.join(folder, "big.csv")
    with open(seed_path, "w", encoding="utf-8") as fh:
        json.dump(dataset.seed, fh)
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    runs = [_rate_run(seed_path, csv_path, w, rate, window, latency) for w in workers]
    return runs, throughput.dataset_minimum(dataset.seed, dataset)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the bench")
    p.add_argument("--objects", type=int, default=500, help="objects of the duplicate at the rate limit")
    p.add_argument("--rate", type=int, default=200, help="server limit: calls per window (default 200)")
    p.add_argument("--window", type=float, default=10.0, help="server window in seconds (default 10: R=1200/min)")
    p.add_argument("--latency", type=float, default=0.15)
    p.add_argument("--big", type=int, default=7000, help="objects of the huge duplicate at 4x (default 7000)")
    p.add_argument("--sets", type=int, default=40, help="ordinary merge sets for the calls-per-set line")
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.objects, args.big, args.rows, args.repeat, args.sets = 120, 700, 50_000, 1, 10
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python bench/scale.py {argv_text}".rstrip())
    per_minute = args.rate * 60 / args.window

    scratch = tempfile.mkdtemp(prefix="scale-rate-")
    try:
        runs, minimum = rate_share(args.objects, [1, 4, 8], args.rate, args.window, args.latency, scratch)
        seed_path, csv_path, _ = throughput.write_dataset(args.sets, 1, scratch)
        many_min = throughput.minimum_for(seed_path, args.sets, 1)
        many = _rate_run(seed_path, csv_path, 4, args.rate, args.window, args.latency)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n1. one duplicate on {args.objects} objects, R = {per_minute:.0f} calls/min, {args.latency * 1000:.0f} ms "
          f"per call; minimum {minimum} calls")
    print(f"{'workers':>7} {'exit':>4} {'calls':>6} {'over min':>8} {'calls/min':>9} {'% of R':>6} {'429s':>5} "
          f"{'wall s':>7}")
    for r in runs:
        print(f"{r['workers']:>7} {r['exit']:>4} {r['calls']:>6} {r['calls'] - minimum:>8} {r['per_minute']:>9.0f} "
              f"{100 * r['per_minute'] / per_minute:>5.0f}% {r['throttled']:>5} {r['wall']:>7.1f}")

    print(f"   and {args.sets} ordinary sets (bench/throughput.py's dataset), 4 workers: exit {many['exit']}, "
          f"{many['calls']} calls, minimum {many_min}: {(many['calls'] - many_min) / args.sets:.2f} over the minimum "
          f"per set, {100 * many['per_minute'] / per_minute:.0f}% of R, {many['throttled']} 429s")

    print("\n2. merge of one huge duplicate, 4 workers, no latency (the tool in a child process: its own VmHWM)")
    print(f"{'size':>5} {'objects':>7} {'exit':>4} {'calls':>6} {'peak RSS MiB':>12} {'wall s':>7}")
    peaks = []
    for factor in (1, 2, 4):
        m = merge_memory_of(args.big * factor // 4, 4)
        peaks.append(m)
        print(f"{factor:>4}x {m['objects']:>7} {m['exit']:>4} {m['calls']:>6} {m['rss']:>12.0f} {m['wall']:>7.1f}")
    slope = (peaks[-1]["rss"] - peaks[0]["rss"]) * 1024 / max(1, peaks[-1]["objects"] - peaks[0]["objects"])
    print(f"   {slope:.1f} KiB per object between 1x and 4x")

    workdir = tempfile.mkdtemp(prefix="scale-csv-")
    try:
        c = csv_preview.measure(args.rows, 20, args.repeat, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n3. preview of a {c['rows']}-row CSV with {c['sets']} merge sets: exit {c['exit']}, peak RSS "
          f"{c['rss_mib']:.0f} MiB, first API call after {c['first_call_s']:.2f} s, whole preview "
          f"{c['wall_s']:.1f} s (medians of {args.repeat})")

    shares = [preview_share(4) for _ in range(args.repeat)]
    med = {k: statistics.median(s[k] for s in shares) for k in ("preview", "full", "merge")}
    print(f"\n4. demo data: merge {med['merge']:.0f} calls; default preview {med['preview']:.0f} calls = "
          f"{100 * med['preview'] / med['merge']:.0f}% of the merge; --preview --full {med['full']:.0f} calls = "
          f"{100 * med['full'] / med['merge']:.0f}%")
    demo_exits = [s[f"{name}_exit"] for s in shares for name in ("preview", "full", "merge")]
    if any(demo_exits):
        print(f"   exit codes of those runs (preview, --full, merge each time): {demo_exits}")
    # every child's exit code counts: section 1's merges, 2's, 3's previews and all three runs of 4 each time
    failed = [x["exit"] for x in runs + [many] + peaks + [c]] + demo_exits
    failed = [code for code in failed if code != 0]
    if failed:
        print(f"\n{len(failed)} {'run' if len(failed) == 1 else 'runs'} failed (exit codes {failed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
