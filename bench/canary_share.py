"""Canary bench (issue 25, row 1): one huge duplicate, then two ordinary sets, at the rate limit.

The first set's duplicate owns --objects tickets and conversations (5 in 7 tickets, as
bench/scale.py's big_duplicate); two ordinary sets follow, so the canary runs after the first.
The emulator serves R = --rate calls per --window seconds at --latency per call; the merge runs
with its default options (workers, canary on), the client capped at R (--rate-limit R: with no cap
the client spreads DevRev's announced quota over a 5-minute window) and --skip-preview-check (as
bench/throughput.py). The baseline (--baseline: a checkout, or a commit, default 8178686) and
this one run the same dataset, each in a child process whose cwd and sys.path are its own
checkout (the emulator included), the pairs interleaved; prints calls, % of R, wall and the
canary's calls for each side, medians of --repeat, and the ratios. Exits 1 if a run fails.
Not a test: timings depend on the machine.

    python bench/canary_share.py                 # 500 objects, 3 runs a side: about 4 minutes here
    python bench/canary_share.py --reference     # and this checkout with --no-canary: about 5 minutes
    python bench/canary_share.py --big --repeat 1 --reference   # 2,000 objects: about 9 minutes
    python bench/canary_share.py --quick         # 120 objects, 1 run a side: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKEN = "bench-token-of-a-plausible-length-0001"
CANARY_ENDPOINTS = ("works.get", "conversations.get")


def dataset(objects: int):
    """Three merge sets: the first's duplicate on `objects` tickets and conversations, then two
    ordinary ones (0-4 tickets, 0-2 conversations). Built from the checkout on sys.path."""
    from devrev_sandbox.dataset import build_dataset
    tickets = objects * 5 // 7
    convs = objects - tickets
    data = build_dataset(3, seed=1, tickets=(0, 4), big_set_tickets=tickets, conversations=(convs, convs),
                         comments=(0, 2), attachment_rate=0.05, attachment_size=(200, 4000), two_duplicate_sets=0,
                         skipped=False)
    big = data.merge_sets[0]["duplicates"][0]   # the others keep 2 conversations at most: ordinary sets
    data.seed["conversations"] = [c for c in data.seed["conversations"]
                                  if c["key"].startswith(big + "-c") or int(c["key"].rsplit("-c", 1)[1]) < 2]
    return data


def child(args) -> int:
    """One merge, in the checkout that is the cwd: prints one JSON line with its figures."""
    sys.path[:] = [os.getcwd()] + [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    import contextlib
    import glob
    import io
    import shutil
    import tempfile

    import merge_contacts
    from devrev_sandbox.faults import Faults
    from devrev_sandbox.server import DevRevSandbox
    data = dataset(args.objects)
    workdir = tempfile.mkdtemp(prefix="canary-share-")
    csv_path = os.path.join(workdir, "contacts.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(data.csv_text())
    sandbox = DevRevSandbox(data.seed, token=TOKEN, rate_limit=(args.rate, args.window),
                            faults=Faults(latency=args.latency), merge_retire_after_gets=1).start()
    os.environ.update(DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url)
    os.environ.pop("DEVREV_RATE_LIMIT", None)
    per_minute = args.rate * 60.0 / args.window
    canary_calls = {}
    try:
        from merging import canary
        real = canary.check_set

        def counted(*a, **k):   # the canary's own calls, from the emulator's log
            start = len(sandbox.api_calls())
            try:
                return real(*a, **k)
            finally:
                canary_calls["n"] = len(sandbox.api_calls()) - start
        canary.check_set = counted
        started = time.monotonic()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = merge_contacts.main([
                "--csv", csv_path, "--skip-preview-check", "--rate-limit", f"{per_minute:g}",
                *(["--no-canary"] if args.no_canary else []),
                "--report-dir", os.path.join(workdir, "reports"), "--log-dir", os.path.join(workdir, "logs"),
                "--backup-dir", os.path.join(workdir, "backups"),
                "--savepoint", os.path.join(workdir, "savepoints", "journal.sqlite3")])
        wall = time.monotonic() - started
        reports = sorted(glob.glob(os.path.join(workdir, "reports", "merge_report_*.json")))
        with open(reports[-1], encoding="utf-8") as fh:
            report = json.load(fh)
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    calls = sandbox.api_calls()
    throttled = sum(1 for c in calls if c.get("status") == 429)
    served = len(calls) - throttled
    result = report.get("canary")
    ok = code == 0 and (args.no_canary or isinstance(result, dict) and result.get("differences") == []) \
        and all(s["status"] == "merged" for s in report["sets"])
    print(json.dumps({"exit": code, "ok": ok, "calls": served, "throttled": throttled, "wall": wall,
                      "share": served / wall * 60 / per_minute, "canary_calls": canary_calls.get("n"),
                      "checked": result.get("checked") if isinstance(result, dict) else None,
                      "code": os.path.dirname(os.path.abspath(merge_contacts.__file__))}))
    return 0


def run_side(checkout: str, args, no_canary: bool = False) -> dict:
    """A child process in `checkout` (this script, --child): its JSON line, or exit/ok false."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--objects", str(args.objects),
            "--rate", str(args.rate), "--window", str(args.window), "--latency", str(args.latency),
            *(["--no-canary"] if no_canary else [])]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEVREV_RATE_LIMIT")}
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(f"{checkout}: exit {done.returncode}\n{done.stderr[-3000:]}\n")
        return {"exit": done.returncode, "ok": False}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=500, help="objects of the first set's duplicate (default 500)")
    p.add_argument("--big", action="store_true", help="2,000 objects")
    p.add_argument("--quick", action="store_true", help="120 objects, 1 run a side: a smoke run")
    p.add_argument("--rate", type=int, default=1200, help="server limit: calls per window (default 1200)")
    p.add_argument("--window", type=float, default=60.0, help="server window in seconds (default 60)")
    p.add_argument("--latency", type=float, default=0.15, help="seconds per call (default 0.15)")
    p.add_argument("--repeat", type=int, default=3, help="runs a side (default 3): medians")
    p.add_argument("--jobs", type=int, default=3,
                   help="runs at once (default 3; the runs are latency- and rate-bound, each with its own emulator; "
                        "more at once on a loaded machine lowers both sides)")
    baseline.add_option(p)
    p.add_argument("--reference", action="store_true",
                   help="also run this checkout with --no-canary: what the run costs without any canary")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-canary", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.big:
        args.objects = 2000
    if args.quick:
        args.objects, args.repeat = 120, 1
    print(f"command: python bench/canary_share.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    per_minute = args.rate * 60 / args.window
    print(f"one duplicate on {args.objects} objects, then 2 ordinary sets; R = {args.rate} per {args.window:g} s "
          f"({per_minute:.0f}/min), {args.latency * 1000:.0f} ms per call, default options, --rate-limit "
          f"{per_minute:.0f}; {baseline.plural(args.repeat, 'run')} a side, {args.jobs} at once")
    names = ["base", "new"] + (["new --no-canary"] if args.reference else [])
    sides = {"base": baseline.checkout(args.baseline), "new": ROOT, "new --no-canary": ROOT}
    order = [(i, side) for i in range(args.repeat) for side in names]   # interleaved
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [(side, pool.submit(run_side, sides[side], args, side.endswith("--no-canary")))
                   for _, side in order]
        runs: dict[str, list[dict]] = {side: [] for side in names}
        for side, future in futures:
            runs[side].append(future.result())
    failed = [r for rs in runs.values() for r in rs if not r.get("ok")]
    for side, rs in runs.items():   # each side ran its own checkout's code
        failed += [r for r in rs if r.get("ok") and r.get("code") != sides[side]]
    header = f"{'side':>15} {'calls':>6} {'canary calls':>12} {'% of R':>7} {'429s':>5} {'wall s':>7}   (each run)"
    print(header)
    med = {}
    for side in names:
        good = [r for r in runs[side] if r.get("ok")]
        for r in runs[side]:
            if r.get("ok"):
                print(f"{side:>15} {r['calls']:>6} {r['canary_calls'] or 0:>12} {100 * r['share']:>6.0f}% "
                      f"{r['throttled']:>5} {r['wall']:>7.1f}")
            else:
                print(f"{side:>15} FAILED (exit {r.get('exit')})")
        if good:
            med[side] = {k: statistics.median(r[k] or 0 for r in good) for k in ("calls", "canary_calls", "share",
                                                                               "wall")}
    if "base" in med and "new" in med:
        b, n = med["base"], med["new"]
        print(f"medians: base {b['calls']:.0f} calls ({b['canary_calls']:.0f} by the canary), "
              f"{100 * b['share']:.0f}% of R, {b['wall']:.1f} s; new {n['calls']:.0f} calls "
              f"({n['canary_calls']:.0f} by the canary), {100 * n['share']:.0f}% of R, {n['wall']:.1f} s")
        print(f"new / base: calls {n['calls'] / b['calls']:.2f}, % of R {n['share'] / b['share']:.2f}, "
              f"wall {n['wall'] / b['wall']:.2f}")
    else:
        print(f"new / base: {baseline.NOT_COMPUTED}")
    if "new --no-canary" in med:
        r = med["new --no-canary"]
        cost = ""
        if "new" in med:   # from the rounded figures shown, so the sentence agrees with the rows
            points = round(100 * r["share"]) - round(100 * med["new"]["share"])
            cost = (f": the canary costs {points} percentage point{'' if points == 1 else 's'} of R" if points > 0
                    else ": the canary costs less than 1 percentage point of R")
        print(f"new --no-canary: {r['calls']:.0f} calls, {100 * r['share']:.0f}% of R, {r['wall']:.1f} s{cost}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
