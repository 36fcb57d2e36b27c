"""`--json`: one JSON object on stdout that a script can read, the human text on stderr.

Every script of the suite takes `--json`. With it, everything the script would print for a
person goes to stderr, and when it ends (whatever the outcome: a usage error, a stopped run, a
finished one) exactly one JSON object goes to stdout: the envelope below, with the totals in
the screen's words and the paths of the reports written. The schema is documented in
docs/reports-and-logs.md and docs/summary.schema.json; `schema_version` changes only when a
key changes meaning or goes away (new keys may appear).

    {"schema": "devrev-contact-merge/summary", "schema_version": 1, "tool_version": "1.4.0",
     "script": "merge_contacts.py", "kind": "merge", "run_id": "20261205T...", "exit_code": 0,
     "exit_meaning": "...", "error": null, "totals": {...}, "reports": {"json": ..., ...},
     "details": {...}}

A run records what it knows with `record(...)` as it goes; `wrap` prints the object at the end.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from typing import Any, Callable, Mapping, Sequence

from plumbing.version import TOOL_VERSION

SCHEMA = "devrev-contact-merge/summary"
SCHEMA_VERSION = 1
KINDS = ("preview", "merge", "status", "check", "restore_preview", "restore", "find_duplicates", "sample",
         "verify_backups", "plan")

_lock = threading.Lock()
_current: dict[str, Any] = {}


def record(kind: str, *, run_id: str | None = None, totals: dict[str, Any] | None = None,
           reports: Mapping[str, str | None] | None = None, **details: Any) -> None:
    """What this run has to say in its summary (the last call wins, key by key). kind: one
    of KINDS; totals: the counts as the screen says them; reports: {"json", "csv", "html",
    ...: path}; details: anything else of the run's (kept under "details")."""
    if kind not in KINDS:
        raise ValueError(f"unknown summary kind {kind!r}")
    with _lock:
        _current["kind"] = kind
        if run_id is not None:
            _current["run_id"] = run_id
        if totals is not None:
            _current["totals"] = totals
        if reports is not None:
            _current["reports"] = {k: v for k, v in reports.items() if v}
        _current.setdefault("details", {}).update(details)


def note_error(message: str) -> None:
    """The one line a user error printed (plumbing.cli.error_line): the summary's "error"."""
    with _lock:
        _current.setdefault("error", message)


def summary(script: str, exit_code: int, default_kind: str, meaning: Mapping[int, str]) -> dict[str, Any]:
    """The envelope for what was recorded, ended with `exit_code` (meaning: cli.EXIT_MEANING)."""
    with _lock:
        got = dict(_current)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "tool_version": TOOL_VERSION, "script": script,
            "kind": got.get("kind", default_kind), "run_id": got.get("run_id"), "exit_code": int(exit_code),
            "exit_meaning": meaning.get(int(exit_code), ""), "error": got.get("error"),
            "totals": got.get("totals") or {}, "reports": got.get("reports") or {},
            "details": got.get("details") or {}}


def reset() -> None:
    """Forget what was recorded (each main starts afresh; tests run several in one process)."""
    with _lock:
        _current.clear()


def wants_json(argv: Sequence[str] | None) -> bool:
    """--json among the arguments (read before argparse, which runs inside the body)."""
    return "--json" in (sys.argv[1:] if argv is None else list(argv))


def wrap(run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, *, script: str,
         default_kind: str, meaning: Mapping[int, str]) -> int:
    """run(argv); with --json, what it prints goes to stderr and the summary to stdout."""
    reset()
    if not wants_json(argv):
        return run(argv)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        code = run(argv)
    try:
        print(json.dumps(summary(script, code, default_kind, meaning), sort_keys=True, default=str), file=out,
              flush=True)
    except BrokenPipeError:   # the reader went away: the code still says what happened
        pass
    return code
