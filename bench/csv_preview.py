"""A preview of a huge contacts CSV, the baseline checkout and this one side by side (bench, not a test).

Writes a CSV of --rows contacts (a dataset's --sets merge sets, then contacts alone with their
email: bench/bigcsv.py), starts the emulator in this process, and runs `merge_contacts.py
--preview` of each checkout in a child process, interleaved (baseline, new, baseline, new, ...).
Per run: the time from the child's start to its first console byte (stdout or stderr, both
piped), to the first API call the emulator receives (reading, checking and grouping the CSV),
and to its end (the whole preview); the child's own peak RSS (it reports
resource.getrusage(RUSAGE_SELF) at exit: os.wait4's figure would include this parent's);
the console's and the report folder's bytes. Medians over --repeat runs, and new/baseline
ratios. Exits non-zero if any preview fails.

    python bench/csv_preview.py                     # 500,000 rows, 3 runs each (about 2 minutes)
    python bench/csv_preview.py --quick             # 50,000 rows
    python bench/csv_preview.py --baseline 8178686 --list-skipped   # also this checkout with --list-skipped
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bigcsv import write_big_csv  # noqa: E402
from devrev_sandbox.dataset import build_dataset  # noqa: E402
from devrev_sandbox.server import DevRevSandbox  # noqa: E402

TOKEN = "bench-token-of-a-plausible-length-0001"
# Runs a script as `python script args` would (its folder first on sys.path, so each checkout runs
# its own code), then writes the process's own peak RSS (KiB) to the file named by argv[1].
_WRAPPER = r"""
import os, resource, runpy, sys
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
try:
    runpy.run_path(script, run_name="__main__")
finally:
    with open(out, "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""
METRICS = ("first_output_s", "first_call_s", "wall_s", "rss_mib", "console_bytes", "report_mib")


def _drain(stream, sink: dict, started: float) -> None:
    """Read a child's pipe to its end, noting when its first byte came."""
    while True:
        chunk = stream.read1(65536)
        if not chunk:
            return
        with sink["lock"]:
            sink.setdefault("first", time.time() - started)
            sink["bytes"] += len(chunk)
            sink["text"].append(chunk)


def preview_once(checkout: str, csv_path: str, seed: dict, workdir: str, extra: list[str]) -> dict:
    """One preview by `checkout`'s merge_contacts.py in a child process, against a fresh emulator."""
    run_dir = tempfile.mkdtemp(dir=workdir)
    reports, rss_file = os.path.join(run_dir, "reports"), os.path.join(run_dir, "rss")
    with DevRevSandbox(seed, token=TOKEN, merge_retire_after_gets=1) as sandbox:
        env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url, DEVREV_RATE_LIMIT="1000000")
        sink: dict = {"lock": threading.Lock(), "bytes": 0, "text": []}
        started = time.time()
        child = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, rss_file, os.path.join(checkout, "merge_contacts.py"), "--csv", csv_path,
             "--preview", "--report-dir", reports, "--log-dir", os.path.join(run_dir, "logs"),
             "--savepoint", os.path.join(run_dir, "savepoint.sqlite3"), *extra],
            env=env, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers = [threading.Thread(target=_drain, args=(s, sink, started)) for s in (child.stdout, child.stderr)]
        for reader in readers:
            reader.start()
        code = child.wait()
        wall = time.time() - started
        for reader in readers:
            reader.join()
        calls = sandbox.api_calls()
    try:
        with open(rss_file, encoding="ascii") as fh:
            rss_mib = int(fh.read()) / 1024
    except (OSError, ValueError):
        rss_mib = float("nan")
    report_bytes = sum(os.path.getsize(os.path.join(reports, f)) for f in os.listdir(reports)) \
        if os.path.isdir(reports) else 0
    result = {"exit": code, "first_output_s": sink.get("first", float("nan")),
              "first_call_s": (calls[0]["t"] - started) if calls else float("nan"), "wall_s": wall,
              "rss_mib": rss_mib, "console_bytes": sink["bytes"], "report_mib": report_bytes / (1 << 20),
              "calls": len(calls)}
    if code != 0:
        result["console"] = b"".join(sink["text"]).decode("utf-8", "replace")[-2000:]
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def measure(rows: int, sets: int, repeat: int, workdir: str) -> dict:
    """This checkout alone (bench/scale.py): medians of `repeat` previews of a `rows`-row CSV holding `sets` merge
    sets."""
    dataset = build_dataset(sets, seed=1, skipped=False)
    csv_path = os.path.join(workdir, f"contacts_{rows}.csv")
    write_big_csv(csv_path, dataset, rows)
    runs = [preview_once(ROOT, csv_path, dataset.seed, workdir, []) for _ in range(repeat)]
    good = [r for r in runs if r["exit"] == 0] or runs   # medians of the successful runs (all failed: exit says so)
    return {"rows": rows, "sets": sets, "exit": baseline.worst(r["exit"] for r in runs), "calls": good[0]["calls"],
            **{k: statistics.median(r[k] for r in good) for k in METRICS}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="contacts in the CSV (default 500,000; 50,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50,000 rows")
    parser.add_argument("--sets", type=int, default=20, help="merge sets among them (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each checkout (default 3)")
    baseline.add_option(parser)
    parser.add_argument("--list-skipped", action="store_true",
                        help="also run this checkout with --list-skipped (the skipped rows' file, on request)")
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 500_000)
    base = baseline.checkout(args.baseline)
    checkouts: list[tuple[str, str, list[str]]] = [("baseline", base, []), ("new", ROOT, [])]
    if args.list_skipped:
        checkouts.append(("new --list-skipped", ROOT, ["--list-skipped"]))
    workdir = tempfile.mkdtemp(prefix="csv-preview-")
    results: dict[str, list[dict]] = {name: [] for name, _, _ in checkouts}
    try:
        dataset = build_dataset(args.sets, seed=1, skipped=False)
        csv_path = os.path.join(workdir, f"contacts_{rows}.csv")
        write_big_csv(csv_path, dataset, rows)
        size = os.path.getsize(csv_path) / (1 << 20)
        print(f"{rows:,} rows ({size:.1f} MiB), {args.sets} merge sets; {baseline.plural(args.repeat, 'run')} of each, "
              f"interleaved", flush=True)
        for n in range(args.repeat):
            for name, checkout, extra in checkouts:
                r = preview_once(checkout, csv_path, dataset.seed, workdir, extra)
                results[name].append(r)
                if r["exit"] != 0:   # a failed run's timings are no figures
                    print(f"  run {n + 1} {name:<19} {baseline.failed_text([r['exit']])}", flush=True)
                    print(r.get("console", ""), file=sys.stderr)
                    continue
                print(f"  run {n + 1} {name:<19} exit {r['exit']}  first output {r['first_output_s']:5.2f} s  "
                      f"first call {r['first_call_s']:5.2f} s  preview {r['wall_s']:5.1f} s  "
                      f"peak RSS {r['rss_mib']:4.0f} MiB  reports {r['report_mib']:6.1f} MiB", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    good = {name: [r for r in runs if r["exit"] == 0] for name, runs in results.items()}   # successful runs only
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in METRICS} for name, runs in good.items() if runs}
    print(f"\nmedians of the successful runs ({baseline.plural(args.repeat, 'run')} of each):")
    print(f"  {'':<19} {'first output':>12} {'first call':>10} {'preview':>8} {'peak RSS':>9} {'console':>8} "
          f"{'reports':>9}")
    for name, runs in results.items():
        lost = [r["exit"] for r in runs if r["exit"] != 0]
        if name not in medians:
            print(f"  {name:<19} {baseline.failed_text(lost)}")
            continue
        m = medians[name]
        print(f"  {name:<19} {m['first_output_s']:10.2f} s {m['first_call_s']:8.2f} s {m['wall_s']:6.1f} s "
              f"{m['rss_mib']:5.0f} MiB {m['console_bytes']:6.0f} B {m['report_mib']:5.1f} MiB"
              + (f"  ({len(lost)} of {len(runs)} {baseline.failed_text(lost)})" if lost else ""))
    for name in list(results)[1:]:
        if name not in medians or "baseline" not in medians:
            print(f"  {name} / baseline: {baseline.NOT_COMPUTED}")
            continue
        new, old = medians[name], medians["baseline"]
        print(f"  {name} / baseline: first output x{new['first_output_s'] / old['first_output_s']:.2f}, "
              f"first call x{new['first_call_s'] / old['first_call_s']:.2f}, "
              f"preview x{new['wall_s'] / old['wall_s']:.2f}, peak RSS x{new['rss_mib'] / old['rss_mib']:.2f}")
    print(json.dumps({"rows": rows, "medians": medians}))
    failed = [name for name, runs in results.items() if any(r["exit"] != 0 for r in runs)]
    if failed:
        print(f"FAILED: a preview of {', '.join(failed)} did not exit 0", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
