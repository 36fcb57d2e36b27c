"""Merge duplicate DevRev contacts listed in the admins' contacts CSV.

    python merge_contacts.py --csv contacts.csv --preview     # read-only: what would move
    python merge_contacts.py --csv contacts.csv               # back up, move, verify, merge
    python merge_contacts.py --sandbox --preview              # rehearse on the local emulator

Exit codes: 0 every set merged or was legitimately skipped; 1 some set failed (or a
backup did not verify); 2 bad usage, bad input or a token DevRev rejects; 130 stopped
by Ctrl-C (re-run the same command to resume).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from dotenv import load_dotenv

import devrev_assumptions as facts
import reports
from contacts_csv import CsvInputError, MergeSet, email_key, group_contacts, read_contacts
from devrev_client import (TOOL_VERSION, AuthError, ConfigError, DevRevClient, DevRevError, RunInterrupted,
                           SecretMask)
from journal import Journal, JournalError, is_finished
from merge_engine import MergeOptions, RunAborted, SetMerger, preview_set, set_key
from timeutil import iso_utc, new_run_id

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_SEED = os.path.join(HERE, "examples", "demo_seed.json")
DEMO_CSV = os.path.join(HERE, "examples", "demo_contacts.csv")
SANDBOX_DIR = ".sandbox"
DEFAULT_SAVEPOINT = os.path.join("savepoints", "merge_journal.sqlite3")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("merge")


class UsageError(Exception):
    """Bad usage or input: one line for the user, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="merge_contacts.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", help="the contacts CSV (default with --sandbox: examples/demo_contacts.csv)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--preview", action="store_true", help="change nothing; report what would move")
    mode.add_argument("--status", action="store_true", help="print progress from the savepoint file and exit")
    p.add_argument("--sandbox", action="store_true",
                   help="run against the local DevRev emulator seeded with examples/ (no token, no network)")
    p.add_argument("--sandbox-reset", action="store_true",
                   help="with --sandbox: start the emulator and its savepoints afresh")
    p.add_argument("--backup-dir", default="backups", help="where backup folders go (default: backups/)")
    p.add_argument("--report-dir", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--log-dir", default="logs", help="where logs go (default: logs/)")
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the savepoint journal (default: {DEFAULT_SAVEPOINT}; with --sandbox: "
                        f"{SANDBOX_DIR}/savepoints.sqlite3)")
    p.add_argument("--rate-limit", type=float, metavar="CALLS_PER_MINUTE",
                   help="client-side cap on API calls per minute (default: DEVREV_RATE_LIMIT or 200)")
    p.add_argument("--workers", type=int, default=4, help="merge sets processed at once (default: 4)")
    p.add_argument("--max-merges", type=int, metavar="N", help="process at most N merge sets in this run")
    p.add_argument("--only", metavar="EMAIL", help="process only the group with this email")
    p.add_argument("--keep-duplicate", action="store_true",
                   help="move tickets and conversations but do not merge the duplicate away")
    p.add_argument("--allow-cross-org", action="store_true",
                   help="merge even when the contacts are in different workspaces")
    p.add_argument("--skip-preview-check", action="store_true",
                   help="run without a preview of this CSV in --report-dir (not recommended)")
    p.add_argument("--merge-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for DevRev to retire a merged duplicate (default: 120)")
    return p


def _check_args(args) -> None:
    if args.workers < 1 or args.workers > 64:
        raise UsageError("--workers must be between 1 and 64")
    if args.max_merges is not None and args.max_merges < 1:
        raise UsageError("--max-merges must be 1 or more")
    if args.rate_limit is not None and args.rate_limit <= 0:
        raise UsageError("--rate-limit must be a positive number of calls per minute")
    if args.merge_timeout <= 0:
        raise UsageError("--merge-timeout must be positive")
    if args.sandbox_reset and not args.sandbox:
        raise UsageError("--sandbox-reset only goes with --sandbox")
    if not args.csv and not args.sandbox and not args.status:
        raise UsageError("give the contacts CSV with --csv FILE (or rehearse with --sandbox)")


# --------------------------------------------------------------------------- logging
class _RunIdFilter(logging.Filter):
    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def filter(self, record):
        record.run_id = self.run_id
        return True


class _ConsoleHandler(logging.Handler):
    """INFO to stderr, written around the progress bar (tqdm.write) when one is shown."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


@contextlib.contextmanager
def run_logging(log_dir: str | None, run_id: str, secret: str | None):
    """DEBUG to logs/merge_<run>.log, INFO to the console, the run id on every line."""
    root = logging.getLogger()
    old_level = root.level
    handlers = []
    console = _ConsoleHandler()
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("%(levelname)s [%(run_id)s] %(message)s"))
    handlers.append(console)
    log_path = None
    if log_dir:
        from fileutil import make_private_dir, open_private
        make_private_dir(log_dir)
        log_path = os.path.join(log_dir, f"merge_{run_id}.log")
        open_private(log_path, "xb").close()
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(
            "%(asctime)s [%(run_id)s] %(levelname)s %(threadName)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        handler.addFilter(SecretMask(secret or ""))
        handler.addFilter(_RunIdFilter(run_id))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # urllib3's DEBUG lines carry whole URLs, presigned download signatures included; the
    # client logs each call itself (endpoint, status, time)
    urllib3_logger = logging.getLogger("urllib3")
    old_urllib3_level = urllib3_logger.level
    urllib3_logger.setLevel(logging.INFO)
    try:
        yield log_path
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
        urllib3_logger.setLevel(old_urllib3_level)


# --------------------------------------------------------------------------- Ctrl-C
@contextlib.contextmanager
def graceful_stop(stop: threading.Event):
    """First Ctrl-C (or SIGTERM): stop after the call in flight. Second: stop now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nStopping after the call in flight; the savepoint stays consistent. "
              "Re-run the same command to resume.", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        _check_args(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_id = new_run_id()
    if not args.sandbox:
        load_dotenv(os.path.join(os.getcwd(), ".env"))
    savepoint = args.savepoint or (os.path.join(SANDBOX_DIR, "savepoints.sqlite3") if args.sandbox
                                   else DEFAULT_SAVEPOINT)
    if args.status:
        return print_status(savepoint)
    secret = None if args.sandbox else os.environ.get("DEVREV_API_TOKEN")
    with run_logging(args.log_dir, run_id, secret) as log_path:
        try:
            return _run(args, run_id, savepoint, log_path)
        except UsageError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            print("Stopped at once. The savepoint is consistent: re-run the same command to resume.",
                  file=sys.stderr)
            return EXIT_INTERRUPTED


def _run(args, run_id: str, savepoint: str, log_path: str | None) -> int:
    csv_path = args.csv or DEMO_CSV
    try:
        contacts = read_contacts(csv_path)
    except CsvInputError as exc:
        raise UsageError(str(exc)) from None
    merge_sets, skipped = group_contacts(contacts.rows)
    if args.only:
        wanted = email_key(args.only)
        merge_sets = [m for m in merge_sets if m.key == wanted]
        skipped = [g for g in skipped if g.key == wanted]
        if not merge_sets and not skipped:
            raise UsageError(f"no contact with email {args.only!r} in {csv_path}")
    preview_path = None
    if not args.preview and not args.skip_preview_check:
        preview_path = reports.find_preview(args.report_dir, contacts.sha256, _target(args))
        if preview_path is None:
            raise UsageError(f"no complete preview of this CSV against {_target(args)} in {args.report_dir}/: run "
                             f"with --preview first and read it (or pass --skip-preview-check)")
    log.info("run %s (%s %s): %d merge sets and %d skipped groups in %s; log %s", run_id,
             "preview of" if args.preview else "merge of", "the sandbox" if args.sandbox else "DevRev",
             len(merge_sets), len(skipped), csv_path, log_path or "off")
    stop = threading.Event()
    with _client(args, stop) as client, graceful_stop(stop):
        options = MergeOptions(backup_dir=os.path.abspath(args.backup_dir), run_id=run_id,
                               keep_duplicate=args.keep_duplicate, allow_cross_org=args.allow_cross_org,
                               merge_timeout=args.merge_timeout)
        common = {"run_id": run_id, "tool_version": TOOL_VERSION, "started_at": iso_utc(),
                  "target": _target(args, client),
                  "csv": {"path": os.path.abspath(csv_path), "sha256": contacts.sha256, "rows": len(contacts.rows)},
                  "options": {k: v for k, v in vars(args).items() if k not in ("status",)},
                  "skipped": [{"email": g.email, "reason": g.reason, "detail": g.detail,
                               "rows": [r.as_dict() for r in g.rows]} for g in skipped]}
        if args.max_merges:
            merge_sets = merge_sets[: args.max_merges] if args.preview else merge_sets
        if args.preview:
            return _preview(args, client, merge_sets, options, common, stop, savepoint)
        return _merge(args, client, merge_sets, options, common, stop, savepoint, preview_path)


def _target(args, client=None) -> str:
    """Where the run goes: the sandbox, or DevRev's base URL (a preview must match it)."""
    if args.sandbox:
        return "sandbox"
    if client is not None:
        return client.base_url
    return (os.environ.get("DEVREV_BASE_URL") or facts.DEFAULT_BASE_URL).strip().rstrip("/")


@contextlib.contextmanager
def _client(args, stop: threading.Event):
    sandbox = None
    try:
        if args.sandbox:
            from devrev_sandbox import DEFAULT_TOKEN, DevRevSandbox
            if args.sandbox_reset and os.path.isdir(SANDBOX_DIR):
                shutil.rmtree(SANDBOX_DIR)
            from fileutil import make_private_dir
            make_private_dir(SANDBOX_DIR)
            sandbox = DevRevSandbox(DEMO_SEED, state_file=os.path.join(SANDBOX_DIR, "state.json"),
                                    merge_retire_after_gets=1).start()
            log.info("sandbox DevRev emulator on %s (state in %s/)", sandbox.base_url, SANDBOX_DIR)
            client = DevRevClient(DEFAULT_TOKEN, sandbox.base_url, calls_per_minute=args.rate_limit or 60000,
                                  stop_event=stop, pool_size=max(16, args.workers * 2))
        else:
            try:
                client = DevRevClient.from_env(calls_per_minute=args.rate_limit, stop_event=stop,
                                               pool_size=max(16, args.workers * 2))
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if sandbox is not None:
            sandbox.stop()


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        return contextlib.nullcontext(None)
    return tqdm(total=total, desc=desc, unit="set", file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def _run_sets(items, work, workers: int, stop: threading.Event, desc: str):
    """Run work(item) for each item on `workers` threads, yielding (item, result or exception)."""
    with _progress(len(items), desc) as bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="set") as pool:
        pending = {}
        queue = list(items)
        while queue or pending:
            while queue and len(pending) < workers and not stop.is_set():
                item = queue.pop(0)
                pending[pool.submit(work, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                if bar is not None:
                    bar.update(1)
                try:
                    result = future.result()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    result = exc
                yield item, result


def _preview(args, client, merge_sets, options, common, stop, savepoint) -> int:
    journal = Journal(savepoint, options.run_id) if os.path.exists(savepoint) else None
    records: dict[str, dict] = {}
    exit_code = EXIT_OK

    def work(ms: MergeSet):
        record = journal.set_record(set_key(ms)) if journal else None
        if record and is_finished(record["status"], args.keep_duplicate):
            return {"email": ms.email, "set_key": set_key(ms), "status": "already_" + record["status"],
                    "detail": f"finished in run {record['run_id']} (savepoint)"}
        return preview_set(client, ms, options)

    try:
        for ms, result in _run_sets(merge_sets, work, args.workers, stop, "preview"):
            if isinstance(result, RunInterrupted):
                exit_code = _worse(exit_code, EXIT_INTERRUPTED)
                continue
            if isinstance(result, AuthError):
                if exit_code != EXIT_USAGE:
                    log.error("%s", result)
                stop.set()
                exit_code = EXIT_USAGE
                continue
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                stop.set()
                raise result
            if isinstance(result, Exception):
                if not isinstance(result, DevRevError):
                    log.debug("unexpected error", exc_info=result)
                log.error("%s: preview failed: %s", ms.email, result)
                result = {"email": ms.email, "set_key": set_key(ms), "status": "failed", "error": str(result)}
                exit_code = _worse(exit_code, EXIT_FAILED)
            records[ms.key] = result
    finally:
        if journal:
            journal.close()
    if stop.is_set() and exit_code != EXIT_USAGE:
        exit_code = EXIT_INTERRUPTED
    ordered = [records[m.key] for m in merge_sets if m.key in records]
    preview = dict(common, kind="preview", created_at=iso_utc(), sets=ordered, complete=exit_code == EXIT_OK)
    preview["totals"] = _preview_totals(preview)
    if exit_code in (EXIT_USAGE, EXIT_INTERRUPTED):
        log.error("preview %s; no preview report written", "interrupted" if exit_code == EXIT_INTERRUPTED
                  else "stopped")
        return exit_code
    json_path, csv_path = reports.write_report(args.report_dir, f"preview_{options.run_id}", preview,
                                               reports.PREVIEW_COLUMNS, reports.preview_rows(preview))
    print(reports.format_preview(preview))
    print(f"\nPreview written to {json_path} and {csv_path}. Nothing was changed in DevRev.")
    return exit_code


def _preview_totals(preview: dict) -> dict:
    dups = [d for s in preview["sets"] for d in s.get("duplicates") or []]
    return {"merge_sets": sum(1 for s in preview["sets"] if s["status"].startswith("would")),
            "skipped": len(preview["skipped"]) + sum(1 for s in preview["sets"] if s["status"] == "skipped"),
            "failed": sum(1 for s in preview["sets"] if s["status"] == "failed"),
            "already_done": sum(1 for s in preview["sets"] if s["status"].startswith("already")),
            "tickets": sum(len(d["tickets"]) for d in dups),
            "conversations": sum(len(d["conversations"]) for d in dups),
            "messages": sum(d["messages"] for d in dups), "attachments": sum(d["attachments"] for d in dups),
            "attachment_bytes": sum(d["attachment_bytes"] for d in dups),
            "estimated_calls": sum(s.get("estimated_calls") or 0 for s in preview["sets"]),
            "estimated_backup_bytes": sum(s.get("estimated_backup_bytes") or 0 for s in preview["sets"])}


def _merge(args, client, merge_sets, options, common, stop, savepoint, preview_path) -> int:
    previews = {}
    if preview_path:
        with open(preview_path, encoding="utf-8") as fh:
            previews = {email_key(s["email"]): s for s in json.load(fh).get("sets", [])}
    try:
        journal = Journal(savepoint, options.run_id, exclusive=True)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    log.info("savepoint %s", os.path.abspath(savepoint))
    started = time.monotonic()
    merger = SetMerger(client, journal, options, previews)
    outcomes: dict[str, dict] = {}
    exit_code = EXIT_OK
    todo = merge_sets
    stopped_by = None  # "auth" or "abort" when the tool itself stopped the run
    finished = {m.key for m in merge_sets
                if is_finished((journal.set_record(set_key(m)) or {}).get("status"), args.keep_duplicate)}
    if args.max_merges:
        chosen = {m.key for m in [m for m in merge_sets if m.key not in finished][: args.max_merges]}
        # finished sets cost no call and keep their place in the report
        todo = [m for m in merge_sets if m.key in chosen or m.key in finished]
    if preview_path:
        # a preview made with --only or --max-merges does not show what the other sets would move
        unseen = [m.email for m in todo if m.key not in previews and m.key not in finished]
        if unseen:
            journal.close()
            raise UsageError(f"the preview {preview_path} does not cover {len(unseen)} merge set(s) of this run "
                             f"(e.g. {unseen[0]}; was it made with --only or --max-merges?): preview them first")
    try:
        for ms, result in _run_sets(todo, merger.merge, args.workers, stop, "merge"):
            if isinstance(result, RunInterrupted):
                if stopped_by is None:
                    exit_code = _worse(exit_code, EXIT_INTERRUPTED)
                    outcomes[ms.key] = _unfinished(ms, "interrupted", "stopped by Ctrl-C; re-run to resume")
                else:
                    outcomes[ms.key] = _unfinished(ms, "pending", "stopped with the run; re-run to resume")
                continue
            if isinstance(result, AuthError):
                outcomes[ms.key] = _unfinished(ms, "pending", str(result))
                if stopped_by != "auth":
                    log.error("%s; stopping the run (no further set is started)", result)
                stopped_by = "auth"
                stop.set()
                exit_code = EXIT_USAGE
                continue
            if isinstance(result, RunAborted):
                outcomes[ms.key] = _unfinished(ms, "failed", str(result))
                log.error("%s; stopping the run", result)
                stopped_by = stopped_by or "abort"
                stop.set()
                exit_code = _worse(exit_code, EXIT_FAILED)
                continue
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                stop.set()
                raise result
            if isinstance(result, Exception):
                log.debug("unexpected error", exc_info=result)
                result = {"email": ms.email, "set_key": set_key(ms), "status": "failed",
                          "error": f"unexpected error: {type(result).__name__}: {result}", "duplicates": []}
            outcomes[ms.key] = result
            if result["status"] == "failed":
                exit_code = _worse(exit_code, EXIT_FAILED)
            log.info("%s: %s%s", ms.email, result["status"],
                     f" ({result.get('reason') or result.get('error')})" if result["status"] in ("skipped", "failed")
                     else "")
    finally:
        problems = journal.check()
        journal.close()
    if stop.is_set() and stopped_by is None:
        exit_code = _worse(exit_code, EXIT_INTERRUPTED)
    sets = [outcomes.get(ms.key) or _unfinished(ms, "pending", "not processed in this run") for ms in merge_sets]
    report = dict(common, kind="merge_report", finished_at=iso_utc(),
                  preview=preview_path, sets=sets, interrupted=exit_code == EXIT_INTERRUPTED,
                  journal_problems=problems, exit_code=exit_code,
                  api={k: v for k, v in client.stats.items() if ":" not in k},
                  duration_s=round(time.monotonic() - started, 3))
    report["totals"] = _merge_totals(report)
    json_path, csv_path = reports.write_report(args.report_dir, f"merge_report_{options.run_id}", report,
                                               reports.MERGE_COLUMNS, reports.merge_rows(report))
    t = report["totals"]
    print(f"{t['merged']} merged, {t['moved_only']} moved only, {t['skipped']} skipped, {t['failed']} failed, "
          f"{t['pending']} not processed; {t['tickets_moved']} tickets and {t['conversations_moved']} conversations "
          f"moved. Report: {json_path} and {csv_path}")
    if exit_code == EXIT_INTERRUPTED:
        print("Interrupted: re-run the same command to resume where it stopped.", file=sys.stderr)
    return exit_code


def _unfinished(ms: MergeSet, status: str, note: str) -> dict:
    """The report line of a set this run did not finish (resumable from the savepoint)."""
    return {"email": ms.email, "set_key": set_key(ms), "status": status, "primary": ms.primary.rev_user_id,
            "duplicates": [], "error" if status == "failed" else "note": note}


def _worse(current: int, new: int) -> int:
    """The exit code that tells more: bad usage > interrupted > failed > ok."""
    rank = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_INTERRUPTED: 2, EXIT_USAGE: 3}
    return new if rank[new] > rank[current] else current


def _merge_totals(report: dict) -> dict:
    rows = reports.merge_rows(report)
    count = lambda status: sum(1 for s in report["sets"] if s["status"] == status)  # noqa: E731
    return {"sets": len(report["sets"]), "merged": count("merged"), "moved_only": count("moved_only"),
            "failed": count("failed"), "pending": count("pending") + count("interrupted"),
            "skipped": count("skipped") + len(report["skipped"]),
            "tickets_moved": sum(r["tickets_moved"] or 0 for r in rows if r.get("tickets_moved") is not None),
            "conversations_moved": sum(r["conversations_moved"] or 0 for r in rows
                                       if r.get("conversations_moved") is not None)}


def print_status(savepoint: str) -> int:
    if not os.path.exists(savepoint):
        print(f"No savepoint file at {savepoint}: no merge has run with it yet.")
        return EXIT_OK
    try:
        journal = Journal(savepoint, "status")
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sets = journal.all_sets()
        counts = journal.step_counts()
        problems = journal.check()
    finally:
        journal.close()
    by_status: dict[str, int] = {}
    for s in sets:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    print(f"Savepoint {savepoint}: {len(sets)} sets: " +
          ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())))
    rows = []
    for s in sets:
        c = counts.get(s["set_key"], {"done": 0, "intent": 0})
        rows.append([s["email"], s["status"], c["done"], c["intent"], s["updated_at"][:19],
                     s.get("reason") or s.get("error") or ""])
    print(reports.format_table(["email", "status", "steps done", "open intents", "updated (UTC)", "note"], rows))
    if problems:
        print("Journal problems: " + "; ".join(problems))
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
