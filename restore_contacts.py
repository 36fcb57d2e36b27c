"""Undo merges: put merged contact sets back from their backups.

    python restore_contacts.py --backup-dir backups --preview    # read-only: what would go back
    python restore_contacts.py --backup-dir backups              # re-create, move back, verify
    python restore_contacts.py --sandbox --preview               # after merge_contacts.py --sandbox

DevRev has no unmerge. For each merge set in the backups, a duplicate that DevRev retired
is created again (rev-users.create) with its backed-up email, display name, workspace and
user_... external_ref (the primary first gives back that reference and takes its original
one again); a duplicate that was kept is used as is. Then every ticket and conversation
the merge moved gets the duplicate back in place of the primary, after a fresh read.

What cannot be undone: a re-created contact is a new DevRev object (new id and display
id, its own creation date); comments the duplicate wrote stay attributed as DevRev's
merge left them; tickets the integration filed under the primary after the merge stay
with the primary (they are not in the backup).

Exit codes (cli.ExitCode): 0 every set restored; 1 a set failed or a backup folder did not
verify (that set is not touched); 2 bad usage, an unusable folder or savepoint, no
preview, or a token DevRev rejects; 130 stopped by Ctrl-C or SIGTERM (re-run to resume).
"""
from __future__ import annotations

import argparse
import os
import sys

from dotenv import load_dotenv

from plumbing import cli
from plumbing.clock import new_run_id
from restoring.run import RestoreSettings, run
from restoring.status import print_restore_status
from runs import approval
from runs.preview_gate import DEFAULT_MAX_AGE_HOURS
from runs.support import (
    MERGE_SAVEPOINT,
    SANDBOX_DIR,
    SANDBOX_MERGE_SAVEPOINT,
    add_rate_limit_option,
    add_sandbox_mode_option,
    sandbox_modes,
)

DEFAULT_SAVEPOINT = os.path.join("savepoints", "restore_journal.sqlite3")
SANDBOX_SAVEPOINT = os.path.join(SANDBOX_DIR, "restore_savepoints.sqlite3")


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="restore_contacts.py", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backup-dir", default="backups", help="the folder holding the backup folders (default: backups/)")
    p.add_argument("--only", metavar="EMAIL", help="restore only the merge set with this email")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--preview", action="store_true", help="change nothing; report what would be restored")
    mode.add_argument("--status", action="store_true",
                      help="print the restore's progress from its savepoint and exit (no API call, no token)")
    p.add_argument("--sandbox", action="store_true",
                   help="run against the local DevRev emulator and its state in .sandbox/ (as merge_contacts.py "
                        "--sandbox left it)")
    p.add_argument("--report-dir", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    cli.add_log_format_option(p)
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the restore's savepoint journal (default: {DEFAULT_SAVEPOINT}; with --sandbox: "
                        f"{SANDBOX_SAVEPOINT})")
    p.add_argument("--merge-savepoint", metavar="FILE",
                   help=f"the merge's savepoint journal: a restore gives back only what it records the merge did "
                        f"(default: {MERGE_SAVEPOINT}; with --sandbox: {SANDBOX_MERGE_SAVEPOINT})")
    add_rate_limit_option(p)
    p.add_argument("--workers", type=cli.int_between(1, 64), default=None,
                   help="merge sets restored at once (default: sized from the rate and DevRev's answer time, 4 to 32)")
    add_sandbox_mode_option(p)
    p.add_argument("--no-restore-note", action="store_true",
                   help="do not leave an internal note on each restored set's primary saying what was given back")
    p.add_argument("--preview-max-age", type=cli.float_between(0.01, 24 * 365), default=DEFAULT_MAX_AGE_HOURS,
                   metavar="HOURS", help="a preview older than this no longer unlocks a run (default: 24)")
    p.add_argument("--skip-preview-check", action="store_true",
                   help="run without a preview of these backups in --report-dir (not recommended)")
    approval.add_plan_options(p, "restore_contacts.py")
    cli.add_json_option(p)
    return p


def main(argv=None) -> int:
    """Run the restore; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    given = sys.argv[1:] if argv is None else list(argv)
    kind = "restore_preview" if "--preview" in given else "status" if "--status" in given else "restore"
    return cli.run_script(_main, argv, script="restore_contacts.py", kind=kind)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    approval.check_plan_options(preview=args.preview, plan=args.plan, plan_out=args.plan_out,
                                skip_preview_check=args.skip_preview_check)
    merge_savepoint = args.merge_savepoint or (SANDBOX_MERGE_SAVEPOINT if args.sandbox else MERGE_SAVEPOINT)
    settings = RestoreSettings(**{k: v for k, v in dict(vars(args), sandbox_mode=tuple(args.sandbox_mode),
                                                        merge_savepoint=merge_savepoint).items() if k != "status"},
                               sandbox_modes=sandbox_modes(args.sandbox_mode, args.sandbox))
    if not settings.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    savepoint = settings.savepoint or (SANDBOX_SAVEPOINT if settings.sandbox else DEFAULT_SAVEPOINT)
    if args.status:
        return print_restore_status(savepoint)
    run_id = new_run_id()
    secret = None if settings.sandbox else os.environ.get("DEVREV_API_TOKEN")
    with cli.run_logging(settings.log_dir, "restore", run_id, secret, log_format=settings.log_format) as log_path:
        return run(settings, run_id, savepoint, log_path)


if __name__ == "__main__":
    sys.exit(main())
