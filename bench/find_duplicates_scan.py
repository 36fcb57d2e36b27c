"""Scan bench: pages and peak memory of find_duplicates.py over a large tenant.

For each tenant size, this builds a contacts-only tenant (devrev_sandbox.dataset.
build_contact_tenant: a few hundred merge sets hidden among single contacts), serves it
from the emulator in this process, runs `find_duplicates.py --output ...` against it as
a child process (so the emulator's memory is not counted) and prints:

  * the rev-users.list pages used against the minimum, ceil(N / page cap);
  * the child's peak RSS (VmHWM, which the child reads from /proc/self/status as it
    exits: os.wait4's ru_maxrss would include the high-water mark of this process, the
    one holding the emulator, which the child is forked from), and for reference the
    peak RSS of a child that only imports the same modules (the interpreter's floor);
  * the wall time; and whether the merge sets and skipped groups found are exactly the
    ones the tenant hides (exit 1 if not, or if more pages than the minimum were used).

    python bench/find_duplicates_scan.py [--contacts 10000,100000] [--sets 300] [--page-cap 100]
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from contacts.csv_reader import group_contacts, read_contacts
from devrev_sandbox.dataset import build_contact_tenant
from devrev_sandbox.server import DevRevSandbox

TOKEN = "bench-token-of-a-plausible-length-0001"
IMPORTS_ONLY = "import find_duplicates, contacts.duplicate_finder, devrev_client, tqdm"
# Runs a script as __main__, then prints its peak RSS (Linux: VmHWM, in kB) as it exits.
PEAK_WRAPPER = """
import atexit, runpy, sys
def peak():
    with open('/proc/self/status') as fh:
        print('PEAK_RSS_KB', [l.split()[1] for l in fh if l.startswith('VmHWM:')][0], file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[1:]
sys.path.insert(0, '.')
if sys.argv[0] == '-c':
    exec(sys.argv[1])
else:
    runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_child(argv: list[str], env: dict, cwd: str) -> tuple[int, float, float, str]:
    """(exit code, peak RSS MiB, wall seconds, output tail) of `python <argv>` in a child, in `cwd` (a
    temporary folder: nothing is left in the checkout), with this checkout on PYTHONPATH."""
    started = time.monotonic()
    env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *argv], env=env, cwd=cwd,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    peaks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    peak = int(peaks[-1]) / 1024 if peaks else float("nan")
    return proc.returncode, peak, wall, (proc.stdout + proc.stderr)[-2000:]


def check_found(csv_path: str, tenant) -> list[str]:
    """What differs between the found CSV and the groups the tenant hides."""
    merge_sets, skipped = group_contacts(read_contacts(csv_path).rows)
    found = {(m.email, m.primary.rev_user_id, frozenset(d.rev_user_id for d in m.duplicates)) for m in merge_sets}
    hidden = {(s["email"], s["primary"], frozenset(s["duplicates"])) for s in tenant.merge_sets}
    problems = []
    if found != hidden:
        problems.append(f"merge sets: {len(hidden - found)} missed, {len(found - hidden)} unexpected")
    if {g.email: g.reason for g in skipped} != tenant.skipped:
        problems.append("skipped groups differ")
    return problems


def bench_one(contacts: int, sets: int, page_cap: int, folder: str) -> tuple[list, list[str]]:
    started = time.monotonic()
    tenant = build_contact_tenant(contacts, sets)
    sandbox = DevRevSandbox(tenant.seed, token=TOKEN, page_cap=page_cap).start()
    build_s = time.monotonic() - started
    try:
        env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url)
        output = os.path.join(folder, f"found_{contacts}.csv")
        argv = [os.path.join(ROOT, "find_duplicates.py"), "--output", output,
                "--rate-limit", "100000", "--log-dir", os.path.join(folder, "logs"),
                "--report-dir", os.path.join(folder, "reports")]
        code, peak, wall, tail = run_child(argv, env, folder)
        pages = sum(1 for e in sandbox.api_calls() if e["endpoint"] == "rev-users.list")
    finally:
        sandbox.stop()
    problems = [f"find_duplicates.py exited {code}: {tail}"] if code else check_found(output, tenant)
    minimum = math.ceil(contacts / page_cap)
    if pages > minimum:
        problems.append(f"{pages} pages used, the minimum is {minimum}")
    return [contacts, len(tenant.merge_sets), pages, minimum, f"{peak:.1f}", f"{wall:.1f}", f"{build_s:.1f}"], problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", default="10000,100000", help="tenant sizes, comma-separated")
    parser.add_argument("--sets", type=int, default=300, help="merge sets hidden in each tenant")
    parser.add_argument("--page-cap", type=int, default=100, help="the emulator's largest page")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.contacts.split(",")]
    print(f"$ python3 bench/find_duplicates_scan.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="find-duplicates-scan-") as folder:
        code, floor, _wall, tail = run_child(["-c", IMPORTS_ONLY], dict(os.environ), folder)
        if code:
            failed = True
            print(f"interpreter + modules only (no scan): failed (exit {code}): {tail.strip()[-300:]}")
        else:
            print(f"interpreter + modules only (no scan): peak RSS {floor:.1f} MiB")
        header = ["contacts", "merge sets", "pages", "min pages", "peak RSS MiB", "scan s", "tenant build s"]
        print("  ".join(f"{h:>14}" for h in header))
        for contacts in sizes:
            row, problems = bench_one(contacts, args.sets, args.page_cap, folder)
            print("  ".join(f"{v:>14}" for v in row), flush=True)
            for problem in problems:
                failed = True
                print(f"  PROBLEM: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
