"""Find the merge sets in DevRev itself and write them as the contacts CSV merge_contacts.py reads.

    python find_duplicates.py --output contacts.csv [--force] [--ticket-counts]
    python find_duplicates.py --sandbox --output found.csv     # on the local emulator

Walks every contact once (rev-users.list, pages as large as DevRev serves), groups them
by email exactly as merge_contacts.py does, and writes every group of two or more
contacts (merge sets and the groups the merge would skip) in the input format. Contacts
that look related without sharing an email go to `<output>.review.csv`, for a person.
What was found is also a report in --report-dir (`find_<run>.json`, `.csv`, `.html`).

Exit codes (cli.ExitCode): 0 the scan completed and the files are written; 1 DevRev
failed mid-scan (nothing written); 2 bad usage, an existing output without --force, an
unusable folder, or a token DevRev rejects; 130 stopped by Ctrl-C or SIGTERM (nothing
written; run it again).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Any

from dotenv import load_dotenv

from contacts.csv_reader import EarlierPrimary
from contacts.duplicate_finder import Findings, contacts_csv_bytes, find_duplicates, review_csv_bytes, summary_lines
from devrev_api import assumptions as facts
from devrev_api.errors import AuthError, DevRevError, RunInterrupted
from operator_view import reports
from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import iso_utc, new_run_id
from plumbing.files import atomic_write_bytes
from plumbing.version import TOOL_VERSION
from runs.actor import actor_block
from runs.journal import earlier_primaries
from runs.over_sets import is_temporary
from runs.support import (
    MERGE_SAVEPOINT,
    SANDBOX_MERGE_SAVEPOINT,
    RunTarget,
    add_rate_limit_option,
    merge_savepoint,
    open_client,
    progress,
    sandbox_held,
    target_of,
)

log = logging.getLogger("find_duplicates")  # its module name, also when run as __main__


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="find_duplicates.py", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, metavar="CSV", help="the contacts CSV to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output (and its .review.csv)")
    p.add_argument("--ticket-counts", action="store_true",
                   help="fill TICKET_COUNT live: one paged ticket count per contact of each merge set")
    add_rate_limit_option(p)
    p.add_argument("--report-dir", default="reports",
                   help="where the report of what was found goes (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    cli.add_log_format_option(p)
    p.add_argument("--sandbox", action="store_true",
                   help="scan the local DevRev emulator seeded with its demo data (no token, no network)")
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the merge's savepoint journal, read only, to recognise the contacts earlier merges made "
                        f"primary (their external_ref is now a user_ reference), so their groups are merge sets "
                        f"again, as merge_contacts.py groups them with the same savepoint (default: "
                        f"{MERGE_SAVEPOINT}; with --sandbox: {SANDBOX_MERGE_SAVEPOINT}; used if it exists)")
    cli.add_json_option(p)
    return p


def main(argv=None) -> int:
    """Run the finder; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    return cli.run_script(_main, argv, script="find_duplicates.py", kind="find_duplicates")


def review_path(output: str) -> str:
    return f"{output}.review.csv"


def _check_outputs(args) -> None:
    """Refuse, before any call, outputs that exist (without --force) or cannot be written."""
    if not args.output.strip() or args.output.endswith(os.sep):
        raise UsageError(f"--output {args.output!r} is not a file name: give one, e.g. --output contacts.csv")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise UsageError(f"the folder for --output does not exist: {folder}")
    for path in (args.output, review_path(args.output)):
        if os.path.isdir(path):
            raise UsageError(f"--output {path} is a folder, not a file")
        if os.path.lexists(path) and not args.force:
            raise UsageError(f"{path} already exists: pass --force to overwrite it")
    cli.check_writable_dir(folder, "--output")
    report_dir = args.report_dir
    if os.path.exists(report_dir) and not (os.path.isdir(report_dir) and os.access(report_dir, os.W_OK)):
        raise UsageError(f"--report-dir {args.report_dir}: not a folder this run can write in")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_outputs(args)
    if not args.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    run_id = new_run_id()
    secret = None if args.sandbox else os.environ.get("DEVREV_API_TOKEN")
    target = RunTarget(args.sandbox, args.rate_limit)
    with cli.run_logging(args.log_dir, "find", run_id, secret, log_format=args.log_format) as log_path:
        log.info("run %s: finding duplicate contacts in %s; log %s", run_id,
                 "the sandbox" if args.sandbox else "DevRev", log_path or "off")
        stop = cli.StopSignal()
        # a --sandbox scan holds the emulator's lock, as the merge and the restore do
        with sandbox_held(target), open_client(target, stop) as client, \
                cli.graceful_stop(stop, "Stopping after the call in flight; nothing is written."):
            header: dict[str, Any] = {"run_id": run_id, "kind": "find_duplicates", "tool_version": TOOL_VERSION,
                      "started_at": iso_utc(), "target": target_of(target, client)}
            findings = _scan(args, client, stop, _earlier(args))
            if not isinstance(findings, Findings):
                return findings
            try:   # who ran it (dev-users.self), once the scan proved the token
                header["actor"] = actor_block(client)
            except AuthError as exc:
                raise UsageError(str(exc)) from None
        _write(args, findings, header)
        return ExitCode.OK


def _earlier(args) -> list[EarlierPrimary]:
    """The contacts the merge's savepoint says earlier merges made primary ([] without one)."""
    savepoint = merge_savepoint(args.savepoint, args.sandbox)
    if not os.path.exists(savepoint):
        if args.savepoint:
            log.warning("no savepoint at %s: no earlier merge is known (primaries are recognised by their "
                        "REVU- reference, or by their own display id in external_refs)", savepoint)
        return []
    found = earlier_primaries(savepoint)
    log.info("savepoint %s: %d contact%s earlier merges made primary", os.path.abspath(savepoint), len(found),
             "" if len(found) == 1 else "s")
    return found


def _scan(args, client, stop: cli.StopSignal, earlier: list[EarlierPrimary]) -> Findings | ExitCode:
    """The walk with its progress bar; an exit code instead when it could not complete."""
    folder = os.path.dirname(os.path.abspath(args.output))
    # DevRev does not say how many contacts there are: the bar shows the count so far and the rate
    with progress(None, "contacts", unit=" contacts") as bar:
        def on_page(items: int, counts) -> None:
            if bar is not None:
                bar.update(items)
                bar.set_postfix(pages=counts.pages, refresh=False)
        try:
            return find_duplicates(client, folder, endpoint=facts.CONTACT_WALK_ENDPOINT,
                                   ticket_counts=args.ticket_counts, on_page=on_page, earlier=earlier)
        except RunInterrupted:
            log.error("interrupted by %s: nothing written; run the same command again", stop.reason)
            return ExitCode.INTERRUPTED
        except AuthError as exc:
            raise UsageError(str(exc)) from None
        except DevRevError as exc:
            log.error("DevRev failed during the scan, nothing written: %s", exc)
            json_summary.note_error(f"DevRev failed during the scan, nothing written: {exc}")
            # DevRev unreachable or throttling: a later run may get through without a person (75)
            return ExitCode.TEMPORARY if is_temporary(exc) else ExitCode.FAILED


def _write(args, findings: Findings, header: dict) -> None:
    """The report, then both files, atomic and owner-only: the review first, so the
    contacts CSV only exists when everything else was written."""
    for path in (args.output, review_path(args.output)):
        if os.path.lexists(path) and not args.force:  # appeared during the scan
            raise UsageError(f"{path} appeared during the scan: pass --force to overwrite it")
    report = find_report(args, findings, header)
    try:
        json_path, _ = reports.write_report(args.report_dir, f"find_{header['run_id']}", report, FIND_COLUMNS,
                                            report["sets"])
    except OSError as exc:
        raise UsageError(f"--report-dir {args.report_dir}: {cli.describe_os_error(exc)} (nothing written)") from None
    atomic_write_bytes(review_path(args.output), review_csv_bytes(findings.review))
    atomic_write_bytes(args.output, contacts_csv_bytes(findings))
    for line in summary_lines(findings, facts.CONTACT_WALK_ENDPOINT):
        log.debug("%s", line)
        print(line)
    print(f"\nWrote {args.output} ({sum(len(m.rows) for m in findings.merge_sets)} contacts in merge sets, "
          f"{sum(len(g.rows) for g in findings.skipped)} in skipped groups) and {review_path(args.output)}.")
    if findings.merge_sets:
        sandbox = " --sandbox" if args.sandbox else ""
        print(f"Next: {cli.command_for('merge_contacts.py')}{sandbox} --csv {shlex.quote(args.output)} --preview")
    else:
        print("No merge set found: nothing to merge.")
    print(f"Report: {reports.html_path(json_path)}")
    json_summary.record("find_duplicates", run_id=header["run_id"], totals=report["totals"],
                        reports={"html": reports.html_path(json_path), "json": json_path,
                                 "contacts_csv": os.path.abspath(args.output),
                                 "review_csv": os.path.abspath(review_path(args.output))})


FIND_COLUMNS = ["email", "status", "reason", "contacts", "primary", "duplicates", "detail"]


def find_report(args, findings: Findings, header: dict) -> dict:
    """The run's report: `header` (run_id, kind, tool_version, started_at, target), the
    files written, the options, `totals` (contact and group counts) and `sets`, one row per
    group found: FIND_COLUMNS, status "merge_set" or "skipped" (with its reason code)."""
    c = findings.counts
    rows = [{"email": ms.email, "status": "merge_set", "contacts": len(ms.rows), "primary": ms.primary.rev_user_id,
             "duplicates": [d.rev_user_id for d in ms.duplicates], "detail": ms.primary_note}
            for ms in findings.merge_sets]
    rows += [{"email": g.email, "status": "skipped", "reason": g.reason, "contacts": len(g.rows), "detail": g.detail}
             for g in findings.skipped]
    totals = {"scanned": c.scanned, "pages": c.pages, "without_email": c.without_email,
              "already_merged": c.already_merged, "not_usable_in_csv": sum(c.unusable.values()),
              "merge_sets": len(findings.merge_sets), "earlier_primaries": findings.earlier_primaries,
              "skipped_groups": len(findings.skipped),
              "for_review": len(findings.review)}
    return dict(header, finished_at=iso_utc(), output=os.path.abspath(args.output),
                review=os.path.abspath(review_path(args.output)), options=vars(args), totals=totals, sets=rows)


if __name__ == "__main__":
    sys.exit(main())
