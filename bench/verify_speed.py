"""Speed bench: verify_backups.py over many backup folders, one job against all cores, old and new code.

Merges --sets ordinary sets once against the emulator (real backups: every timeline, every
attachment), then copies those folders under new names up to --folders (a copy verifies as its
original, as the scale probe did). Then, interleaved, --repeat times: verify_backups.py of
--baseline (single-threaded), of this checkout with --jobs 1, and with --jobs N (N: the cores
this process may use), each cold-ish (every file of the folders dropped from the page cache with
posix_fadvise DONTNEED first: other processes' caches are left alone) and warm (right after).
Prints medians and the speed-up, and checks that every run printed the same lines (the report
path aside) and exited alike. Exits 1 if they differ or a run fails.

    python bench/verify_speed.py [--folders 2000] [--repeat 3] [--baseline DIR|COMMIT] [--quick]
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

import baseline  # bench/baseline.py: the code compared with

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKEN = "bench-token-of-a-plausible-length-0001"


def make_backups(work: str, sets: int, folders: int) -> str:
    """backups/ holding `folders` verified backup folders (a real merge's, then copies)."""
    sys.path.insert(0, ROOT)
    from devrev_sandbox.dataset import build_dataset
    from devrev_sandbox.server import DevRevSandbox
    dataset = build_dataset(sets, seed=3, tickets=(1, 6), conversations=(0, 3), attachment_rate=0.2, skipped=False)
    csv_path = os.path.join(work, "contacts.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    backups = os.path.join(work, "backups")
    with DevRevSandbox(dataset.seed, token=TOKEN, rate_limit=None, merge_retire_after_gets=1) as sandbox:
        env = dict(os.environ, DEVREV_API_TOKEN=TOKEN, DEVREV_BASE_URL=sandbox.base_url, DEVREV_RATE_LIMIT="100000")
        merge = subprocess.run([sys.executable, os.path.join(ROOT, "merge_contacts.py"), "--csv", csv_path,
                                "--skip-preview-check", "--workers", "4", "--backup-dir", backups,
                                "--report-dir", os.path.join(work, "merge-reports"), "--log-dir",
                                os.path.join(work, "logs"), "--savepoint", os.path.join(work, "j.sqlite3")],
                               cwd=work, env=env, capture_output=True, text=True)
    if merge.returncode != 0:
        raise SystemExit(f"the merge that makes the backups failed ({merge.returncode}): {merge.stderr[-500:]}")
    originals = sorted(os.listdir(backups))
    for n in range(folders - len(originals)):
        source = originals[n % len(originals)]
        shutil.copytree(os.path.join(backups, source), os.path.join(backups, f"{source}-c{n:05d}"))
    os.sync()   # written back: the page cache drops only clean pages (drop_cache)
    return backups


def drop_cache(folder: str) -> None:
    """Drop the folder's files from the page cache (this process's doing: only these files)."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# The same checks on N threads instead of processes (not an option of the tool: shown to say why
# it uses processes). Prints the lines verify_backups.py prints.
THREADS = """
import sys
from concurrent.futures import ThreadPoolExecutor
import verify_backups
from backup_checks import verification
folders = verification.backup_folders(sys.argv[1])
with ThreadPoolExecutor(int(sys.argv[2])) as pool:
    results = list(pool.map(verification.check_folder, folders))
print("\\n".join(verify_backups.format_lines(results)))
"""


def verify(root: str, backups: str, reports: str, jobs: int | str | None) -> tuple[int, float, list[str]]:
    cmd = [sys.executable, os.path.join(root, "verify_backups.py"), "--backup-dir", backups, "--report-dir", reports]
    if isinstance(jobs, str):   # "threads:N"
        cmd = [sys.executable, "-c", THREADS, backups, jobs.split(":")[1]]
    elif jobs is not None:
        cmd += ["--jobs", str(jobs)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root))
    wall = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("integrity report: ")]
    return proc.returncode, wall, lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folders", type=int, default=2000, help="backup folders to verify (default 2000)")
    p.add_argument("--sets", type=int, default=40, help="sets merged to make the first folders (default 40)")
    p.add_argument("--repeat", type=int, default=3)
    baseline.add_option(p)
    p.add_argument("--quick", action="store_true", help="300 folders, one run each: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.folders, args.sets, args.repeat = 300, 12, 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    print(f"command: python bench/verify_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    work = tempfile.mkdtemp(prefix="verify-speed-")
    try:
        backups = make_backups(work, args.sets, args.folders)
        files = sum(len(names) for _, _, names in os.walk(backups))
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(backups) for n in names)
        print(f"{args.folders} backup folders, {files} files, {size / (1 << 20):.0f} MiB; {cores} cores; "
              f"old = {args.baseline} (one thread), new = this checkout")
        runs: dict[tuple[str, int | str | None], str] = {
            ("old", None): "old", ("new", 1): "new --jobs 1", ("new", cores): f"new --jobs {cores}",
            ("new", f"threads:{cores}"): f"new, {cores} threads"}
        times: dict[tuple[str, str], list[float]] = {}
        outputs, codes = set(), set()
        lost: dict[str, list[int]] = {}
        reports = os.path.join(work, "reports")
        for _ in range(args.repeat):
            for (side, jobs), label in runs.items():
                root = baseline.checkout(args.baseline) if side == "old" else ROOT
                for temperature in ("cold", "warm"):
                    if temperature == "cold":
                        drop_cache(backups)
                    code, wall, lines = verify(root, backups, reports, jobs)
                    if code == 0:   # a failed run's time is no figure
                        times.setdefault((label, temperature), []).append(wall)
                    else:
                        lost.setdefault(label, []).append(code)
                    outputs.add(tuple(lines))
                    codes.add(code)
        print(f"{'':>16} {'cold-ish s':>10} {'warm s':>8}   (medians of the successful runs of "
              f"{baseline.plural(args.repeat, 'run')}; threads: not the tool's way, for comparison)")
        med = {k: statistics.median(v) for k, v in times.items()}

        def cell(label: str, temperature: str) -> str:
            return f"{med[(label, temperature)]:.2f}" if (label, temperature) in med else "-"
        for label in runs.values():
            note = f"  {baseline.failed_text(lost[label])}" if label in lost else ""
            if (label, "cold") not in med and (label, "warm") not in med:
                print(f"{label:>16} {baseline.failed_text(lost.get(label, []))}")
                continue
            print(f"{label:>16} {cell(label, 'cold'):>10} {cell(label, 'warm'):>8}{note}")
        one, many, threads = runs[("new", 1)], runs[("new", cores)], runs[("new", f"threads:{cores}")]

        def ratio(slow: str, fast: str, temperature: str) -> str:
            if (slow, temperature) in med and (fast, temperature) in med:
                return f"{med[(slow, temperature)] / med[(fast, temperature)]:.2f}x"
            return f"({baseline.NOT_COMPUTED})"
        for temperature in ("cold", "warm"):
            print(f"speed-up {temperature}: --jobs {cores} against --jobs 1 {ratio(one, many, temperature)}, "
                  f"against the old code {ratio('old', many, temperature)}; {cores} threads against --jobs 1 "
                  f"{ratio(one, threads, temperature)}")
        same = len(outputs) == 1 and codes == {0}
        if same:
            print(f"every run printed the same {len(next(iter(outputs)))} lines and exited [0]: yes")
        else:
            print(f"the same lines and exit 0 from every run: NO ({len(outputs)} different outputs, exit codes "
                  f"{sorted(codes)})")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
