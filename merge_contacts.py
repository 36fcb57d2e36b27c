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
import contextlib
import logging
import os
import sqlite3
import sys
import time

from dotenv import load_dotenv

from contacts.csv_reader import MergeSet, email_key
from contacts.index import ContactsIndex, index_contacts
from devrev_api.errors import AuthError, DevRevError, RunInterrupted, RunWideFault
from devrev_client import DevRevClient
from devrev_sandbox.dataset import DEMO_CSV
from merging import canary, preflight
from merging.engine import MergeOptions, RunAborted, SetMerger, preview_set
from merging.plan import RunPlan, finished_outcome, finished_preview, journal_line, plan_run, set_key
from merging.preview_scope import Scope, candidate_previews, preview_showing
from merging.progress import resume_point
from merging.status import print_status
from operator_view import reports, screens, summary
from operator_view.summary import plural
from plumbing import cli
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import iso_utc, new_run_id
from plumbing.fanout import Fanout
from plumbing.version import TOOL_VERSION
from runs.journal import Journal, JournalError
from runs.support import SANDBOX_DIR, open_client, reraise_fatal, run_sets, sandbox_held, target_of

DEFAULT_SAVEPOINT = os.path.join("savepoints", "merge_journal.sqlite3")

log = logging.getLogger("merge_contacts")  # its module name, also when run as __main__
PREVIEW_STOP = "Stopping the preview after the call in flight; nothing was changed in DevRev."
ESTIMATE_NOTE = ("Messages, attachments, calls and backup sizes are estimates from the first timeline page of a few "
                 "tickets and conversations per duplicate; `--preview --full` counts them all.")


class RunStopped(cli.UserError):
    """The run stopped on a fault that every set would meet (DevRev unreachable, a folder
    that can no longer be written): one line, exit 1; re-run the same command to resume."""

    exit_code = ExitCode.FAILED


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
    p.add_argument("--sandbox", action="store_true",
                   help="run against the local DevRev emulator seeded with its demo data (no token, no network)")
    p.add_argument("--sandbox-reset", action="store_true",
                   help="with --sandbox: start the emulator and its savepoints afresh")
    p.add_argument("--sandbox-mode", action="append", default=[], metavar="NAME=VALUE",
                   help="with --sandbox: play an unknown DevRev behaviour another way (repeatable; "
                        "the names are in devrev_sandbox/modes.py)")
    p.add_argument("--backup-dir", default="backups", help="where backup folders go (default: backups/)")
    p.add_argument("--report-dir", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the savepoint journal (default: {DEFAULT_SAVEPOINT}; with --sandbox: "
                        f"{SANDBOX_DIR}/savepoints.sqlite3)")
    p.add_argument("--rate-limit", type=cli.rate_limit, metavar="CALLS_PER_MINUTE",
                   help="client-side cap on API calls per minute (default: DEVREV_RATE_LIMIT, else the pace "
                        "DevRev announces in X-Ratelimit-Limit, else 200)")
    p.add_argument("--workers", type=cli.int_between(1, 64), default=4,
                   help="API calls made at once: merge sets, or the independent calls of one (default: 4)")
    p.add_argument("--max-merges", type=cli.int_between(1), metavar="N",
                   help="process at most N merge sets in this run")
    p.add_argument("--only", metavar="EMAIL", help="process only the group with this email")
    p.add_argument("--keep-duplicate", action="store_true",
                   help="move tickets and conversations but do not merge the duplicate away")
    p.add_argument("--allow-cross-org", action="store_true",
                   help="merge even when the contacts are in different workspaces")
    p.add_argument("--skip-preview-check", action="store_true",
                   help="run without a preview of this CSV in --report-dir (not recommended)")
    p.add_argument("--no-canary", action="store_true",
                   help="do not re-read and compare the first merged set's objects before the others start")
    p.add_argument("--merge-timeout", type=cli.positive_float, default=120.0, metavar="SECONDS",
                   help="how long to wait for DevRev to retire a merged duplicate (default: 120)")
    return p


def _check_args(args) -> None:
    if args.sandbox_reset and not args.sandbox:
        raise UsageError("--sandbox-reset only goes with --sandbox")
    if args.sandbox_mode and not args.sandbox:
        raise UsageError("--sandbox-mode only goes with --sandbox")
    if args.full and not args.preview:
        raise UsageError("--full only goes with --preview")
    if not args.csv and not args.sandbox and not args.status and not args.check:
        raise UsageError("give the contacts CSV with --csv FILE (or rehearse with --sandbox)")
    args.sandbox_modes = _sandbox_modes(args.sandbox_mode)


def _sandbox_modes(pairs: list[str]):
    """The emulator's behaviour modes for --sandbox: merges retire at the first read
    (a quick rehearsal), then the --sandbox-mode pairs (UsageError for a bad one)."""
    from devrev_sandbox.modes import BehaviourModes
    try:
        return BehaviourModes(merge_retire_after_gets=1).with_pairs(pairs)
    except ValueError as exc:
        raise UsageError(str(exc).replace("--mode", "--sandbox-mode")) from None


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the tool; returns a `cli.ExitCode` (every error a user can cause is one line)."""
    return cli.run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    if not args.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    savepoint = args.savepoint or (os.path.join(SANDBOX_DIR, "savepoints.sqlite3") if args.sandbox
                                   else DEFAULT_SAVEPOINT)
    if args.status:
        return print_status(savepoint, args.csv or (DEMO_CSV if args.sandbox else None),
                            sandbox_hint=not args.sandbox and not args.savepoint)
    run_id = new_run_id()
    # a token that cannot be DevRev's or a base URL that is not one stops here, before any call
    secret = None if args.sandbox else DevRevClient.check_env()[0]
    with cli.run_logging(args.log_dir, "merge", run_id, secret) as log_path:
        if args.check:
            with sandbox_held(args):
                return _run_check(args)
        code = cli.run_main(lambda _argv: _logged_run(args, run_id, savepoint, log_path))
        log.info("exit code %d: %s", code, EXIT_MEANING.get(code, ""), extra=cli.FILE_ONLY)
        return code


EXIT_MEANING = {ExitCode.OK: "every merge set done or skipped by live checks", ExitCode.FAILED: "a merge set failed",
                ExitCode.USAGE: "bad usage or input, nothing was changed by this run",
                ExitCode.INTERRUPTED: "stopped by Ctrl-C or SIGTERM"}


def _logged_run(args, run_id: str, savepoint: str, log_path: str | None) -> int:
    """_run, with a user's error kept in the log file too (run_main prints it) and a second
    Ctrl-C during a preview told truthfully (there is nothing to resume)."""
    try:
        return _run(args, run_id, savepoint, log_path)
    except cli.UserError as exc:
        log.error("%s", exc, extra=cli.FILE_ONLY)
        raise
    except KeyboardInterrupt:
        if not args.preview:
            log.error("stopped at once by a second Ctrl-C; the savepoint is consistent", extra=cli.FILE_ONLY)
            raise
        log.error("preview stopped at once; nothing was changed in DevRev")
        return ExitCode.INTERRUPTED


def _run_check(args) -> int:
    """--check: the preflight alone, one line per check on stdout; 0 if all pass, else 1."""
    merge_set = None
    if args.csv or args.sandbox:
        index = _chosen_groups(args, index_contacts(args.csv or DEMO_CSV), args.csv or DEMO_CSV)
        merge_set = index.merge_sets[0] if index.merge_sets else None
    stop = cli.StopSignal()
    with open_client(args, stop) as client, cli.graceful_stop(stop):
        checks = preflight.run_checks(client, merge_set)
    for check in checks:
        print(check.line())
    if merge_set is None:
        print("note   filters: not checked (" + ("the CSV holds no merge set)" if args.csv or args.sandbox
                                                 else "give --csv to check them on its first merge set)"))
    return ExitCode.OK if all(c.ok for c in checks) else ExitCode.FAILED


def _check_folders(args, savepoint: str) -> None:
    """Every folder the run writes must be usable before the first API call (UsageError if not)."""
    cli.check_writable_dir(args.report_dir, "--report-dir")
    if not args.preview:
        cli.check_writable_dir(args.backup_dir, "--backup-dir")
        cli.check_writable_dir(os.path.dirname(os.path.abspath(savepoint)), "--savepoint")


def _open_journal(args, savepoint: str, run_id: str) -> Journal | None:
    """The savepoint journal: the run's own (locked), or for a preview the existing one, read only."""
    if not args.preview:
        return Journal(savepoint, run_id, exclusive=True)
    return Journal(savepoint, run_id) if os.path.exists(savepoint) else None


def _run(args, run_id: str, savepoint: str, log_path: str | None) -> int:
    """Check everything the run needs (input, preview, folders, savepoint), then run it."""
    csv_path = args.csv or DEMO_CSV
    index = _chosen_groups(args, index_contacts(csv_path), csv_path)
    scope = _scope(args, index.file.sha256)
    candidates = None if args.preview or args.skip_preview_check else \
        candidate_previews(args.report_dir, scope)
    with sandbox_held(args):
        return _run_checked(args, run_id, savepoint, log_path, csv_path, index, scope, candidates)


def _run_checked(args, run_id: str, savepoint: str, log_path: str | None, csv_path: str, index: ContactsIndex,
                 scope: Scope, candidates: list[tuple[str, dict]] | None) -> int:
    """Run the checked input: open the savepoint, plan, then preview or merge."""
    merge_sets = index.merge_sets
    _check_folders(args, savepoint)
    journal = _open_journal(args, savepoint, run_id)
    try:
        plan = plan_run(journal, merge_sets, max_merges=args.max_merges, keep_duplicate=args.keep_duplicate)
        preview_path, previews = preview_showing(candidates, scope, [(m.key, m.email) for m in plan.todo])
        log.info("run %s (%s %s): %s from the CSV%s; CSV %s; log %s", run_id,
                 "preview of" if args.preview else "merge of", "the sandbox" if args.sandbox else "DevRev",
                 plural(len(merge_sets), "merge set"), summary.groups_clause(index.skipped_total), csv_path,
                 log_path or "off")
        if journal is not None:
            log.info("savepoint %s", os.path.abspath(savepoint))
        stop = cli.StopSignal()
        with open_client(args, stop) as client, cli.graceful_stop(stop, *([PREVIEW_STOP] if args.preview else [])), \
                contextlib.ExitStack() as stack:
            # a run with nothing left to do calls nothing, and needs no preflight; the filters are
            # checked on the first set it will merge (not one its preview showed skipped)
            first = next((m for m in plan.todo if (previews.get(m.key) or {}).get("status") != "skipped"), None)
            try:
                failed = preflight.at_start(client, first) if plan.todo else None
            except RunWideFault as exc:
                what = "no preview report written" if args.preview else "nothing was started"
                raise RunStopped(f"{exc} ({what})") from None
            if failed is not None:
                return failed
            options = MergeOptions(backup_dir=os.path.abspath(args.backup_dir), run_id=run_id,
                                   keep_duplicate=args.keep_duplicate, allow_cross_org=args.allow_cross_org,
                                   merge_timeout=args.merge_timeout, preview_full=args.full,
                                   fanout=stack.enter_context(contextlib.closing(Fanout(args.workers))))
            common = _report_header(args, run_id, client, csv_path, index)
            if args.preview:
                return _preview(args, client, plan, options, common, stop, index)
            merger = SetMerger(client, journal, options, previews)
            return _merge(args, merger, merge_sets, plan, common, stop, preview_path)
    finally:
        if journal is not None:
            journal.close()


def _chosen_groups(args, index: ContactsIndex, csv_path: str) -> ContactsIndex:
    """The CSV's merge sets and skipped groups, narrowed to --only's email."""
    if args.only:
        index = index.narrowed(args.only)
        if not index.merge_sets and not index.skipped_total:
            raise UsageError(f"no contact with email {args.only!r} in {csv_path}")
    return index


def _scope(args, csv_sha256: str) -> Scope:
    """Every option of this run that changes what it does (a preview records its own)."""
    return Scope(csv_sha256=csv_sha256, target=target_of(args), keep_duplicate=args.keep_duplicate,
                 allow_cross_org=args.allow_cross_org, only=email_key(args.only) if args.only else None,
                 max_merges=args.max_merges)


def _report_header(args, run_id: str, client, csv_path: str, index: ContactsIndex) -> dict:
    """What the preview and the merge report share: the run, the target, the CSV, the skipped
    groups (counted by reason; the first few of each listed with their rows)."""
    return {"run_id": run_id, "tool_version": TOOL_VERSION, "started_at": iso_utc(),
            "target": target_of(args, client), "scope": _scope(args, index.file.sha256).to_json(),
            "csv": {"path": os.path.abspath(csv_path), "sha256": index.file.sha256, "rows": index.file.row_count},
            "options": {k: v for k, v in vars(args).items() if k not in ("status", "sandbox_modes")},
            "skipped_counts": index.skipped_counts,
            "skipped": [{"email": g.email, "reason": g.reason, "detail": g.detail,
                         "rows": [r.as_dict() for r in g.rows]} for g in index.skipped_examples]}


def _write_skipped(args, name: str, common: dict, index: ContactsIndex) -> None:
    """Every row of the skipped groups to `<name>_skipped.csv`, streamed from the CSV."""
    if index.skipped_total:
        common["skipped_file"] = reports.write_skipped_rows(args.report_dir, name, index.skipped_rows())


def _preview(args, client, plan: RunPlan, options: MergeOptions, common: dict, stop: cli.StopSignal,
             index: ContactsIndex) -> int:
    """Preview the plan's sets (read only) and write the preview report; returns the exit code."""
    records = {key: finished_preview(ms, plan.finished[key]) for ms in plan.order
               for key in [ms.key] if key in plan.finished}
    exit_code = ExitCode.OK
    fault: RunWideFault | None = None
    for ms, result in run_sets(plan.todo, lambda ms: preview_set(client, ms, options), args.workers, stop,
                                "preview"):
        reraise_fatal(result, stop)
        if isinstance(result, RunWideFault):
            fault = fault or result  # said once, below; no set is started after it
            stop.set()
            continue
        if isinstance(result, RunInterrupted):
            exit_code = exit_code.worse(ExitCode.INTERRUPTED)
            continue
        if isinstance(result, AuthError):
            if exit_code != ExitCode.USAGE:
                log.error("%s", result)
            stop.set()
            exit_code = ExitCode.USAGE
            continue
        if isinstance(result, Exception):
            if not isinstance(result, DevRevError):
                log.debug("unexpected error", exc_info=result)
            with cli.log_subject(ms.email):
                log.error("preview failed: %s", result)
            result = {"email": ms.email, "set_key": set_key(ms), "status": "failed", "error": str(result)}
            exit_code = exit_code.worse(ExitCode.FAILED)
        records[ms.key] = result
    if fault is not None and exit_code != ExitCode.USAGE:
        log.debug("preview stopped: %s", fault)
        raise RunStopped(f"{fault} (no preview report written)")
    if stop.is_set() and exit_code != ExitCode.USAGE:
        exit_code = ExitCode.INTERRUPTED
    if exit_code == ExitCode.USAGE:
        log.error("preview stopped; no preview report written")
        return exit_code
    interrupted = exit_code == ExitCode.INTERRUPTED
    _write_skipped(args, f"preview_{common['run_id']}", common, index)
    preview = dict(common, kind="preview", created_at=iso_utc(), complete=exit_code == ExitCode.OK,
                   interrupted_by=stop.reason if interrupted else None, exit_code=int(exit_code),
                   sets=[records[m.key] for m in plan.order if m.key in records], **_api_usage(client))
    json_path, csv_path = _write(reports.write_preview, args.report_dir, f"preview_{common['run_id']}", preview)
    if interrupted:
        missing = len(plan.order) - len(preview["sets"])
        _say(f"Preview interrupted by {stop.reason} before {plural(missing, 'merge set')}: it is incomplete and "
             f"cannot unlock a real run. Nothing was changed in DevRev; run the preview again.", stream=sys.stderr)
        _say(_written("Incomplete preview written:", json_path, csv_path))
        return exit_code
    print(screens.format_preview(preview, more_in=preview.get("skipped_file") or csv_path))
    if preview["totals"].get("estimated_contents"):  # on screen under the summary (the JSON says `estimated`)
        print(screens.wrap_text(ESTIMATE_NOTE))
    _say(summary.describe_preview(preview["totals"]), printed=True)
    _say(_written("Preview written (nothing was changed in DevRev):", json_path, csv_path))
    return exit_code


def _written(title: str, json_path: str, csv_path: str) -> str:
    """The report paths, one a line, the HTML page first (the one to open)."""
    return "\n".join([title] + [f"  {path}" for path in (reports.html_path(json_path), json_path, csv_path)])


def _say(text: str, *, stream=None, printed: bool = False) -> None:
    """Print `text` wrapped to the screen's 100 columns (stdout unless `stream`) and end the
    log file with it, unwrapped (`printed`: it is already on screen: only log it)."""
    if not printed:
        print(screens.wrap_text(text), file=stream or sys.stdout, flush=True)
    for line in text.splitlines():
        log.info("%s", line, extra=cli.FILE_ONLY)


def _api_usage(client) -> dict:
    """The report's API figures: call counts, calls per minute, the client-side rate limit."""
    return {"api": {k: v for k, v in client.stats.items() if ":" not in k},
            "calls_per_minute": client.calls_per_minute_series(), "rate_limit": client.calls_per_minute}


class _MergeTally:
    """Each set's report line as the workers hand results back, and the run's exit code."""

    def __init__(self, stop: cli.StopSignal, numbers=lambda ms: {}):
        self.stop = stop
        self.numbers = numbers   # MergeSet -> what the journal says DevRev holds for it (merge_engine.journal_line)
        self.outcomes: dict[str, dict] = {}
        self.code = ExitCode.OK
        self.stopped_by: str | None = None  # "auth", "abort" or "fault" when the tool itself stopped the run
        self.fault: Exception | None = None  # a run-wide fault (DevRev unreachable, the savepoint unwritable)

    def add(self, ms: MergeSet, result) -> None:
        """Record one set's result: its outcome dict, or the exception its merge raised. A set
        the run did not finish still reports what DevRev holds (from the journal)."""
        self._add(ms, result)
        line = self.outcomes.get(ms.key)
        if line is not None and not line.get("duplicates") and line.get("status") in ("interrupted", "pending",
                                                                                         "failed"):
            line.update(self.numbers(ms))

    def _add(self, ms: MergeSet, result) -> None:
        reraise_fatal(result, self.stop)
        if isinstance(result, RunInterrupted):
            if self.stopped_by is None:
                self.code = self.code.worse(ExitCode.INTERRUPTED)
                self.outcomes[ms.key] = _unfinished(ms, "interrupted", f"stopped by {self.stop.reason}; "
                                                                       f"re-run to resume")
            else:
                self.outcomes[ms.key] = _unfinished(ms, "pending", "stopped with the run; re-run to resume")
            return
        if isinstance(result, (RunWideFault, JournalError)):
            # in flight when the fault hit: resumable from its journal, the fault said once at the end
            self.outcomes[ms.key] = _unfinished(ms, "pending", f"stopped with the run ({result}); re-run to resume")
            self.fault = self.fault or result
            self.stopped_by = self.stopped_by or "fault"
            self.code = self.code.worse(ExitCode.FAILED)
            self.stop.set()
            return
        if isinstance(result, (AuthError, RunAborted)):
            self._stop_run(ms, result)
            return
        if isinstance(result, Exception):
            log.debug("unexpected error", exc_info=result)
            result = {"email": ms.email, "set_key": set_key(ms), "status": "failed",
                      "error": f"unexpected error: {type(result).__name__}: {result}", "duplicates": []}
        self.outcomes[ms.key] = result
        if result["status"] == "failed":
            self.code = self.code.worse(ExitCode.FAILED)
        log.info("%s: %s%s", ms.email, result["status"],
                 f" ({result.get('reason') or result.get('error')})" if result["status"] in ("skipped", "failed")
                 else "")

    def _stop_run(self, ms: MergeSet, error: Exception) -> None:
        """A rejected token (exit 2) or an unverifiable backup (exit 1): no further set starts."""
        if isinstance(error, AuthError):
            self.outcomes[ms.key] = _unfinished(ms, "pending", str(error))
            if self.stopped_by != "auth":
                log.error("%s; stopping the run (no further set is started)", error)
            self.stopped_by = "auth"
            self.code = ExitCode.USAGE
        else:
            self.outcomes[ms.key] = _unfinished(ms, "failed", str(error))
            log.error("%s; stopping the run", error)
            self.stopped_by = self.stopped_by or "abort"
            self.code = self.code.worse(ExitCode.FAILED)
        self.stop.set()

    def stop_for_canary(self) -> None:
        """The canary saw changes the tool did not make: exit 1, no further set starts."""
        self.stopped_by = self.stopped_by or "canary"
        self.code = self.code.worse(ExitCode.FAILED)
        self.stop.set()

    def exit_code(self) -> ExitCode:
        if self.stop.is_set() and self.stopped_by is None:
            return self.code.worse(ExitCode.INTERRUPTED)
        return self.code


def _merge(args, merger: SetMerger, merge_sets: list[MergeSet], plan: RunPlan, common: dict,
           stop: cli.StopSignal, preview_path: str | None) -> int:
    """Merge the plan's sets on the workers and write the merge report; returns the exit code."""
    started = time.monotonic()
    tally = _MergeTally(stop, lambda ms: journal_line(merger.journal, ms))
    tally.outcomes.update({ms.key: finished_outcome(ms, plan.finished[ms.key], merger.journal.steps(set_key(ms)))
                           for ms in plan.order if ms.key in plan.finished})
    if plan.finished:
        log.info("%s already finished in earlier runs (savepoint)", plural(len(plan.finished), "merge set"))
    _say_resumes(merger.journal, plan)
    canary_result = None
    try:
        rest, canary_result = _first_set_alone(args, merger, plan.todo, tally, stop)
        for ms, result in run_sets(rest, merger.merge, args.workers, stop, "merge"):
            tally.add(ms, result)
    finally:
        problems = _journal_check(merger.journal)
    exit_code = tally.exit_code()
    if merger.merge_denied:  # sets left moved_only that were to be merged: a later run must finish them
        exit_code = exit_code.worse(ExitCode.FAILED)
    interrupted = exit_code == ExitCode.INTERRUPTED
    sets = [tally.outcomes.get(ms.key) or _unfinished(ms, "pending", "not processed in this run", reached=False)
            for ms in merge_sets]
    report = dict(common, kind="merge_report", finished_at=iso_utc(), preview=preview_path, sets=sets,
                  canary=canary_result,
                  interrupted=interrupted, interrupted_by=stop.reason if interrupted else None,
                  journal_problems=problems, exit_code=int(exit_code),
                  duration_s=round(time.monotonic() - started, 3), **_api_usage(merger.client))
    json_path, csv_path = _write(reports.write_merge_report, args.report_dir, f"merge_report_{common['run_id']}",
                                 report)
    if interrupted:
        log.warning("interrupted by %s", stop.reason)
        print(f"Interrupted by {stop.reason}: re-run the same command to resume where it stopped.", file=sys.stderr)
    _say("\n".join(run_summary(report["totals"])))
    _say(_written("Reports:", json_path, csv_path))
    if tally.fault is not None:
        raise RunStopped(str(tally.fault))
    return exit_code


def _first_set_alone(args, merger: SetMerger, todo: list[MergeSet], tally: "_MergeTally",
                     stop: cli.StopSignal) -> tuple[list[MergeSet], dict | None]:
    """Run sets one at a time until one is merged (or moved) in this run: a token that
    may not write stops the run before a second set starts, and, unless --no-canary, the
    objects that set touched are re-read and compared with its backups (canary.py). Any
    change the tool did not make stops the run (exit 1). Returns the sets left to run on
    the workers, and the canary's result (None when none ran)."""
    todo = list(todo)
    while todo and not stop.is_set():
        ms = todo.pop(0)
        for _, result in run_sets([ms], merger.merge, 1, stop, "first set"):
            tally.add(ms, result)
        outcome = tally.outcomes.get(ms.key) or {}
        if outcome.get("status") not in ("merged", "moved_only") or not outcome.get("duplicates"):
            continue
        if args.no_canary:
            return todo, None
        try:
            result = canary.check_set(merger.client, outcome)
        except RunInterrupted:
            # stopped while re-reading: the set is merged; the next run's first set is the canary
            log.info("canary %s: stopped by %s before its re-read ended", ms.email, stop.reason)
            return todo, None
        except DevRevError as exc:
            result = {"set": ms.email, "checked": 0, "differences": [], "error": str(exc)}
            log.error("canary %s: could not re-read: %s; the run stopped before the next set", ms.email, exc)
            tally.stop_for_canary()
            return todo, result
        line = canary.summary(result)
        if result["differences"]:
            log.error("%s", line, extra=cli.FILE_ONLY)
            _say(line, stream=sys.stderr)
            tally.stop_for_canary()
        else:
            log.info("%s", line)
        return todo, result
    return todo, None


def _journal_check(journal: Journal) -> list[str]:
    """journal.check(), or the reason it could not be read (a savepoint that failed mid-run)."""
    try:
        return journal.check()
    except sqlite3.Error as exc:
        return [f"the savepoint could not be checked ({exc})"]


def _write(writer, report_dir: str, name: str, data: dict) -> tuple[str, str]:
    """Write a report; a folder that stopped being writable mid-run is one line, exit 1 (the
    savepoint keeps every result, so the same command re-run writes the report)."""
    try:
        return writer(report_dir, name, data)
    except OSError as exc:
        raise RunStopped(f"could not write the report in {report_dir}: {cli.describe_os_error(exc)}; the "
                         f"savepoint keeps every result: fix the folder and re-run the same command to write "
                         f"it") from None


def run_summary(totals: dict) -> list[str]:
    """The two lines that end a merge: what this run did, then the totals so far."""
    mine = totals["this_run"]
    return [f"This run: {summary.describe_counts(mine, source='worked on')}; "
            f"{summary.describe_moved(mine['tickets_moved'], mine['conversations_moved'])}.",
            f"So far: {summary.describe_counts(totals)}; "
            f"{summary.describe_moved(totals['tickets_moved'], totals['conversations_moved'])}."]


def _say_resumes(journal: Journal, plan: RunPlan) -> None:
    """Name each set this run resumes from the savepoint, and where it stood."""
    points = [(ms.email, resume_point(journal, set_key(ms))) for ms in plan.todo]
    points = [(email, point) for email, point in points if point is not None]
    if points:
        log.info("resuming %s from the savepoint:", plural(len(points), "merge set"))
    for email, point in points:
        log.info("  %s: %s", email, point)


def _unfinished(ms: MergeSet, status: str, note: str, *, reached: bool = True) -> dict:
    """The report line of a set this run did not finish (resumable from the savepoint);
    reached=False: this run never started it."""
    line = {"email": ms.email, "set_key": set_key(ms), "status": status, "primary": ms.primary.rev_user_id,
            "duplicates": [], "error" if status == "failed" else "note": note}
    if not reached:
        line["not_reached"] = True
    return line


if __name__ == "__main__":
    sys.exit(main())
