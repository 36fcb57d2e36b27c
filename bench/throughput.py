"""Throughput near the API's limit: the real merge against a rate-limited, slow emulator.

Each run starts the emulator in a process of its own (this checkout's devrev_sandbox) with a
server-side limit R (calls per window) and a per-call latency, and runs merge_contacts.main in
another process, on the code of a checkout of the tool (this one by default, or --baseline's),
so the old and the new code meet the same server. Prints the calls made, the share of R, the
429s and the wall time. Not a test: timings depend on the machine. Exits 1 when a run fails.

Two modes:

    python3 bench/throughput.py --rate 600 --latency 0.15 --sets 40 --workers 1,8 [--extra]
        one row per worker count ("auto": no --workers, sized by the tool); --extra adds the
        client cap off (--rate-limit 100000, the CLI's most) with header pacing, and with none.

    python3 bench/throughput.py --issue-rows [--baseline DIR|COMMIT] [--quick | --full]
        issue 25's rows 3-5, this checkout and the baseline side by side, interleaved, medians
        of 3 (--repeat): (a) R = 5000 per 60 s, 150 ms, ordinary sets, no --workers; (b) 10 calls
        per 1 s window, 150 ms, default workers and --workers 8 (X-Ratelimit-Reset with its
        fraction; row bw, on request: to whole seconds); (c) 600 per 60 s, 400 ms (the run's
        start). The default run uses fewer sets than the issue (50 / 10 / 10, about 6-7 minutes);
        --full uses the issue's (200 / 40 / 40), --quick one short run of each. "% of R" is the
        whole run (the start included); "steady" the middle 80 % of its calls.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.dirname(HERE)
TOKEN = "bench-token-of-a-plausible-length-0001"
CAP_OFF = 100_000     # the most --rate-limit takes (plumbing.cli.rate_limit): the client cap "off"


# ----------------------------------------------------------------------------- the two child processes
def _serve(spec: dict) -> int:
    """The emulator (this checkout's) until stdin closes; then its calls to spec["calls_out"]."""
    sys.path.insert(0, MAIN)
    from devrev_sandbox.faults import Faults
    from devrev_sandbox.server import DevRevSandbox
    modes = {"rate_limit_reset": spec["reset"]} if spec.get("reset") else {}
    sandbox = DevRevSandbox(spec["seed"], token=TOKEN, rate_limit=(spec["rate"], spec["window"]),
                            faults=Faults(latency=spec["latency"]), merge_retire_after_gets=1, **modes).start()
    print("ready", sandbox.base_url, flush=True)
    sys.stdin.read()     # the parent closes it when the tool has finished
    calls = sandbox.api_calls()
    sandbox.stop()
    with open(spec["calls_out"], "w", encoding="utf-8") as fh:
        json.dump([{"t": c["t"], "endpoint": c["endpoint"], "status": c.get("status")} for c in calls], fh)
    return 0


def _tool(spec: dict) -> int:
    """merge_contacts.main of the checkout spec["root"], in this process; one JSON line out."""
    sys.path[:] = [spec["root"]] + [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, MAIN)]
    os.chdir(spec["workdir"])
    os.environ.update(DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=spec["url"],
                      DEVREV_MERGE_LOCK_DIR=os.path.join(spec["workdir"], "locks"))
    os.environ.pop("DEVREV_RATE_LIMIT", None)
    import merge_contacts
    if not spec["pacing"]:
        from devrev_api import pacing
        reserve = pacing.ServerPacer.reserve

        def counted_only(self):
            reserve(self)
            return 0.0
        pacing.ServerPacer.reserve = counted_only  # type: ignore[method-assign]
    argv = ["--csv", spec["csv"], "--skip-preview-check", "--report-dir", "reports", "--log-dir", "logs",
            "--backup-dir", "backups", "--savepoint", os.path.join("savepoints", "journal.sqlite3")]
    if spec["cap"] is not None:
        argv += ["--rate-limit", str(spec["cap"])]
    if spec["workers"] != "auto":
        argv += ["--workers", str(spec["workers"])]
    started = time.monotonic()
    log = open(os.path.join(spec["workdir"], "console.txt"), "w", encoding="utf-8")
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        code = merge_contacts.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    wall = time.monotonic() - started
    said = [line for line in open(os.path.join(spec["workdir"], "console.txt"), encoding="utf-8")
            if " workers: " in line]
    print(json.dumps({"exit": code, "wall": wall, "workers_line": said[0].strip() if said else None}), flush=True)
    return 0


# ----------------------------------------------------------------------------- one run
def run_once(spec: dict) -> dict:
    """One merge: the emulator and the tool in processes of their own; the run's figures."""
    workdir = tempfile.mkdtemp(prefix="throughput-")
    spec = dict(spec, workdir=workdir, calls_out=os.path.join(workdir, "calls.json"))
    with open(os.path.join(workdir, "spec.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    me = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, me, "--serve", os.path.join(workdir, "spec.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    try:
        line = server.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise RuntimeError(f"the emulator did not start: {line}")
        spec["url"] = line[1]
        with open(os.path.join(workdir, "spec.json"), "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        tool = subprocess.run([sys.executable, me, "--tool", os.path.join(workdir, "spec.json")],
                              capture_output=True, text=True, timeout=spec.get("timeout", 1800))
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.send_signal(signal.SIGKILL)
    try:
        result = json.loads(tool.stdout.strip().splitlines()[-1])
        with open(spec["calls_out"], encoding="utf-8") as fh:
            calls = json.load(fh)
    except (IndexError, ValueError, OSError):
        # no JSON line: the child's own exit code (e.g. a checkout whose merge_contacts exits on import), else -1
        result = {"exit": tool.returncode or -1, "wall": 0.0, "workers_line": None, "error": tool.stderr[-2000:]}
        calls = []
    if result["exit"] != 0:
        try:
            with open(os.path.join(workdir, "console.txt"), encoding="utf-8") as fh:
                result["error"] = fh.read()[-2000:]
        except OSError:
            pass
    shutil.rmtree(workdir, ignore_errors=True)
    throttled = sum(1 for c in calls if c["status"] == 429)
    served = len(calls) - throttled
    per_minute_r = spec["rate"] * 60.0 / spec["window"]
    wall = result["wall"] or float("nan")
    # the steady state: the middle 80 % of the calls served, by their arrival at the emulator
    times = sorted(c["t"] for c in calls if c["status"] != 429)
    low, high = len(times) // 10, len(times) * 9 // 10
    steady = (high - low) / (times[high] - times[low]) * 60 / per_minute_r if high > low + 1 else float("nan")
    return dict(result, calls=served, throttled=throttled, per_minute=served / wall * 60,
                share=served / wall * 60 / per_minute_r, steady=steady, spec=spec)


def ordinary_sets(sets: int, seed: int):
    """`sets` ordinary merge sets: 0-4 tickets and 0-2 conversations per duplicate, a tenth of the
    sets with two duplicates (this checkout's emulator builds them)."""
    sys.path.insert(0, MAIN)
    from devrev_sandbox.dataset import build_dataset
    return build_dataset(sets, seed=seed, tickets=(0, 4), conversations=(0, 2), comments=(0, 3),
                         attachment_rate=0.25, attachment_size=(500, 20_000), two_duplicate_sets=sets // 10,
                         skipped=False)


def write_dataset(sets: int, seed: int, folder: str) -> tuple[str, str, int]:
    """The dataset of `sets` ordinary sets (0-4 tickets, 0-2 conversations per duplicate) as a
    seed file and a CSV in `folder`: (seed path, CSV path, merge sets)."""
    dataset = ordinary_sets(sets, seed)
    seed_path, csv_path = os.path.join(folder, f"seed{sets}.json"), os.path.join(folder, f"contacts{sets}.csv")
    with open(seed_path, "w", encoding="utf-8") as fh:
        json.dump(dataset.seed, fh)
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    return seed_path, csv_path, len(dataset.merge_sets)


def minimum_for(seed_path: str, sets: int, seed: int) -> int:
    """The least calls a careful merge of the dataset can make (merging.call_estimates.minimum_calls)."""
    return dataset_minimum(seed_path, ordinary_sets(sets, seed))


def dataset_minimum(seed, dataset) -> int:
    """The least calls a careful merge of `dataset` (served from `seed`: a path or the seed itself)
    can make: each set's overhead and each duplicate's minimum_calls (merging.call_estimates)."""
    from backup import collect
    from devrev_client import DevRevClient
    from devrev_sandbox.server import DevRevSandbox
    from merging.call_estimates import minimum_calls, set_overhead_calls
    with DevRevSandbox(seed, token=TOKEN) as sandbox:
        client = DevRevClient(TOKEN, sandbox.base_url, calls_per_minute=1e9)
        total = 0
        for ms in dataset.merge_sets:
            total += set_overhead_calls(len(ms["duplicates"]))
            for dup in ms["duplicates"]:
                total += minimum_calls(collect(client, sandbox.key_id(dup)), client.page_limit)
        client.close()
    return total


# ----------------------------------------------------------------------------- the per-worker table
def workers_table(args) -> int:
    per_minute = args.rate * 60.0 / args.window
    print(f"command: python3 bench/throughput.py {' '.join(args.argv)}")
    print(f"server: {args.rate} calls per {args.window:g} s window (R = {per_minute:.0f}/min), "
          f"latency {args.latency * 1000:.0f} ms per call; client cap --rate-limit {per_minute:.0f}")
    folder = tempfile.mkdtemp(prefix="throughput-data-")
    try:
        seed_path, csv_path, sets = write_dataset(args.sets, args.seed, folder)
        minimum = minimum_for(seed_path, args.sets, args.seed)
        print(f"dataset: {sets} merge sets; minimum calls {minimum} ({minimum / sets:.1f} per set)")
        base = {"root": MAIN, "seed": seed_path, "csv": csv_path, "rate": args.rate, "window": args.window,
                "latency": args.latency, "reset": args.reset}
        specs = [dict(base, workers=w, cap=per_minute, pacing=True) for w in args.workers.split(",")]
        if args.extra:
            top = specs[-1]["workers"]
            specs += [dict(base, workers=top, cap=CAP_OFF, pacing=True), dict(base, workers=top, cap=CAP_OFF,
                                                                              pacing=False)]
        runs = [run_once(s) for s in specs]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    header = (f"{'workers':>7} {'client cap':>10} {'pacing':>6} {'exit':>4} {'calls':>6} {'min':>6} {'over/set':>8} "
              f"{'calls/min':>9} {'% of R':>6} {'429s':>5} {'429/1k':>6} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    for r in runs:
        s = r["spec"]
        cap = "off" if s["cap"] >= CAP_OFF else f"{s['cap']:.0f}"
        if r["exit"] != 0:   # no figures for a failed run
            print(f"{s['workers']:>7} {cap:>10} {'on' if s['pacing'] else 'off':>6} "
                  f"{baseline.failed_text([r['exit']])}")
            continue
        print(f"{s['workers']:>7} {cap:>10} {'on' if s['pacing'] else 'off':>6} {r['exit']:>4} {r['calls']:>6} "
              f"{minimum:>6} {(r['calls'] - minimum) / sets:>8.2f} {r['per_minute']:>9.0f} {100 * r['share']:>5.0f}% "
              f"{r['throttled']:>5} {1000 * r['throttled'] / max(1, r['calls']):>6.2f} {r['wall']:>7.1f}")
        if s["workers"] == "auto" and r.get("workers_line"):
            print(f"        auto: {r['workers_line'].split('] ', 1)[-1]}")
    return _failed(runs)


def _failed(runs: list[dict]) -> int:
    bad = [r for r in runs if r["exit"] != 0]
    for r in bad:
        s = r["spec"]
        print(f"FAILED: {os.path.basename(s['root'])} workers={s['workers']} cap={s['cap']} exit {r['exit']}: "
              f"{(r.get('error') or '').strip().splitlines()[-3:]}", file=sys.stderr)
    return 1 if bad else 0


# ----------------------------------------------------------------------------- issue 25's rows, side by side
ROWS = [  # name, what, rate, window, latency, reset, workers, sets (default, --full, --quick)
    ("a", "R 5000/60 s, 150 ms, no --workers", 5000, 60.0, 0.15, None, "auto", (50, 200, 20)),
    ("b", "10 per 1 s, 150 ms, default workers", 10, 1.0, 0.15, "fractional", "auto", (10, 40, 6)),
    ("b8", "10 per 1 s, 150 ms, --workers 8", 10, 1.0, 0.15, "fractional", "8", (10, 40, 6)),
    ("bw", "10 per 1 s (whole-second reset), default", 10, 1.0, 0.15, "whole", "auto", (10, 40, 6)),
    ("c", "600/60 s, 400 ms (the start)", 600, 60.0, 0.40, None, "auto", (10, 40, 6)),
]
DEFAULT_ROWS = "a,b,b8,c"   # bw (the same window with whole-second resets) on request: --rows a,b,b8,bw,c
HEAVY = threading.Semaphore(1)   # row a's new side sends 80 calls a second: never two such runs at once


def _scheduled(spec: dict) -> dict:
    """run_once, row a's new side alone among its kind (CPU, not the server, would bound two)."""
    if spec["row"] == "a" and spec["side"] == "new":
        with HEAVY:
            return run_once(spec)
    return run_once(spec)


def issue_rows(args) -> int:
    rows = [r for r in ROWS if r[0] in args.rows.split(",")]
    size = 2 if args.quick else 1 if args.full else 0
    repeat = 1 if args.quick else args.repeat
    sides = [("new", MAIN), ("old", baseline.checkout(args.baseline))]
    print(f"command: python3 bench/throughput.py {' '.join(args.argv)}")
    print(f"new: {MAIN}; old: {sides[1][1]}; emulator: this checkout's, in its own process; client cap "
          f"--rate-limit R on every run; {baseline.plural(repeat, 'run')} of each, interleaved, {args.jobs} at once")
    folder = tempfile.mkdtemp(prefix="throughput-data-")
    try:
        data = {}
        for row in rows:
            sets = row[7][size]
            if sets not in data:
                data[sets] = write_dataset(sets, args.seed, folder)
        specs = []
        for rep in range(repeat):
            for name, _what, rate, window, latency, reset, workers, sizes in rows:
                seed_path, csv_path, _ = data[sizes[size]]
                for side, root in (sides if rep % 2 == 0 else sides[::-1]):
                    specs.append({"row": name, "side": side, "root": root, "seed": seed_path, "csv": csv_path,
                                  "rate": rate, "window": window, "latency": latency, "reset": reset,
                                  "workers": workers, "cap": rate * 60.0 / window, "pacing": True})
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(_scheduled, specs))
        print(f"{len(runs)} runs in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    header = (f"{'row':<4} {'what':<42} {'sets':>4} {'side':<4} {'% of R (runs)':<16} {'median':>6} "
              f"{'steady':>6} {'429s':>5} {'wall s':>6}  workers")
    print(header)
    print("-" * (len(header) + 30))
    for name, what, *_rest, sizes in rows:
        medians = {}
        for side, _root in sides:
            mine = [r for r in runs if r["spec"]["row"] == name and r["spec"]["side"] == side]
            good = [r for r in mine if r["exit"] == 0]   # a failed run's figures are no figures
            lost = [r["exit"] for r in mine if r["exit"] != 0]
            if not good:
                print(f"{name:<4} {what:<42} {sizes[size]:>4} {side:<4} {baseline.failed_text(lost)}")
                continue
            shares = [100 * r["share"] for r in good]
            medians[side] = statistics.median(shares)
            said = next((r["workers_line"] for r in good if r.get("workers_line")), None)
            said = said.split("] ", 1)[-1] if said else ("--workers 8" if good[0]["spec"]["workers"] == "8" else
                                                         "4 (the old default)")
            steady = statistics.median(100 * r["steady"] for r in good)
            note = f"; {len(lost)} more {baseline.failed_text(lost)}" if lost else ""
            print(f"{name:<4} {what:<42} {sizes[size]:>4} {side:<4} {' / '.join(f'{s:.0f}' for s in shares):<16} "
                  f"{medians[side]:>5.0f}% {steady:>5.0f}% {sum(r['throttled'] for r in good):>5} "
                  f"{statistics.median(r['wall'] for r in good):>6.1f}  {said}{note}")
        if "new" in medians and "old" in medians:
            print(f"{'':<4} {'':<42} {'':>4} new/old {medians['new'] / max(medians['old'], 1e-9):.2f}x")
        else:
            print(f"{'':<4} {'':<42} {'':>4} {baseline.NOT_COMPUTED}")
    return _failed(runs)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--serve"], ["--tool"]):
        with open(argv[1], encoding="utf-8") as fh:
            spec = json.load(fh)
        return _serve(spec) if argv[0] == "--serve" else _tool(spec)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=600, help="server limit R: calls per window (default 600)")
    parser.add_argument("--window", type=float, default=60.0, help="server window in seconds (default 60)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per call (default 0.15)")
    parser.add_argument("--sets", type=int, default=40, help="merge sets in the dataset (default 40)")
    parser.add_argument("--workers", default="1,8",
                        help="worker counts to run, comma-separated; auto: no --workers (default 1,8)")
    parser.add_argument("--reset", choices=("whole", "fractional"), default=None,
                        help="how the emulator spells X-Ratelimit-Reset (default: its default, whole seconds)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra", action="store_true",
                        help="also run with the client cap off: pacing from headers alone, and no pacing at all")
    parser.add_argument("--issue-rows", action="store_true", help="issue 25's rows, new and --baseline side by side")
    baseline.add_option(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row and side (default 3: medians)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at once (default 3; each mostly waits)")
    parser.add_argument("--full", action="store_true", help="the issue's set counts (200 / 40 / 40): long")
    parser.add_argument("--quick", action="store_true", help="one short run of each row: a smoke run")
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help=f"with --issue-rows: which rows, comma-separated (default {DEFAULT_ROWS}; also bw)")
    args = parser.parse_args(argv)
    args.argv = argv
    return issue_rows(args) if args.issue_rows else workers_table(args)


if __name__ == "__main__":
    sys.exit(main())
