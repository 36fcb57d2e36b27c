"""The restore's run: from checked settings to an exit code, a restore preview or report.

restore_contacts.py parses the command line into `RestoreSettings` and calls `run`. A run
reads and verifies the backups (narrowed to --only), checks the preview that must show it
(runs.preview_gate), then previews the sets or restores them on the workers through the one
run over sets (runs.over_sets), and writes the report (operator_view.restore_reports).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from contacts.csv_reader import email_key
from operator_view import reports, restore_reports, screens
from operator_view.summary import plural
from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import iso_utc
from plumbing.fanout import Fanout, workers_of
from plumbing.version import TOOL_VERSION
from restoring.backup_sets import BackupSet, FailedFolder, load_backup_sets
from restoring.engine import FINISHED, SetRestorer, blank_line, finished_record, journal_progress, preview_set
from restoring.merge_journal_marks import mark_restored
from restoring.merge_record import MergeRecord, NotWhatTheMergeDid, hold_to_merge
from restoring.preview_writes import PreviewWrites
from runs import approval, id_map, plan_file
from runs.actor import actor_block
from runs.journal import Journal
from runs.outcomes import SetStatus, to_json
from runs.over_sets import PreviewRun, RunStopped, SetRun, SetRunKind, is_temporary, journal_problems
from runs.preview_gate import DEFAULT_MAX_AGE_HOURS, newest_complete
from runs.support import RunTarget, backup_target, open_client, sandbox_held, target_of
from runs.workers import choose_workers

PREVIEWABLE = ("would_restore", "already_restored")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreSettings:
    """One restore's options (one field per option of build_parser): what every function
    of the run reads, instead of argparse's namespace."""
    backup_dir: str
    only: str | None
    preview: bool
    sandbox: bool
    report_dir: str
    log_dir: str
    savepoint: str | None
    rate_limit: float | None
    workers: int | None   # None: sized from the rate and the latency (runs.workers)
    skip_preview_check: bool
    no_restore_note: bool
    merge_savepoint: str = ""   # the merge's journal: what a restore may give back (restoring.merge_record)
    log_format: str = "text"
    json: bool = False
    preview_max_age: float = DEFAULT_MAX_AGE_HOURS
    plan: str | None = None   # --plan: the approved restore plan this run follows (runs.approval)
    plan_out: str | None = None   # --plan-out: the preview written there too, to be approved
    require_approval: bool = False
    allowed_signers: str | None = None
    sandbox_mode: tuple[str, ...] = ()
    sandbox_modes: Any = None   # derived: the emulator's BehaviourModes with --sandbox

    @property
    def target(self) -> RunTarget:
        return RunTarget(self.sandbox, self.rate_limit, self.workers, sandbox_modes=self.sandbox_modes)

    def options(self) -> dict[str, Any]:
        """The options as the reports record them (the command line's, not what is derived)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "sandbox_modes"}


def _backup_sets(settings: RestoreSettings) -> tuple[list[BackupSet], list[FailedFolder]]:
    """The backups' merge sets (narrowed to --only) and the folders that do not verify."""
    if not os.path.isdir(settings.backup_dir):
        raise UsageError(f"--backup-dir {settings.backup_dir}: not a folder (nothing was merged from here?)")
    here, elsewhere = backup_target(settings.target), list[str]()
    sets, failed = load_backup_sets(settings.backup_dir, here, elsewhere)
    if elsewhere:   # another DevRev's, or an earlier sandbox emulator's: never restored here
        log.warning("%s in %s %s made against %s: not used", plural(len(elsewhere), "backup folder"),
                    settings.backup_dir, "was" if len(elsewhere) == 1 else "were",
                    "an earlier sandbox emulator (reset since) or another DevRev" if here.startswith("sandbox:")
                    else "another DevRev (or the sandbox)")
    if not sets and not failed:
        raise UsageError(f"no backups of this DevRev in {settings.backup_dir}" + (
            f" ({plural(len(elsewhere), 'folder')} of another DevRev or an earlier sandbox emulator)"
            if elsewhere else ""))
    if settings.only:
        wanted = email_key(settings.only)
        sets = [s for s in sets if s.email_key == wanted]
        failed = [f for f in failed if any(f in s.failed for s in sets)
                  or (f.email is not None and email_key(f.email) == wanted)]
        if not sets and not failed:
            raise UsageError(f"no backup of a merge set with email {settings.only!r} in {settings.backup_dir}")
    record = MergeRecord.load(settings.merge_savepoint) if settings.merge_savepoint else None
    return [_held(s, record) for s in sets], failed


def _held(bset: BackupSet, record: MergeRecord | None) -> BackupSet:
    """The set as the merge's journal allows it (restoring.merge_record), or marked refused."""
    if bset.failed:
        return bset
    try:
        return hold_to_merge(bset, record, authentic=bset.all_authentic)
    except NotWhatTheMergeDid as exc:
        log.error("%s: not restored: %s", bset.email, exc)
        return replace(bset, refused=str(exc))


def run(settings: RestoreSettings, run_id: str, savepoint: str, log_path: str | None) -> int:
    json_summary.record("restore_preview" if settings.preview else "restore", run_id=run_id, log=log_path)
    named = None if settings.preview else approval.checked_plan(   # refused here: before any call
        settings.plan, "restore_preview", approval.Policy.of(settings.require_approval, settings.allowed_signers),
        skip_preview_check=settings.skip_preview_check)
    if named is not None:
        json_summary.record("restore", plan=named.to_json())
    sets, failed = _backup_sets(settings)
    cli.check_writable_dir(settings.report_dir, "--report-dir")
    if not settings.preview:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(savepoint)), "--savepoint")
    journal = Journal(savepoint, run_id, exclusive=True) if not settings.preview else \
        (Journal(savepoint, run_id) if os.path.exists(savepoint) else None)
    try:
        started = journal.step_counts() if journal is not None else {}
        whole = {r["set_key"].split("|")[0] for r in (journal.all_sets() if journal is not None else [])
                 if r["status"] == FINISHED}
        partly = {bad.folder for bad in failed if bad.email is not None and email_key(bad.email) not in whole
                  and any(key.startswith(email_key(bad.email) + "|") for key in started)}
        for bad in failed:
            said = "; an earlier restore run already restored part of its merge set: put the folder back byte for " \
                "byte from your copy of the backups and re-run to finish it" if bad.folder in partly else \
                "; its merge set was restored by an earlier run" \
                if bad.email is not None and email_key(bad.email) in whole else ""
            log.error("%s (not used%s)", bad.line(), said)
        finished = {s.key: r for s in sets for r in [journal.set_record(s.key) if journal else None]
                    if r and r["status"] == FINISHED}
        todo = [s for s in sets if s.key not in finished and not s.failed and not s.refused]
        previewed = None if settings.preview or settings.skip_preview_check else \
            _required_preview(settings, todo, named)
        preview_path = previewed.path if previewed is not None else None
        log.info("run %s (%s %s): %s in %s (%d already restored), %s not used; log %s",
                 run_id, "preview of a restore on" if settings.preview else "restore on",
                 "the sandbox" if settings.sandbox else "DevRev", plural(len(sets), "merge set"), settings.backup_dir,
                 len(finished), plural(len(failed), "backup folder"), log_path or "off")
        stop = cli.StopSignal()
        # a --sandbox run holds the emulator's lock, as merge_contacts.py's do
        with sandbox_held(settings.target), open_client(settings.target, stop) as client, cli.graceful_stop(stop), \
                contextlib.ExitStack() as stack:
            header = {"run_id": run_id, "tool_version": TOOL_VERSION, "started_at": iso_utc(),
                      "target": target_of(settings.target, client), "backup_dir": os.path.abspath(settings.backup_dir),
                      "options": settings.options(), "actor": actor_block(client, ask=bool(todo) or settings.preview),
                      "failed_folders": [dict(f.__dict__, partly_restored=f.folder in partly) for f in failed]}
            if todo and not settings.preview:   # the plan's approver is not who runs it (before any write)
                approval.check_runner(named, header["actor"])
            if named is not None:   # the plan it followed, and who approved it
                header["plan"] = named.to_json()
            workers = choose_workers(client, settings.workers)   # sized on the answer times so far
            log.info("%s", workers.line())
            header["workers"] = workers.to_json()   # how many, and why (the options keep --workers as given)
            # the slots of sets, and of a set's item calls in parallel
            pool = stack.enter_context(contextlib.closing(Fanout(workers.count)))
            if settings.preview:
                return _preview(settings, client, sets, finished, header, stop, pool)
            restorer = SetRestorer(client, journal, note=not settings.no_restore_note, previewed=previewed, fanout=pool)
            return _restore(settings, restorer, sets, finished, header, stop, preview_path)
    finally:
        if journal is not None:
            journal.close()


def _required_preview(settings: RestoreSettings, todo: list[BackupSet],
                      named: approval.CheckedPlan | None = None) -> PreviewWrites:
    """The writes of the newest complete restore preview against the same DevRev (or of the plan
    `named`, then the run's options must be its), if it shows every set this run will restore,
    from these exact backups (runs.preview_gate: only the newest counts); the run makes no write
    it does not list. UsageError naming what it does not show."""
    target = target_of(settings.target)
    if named is not None:
        planned = named.plan.data
        difference = f"the plan was made against {planned.get('target')}, this run goes to {target}" \
            if planned.get("target") != target else plan_file.options_difference(
                planned, only=settings.only, no_restore_note=settings.no_restore_note)
        if difference is not None or not isinstance(planned.get("sets"), list):
            raise UsageError(f"this run is not the plan {named.plan.path}: {difference or 'it lists no sets'}")
        too_old = plan_file.age_refusal(named.plan)
        if too_old is not None:
            raise UsageError(too_old)
    previews = [(named.plan.path, named.plan.data)] if named is not None else \
        [(path, data) for path, data in reports.load_reports(settings.report_dir, "restore_preview")
         if data.get("target") == target and isinstance(data.get("sets"), list)]
    path, data, why = newest_complete(previews, lambda data: _not_shown(todo, data, not settings.no_restore_note),
                                      max_age_hours=plan_file.valid_hours(named.plan)
                                      if named is not None else settings.preview_max_age)
    if path is None or data is None:
        raise UsageError(f"no complete restore preview of these backups against {target} in {settings.report_dir}/ "
                         f"shows this run ({why}): run with --preview first and read it, restore the sets it "
                         f"shows with --only EMAIL, or pass --skip-preview-check")
    return PreviewWrites(data["sets"], path)


def _not_shown(todo: list[BackupSet], preview: dict, writes_notes: bool) -> str | None:
    """Why a preview does not show this run's restore, in a few words; None if it does."""
    seen = {s.get("set_key"): s for s in preview["sets"] if isinstance(s, dict)}
    for bset in todo:
        shown = seen.get(bset.key)
        if not (shown and shown.get("fingerprint") == bset.fingerprint and shown.get("status") in PREVIEWABLE
                and (shown["status"] != "would_restore" or isinstance(shown.get("writes"), list))):
            return _set_not_shown(bset, shown)
    if writes_notes and (preview.get("options") or {}).get("no_restore_note") is True:
        return "it was made with --no-restore-note; this run would leave a note on each primary: add --no-restore-note"
    return None


def _set_not_shown(bset: BackupSet, shown: dict | None) -> str:
    """Why a preview does not show one set's restore."""
    if shown is None:
        return f"it does not cover {bset.email}"
    if shown.get("fingerprint") != bset.fingerprint:
        return f"the backups of {bset.email} changed since"
    if shown.get("status") == "would_restore" and not isinstance(shown.get("writes"), list):
        return f"it does not list the writes for {bset.email} (made by an older version): preview again"
    return f"it shows {bset.email} as {shown.get('status')}: {shown.get('error') or shown.get('reason')}"


def _preview(settings: RestoreSettings, client, sets: list[BackupSet], finished: dict, header: dict,
             stop: cli.StopSignal, pool: Fanout) -> int:
    run: PreviewRun[BackupSet] = PreviewRun(
        stop, lambda bset, error: to_json(replace(blank_line(bset), status=SetStatus.FAILED, error=error)),
        code=ExitCode.FAILED if header["failed_folders"] else ExitCode.OK)
    run.records.update({s.key: to_json(finished_record(s, finished[s.key], preview=True))
                        for s in sets if s.key in finished})
    note = not settings.no_restore_note
    run.run([s for s in sets if s.key not in finished], lambda s: preview_set(client, s, note=note, pool=pool),
            workers_of(pool))
    records, code = run.records, run.exit_code()
    if run.fault is not None and code != ExitCode.USAGE:
        raise RunStopped(f"{run.fault} (no preview report written)", temporary=is_temporary(run.fault))
    if code in (ExitCode.USAGE, ExitCode.INTERRUPTED):
        log.error("preview %s; no preview report written",
                  "stopped" if code == ExitCode.USAGE else f"interrupted by {stop.reason}")
        return code
    preview = dict(header, kind="restore_preview", created_at=iso_utc(), complete=True,
                   sets=[records[s.key] for s in sets if s.key in records])
    preview["totals"] = restore_reports.preview_totals(preview)
    paths = restore_reports.write_preview(settings.report_dir, f"restore_preview_{header['run_id']}", preview)
    if settings.plan_out:   # the preview as a plan, to be approved (runs.plan_file)
        print(screens.wrap_text(plan_file.write_plan(paths[0], settings.plan_out)))
    json_summary.record("restore_preview", run_id=header["run_id"], totals=preview["totals"],
                        reports={"html": reports.html_path(paths[0]), "json": paths[0], "csv": paths[1]})
    print(screens.format_table(["email", "status", "duplicate", "action", "tickets", "convs", "note"],
                               [[r["email"], r["status"], r.get("duplicate"), r.get("action"),
                                 len(r.get("tickets") or []), len(r.get("conversations") or []), r["detail"]]
                                for r in restore_reports.preview_rows(preview)], right=(4, 5), caps={0: 30, 2: 16}))
    t = preview["totals"]
    print("\n" + screens.wrap_text(
        f"{plural(t['sets'], 'merge set')} in the backups: {t['would_restore']} would be restored, "
        f"{t['already_restored']} restored earlier, {t['failed']} failed; "
        f"{plural(t['folders_failed'], 'backup folder')} not used; "
        f"{plural(t['contacts_to_recreate'], 'contact')} would be created again, "
        f"{plural(t['items_to_give_back'], 'ticket or conversation', 'tickets and conversations')} given back "
        f"({plural(t['writes'], 'write')} listed, per object, in the preview)."))
    also = restore_reports.preview_also(preview)
    if also:
        print("\n" + screens.wrap_text(also))
    print(f"\nPreview written to {reports.html_path(paths[0])}, {paths[0]} and {paths[1]}. Nothing was changed "
          f"in DevRev.")
    return code


def _restore(settings: RestoreSettings, restorer: SetRestorer, sets: list[BackupSet], finished: dict, header: dict,
             stop: cli.StopSignal, preview_path: str | None) -> int:
    started = time.monotonic()
    kind = SetRunKind("restore", blank_line, lambda bset: journal_progress(restorer.journal, bset))
    run = SetRun(kind, stop, code=ExitCode.FAILED if header["failed_folders"] else ExitCode.OK)
    run.lines.update({s.key: finished_record(s, finished[s.key], preview=False) for s in sets if s.key in finished})
    try:
        run.run([s for s in sets if s.key not in finished], restorer.restore, workers_of(restorer.fanout))
    finally:
        problems = journal_problems(restorer.journal)
    code = run.exit_code()
    lines = run.report_lines(sets)
    # the merge's journal is told which of its sets are restored (its --status, previews and re-runs say so)
    marked = mark_restored(settings.merge_savepoint, header["run_id"], lines)
    try:   # downstream systems learn which contact stands for each duplicate again (runs.id_map)
        id_map.append(settings.report_dir, id_map.restored_rows(
            header["run_id"], [line for line in lines if line.status == SetStatus.RESTORED and not line.earlier],
            backup_target(settings.target)))
    except OSError as exc:
        log.error("the id map in %s could not be written (%s); the restore report lists the same ids",
                  settings.report_dir, cli.describe_os_error(exc))
    report = dict(header, kind="restore_report", finished_at=iso_utc(), preview=preview_path,
                  sets=to_json(lines), merge_sets_marked_restored=marked,
                  interrupted=code == ExitCode.INTERRUPTED,
                  interrupted_by=stop.reason if code == ExitCode.INTERRUPTED else None,
                  journal_problems=problems, exit_code=int(code),
                  api={k: v for k, v in restorer.client.stats.items() if ":" not in k},
                  duration_s=round(time.monotonic() - started, 3))
    paths = restore_reports.write_restore_report(settings.report_dir, f"restore_report_{header['run_id']}", report)
    t = report["totals"]
    json_summary.record("restore", run_id=header["run_id"], totals=t, preview=preview_path,
                        reports={"html": reports.html_path(paths[0]), "json": paths[0], "csv": paths[1]},
                        interrupted_by=report["interrupted_by"])
    print(screens.wrap_text(f"This run: {t['restored']} restored, {t['failed']} failed, {t['pending']} not processed, "
          f"{plural(t['folders_failed'], 'backup folder')} not used; "
          f"{plural(t['contacts_recreated'], 'contact')} created again, "
          f"{plural(t['items_moved_back'], 'ticket or conversation', 'tickets and conversations')} given back"
          + (f" ({t['items_moved_back_in_all']} with earlier runs)" if t["items_moved_back_in_all"] !=
             t["items_moved_back"] else "") + ", "
          f"{plural(t['custom_fields_back'], 'ticket or conversation', 'tickets and conversations')} with their "
          f"custom fields given back, {plural(t['notes_back'], 'contact note')} "
          f"({plural(t['files_back'], 'file')}) written again"
          + (f"; {plural(t['restored_earlier'], 'merge set')} restored by earlier runs" if t["restored_earlier"]
             else "") + ". "
          f"Report: {reports.html_path(paths[0])}, {paths[0]} and {paths[1]}"))
    if code == ExitCode.INTERRUPTED:
        print(f"Interrupted by {stop.reason}: re-run the same command to resume where it stopped.", file=sys.stderr)
    if run.fault is not None:
        raise RunStopped(str(run.fault), temporary=is_temporary(run.fault))
    return code
