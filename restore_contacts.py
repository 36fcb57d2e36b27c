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
import json
import logging
import os
import sys
import time

from dotenv import load_dotenv

from contacts.csv_reader import email_key
from devrev_api.errors import AuthError, DevRevError, RunInterrupted
from operator_view import reports, screens
from plumbing import cli
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import iso_utc, new_run_id
from plumbing.version import TOOL_VERSION
from restoring.backup_sets import BackupSet, FailedFolder, load_backup_sets
from restoring.engine import FINISHED, SetRestorer, finished_record, journal_progress, preview_set
from runs.journal import Journal
from runs.support import SANDBOX_DIR, open_client, reraise_fatal, run_sets, sandbox_held, target_of

DEFAULT_SAVEPOINT = os.path.join("savepoints", "restore_journal.sqlite3")
SANDBOX_SAVEPOINT = os.path.join(SANDBOX_DIR, "restore_savepoints.sqlite3")
PREVIEWABLE = ("would_restore", "already_restored")

log = logging.getLogger("restore_contacts")  # its module name, also when run as __main__


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="restore_contacts.py", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backup-dir", default="backups", help="the folder holding the backup folders (default: backups/)")
    p.add_argument("--only", metavar="EMAIL", help="restore only the merge set with this email")
    p.add_argument("--preview", action="store_true", help="change nothing; report what would be restored")
    p.add_argument("--sandbox", action="store_true",
                   help="run against the local DevRev emulator and its state in .sandbox/ (as merge_contacts.py "
                        "--sandbox left it)")
    p.add_argument("--report-dir", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the restore's savepoint journal (default: {DEFAULT_SAVEPOINT}; with --sandbox: "
                        f"{SANDBOX_SAVEPOINT})")
    p.add_argument("--rate-limit", type=cli.rate_limit, metavar="CALLS_PER_MINUTE",
                   help="client-side cap on API calls per minute (default: DEVREV_RATE_LIMIT or 200)")
    p.add_argument("--workers", type=cli.int_between(1, 64), default=4, help="merge sets restored at once (default: 4)")
    p.add_argument("--skip-preview-check", action="store_true",
                   help="run without a preview of these backups in --report-dir (not recommended)")
    return p


def main(argv=None) -> int:
    """Run the restore; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    return cli.run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if not args.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    savepoint = args.savepoint or (SANDBOX_SAVEPOINT if args.sandbox else DEFAULT_SAVEPOINT)
    run_id = new_run_id()
    secret = None if args.sandbox else os.environ.get("DEVREV_API_TOKEN")
    with cli.run_logging(args.log_dir, "restore", run_id, secret) as log_path:
        return _run(args, run_id, savepoint, log_path)


def _backup_sets(args) -> tuple[list[BackupSet], list[FailedFolder]]:
    """The backups' merge sets (narrowed to --only) and the folders that do not verify."""
    if not os.path.isdir(args.backup_dir):
        raise UsageError(f"--backup-dir {args.backup_dir}: not a folder (nothing was merged from here?)")
    sets, failed = load_backup_sets(args.backup_dir)
    if not sets and not failed:
        raise UsageError(f"no backups in {args.backup_dir}")
    if args.only:
        wanted = email_key(args.only)
        sets = [s for s in sets if s.email_key == wanted]
        failed = [f for f in failed if any(f in s.failed for s in sets)
                  or (f.email is not None and email_key(f.email) == wanted)]
        if not sets and not failed:
            raise UsageError(f"no backup of a merge set with email {args.only!r} in {args.backup_dir}")
    return sets, failed


def _run(args, run_id: str, savepoint: str, log_path: str | None) -> int:
    sets, failed = _backup_sets(args)
    cli.check_writable_dir(args.report_dir, "--report-dir")
    if not args.preview:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(savepoint)), "--savepoint")
    journal = Journal(savepoint, run_id, exclusive=True) if not args.preview else \
        (Journal(savepoint, run_id) if os.path.exists(savepoint) else None)
    try:
        for bad in failed:
            log.error("%s (not used)", bad.line())
        finished = {s.key: r for s in sets for r in [journal.set_record(s.key) if journal else None]
                    if r and r["status"] == FINISHED}
        todo = [s for s in sets if s.key not in finished and not s.failed]
        preview_path = None if args.preview or args.skip_preview_check else _required_preview(args, todo)
        log.info("run %s (%s %s): %d merge sets in %s (%d already restored), %d backup folders not used; log %s",
                 run_id, "preview of a restore on" if args.preview else "restore on",
                 "the sandbox" if args.sandbox else "DevRev", len(sets), args.backup_dir, len(finished), len(failed),
                 log_path or "off")
        stop = cli.StopSignal()
        # a --sandbox run holds the emulator's lock, as merge_contacts.py's do
        with sandbox_held(args), open_client(args, stop) as client, cli.graceful_stop(stop):
            header = {"run_id": run_id, "tool_version": TOOL_VERSION, "started_at": iso_utc(),
                      "target": target_of(args, client), "backup_dir": os.path.abspath(args.backup_dir),
                      "options": vars(args), "failed_folders": [f.__dict__ for f in failed]}
            if args.preview:
                return _preview(args, client, sets, finished, header, stop)
            return _restore(args, SetRestorer(client, journal), sets, finished, header, stop, preview_path)
    finally:
        if journal is not None:
            journal.close()


def _required_preview(args, todo: list[BackupSet]) -> str:
    """The newest complete restore preview, against the same DevRev, of these exact backups
    for every set this run will restore; UsageError when there is none."""
    target = target_of(args)
    best, why = None, None
    for path, data in reports.load_reports(args.report_dir, "restore_preview"):     # newest first
        try:
            seen = {s["set_key"]: s for s in data["sets"]}
        except (KeyError, TypeError):
            continue
        if data.get("target") != target or data.get("complete") is not True:
            continue
        uncovered = [(s, seen.get(s.key)) for s in todo if not (s.key in seen and seen[s.key].get("fingerprint")
                     == s.fingerprint and seen[s.key].get("status") in PREVIEWABLE)]
        if not uncovered:
            best = path
            break
        why = why or _not_shown(*uncovered[0])
    if best is None:
        raise UsageError(f"no complete restore preview of these backups against {target} in {args.report_dir}/ "
                         f"shows this run" + (f" ({why})" if why else "") + ": run with --preview first and read it, "
                         "restore the sets it shows with --only EMAIL, or pass --skip-preview-check")
    return best[1]


def _not_shown(bset: BackupSet, shown: dict | None) -> str:
    """Why a preview does not show a set's restore, in a few words."""
    if shown is None:
        return f"it does not cover {bset.email}"
    if shown.get("fingerprint") != bset.fingerprint:
        return f"the backups of {bset.email} changed since"
    return f"it shows {bset.email} as {shown.get('status')}: {shown.get('error') or shown.get('reason')}"


def _preview(args, client, sets: list[BackupSet], finished: dict, header: dict, stop: cli.StopSignal) -> int:
    records = {s.key: finished_record(s, finished[s.key], preview=True) for s in sets if s.key in finished}
    code = ExitCode.FAILED if header["failed_folders"] else ExitCode.OK
    todo = [s for s in sets if s.key not in finished]
    for bset, result in run_sets(todo, lambda s: preview_set(client, s), args.workers, stop, "preview"):
        reraise_fatal(result, stop)
        if isinstance(result, (RunInterrupted, AuthError)):
            code = code.worse(ExitCode.USAGE if isinstance(result, AuthError) else ExitCode.INTERRUPTED)
            stop.set()
            continue
        if isinstance(result, Exception):
            if not isinstance(result, DevRevError):
                log.debug("unexpected error", exc_info=result)
            result = {"email": bset.email, "set_key": bset.key, "fingerprint": bset.fingerprint, "status": "failed",
                      "error": str(result), "duplicates": []}
        if result["status"] == "failed":
            with cli.log_subject(bset.email):
                log.error("%s", result.get("error"))
            code = code.worse(ExitCode.FAILED)
        records[bset.key] = result
    if code == ExitCode.USAGE or stop.is_set():
        log.error("preview %s; no preview report written",
                  "stopped" if code == ExitCode.USAGE else f"interrupted by {stop.reason}")
        return code if code == ExitCode.USAGE else ExitCode.INTERRUPTED
    preview = dict(header, kind="restore_preview", created_at=iso_utc(), complete=True,
                   sets=[records[s.key] for s in sets if s.key in records])
    paths = reports.write_report(args.report_dir, f"restore_preview_{header['run_id']}", preview,
                                 PREVIEW_COLUMNS, preview_rows(preview))
    print(screens.format_table(["email", "status", "duplicate", "action", "tickets", "convs", "note"],
                               [[r["email"], r["status"], r.get("duplicate"), r.get("action"),
                                 len(r.get("tickets") or []), len(r.get("conversations") or []), r["detail"]]
                                for r in preview_rows(preview)], right=(4, 5), caps={0: 30, 2: 16}))
    print(f"\nPreview written to {reports.html_path(paths[0])}, {paths[0]} and {paths[1]}. Nothing was changed "
          f"in DevRev.")
    return code


def _restore(args, restorer: SetRestorer, sets: list[BackupSet], finished: dict, header: dict,
             stop: cli.StopSignal, preview_path: str | None) -> int:
    started = time.monotonic()
    outcomes = {s.key: finished_record(s, finished[s.key], preview=False) for s in sets if s.key in finished}
    code = ExitCode.FAILED if header["failed_folders"] else ExitCode.OK
    todo = [s for s in sets if s.key not in finished]
    try:
        for bset, result in run_sets(todo, restorer.restore, args.workers, stop, "restore"):
            reraise_fatal(result, stop)
            if isinstance(result, (RunInterrupted, AuthError)):
                if isinstance(result, AuthError):
                    log.error("%s; stopping the run (no further set is started)", result)
                code = code.worse(ExitCode.USAGE if isinstance(result, AuthError) else ExitCode.INTERRUPTED)
                stop.set()
                # what DevRev holds already (from the journal), so the report does not say "nothing"
                result = {"status": "pending", "note": str(result) or "stopped; re-run to resume",
                          "duplicates": journal_progress(restorer.journal, bset)}
            elif isinstance(result, Exception):
                log.debug("unexpected error", exc_info=result)
                result = {"status": "failed", "error": f"unexpected error: {type(result).__name__}: {result}"}
            else:
                with cli.log_subject(bset.email):
                    log.info("%s%s", result["status"], f" ({result.get('error')})" if result["status"] == "failed"
                             else "")
            if result["status"] == "failed":
                code = code.worse(ExitCode.FAILED)
            outcomes[bset.key] = result if "set_key" in result else dict(
                {"duplicates": []}, **result, email=bset.email, set_key=bset.key)
    finally:
        problems = restorer.journal.check()
    if stop.is_set() and code != ExitCode.USAGE:
        code = ExitCode.INTERRUPTED
    report = dict(header, kind="restore_report", finished_at=iso_utc(), preview=preview_path,
                  sets=[outcomes.get(s.key) or {"email": s.email, "set_key": s.key, "status": "pending",
                                                 "note": "not processed in this run", "duplicates": []}
                        for s in sets],
                  interrupted=code == ExitCode.INTERRUPTED,
                  interrupted_by=stop.reason if code == ExitCode.INTERRUPTED else None,
                  journal_problems=problems, exit_code=int(code),
                  api={k: v for k, v in restorer.client.stats.items() if ":" not in k},
                  duration_s=round(time.monotonic() - started, 3))
    rows = report_rows(report)
    report["totals"] = report_totals(report, rows)
    paths = reports.write_report(args.report_dir, f"restore_report_{header['run_id']}", report, REPORT_COLUMNS, rows)
    t = report["totals"]
    print(f"{t['restored']} restored, {t['failed']} failed, {t['pending']} not processed, {t['folders_failed']} "
          f"backup folders not used; {t['contacts_recreated']} contacts created again, {t['items_moved_back']} "
          f"tickets and conversations given back. Report: {reports.html_path(paths[0])}, {paths[0]} and {paths[1]}")
    if code == ExitCode.INTERRUPTED:
        print(f"Interrupted by {stop.reason}: re-run the same command to resume where it stopped.", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- report rows
PREVIEW_COLUMNS = ["email", "status", "primary", "duplicate", "action", "primary_ref_back", "tickets", "conversations",
                   "changed_since", "deleted_since", "left_alone", "backups", "detail"]
REPORT_COLUMNS = ["email", "status", "primary", "duplicate", "new_contact", "recreated", "primary_ref_back",
                  "moved_back", "already_back", "deleted_since", "left_alone", "backups", "error"]


def _items(dup: dict, kind: str | None = None, action: str | None = None) -> list[str]:
    return [i["display_id"] for i in dup.get("items", []) if (kind is None or i["kind"] == kind)
            and (action is None or i.get("action") == action)]


def preview_rows(preview: dict) -> list[dict]:
    """One row per duplicate of each set (one per set when it has none to show), then the
    backup folders that are not used."""
    rows = []
    for s in preview["sets"]:
        primary = (s.get("primary") or {}).get("display_id")
        for dup in s.get("duplicates") or [{}]:
            rows.append({"email": s["email"], "status": s["status"], "primary": primary,
                         "duplicate": dup.get("display_id"),
                         "action": None if not dup else ("re-create" if dup.get("recreate") else "use as is"),
                         "primary_ref_back": dup.get("primary_ref_back"),
                         "tickets": _items(dup, "ticket", "move_back"),
                         "conversations": _items(dup, "conversation", "move_back"),
                         "changed_since": [f"{i['display_id']} {json.dumps(i['changed_since'], sort_keys=True)}"
                                           for i in dup.get("items", []) if i.get("changed_since")],
                         "deleted_since": _items(dup, action="deleted_since"),
                         "left_alone": _items(dup, action="left_alone"), "backups": dup.get("backups"),
                         "detail": s.get("error") or s.get("note") or dup.get("blocked_by")})
    rows += [{"email": f.get("email"), "status": "backup_failed", "backups": [f["folder"]],
              "detail": f"{f['path']}: {f['reason']}"} for f in preview["failed_folders"]]
    return rows


def report_rows(report: dict) -> list[dict]:
    """One row per duplicate of each set, then the backup folders that are not used."""
    rows = []
    for s in report["sets"]:
        primary = (s.get("primary") or {}).get("display_id")
        for dup in s.get("duplicates") or [{}]:
            rows.append({"email": s["email"], "status": s["status"], "primary": primary,
                         "duplicate": dup.get("display_id"), "new_contact": dup.get("new_display_id"),
                         "recreated": dup.get("recreated"), "primary_ref_back": dup.get("primary_ref_back"),
                         **{k: dup.get(k, []) for k in ("moved_back", "already_back", "deleted_since", "left_alone")},
                         "backups": dup.get("backups"), "error": s.get("error") or s.get("note"),
                         "earlier": bool(s.get("earlier"))})
    rows += [{"email": f.get("email"), "status": "backup_failed", "backups": [f["folder"]],
              "error": f"{f['path']}: {f['reason']}"} for f in report["failed_folders"]]
    return rows


def report_totals(report: dict, rows: list[dict]) -> dict:
    count = lambda status: sum(1 for s in report["sets"] if s["status"] == status)  # noqa: E731
    return {"sets": len(report["sets"]), "restored": count(FINISHED), "failed": count("failed"),
            "pending": count("pending"), "folders_failed": len(report["failed_folders"]),
            "contacts_recreated": sum(1 for r in rows if r.get("recreated") and not r.get("earlier")),
            "items_moved_back": sum(len(r.get("moved_back") or []) for r in rows if not r.get("earlier"))}


if __name__ == "__main__":
    sys.exit(main())
