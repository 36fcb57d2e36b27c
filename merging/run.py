"""The merge's run: from checked settings to an exit code, a preview or a merge report.

merge_contacts.py parses and checks the command line into `MergeSettings`, then calls `run`
(or `run_check` for --check). A run checks its input (the CSV, the preview that must show
it, the folders, the savepoint), plans from the journal, then previews the sets or merges
them on the workers through the one run over sets (runs.over_sets): the first set alone,
then, unless --no-canary, its objects re-read and compared with its backups.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from contacts.csv_reader import EarlierPrimary, MergeSet, email_key
from contacts.index import ContactsIndex, index_contacts
from devrev_api.errors import DevRevError, RunInterrupted, RunWideFault
from devrev_sandbox.dataset import DEMO_CSV
from merging import call_estimates, canary, preflight
from merging import status as merge_status
from merging.engine import MergeOptions, RunAborted, SetMerger, preview_set
from merging.plan import (
    RunPlan,
    blank_line,
    finished_outcome,
    finished_preview,
    journal_line,
    plan_run,
    refused_preview,
    set_key,
    skipped_earlier_outcome,
    skipped_earlier_preview,
)
from merging.preview_scope import Scope, candidate_previews, plan_previews, preview_showing
from merging.progress import resume_point
from operator_view import reports, screens, summary
from operator_view.summary import plural
from plumbing import cli, json_summary, manifest_key
from plumbing.cli import ExitCode, UsageError
from plumbing.clock import iso_utc
from plumbing.fanout import Fanout, workers_of
from plumbing.version import TOOL_VERSION
from runs import approval, id_map, plan_file
from runs.actor import actor_block
from runs.journal import Journal, earlier_primaries
from runs.outcomes import SetStatus, to_json
from runs.over_sets import PreviewRun, RunStopped, SetRun, SetRunKind, is_temporary, journal_problems
from runs.preview_gate import DEFAULT_MAX_AGE_HOURS
from runs.support import SANDBOX_DIR, RunTarget, backup_target, open_client, sandbox_held, target_of
from runs.workers import choose_workers

log = logging.getLogger(__name__)
PREVIEW_STOP = "Stopping the preview after the call in flight; nothing was changed in DevRev."
PREVIEW_FINISHING = ("Every set is previewed: finishing the preview's files (press Ctrl-C again to abandon them; "
                     "nothing was changed in DevRev).")
ESTIMATE_NOTE = ("Messages, attachments, calls and backup sizes are estimates from the first timeline page of a few "
                 "tickets and conversations per duplicate; `--preview --full` counts them all.")


@dataclass(frozen=True)
class MergeSettings:
    """One run's options, checked (one field per option of build_parser, plus what is derived
    from them): what every function below reads, instead of argparse's namespace."""
    csv: str | None
    preview: bool
    status: bool
    check: bool
    full: bool
    sandbox: bool
    sandbox_reset: bool
    sandbox_mode: tuple[str, ...]
    backup_dir: str
    report_dir: str
    log_dir: str
    savepoint: str | None
    rate_limit: float | None
    workers: int | None   # None: sized from the rate and the latency (runs.workers)
    max_merges: int | None
    only: str | None
    keep_duplicate: bool
    allow_cross_org: bool
    skip_preview_check: bool
    no_canary: bool
    no_merge_note: bool
    merge_timeout: float
    ask_refused_merges_again: bool = False
    retry_skipped: bool = False
    fill_blanks: tuple[str, ...] = ()
    list_skipped: bool = False   # --list-skipped: the preview writes every row in no merge set
    json: bool = False
    preview_max_age: float = DEFAULT_MAX_AGE_HOURS
    plan: str | None = None   # --plan: the approved plan this run follows (runs.approval)
    plan_out: str | None = None   # --plan-out: the preview written there too, to be approved
    require_approval: bool = False
    allowed_signers: str | None = None
    log_format: str = "text"
    max_calls: int | None = None   # --max-calls: stop taking sets before this many calls (exit 75)
    until: str | None = None       # --until: stop taking sets that would not finish by then (exit 75)
    sandbox_modes: Any = None   # derived: the emulator's BehaviourModes with --sandbox

    @property
    def target(self) -> RunTarget:
        return RunTarget(self.sandbox, self.rate_limit, self.workers, self.sandbox_reset, self.sandbox_modes)

    def options(self) -> dict[str, Any]:
        """The options as the reports record them (the command line's, not what is derived)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k not in ("status", "sandbox_modes")}


def run_check(settings: MergeSettings, savepoint: str | None = None) -> int:
    """--check: the preflight alone, one line per check on stdout; 0 if none failed, else 1
    (a check that could not run says so, and the last line counts it apart)."""
    merge_set = None
    if settings.csv or settings.sandbox:
        csv_path = settings.csv or DEMO_CSV
        index = _chosen_groups(settings, index_contacts(csv_path, _earlier(settings, savepoint)), csv_path)
        merge_set = index.merge_sets[0] if index.merge_sets else None
    stop = cli.StopSignal()
    with open_client(settings.target, stop) as client, cli.graceful_stop(stop):
        checks = preflight.run_checks(client, merge_set)
    for check in checks:
        print(check.line())
    if merge_set is None:
        print("note   filters: not checked (" + ("the CSV holds no merge set)" if settings.csv or settings.sandbox
                                                 else "give --csv to check them on its first merge set)"))
    if not all(c.checked for c in checks):
        print(f"note   {preflight.tally(checks)}: a check not checked is not a pass")
    json_summary.record("check", totals={"ok": sum(1 for c in checks if c.ok and c.checked),
                                         "failed": sum(1 for c in checks if not c.ok),
                                         "not_checked": sum(1 for c in checks if c.ok and not c.checked)},
                        checks=[{"name": c.name, "ok": c.ok, "checked": c.checked, "detail": c.detail}
                                for c in checks])
    failed = [c for c in checks if not c.ok]
    for check in failed:
        json_summary.note_error(f"{check.name}: {check.detail}")
    if failed and all(is_temporary(c.error) for c in failed):
        return ExitCode.TEMPORARY   # DevRev unreachable or throttling: nothing proved wrong yet
    return ExitCode.OK if not failed else ExitCode.FAILED


def _check_folders(settings: MergeSettings, savepoint: str) -> None:
    """Every folder the run writes must be usable before the first API call (UsageError if not)."""
    cli.check_writable_dir(settings.report_dir, "--report-dir")
    if not settings.preview:
        cli.check_writable_dir(settings.backup_dir, "--backup-dir")
        cli.check_writable_dir(os.path.dirname(os.path.abspath(savepoint)), "--savepoint")
        try:   # every backup's manifest is MAC'd with it: made now, before any set starts
            manifest_key.load_key(create=True)
        except OSError as exc:
            raise cli.UsageError(f"the manifest key {manifest_key.key_path()} cannot be used ({exc.strerror or exc}): "
                                 f"move it away (a new one is made) or point {manifest_key.KEY_ENV} at a usable "
                                 f"one") from None


def _open_journal(settings: MergeSettings, savepoint: str, run_id: str) -> Journal | None:
    """The savepoint journal: the run's own (locked), or for a preview the existing one, read only."""
    if not settings.preview:
        return Journal(savepoint, run_id, exclusive=True)
    return Journal(savepoint, run_id) if os.path.exists(savepoint) else None


def run(settings: MergeSettings, run_id: str, savepoint: str, log_path: str | None) -> int:
    """Check everything the run needs (input, preview, folders, savepoint), then run it."""
    json_summary.record("preview" if settings.preview else "merge", run_id=run_id, log=log_path)
    csv_path = settings.csv or DEMO_CSV
    index = _chosen_groups(settings, index_contacts(csv_path, _earlier(settings, savepoint)), csv_path)
    for ms in index.merge_sets:
        if ms.primary_note:
            log.info("%s: %s is the %s", ms.email, ms.earlier_primary.display_id if ms.earlier_primary else
                     ms.primary.rev_user_id, ms.primary_note)
    scope = _scope(settings, index.file.sha256)
    named = None if settings.preview else approval.checked_plan(   # refused here: before any call
        settings.plan, "preview", approval.Policy.of(settings.require_approval, settings.allowed_signers),
        skip_preview_check=settings.skip_preview_check)
    candidates = None if settings.preview or settings.skip_preview_check else \
        plan_previews(named, scope, rows=index.file.row_count) \
        if named is not None else candidate_previews(settings.report_dir, scope)
    if named is not None:
        json_summary.record("merge", plan=named.to_json())
    with sandbox_held(settings.target):
        return _run_checked(settings, run_id, savepoint, log_path, csv_path, index, scope, candidates, named)


def _run_checked(settings: MergeSettings, run_id: str, savepoint: str, log_path: str | None, csv_path: str,
                 index: ContactsIndex, scope: Scope, candidates: list[tuple[str, dict]] | None,
                 named: approval.CheckedPlan | None = None) -> int:
    """Run the checked input: open the savepoint, plan, then preview or merge."""
    merge_sets = index.merge_sets
    _check_folders(settings, savepoint)
    journal = _open_journal(settings, savepoint, run_id)
    try:
        plan = plan_run(journal, merge_sets, max_merges=settings.max_merges, keep_duplicate=settings.keep_duplicate,
                        retry_skipped=settings.retry_skipped)
        max_age = plan_file.valid_hours(named.plan) if named is not None else \
            settings.preview_max_age   # a plan: the age it was made and approved for, never the run's
        preview_path, previews = preview_showing(candidates, scope, [(m.key, m.email) for m in plan.todo],
                                                 max_age_hours=max_age)
        log.info("run %s (%s %s): %s from the CSV%s; CSV %s; log %s", run_id,
                 "preview of" if settings.preview else "merge of", "the sandbox" if settings.sandbox else "DevRev",
                 plural(len(merge_sets), "merge set"), summary.groups_clause(index.skipped_total), csv_path,
                 log_path or "off")
        if journal is not None:
            log.info("savepoint %s", os.path.abspath(savepoint))
        stop = cli.StopSignal()
        stop_note = [PREVIEW_STOP] if settings.preview else []
        with open_client(settings.target, stop) as client, cli.graceful_stop(stop, *stop_note), \
                contextlib.ExitStack() as stack:
            # a run with nothing left to do calls nothing, and needs no preflight; the filters are
            # checked on the first set it will merge (not one its preview showed skipped)
            first = next((m for m in plan.todo if (previews.get(m.key) or {}).get("status") != "skipped"), None)
            try:
                failed = preflight.at_start(client, first) if plan.todo else None
            except RunWideFault as exc:
                what = "no preview report written" if settings.preview else "nothing was started"
                raise RunStopped(f"{exc} ({what})", temporary=is_temporary(exc)) from None
            if failed is not None:
                return failed
            workers = choose_workers(client, settings.workers)   # sized on the preflight's answer times
            log.info("%s", workers.line())
            options = MergeOptions(backup_dir=os.path.abspath(settings.backup_dir), run_id=run_id,
                                   keep_duplicate=settings.keep_duplicate, allow_cross_org=settings.allow_cross_org,
                                   merge_timeout=settings.merge_timeout, preview_full=settings.full,
                                   merge_note=not settings.no_merge_note,
                                   ask_refused_again=settings.ask_refused_merges_again,
                                   target=backup_target(settings.target, client),
                                   fill_blanks=tuple(settings.fill_blanks),
                                   fanout=stack.enter_context(contextlib.closing(Fanout(workers.count))))
            common = _report_header(settings, run_id, client, csv_path, index)
            common["workers"] = workers.to_json()   # how many, and why (the options keep --workers as given)
            common["actor"] = actor_block(client, ask=bool(plan.todo))   # who ran it (no call when nothing to do)
            if plan.todo and not settings.preview:   # the plan's approver is not who runs it (before any write)
                approval.check_runner(named, common["actor"])
            if named is not None:   # the plan it followed, and who approved it
                common["plan"] = named.to_json()
            if settings.preview:
                return _preview(settings, client, plan, options, common, stop, index)
            merger = SetMerger(client, journal, options, previews)
            return _merge(settings, merger, merge_sets, plan, common, stop, preview_path)
    finally:
        if journal is not None:
            journal.close()


def _earlier(settings: MergeSettings, savepoint: str | None) -> list[EarlierPrimary]:
    """The contacts earlier merges made primary, from the run's savepoint: a group whose
    primary one of them is (now with a `user_...` external_ref) is a merge set again. None
    ([]) without a savepoint yet, or when --sandbox-reset is about to empty it."""
    if savepoint is None or (settings.sandbox_reset and _within(savepoint, SANDBOX_DIR)):
        return []
    return earlier_primaries(savepoint)


def _within(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def _chosen_groups(settings: MergeSettings, index: ContactsIndex, csv_path: str) -> ContactsIndex:
    """The CSV's merge sets and skipped groups, narrowed to --only's email."""
    if settings.only:
        index = index.narrowed(settings.only)
        if not index.merge_sets and not index.skipped_total:
            raise UsageError(f"no contact with email {settings.only!r} in {csv_path}")
    return index


def _scope(settings: MergeSettings, csv_sha256: str) -> Scope:
    """Every option of this run that changes what it does (a preview records its own)."""
    return Scope(csv_sha256=csv_sha256, target=target_of(settings.target), keep_duplicate=settings.keep_duplicate,
                 allow_cross_org=settings.allow_cross_org, only=email_key(settings.only) if settings.only else None,
                 max_merges=settings.max_merges, merge_note=not settings.no_merge_note,
                 retry_skipped=settings.retry_skipped, ask_refused_again=settings.ask_refused_merges_again,
                 fill_blanks=tuple(settings.fill_blanks), max_calls=settings.max_calls, until=settings.until)


def _report_header(settings: MergeSettings, run_id: str, client, csv_path: str, index: ContactsIndex) -> dict:
    """What the preview and the merge report share: the run, the target, the CSV, the skipped
    groups (counted by reason; the first few of each listed with their rows)."""
    return {"run_id": run_id, "tool_version": TOOL_VERSION, "started_at": iso_utc(),
            "target": target_of(settings.target, client), "scope": _scope(settings, index.file.sha256).to_json(),
            "csv": {"path": os.path.abspath(csv_path), "sha256": index.file.sha256, "rows": index.file.row_count,
                    "merge_sets": index.csv_merge_sets},
            "options": settings.options(),
            "skipped_counts": index.skipped_counts,
            "skipped": [{"email": g.email, "reason": g.reason, "detail": g.detail,
                         "rows": [r.as_dict() for r in g.rows]} for g in index.skipped_examples]}


def _write_skipped(settings: MergeSettings, name: str, common: dict, index: ContactsIndex) -> str | None:
    """The rows in no merge set, counted by reason (`skipped_row_counts`); with --list-skipped,
    every one of them to `<name>_skipped.csv`, streamed from the CSV (a re-read of the whole file,
    so only on request). Returns the screen's line about them (None when there are none)."""
    if not index.skipped_total:
        return None
    common["skipped_row_counts"] = index.skipped_row_counts
    total = index.skipped_rows_total
    what = (f"{plural(total, 'row')} of the CSV {'is' if total == 1 else 'are'} in no merge set ("
            + ", ".join(f"{reason} {n}" for reason, n in index.skipped_row_counts.items() if n) + ")")
    if settings.list_skipped:
        common["skipped_file"] = reports.write_skipped_rows(settings.report_dir, name, index.skipped_rows())
        return f"{what}: listed in {common['skipped_file']}"
    return f"{what}; to list them in a file, preview again with --list-skipped (preview_<run>_skipped.csv)."


def _preview(settings: MergeSettings, client, plan: RunPlan, options: MergeOptions, common: dict, stop: cli.StopSignal,
             index: ContactsIndex) -> int:
    """Preview the plan's sets (read only) and write the preview report; returns the exit code."""
    run: PreviewRun[MergeSet] = PreviewRun(stop, lambda ms, error: {"email": ms.email, "set_key": set_key(ms),
                                                                     "status": "failed", "error": error})
    run.records.update({ms.key: finished_preview(ms, plan.finished[ms.key]) for ms in plan.order
                        if ms.key in plan.finished})
    run.records.update({ms.key: skipped_earlier_preview(ms, plan.skipped_earlier[ms.key]) for ms in plan.order
                        if ms.key in plan.skipped_earlier})
    run.run(plan.todo, lambda ms: preview_set(client, ms, options), workers_of(options.fanout))
    for key, earlier in plan.refused_earlier.items():   # the run would fail it again at once, not merge it
        if (run.records.get(key) or {}).get("status") == "would_merge":
            run.records[key] = refused_preview(run.records[key], earlier, ask_again=settings.ask_refused_merges_again)
    records, exit_code = run.records, run.exit_code()
    if run.fault is not None and exit_code != ExitCode.USAGE:
        log.debug("preview stopped: %s", run.fault)
        raise RunStopped(f"{run.fault} (no preview report written)", temporary=is_temporary(run.fault))
    if exit_code == ExitCode.USAGE:
        log.error("preview stopped; no preview report written")
        return exit_code
    interrupted = exit_code == ExitCode.INTERRUPTED
    if not interrupted:   # every set is previewed: a Ctrl-C now lets the files finish (a second abandons them)
        stop.message = PREVIEW_FINISHING
    skipped_line = _write_skipped(settings, f"preview_{common['run_id']}", common, index)
    preview = dict(common, kind="preview", created_at=iso_utc(), complete=exit_code == ExitCode.OK,
                   interrupted_by=stop.reason if interrupted else None, exit_code=int(exit_code),
                   sets=[records[m.key] for m in plan.order if m.key in records], **_api_usage(client))
    estimate = call_estimates.job_estimate(preview["sets"], client.calls_per_minute, workers_of(options.fanout),
                                           call_estimates.answer_time(client))
    preview["estimate"] = estimate.to_json()   # the whole job: calls, and time at the rate the run will use
    budget = call_estimates.runs_within(preview["sets"], settings.max_calls) if settings.max_calls else None
    if budget is not None:   # how many runs of the budget (None: a set no run of it can take)
        preview["estimate"]["runs_of_max_calls"] = budget[0] if budget[1] is None else None
    json_path, csv_path = _write(reports.write_preview, settings.report_dir, f"preview_{common['run_id']}", preview)
    if interrupted:
        json_summary.record("preview", run_id=common["run_id"], totals=preview["totals"],
                            reports=_report_paths(json_path, csv_path), complete=False)
        missing = len(plan.order) - len(preview["sets"])
        _say(f"Preview interrupted by {stop.reason} before {plural(missing, 'merge set')}: it is incomplete and "
             f"cannot unlock a real run. Nothing was changed in DevRev; run the preview again.", stream=sys.stderr)
        _say(_written("Incomplete preview written:", json_path, csv_path))
        return exit_code
    json_summary.record("preview", run_id=common["run_id"], totals=preview["totals"],
                        reports=_report_paths(json_path, csv_path), complete=preview["complete"],
                        estimate=preview["estimate"])
    print(screens.format_preview(preview, more_in=preview.get("skipped_file")))
    if preview["totals"].get("estimated_contents"):  # on screen under the summary (the JSON says `estimated`)
        print(screens.wrap_text(ESTIMATE_NOTE))
    if skipped_line:   # (logged before the summary, which ends the log as it ends the screen)
        _say(skipped_line)
    _say(estimate.line())   # on screen under the summary; in the log just before it
    if settings.max_calls and budget is not None and estimate.sets:
        _say(call_estimates.budget_line(settings.max_calls, *budget), stream=sys.stderr if budget[1] else None)
    _say(summary.describe_preview(preview["totals"]), printed=True)
    _say(_written("Preview written (nothing was changed in DevRev):", json_path, csv_path))
    if settings.plan_out and preview["complete"]:
        _say(plan_file.write_plan(json_path, settings.plan_out))
    elif settings.plan_out:
        _say(f"No plan written to {settings.plan_out}: the preview is incomplete", stream=sys.stderr)
    return exit_code


def _report_paths(json_path: str, csv_path: str) -> dict[str, str]:
    """A report's files as the --json summary names them."""
    return {"html": reports.html_path(json_path), "json": json_path, "csv": csv_path}


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


def _merge(settings: MergeSettings, merger: SetMerger, merge_sets: list[MergeSet], plan: RunPlan, common: dict,
           stop: cli.StopSignal, preview_path: str | None) -> int:
    """Merge the plan's sets on the workers and write the merge report; returns the exit code."""
    started = time.monotonic()
    kind = SetRunKind("merge", blank_line, lambda ms: journal_line(merger.journal, ms), stopping_errors=(RunAborted,))
    tally = SetRun(kind, stop, budget=call_estimates.budget_for(settings.max_calls, settings.until, merger.client,
                                                                merger.previews, canary=not settings.no_canary))
    tally.lines.update({ms.key: finished_outcome(ms, plan.finished[ms.key], merger.journal.steps(set_key(ms)))
                        for ms in plan.order if ms.key in plan.finished})
    tally.lines.update({ms.key: skipped_earlier_outcome(ms, plan.skipped_earlier[ms.key]) for ms in plan.order
                        if ms.key in plan.skipped_earlier})
    if plan.finished:
        log.info("%s already finished in earlier runs (savepoint)", plural(len(plan.finished), "merge set"))
    restored = sum(1 for r in plan.skipped_earlier.values() if r["status"] == "restored")
    if len(plan.skipped_earlier) > restored:
        log.info("%s skipped by earlier runs' live checks, not tried again (--retry-skipped tries them)",
                 plural(len(plan.skipped_earlier) - restored, "merge set"))
    if restored:
        log.info("%s merged, then restored since: run find_duplicates.py again to find and merge them",
                 plural(restored, "merge set"))
    _say_resumes(merger.journal, plan)
    canary_result = None
    try:
        rest, canary_result = _first_set_alone(settings, merger, plan.todo, tally, stop)
        tally.run(rest, merger.merge, workers_of(merger.options.fanout))
    finally:
        problems = journal_problems(merger.journal)
    exit_code = tally.exit_code()
    _map_ids(settings.report_dir, merger.journal, tally.report_lines(merge_sets), merger.options.target)
    if merger.merge_denied:  # sets left moved_only that were to be merged: a later run must finish them
        exit_code = exit_code.worse(ExitCode.FAILED)
    interrupted = exit_code == ExitCode.INTERRUPTED
    report = dict(common, kind="merge_report", finished_at=iso_utc(), preview=preview_path,
                  sets=to_json(tally.report_lines(merge_sets)),
                  canary=canary_result,
                  interrupted=interrupted, interrupted_by=stop.reason if interrupted else None,
                  journal_problems=problems, exit_code=int(exit_code),
                  duration_s=round(time.monotonic() - started, 3), **_api_usage(merger.client))
    report["budget"] = tally.budget.to_json(sum(1 for line in tally.report_lines(merge_sets) if line.not_reached)) \
        if tally.budget is not None else None
    json_path, csv_path = _write(reports.write_merge_report, settings.report_dir, f"merge_report_{common['run_id']}",
                                 report)
    json_summary.record("merge", run_id=common["run_id"], totals=report["totals"],
                        reports=_report_paths(json_path, csv_path), preview=preview_path,
                        interrupted_by=report["interrupted_by"], retry_later=[
                            s["email"] for s in report["sets"] if s.get("retry_later")], budget=report["budget"])
    merge_status.record_run(merger.journal, report)
    if interrupted:
        log.warning("interrupted by %s", stop.reason)
        print(f"Interrupted by {stop.reason}: re-run the same command to resume where it stopped.", file=sys.stderr)
    too_small = tally.budget is not None and tally.budget.too_small   # exit 2: one error line, as every usage error
    _say("\n".join(run_summary(report["totals"]) + drift_lines(report["sets"])
                   + [line for line in [(report["budget"] or {}).get("line")] if line and not too_small]))
    _say(_written("Reports:", json_path, csv_path))
    if too_small and (report["budget"] or {}).get("line"):
        cli.error_line(report["budget"]["line"])
    if tally.fault is not None:
        raise RunStopped(str(tally.fault), temporary=is_temporary(tally.fault))
    return exit_code


def _map_ids(report_dir: str, journal: Journal, lines: list, target: str | None) -> None:
    """The duplicates this run retired, appended to the id map (runs.id_map); a failure to
    write it is said, not fatal (the merges are done and journaled)."""
    contexts = [ctx for line in lines if line.status == SetStatus.MERGED and not line.finished_earlier
                for ctx in [(journal.set_record(line.set_key) or {}).get("context")] if isinstance(ctx, dict)]
    try:
        id_map.append(report_dir, id_map.merged_rows(journal.run_id, contexts, target))
    except OSError as exc:
        log.error("the id map %s could not be written (%s); the merge report lists the same ids",
                  os.path.join(report_dir, id_map.FILE_NAME), cli.describe_os_error(exc))


def _first_set_alone(settings: MergeSettings, merger: SetMerger, todo: list[MergeSet], tally: SetRun[MergeSet],
                     stop: cli.StopSignal) -> tuple[list[MergeSet], dict | str | None]:
    """Run sets one at a time until one is merged (or moved) in this run: a token that
    may not write stops the run before a second set starts, and, unless --no-canary, the
    objects that set touched are re-read and compared with its backups (canary.py). Any
    change the tool did not make stops the run (exit 1). Returns the sets left to run on
    the workers, and the canary's result (None when none ran; canary.SKIPPED when no set
    followed the first)."""
    todo = list(todo)
    while todo and not stop.is_set():
        ms = todo.pop(0)
        tally.run([ms], merger.merge, 1, "first set")
        outcome = tally.lines.get(ms.key)
        if outcome is not None and outcome.reason in ("merge_refused", "merge_pending"):
            # DevRev did not finish the first set's merge: moving more tickets toward merges it may
            # refuse or not finish would leave every set moved and unmerged
            line = (f"the first set's merge did not complete ({outcome.reason.replace('_', ' ')}: see its line); "
                    f"no other set was started: re-run later"
                    + (", or with --ask-refused-merges-again once DevRev's reason is gone"
                       if outcome.reason == "merge_refused" else ""))
            log.error("%s", line, extra=cli.FILE_ONLY)
            _say(line, stream=sys.stderr)
            tally.stop_for_canary(ExitCode.TEMPORARY if outcome.retry_later else ExitCode.FAILED)
            return todo, None
        if outcome is None or outcome.status not in (SetStatus.MERGED, SetStatus.MOVED_ONLY) \
                or not outcome.duplicates:
            continue
        if settings.no_canary:
            return todo, None
        if not todo:   # the run's last set: no set left for the canary to protect
            log.info("canary %s: skipped, no set followed it in this run (the next run's first set is its canary)",
                     ms.email)
            return todo, canary.SKIPPED
        try:
            result = canary.check_set(merger, outcome)
        except RunInterrupted:
            # stopped while re-reading: the set is merged; the next run's first set is the canary
            log.info("canary %s: stopped by %s before its re-read ended", ms.email, stop.reason)
            return todo, None
        except (DevRevError, OSError, ValueError) as exc:   # a failed read, or its backups unreadable since
            result = {"set": ms.email, "checked": 0, "differences": [], "error": str(exc)}
            what = "re-read" if isinstance(exc, DevRevError) else "read its backups"
            log.error("canary %s: could not %s: %s; the run stopped before the next set", ms.email, what, exc)
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
    """The lines that end a merge: what this run did, the totals so far, and the merged
    duplicates' references no contact holds (where DevRev keeps one per contact)."""
    mine = totals["this_run"]
    lines = [f"This run: {summary.describe_counts(mine, source='worked on')}; "
             f"{summary.describe_moved(mine['tickets_moved'], mine['conversations_moved'])}.",
             f"So far: {summary.describe_counts(totals)}; "
             f"{summary.describe_moved(totals['tickets_moved'], totals['conversations_moved'])}."]
    if totals.get("custom_fields_moved") or totals.get("custom_field_refs"):
        moved, found = totals.get("custom_fields_moved") or 0, totals.get("custom_field_refs") or 0
        lines.append(f"Custom fields: {plural(found, 'ticket or conversation', 'tickets and conversations')} named a "
                     f"merged duplicate; {moved} of them {'names' if moved == 1 else 'name'} the primary now "
                     f"(custom_fields_moved in the report).")
    if totals.get("contact_entries") or totals.get("contact_files"):
        entries = plural(totals.get("contact_entries") or 0, "timeline entry", "timeline entries")
        lines.append(f"The duplicates' own contact pages: {entries} and "
                     f"{plural(totals.get('contact_files') or 0, 'file')} backed up (restore_contacts.py writes "
                     f"them again).")
    if totals.get("merge_notes_refused"):
        count = totals["merge_notes_refused"]
        lines.append(f"{plural(count, 'merge note')} {'was' if count == 1 else 'were'} not written: DevRev refused "
                     f"{'it' if count == 1 else 'them'} (merge_note_refused in the report says why); the merges are "
                     f"done. --no-merge-note leaves the notes out.")
    if totals.get("sets_filled"):
        primaries = plural(totals["sets_filled"], "primary", "primaries")
        lines.append(f"--fill-blanks filled the blank fields of {primaries} (fields_filled in the report; a restore "
                     f"gives them back).")
    if totals.get("retry_later"):
        count = totals["retry_later"]
        lines.append(f"{plural(count, 'merge set')} of the failed {'waits' if count == 1 else 'wait'} on DevRev (a "
                     f"merge job still running, or DevRev busy): a later run may finish "
                     f"{'it' if count == 1 else 'them'} without a person (retry_later in the report).")
    if totals.get("refs_without_contact"):
        count = totals["refs_without_contact"]
        lines.append(f"{plural(count, 'user_ reference')} of merged duplicates {'belongs' if count == 1 else 'belong'} "
                     f"to no contact (this DevRev keeps one per contact): refs_without_contact in the report.")
    return lines


def drift_lines(sets: list[dict]) -> list[str]:
    """What appeared under a duplicate after the preview and was moved by this run, named per
    set (the preview could not show it: DevRev keeps filing items under the duplicate)."""
    found = [(s["email"], [x for d in s.get("duplicates") or [] for x in d.get("drift_appeared") or []])
             for s in sets if not s.get("finished_earlier")]
    found = [(email, items) for email, items in found if items]
    if not found:
        return []
    count = sum(len(items) for _, items in found)
    lines = [f"Appeared after the preview, backed up and moved too: "
             f"{plural(count, 'ticket or conversation', 'tickets and conversations')} (drift_appeared in the report):"]
    return lines + [f"  {email}: {', '.join(items)}" for email, items in found]


def _say_resumes(journal: Journal, plan: RunPlan) -> None:
    """Name each set this run resumes from the savepoint, and where it stood."""
    points = [(ms.email, resume_point(journal, set_key(ms))) for ms in plan.todo]
    points = [(email, point) for email, point in points if point is not None]
    if points:
        log.info("resuming %s from the savepoint:", plural(len(points), "merge set"))
    for email, point in points:
        log.info("  %s: %s", email, point)
