"""Merge duplicate DevRev contacts listed in the admins' contacts CSV.

    python merge_contacts.py --csv contacts.csv --preview     # read-only: what would move
    python merge_contacts.py --csv contacts.csv               # back up, move, verify, merge
    python merge_contacts.py --sandbox --preview              # rehearse on the local emulator

Exit codes (cli.ExitCode): 0 every set merged or was legitimately skipped; 1 some set
failed (or a backup did not verify); 2 bad usage, bad input, an unusable folder or
savepoint, or a token DevRev rejects; 130 stopped by Ctrl-C or SIGTERM (re-run the same
command to resume).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from dotenv import load_dotenv

from devrev_client import DevRevClient
from devrev_sandbox.dataset import DEMO_CSV
from merging import field_fill
from merging.run import MergeSettings, run, run_check
from merging.status import print_status
from operator_view import reports
from plumbing import cli
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import new_run_id
from runs import approval
from runs.over_sets import parse_until
from runs.preview_gate import DEFAULT_MAX_AGE_HOURS
from runs.support import (
    MERGE_SAVEPOINT,
    SANDBOX_MERGE_SAVEPOINT,
    add_rate_limit_option,
    add_sandbox_mode_option,
    merge_savepoint,
    sandbox_held,
    sandbox_modes,
)

log = logging.getLogger("merge_contacts")  # its module name, also when run as __main__


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="merge_contacts.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", help="the contacts CSV (default with --sandbox: the emulator's demo CSV)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--preview", action="store_true", help="change nothing; report what would move")
    mode.add_argument("--status", action="store_true", help="print progress from the savepoint file and exit")
    mode.add_argument("--check", action="store_true",
                      help="read-only preflight: the token, the announced rate limit and, on the CSV's first set, "
                           "the list filters the merge relies on; exit 0 or 1")
    p.add_argument("--full", action="store_true",
                   help="with --preview: count every message and attachment (reads every timeline entry) "
                        "instead of estimating them from the first pages")
    p.add_argument("--list-skipped", action="store_true",
                   help="with --preview: also write every CSV row that is in no merge set, with its group's "
                        "reason, to preview_<run>_skipped.csv (by default only counted)")
    p.add_argument("--sandbox", action="store_true",
                   help="run against the local DevRev emulator seeded with its demo data (no token, no network)")
    p.add_argument("--sandbox-reset", action="store_true",
                   help="with --sandbox: start the emulator and its savepoints afresh")
    add_sandbox_mode_option(p)
    p.add_argument("--backup-dir", default="backups", help="where backup folders go (default: backups/)")
    p.add_argument("--report-dir", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    cli.add_log_format_option(p)
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the savepoint journal (default: {MERGE_SAVEPOINT}; with --sandbox: "
                        f"{SANDBOX_MERGE_SAVEPOINT}); its merged sets also tell which user_ contacts "
                        f"earlier merges made primary, so their email groups are merge sets again")
    add_rate_limit_option(p)
    p.add_argument("--workers", type=cli.int_between(1, 64), default=None,
                   help="API calls made at once: merge sets, or the independent calls of one (default: sized from "
                        "the rate and DevRev's answer time, 4 to 32; the run's first lines say how many and why)")
    p.add_argument("--max-merges", type=cli.int_between(1), metavar="N",
                   help="process at most N merge sets in this run")
    p.add_argument("--max-calls", type=cli.int_between(1), metavar="N",
                   help="stop taking new merge sets when the next one would not fit in N API calls (the preflight "
                        "included); the sets in flight finish, the run exits 75: re-run to go on (docs/scheduling.md)")
    p.add_argument("--until", type=parse_until, metavar="HH:MM|ISO",
                   help="stop taking new merge sets that would not finish by then (HH:MM: local time, the next time "
                        "the clock shows it; or an ISO instant); the run exits 75: re-run to go on")
    p.add_argument("--only", metavar="EMAIL", help="process only the group with this email")
    p.add_argument("--fill-blanks", type=_fill_fields, action="append", default=[], metavar="FIELDS",
                   help="fill the primary's empty fields from its newest duplicate that has a value (lists: the "
                        "union): 'all' or a comma-separated list of " + ", ".join(field_fill.FILLABLE)
                        + "; nothing the primary has is overwritten, consent/opt-out custom fields never; part of "
                          "the preview's scope, given back by a restore")
    p.add_argument("--retry-skipped", action="store_true",
                   help="try again the merge sets an earlier run's live checks skipped (by default each run, and "
                        "each --max-merges batch, goes on with sets not tried yet)")
    p.add_argument("--keep-duplicate", action="store_true",
                   help="move tickets and conversations but do not merge the duplicate away")
    p.add_argument("--allow-cross-org", action="store_true",
                   help="merge even when the contacts are in different workspaces")
    p.add_argument("--preview-max-age", type=cli.float_between(0.01, 24 * 365), default=DEFAULT_MAX_AGE_HOURS,
                   metavar="HOURS", help="a preview older than this no longer unlocks a run (default: 24)")
    p.add_argument("--skip-preview-check", action="store_true",
                   help="run without a preview of this CSV in --report-dir (not recommended)")
    approval.add_plan_options(p, "merge_contacts.py")
    p.add_argument("--no-canary", action="store_true",
                   help="do not re-read and compare the first merged set's objects before the others start")
    p.add_argument("--no-merge-note", action="store_true",
                   help="do not leave an internal note on each merged primary's timeline in DevRev saying what was "
                        "merged into it, when, by which run, and where the backup is")
    p.add_argument("--merge-timeout", type=cli.positive_float, default=120.0, metavar="SECONDS",
                   help="how long to wait for DevRev to retire a merged duplicate before reading its merge job "
                        "(default: 120)")
    p.add_argument("--ask-refused-merges-again", action="store_true",
                   help="ask DevRev once more to merge the duplicates whose merge it refused in an earlier run "
                        "(once the reason it gave is gone)")
    cli.add_json_option(p)
    return p


def _fill_fields(text: str) -> tuple[str, ...]:
    """argparse type of --fill-blanks (merging.field_fill.parse_fields)."""
    try:
        return field_fill.parse_fields(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fill-blanks ")) from None


def _checked(args: argparse.Namespace) -> MergeSettings:
    """The parsed options checked together (UsageError for a combination that cannot work)."""
    if args.sandbox_reset and not args.sandbox:
        raise UsageError("--sandbox-reset only goes with --sandbox")
    if args.sandbox_reset and args.status:
        raise UsageError("--sandbox-reset does not go with --status (which only reads): run --sandbox --sandbox-reset "
                         "--preview to start the rehearsal afresh")
    if args.full and not args.preview:
        raise UsageError("--full only goes with --preview")
    approval.check_plan_options(preview=args.preview, plan=args.plan, plan_out=args.plan_out,
                                skip_preview_check=args.skip_preview_check)
    if args.list_skipped and not args.preview:
        raise UsageError("--list-skipped only goes with --preview")
    if not args.csv and not args.sandbox and not args.status and not args.check:
        raise UsageError("give the contacts CSV with --csv FILE (or rehearse with --sandbox)")
    fills = {name for given in args.fill_blanks for name in given}   # repeated: the fields of all of them
    return MergeSettings(**dict(vars(args), sandbox_mode=tuple(args.sandbox_mode),
                                fill_blanks=tuple(f for f in field_fill.FILLABLE if f in fills)),
                         sandbox_modes=sandbox_modes(args.sandbox_mode, args.sandbox))


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the tool; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    given = sys.argv[1:] if argv is None else list(argv)
    kind = next((k for option, k in (("--preview", "preview"), ("--status", "status"), ("--check", "check"))
                 if option in given), "merge")
    return cli.run_script(_main, argv, script="merge_contacts.py", kind=kind)


def _main(argv) -> int:
    settings = _checked(build_parser().parse_args(argv))
    if not settings.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    savepoint = merge_savepoint(settings.savepoint, settings.sandbox)
    if settings.status:
        return print_status(savepoint, settings.csv or (_rehearsal_csv(settings.report_dir) if settings.sandbox
                                                        else None),
                            sandbox_hint=not settings.sandbox and not settings.savepoint,
                            csv_is_default=settings.sandbox and not settings.csv, only=settings.only,
                            sets_in_json=settings.json)
    run_id = new_run_id()
    # a token that cannot be DevRev's or a base URL that is not one stops here, before any call
    secret = None if settings.sandbox else DevRevClient.check_env()[0]
    with cli.run_logging(settings.log_dir, "merge", run_id, secret, log_format=settings.log_format) as log_path:
        if settings.check:
            with sandbox_held(settings.target):
                return run_check(settings, savepoint)
        code = cli.run_main(lambda _argv: _logged_run(settings, run_id, savepoint, log_path))
        log.info("exit code %d: %s", code, cli.EXIT_MEANING.get(code, ""), extra=cli.FILE_ONLY)
        return code


def _rehearsal_csv(report_dir: str) -> str:
    """The CSV the newest --sandbox run in `report_dir` used (its merge report or preview
    names it), else the demo CSV: `--sandbox --status` counts against what was rehearsed."""
    # newest by when the report was written (run ids of one second do not sort by time)
    used = [(os.stat(path).st_mtime_ns, (data.get("csv") or {}).get("path"))
            for prefix in ("merge_report", "preview") for path, data in reports.load_reports(report_dir, prefix)
            if data.get("target") == "sandbox"]
    found = [(run, path) for run, path in used if isinstance(path, str) and os.path.isfile(path)]
    return str(max(found)[1]) if found else DEMO_CSV


def _logged_run(settings: MergeSettings, run_id: str, savepoint: str, log_path: str | None) -> int:
    """_run, with a user's error kept in the log file too (run_main prints it) and a second
    Ctrl-C during a preview told truthfully (there is nothing to resume)."""
    try:
        return run(settings, run_id, savepoint, log_path)
    except cli.UserError as exc:
        log.error("%s", exc, extra=cli.FILE_ONLY)
        raise
    except KeyboardInterrupt:
        if not settings.preview:
            log.error("stopped at once by a second Ctrl-C; the savepoint is consistent", extra=cli.FILE_ONLY)
            raise
        log.error("preview stopped at once; nothing was changed in DevRev")
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
