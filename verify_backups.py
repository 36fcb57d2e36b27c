"""Check every backup folder before you rely on it: the integrity audit of backups/.

A merge is only undoable while its backup is whole. Disks fill, files get copied
half-way, someone "tidies" a folder, a crash leaves a `.partial` behind: none of that
shows until the day the backup is needed. This command re-checks every backup under
a folder against the manifest written with it (`verification.json`: path, size and
sha256 of every file, and the counts of tickets, conversations, entries, messages and
attachments) and says, per backup, OK or exactly which file is wrong and why.

    python verify_backups.py --backup-dir backups/ [--json] [--quick] [--jobs N] [--report-dir reports]

Each run also writes an integrity report, `<report-dir>/integrity_<UTC time>.json`,
with every backup's result, so an audit leaves a trace.

Exit codes (cli.ExitCode): 0 every backup verified; 1 at least one failed (or the
report could not be written); 2 bad usage (the folder is missing, not a folder, or holds
no backups; --report-dir cannot be written).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime

from backup_checks import verification
from plumbing import cli, json_summary, manifest_key
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import compact_utc, iso_utc, utc_now
from plumbing.files import atomic_write_json

REPORT_FORMAT = 1


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="verify_backups.py",
                description="Verify every backup folder (complete and .partial) under --backup-dir.")
    p.add_argument("--backup-dir", required=True,
                   help="the folder holding the backup folders (e.g. backups/), or one backup folder")
    p.add_argument("--quick", action="store_true",
                   help="compare file sizes only, not sha256 (catches truncation, not a same-size change)")
    p.add_argument("--jobs", type=cli.int_between(1, 256),
                   default=verification.default_jobs(), metavar="N",
                   help="check folders on N processes at once (default: the cores this process may use, "
                        f"{verification.default_jobs()} here); the output is the same, in the same order")
    p.add_argument("--report-dir", default="reports",
                   help="where the integrity report JSON goes (default: reports/)")
    cli.add_json_option(p)
    return p


def printable(text: str) -> str:
    """Escape control and format characters so a hostile name cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def check_all(folders: list[str], *, quick: bool = False, jobs: int = 1) -> list[verification.Verification]:
    """verify_backup() for each folder, on up to `jobs` processes, results in folder order;
    never raises on a bad backup."""
    return verification.verify_all(folders, quick=quick, jobs=jobs)


def build_report(backup_dir: str, results: list[verification.Verification], *, quick: bool,
                 checked_at: datetime) -> dict:
    ok = sum(1 for r in results if r.ok)
    return {"format": REPORT_FORMAT,
            "checked_at": iso_utc(checked_at, digits=0),
            "backup_dir": os.path.abspath(backup_dir),
            "mode": "quick (sizes only)" if quick else "full (sizes and sha256)",
            "totals": {"backups": len(results), "ok": ok, "failed": len(results) - ok},
            "backups": [r.to_json() for r in results]}


def report_path(report_dir: str, checked_at: datetime) -> str:
    """`integrity_<UTC timestamp>.json`, with -2, -3 ... if that second is taken."""
    stem = f"integrity_{compact_utc(checked_at)}"
    path = os.path.join(report_dir, f"{stem}.json")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(report_dir, f"{stem}-{n}.json")
    return path


def format_lines(results: list[verification.Verification]) -> list[str]:
    """`OK <folder>`, or one `FAILED <folder>: <path>: <reason>` per problem; then the summary."""
    lines = []
    for r in results:
        if r.ok:
            lines.append(f"OK {printable(r.folder)} ({manifest_key.describe(r.authenticity)})")
        for path, reason in r.problems:
            lines.append(f"FAILED {printable(r.folder)}: {printable(path)}: {printable(reason)}")
    ok = sum(1 for r in results if r.ok)
    authentic = sum(1 for r in results if r.ok and r.authentic)
    lines.append(f"{len(results)} backups checked: {ok} OK ({authentic} authentic, made by this installation), "
                 f"{len(results) - ok} FAILED")
    return lines


def _check_usage(args) -> list[str]:
    if not os.path.exists(args.backup_dir):
        raise UsageError(f"backup folder not found: {args.backup_dir}")
    if not os.path.isdir(args.backup_dir):
        raise UsageError(f"not a folder: {args.backup_dir}")
    if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
        raise UsageError(f"--report-dir is not a folder: {args.report_dir}")
    try:
        found = verification.backup_folders(args.backup_dir, args.report_dir)
    except OSError as exc:
        raise UsageError(f"cannot list {args.backup_dir}: {exc.strerror or exc}") from None
    if not found:
        raise UsageError(f"no backups in {args.backup_dir}")
    cli.check_writable_dir(args.report_dir, "--report-dir")
    return found


def main(argv=None) -> int:
    """Verify every backup under --backup-dir; 0 all OK, 1 any FAILED, 2 bad usage."""
    return cli.run_script(_main, argv, script="verify_backups.py", kind="verify_backups")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    folders = _check_usage(args)
    checked_at = utc_now()
    started = time.monotonic()
    results = check_all(folders, quick=args.quick, jobs=args.jobs)
    report = build_report(args.backup_dir, results, quick=args.quick, checked_at=checked_at)
    report["seconds"] = round(time.monotonic() - started, 3)
    path = _write_report(args.report_dir, report, checked_at)
    # --json: the suite's summary (plumbing.json_summary) on stdout, the whole result under "details"
    json_summary.record("verify_backups", totals=report["totals"], reports={"json": path},
                        **{k: v for k, v in report.items() if k != "totals"})
    if args.json:
        if path:
            print(f"integrity report: {printable(path)}")   # to stderr: --json sends the human text there
    else:
        for line in format_lines(results):
            print(line)
        if path:
            print(f"integrity report: {printable(path)}")
    return ExitCode.OK if all(r.ok for r in results) and path else ExitCode.FAILED


def _write_report(report_dir: str, report: dict, checked_at: datetime) -> str | None:
    """Write the integrity report; its path, or None (said on stderr) if it could not be written."""
    try:
        path = report_path(report_dir, checked_at)
        atomic_write_json(path, report)
        return path
    except OSError as exc:
        print(f"error: could not write the integrity report in {printable(report_dir)}: "
              f"{cli.describe_os_error(exc)}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
