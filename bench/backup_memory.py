"""Memory bench: does a backup stay flat in memory however big the attachment is?

A customer's ticket can carry a video or a database dump of hundreds of megabytes; a
backup that read attachments into memory would need that much RAM per download, and die
on the biggest one. This script starts the local emulator in this process with one
ticket whose comment holds a single attachment of --mb MiB (generated content, streamed
in slices, so the emulator needs no memory for it either), runs backup.write_backup
in-process, and prints:

  * the baseline before the backup and the peak after it of the process's RSS
    (resource.getrusage(RUSAGE_SELF).ru_maxrss), and their difference;
  * the peak of Python allocations during the backup (tracemalloc);
  * the elapsed time and throughput; then it verifies the backup (full sha256).

Memory is flat when the peak RSS growth is far below the file size; the script exits 1
otherwise (or if the backup does not verify). The temporary folder is always removed.

    python bench/backup_memory.py [--mb 512] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import backup
from backup_checks import verification
from devrev_client import DevRevClient
from devrev_sandbox.server import DevRevSandbox

MIB = 1 << 20
TOKEN = "bench-token-of-a-plausible-length-0001"


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """VmRSS from /proc (Linux), for context; None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def bench_seed(size: int) -> dict:
    """One contact, its duplicate, one ticket with one comment carrying one `size`-byte attachment."""
    return {
        "workspaces": [{"key": "acme", "display_name": "Acme Inc"}],
        "dev_users": [{"key": "agent1", "email": "agent1@support.example"}],
        "rev_users": [
            {"key": "jane", "email": "jane@acme.example", "workspace": "acme", "full_name": "Jane Roe"},
            {"key": "jane-dup", "email": "jane@acme.example", "workspace": "acme",
             "external_ref": "user_Ab3dE6gH9jK2mN5pQ8sT1v"},
        ],
        "tickets": [{"key": "t0", "title": "Crash dump attached", "reported_by": ["jane-dup"],
                     "owned_by": ["agent1"], "workspace": "acme",
                     "comments": [{"by": "jane-dup", "body": "here is the dump",
                                   "artifacts": [{"number": 7001, "name": "core-dump.bin",
                                                  "type": "application/octet-stream", "size": size}]}]}],
    }


def main(argv=None) -> int:
    """Run one in-process backup of a --mb MiB attachment and report memory and speed."""
    parser = argparse.ArgumentParser(description="Peak memory of backing up one big attachment.")
    parser.add_argument("--mb", type=int, default=512, help="attachment size in MiB (default 512)")
    parser.add_argument("--dir", default=None, help="where the temporary backup folder goes (default: system temp)")
    args = parser.parse_args(argv)
    if args.mb <= 0:
        parser.error("--mb must be positive")
    size = args.mb * MIB

    print(f"command: {shlex.join([sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])])}")
    print(f"python {sys.version.split()[0]} on {sys.platform}; attachment {args.mb} MiB ({size} bytes)")

    workdir = tempfile.mkdtemp(prefix="backup-memory-", dir=args.dir)
    sandbox = DevRevSandbox(bench_seed(size), token=TOKEN).start()
    client = DevRevClient(TOKEN, sandbox.base_url, calls_per_minute=1_000_000)
    try:
        primary = client.get_rev_user(sandbox.key_id("jane"))
        duplicate = client.get_rev_user(sandbox.key_id("jane-dup"))
        snapshot = backup.collect(client, duplicate["id"])  # the listing, outside the measured part
        baseline = peak_rss_mib()
        print(f"baseline before the backup: peak RSS {baseline:.1f} MiB (current {current_rss_mib() or 0:.1f} MiB)")

        tracemalloc.start()
        started = time.perf_counter()
        result = backup.write_backup(client, os.path.join(workdir, "backups"), email=duplicate["email"],
                                     csv_rows=[], primary=primary, duplicate=duplicate, run_id="bench",
                                     snapshot=snapshot)
        elapsed = time.perf_counter() - started
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak = peak_rss_mib()
        growth = peak - baseline

        print(f"backup: {result.total_bytes / MIB:.1f} MiB written in {elapsed:.2f} s "
              f"= {result.total_bytes / MIB / elapsed:.1f} MiB/s (tracemalloc on; emulator in this process)")
        print(f"peak RSS after the backup: {peak:.1f} MiB -> growth {growth:.1f} MiB "
              f"= {100 * growth / args.mb:.2f}% of the {args.mb} MiB attachment")
        print(f"tracemalloc peak of Python allocations during the backup: {traced_peak / MIB:.2f} MiB")

        started = time.perf_counter()
        check = verification.verify_backup(result.folder)
        verify_seconds = time.perf_counter() - started
        print(f"verify_backup: {'OK' if check.ok else 'FAILED ' + repr(check.problems)} in {verify_seconds:.2f} s "
              f"= {result.total_bytes / MIB / verify_seconds:.1f} MiB/s (sha256 of every file); "
              f"peak RSS now {peak_rss_mib():.1f} MiB")

        flat = growth < min(64.0, args.mb / 4)
        print(f"memory {'FLAT' if flat else 'NOT FLAT'}: growth {growth:.1f} MiB for a {args.mb} MiB file "
              f"(limit {min(64.0, args.mb / 4):.0f} MiB)")
        return 0 if flat and check.ok else 1
    finally:
        client.close()
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"removed {workdir}")


if __name__ == "__main__":
    sys.exit(main())
