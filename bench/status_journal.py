"""`merge_contacts.py --status` on a savepoint of many sets: peak memory and wall time, the
baseline checkout and this one side by side (issue 25 row 7: 1,367 MiB and 21.6 s at 100,000).

The savepoint is a real one made bigger: the demo data is merged on the emulator (this
checkout, in a child process), then its rows (sets, steps, events) are copied under new keys
until there are N sets, 5 % of them marked in_progress (so --status computes their resume point,
the slower path), as the scale probe's journal_big.py did. Each --status runs in a child process
that reports its own peak RSS (VmHWM from /proc/self/status, and ru_maxrss) when it ends; its
stdout goes to /dev/null. The two checkouts alternate, medians of `--repeat` runs.

    python3 bench/status_journal.py                       # 10,000 and 100,000 sets, medians of 3 (~5 min)
    python3 bench/status_journal.py --quick               # 2,000 and 10,000 sets, once each
    python3 bench/status_journal.py --sets 100000 --baseline 8178686

Exits 1 if a --status run fails or this checkout's peak at the largest size is over --limit-mib.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(checkout: str, savepoint: str, out_path: str) -> None:
    """In the child: run --status of `checkout` on `savepoint`, then write its own peak RSS."""
    import resource
    sys.path.insert(0, checkout)
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="status-bench-") as scratch:   # removed when the run ends
        os.chdir(scratch)
        try:
            import merge_contacts
            with open(os.devnull, "w") as devnull:
                saved, sys.stdout = sys.stdout, devnull
                try:
                    code = merge_contacts.main(["--status", "--savepoint", savepoint])
                finally:
                    sys.stdout = saved
        finally:
            os.chdir(here)
    with open("/proc/self/status", encoding="ascii") as fh:
        hwm_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"code": code, "vmhwm_kib": hwm_kib,
                   "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, fh)


def real_savepoint(work: str) -> str:
    """The demo data merged on the emulator by this checkout: its savepoint (17 sets)."""
    demo = os.path.join(work, "demo")
    os.makedirs(demo)
    for args in (["--sandbox", "--preview"], ["--sandbox"]):
        done = subprocess.run([sys.executable, os.path.join(HERE, "merge_contacts.py"), *args], cwd=demo,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"the demo merge failed (exit {done.returncode}): {' '.join(args)}")
    return os.path.join(demo, ".sandbox", "savepoints.sqlite3")


def big_savepoint(source: str, target: str, sets: int, unfinished: float = 0.05) -> dict:
    """`source`'s rows copied under suffixed keys until there are `sets` sets (journal_big.py)."""
    with sqlite3.connect(source) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(source, target)
    db = sqlite3.connect(target)
    base = db.execute("SELECT COUNT(*) FROM sets").fetchone()[0]
    db.execute("CREATE TEMP TABLE s0 AS SELECT * FROM sets")
    db.execute("CREATE TEMP TABLE st0 AS SELECT * FROM steps")
    db.execute("CREATE TEMP TABLE e0 AS SELECT at, run_id, set_key, step, status, data FROM events")
    for i in range(1, (sets + base - 1) // base):
        sfx = f"#c{i}"
        db.execute("INSERT INTO sets (set_key, email, status, reason, error, context, updated_at, run_id) "
                   "SELECT set_key || ?, 'c' || ? || '-' || email, status, reason, error, context, updated_at, "
                   "run_id FROM s0", (sfx, i))
        db.execute("INSERT INTO steps SELECT set_key || ?, step, status, data, updated_at, run_id FROM st0", (sfx,))
        db.execute("INSERT INTO events (at, run_id, set_key, step, status, data) "
                   "SELECT at, run_id, set_key || ?, step, status, data FROM e0", (sfx,))
    db.commit()
    extra = db.execute("SELECT COUNT(*) FROM sets").fetchone()[0] - sets
    if extra > 0:
        for table in ("steps", "events"):
            db.execute(f"DELETE FROM {table} WHERE set_key IN (SELECT set_key FROM sets ORDER BY rowid DESC "
                       f"LIMIT ?)", (extra,))
        db.execute("DELETE FROM sets WHERE set_key IN (SELECT set_key FROM sets ORDER BY rowid DESC LIMIT ?)",
                   (extra,))
    db.execute("UPDATE sets SET status = 'in_progress' WHERE rowid % ? = 0", (max(1, round(1 / unfinished)),))
    db.commit()
    counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("sets", "steps", "events")}
    db.close()
    counts["mib"] = round(os.path.getsize(target) / 2 ** 20, 1)
    return counts


def measure(checkout: str, savepoint: str) -> tuple[float, float, int]:
    """(peak RSS MiB, wall s, exit code) of one --status of `checkout` in a child process."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    started = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", checkout, savepoint, out_path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    try:
        with open(out_path, encoding="utf-8") as fh:
            got = json.load(fh)
    except (OSError, ValueError):
        sys.stderr.write(done.stderr[-2000:])
        return 0.0, wall, done.returncode or 1
    finally:
        os.unlink(out_path)
    return max(got["vmhwm_kib"], got["maxrss_kib"]) / 1024, wall, int(got["code"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=None, help="comma-separated sizes (default 10000,100000; --quick 2000,10000)")
    p.add_argument("--repeat", type=int, default=None, help="runs per side and size (default 3; --quick 1)")
    baseline.add_option(p)
    p.add_argument("--limit-mib", type=float, default=150.0, help="this checkout's peak at the largest size")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return 0
    sizes = [int(n) for n in (a.sets or ("2000,10000" if a.quick else "10000,100000")).split(",")]
    repeat = a.repeat or (1 if a.quick else 3)
    sides = [("base", baseline.checkout(a.baseline)), ("new", HERE)]
    failed = False
    with tempfile.TemporaryDirectory(prefix="status-journal-") as work:
        source = real_savepoint(work)
        with sqlite3.connect(source) as db:
            base_sets = db.execute("SELECT COUNT(*) FROM sets").fetchone()[0]
        print(f"source: the demo merge's savepoint ({base_sets} sets); --status in a child process, peak RSS "
              f"its own VmHWM; medians of the successful runs of {baseline.plural(repeat, 'run')} a side")
        print(f"{'sets':>8} {'steps':>9} {'events':>9} {'MiB':>7} | " + " | ".join(
            f"{name:>5} MiB {name:>5} s" for name, _ in sides) + " | new/base MiB  new/base s")
        for size in sizes:
            path = os.path.join(work, f"journal_{size}.sqlite3")
            counts = big_savepoint(source, path, size)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in sides}
            lost: dict[str, list[int]] = {name: [] for name, _ in sides}
            for _ in range(repeat):
                for name, checkout in sides:          # interleaved: the machine's load falls on both
                    mib, wall, code = measure(checkout, path)
                    if code != 0:                     # a failed run's figures are no figures
                        print(f"  {name}: --status exited {code} on {size} sets", file=sys.stderr)
                        failed = True
                        lost[name].append(code)
                    else:
                        results[name].append((mib, wall))
            med = {name: (statistics.median(m for m, _ in r), statistics.median(w for _, w in r))
                   for name, r in results.items() if r}
            cells = [f"{med[name][0]:>9.0f} {med[name][1]:>7.2f}" if name in med else
                     f"{baseline.failed_text(lost[name]):>17}" for name, _ in sides]
            row = f"{size:>8} {counts['steps']:>9} {counts['events']:>9} {counts['mib']:>7} | " + " | ".join(cells)
            if "base" in med and "new" in med:     # new/old, as every other bench prints
                row += f" | {med['new'][0] / med['base'][0]:>12.2f} {med['new'][1] / med['base'][1]:>10.2f}"
            else:
                row += f" | {baseline.NOT_COMPUTED}"
            if any(lost[name] and name in med for name, _ in sides):
                row += "  (" + "; ".join(f"{name} {len(lost[name])} of {repeat} {baseline.failed_text(lost[name])}"
                                         for name, _ in sides if lost[name]) + ")"
            print(row, flush=True)
            if size == max(sizes) and "new" in med and med["new"][0] > a.limit_mib:
                print(f"  this checkout's peak {med['new'][0]:.0f} MiB is over {a.limit_mib:.0f} MiB", file=sys.stderr)
                failed = True
            os.unlink(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
