"""A plan: a preview the admin names, read once, so the bytes approved are the bytes run.

A preview already records everything a run may do (its scope, every set and its objects, the
target, the CSV's sha256, who made it). A plan is that JSON under a name the admin chooses
(`--preview --plan-out PLAN.json`, or a preview report itself): a second person approves exactly
its bytes (runs.approval), and a run given `--plan PLAN.json` follows that plan and no other
preview. The file is read once: what is summarised, verified and followed is one `bytes`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from contacts.csv_reader import email_key
from plumbing.cli import UsageError, describe_os_error, neutralise
from plumbing.clock import instant, utc_now
from plumbing.files import atomic_write_bytes, open_regular

log = logging.getLogger(__name__)

# a plan's "kind" (the preview's) -> the script that runs it
PLAN_KINDS = {"preview": "merge_contacts.py", "restore_preview": "restore_contacts.py"}
MAX_PLAN_BYTES = 1 << 30   # a preview of a million sets is far below; a larger file is not a plan
MAX_VALID_HOURS = 24 * 365  # the bounds of --preview-max-age
LONG_VALIDITY_HOURS = 72    # a plan valid for longer is flagged on its own line in the summary
# every status a preview of this tool writes for a set (merging.engine.preview_set, merging.run._preview,
# merging.plan: finished / skipped earlier / refused earlier; restoring.engine; runs.over_sets for a stopped
# preview): a plan with any other is not one this tool wrote, and a run could read it as something to do
MERGE_PREVIEW_STATUSES = frozenset({"would_merge", "would_move", "skipped", "already_merged", "already_moved_only",
                                    "restored", "merge_refused", "failed", "interrupted", "pending"})
RESTORE_PREVIEW_STATUSES = frozenset({"would_restore", "already_restored", "failed", "interrupted", "pending"})


@dataclass(frozen=True)
class Plan:
    """One plan file as read: its path, its exact bytes and their JSON."""
    path: str
    raw: bytes
    data: dict[str, Any]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def kind(self) -> str:
        return str(self.data.get("kind"))

    @property
    def author(self) -> str | None:
        """The email of the DevRev user whose token made the preview (its actor block); None
        when the preview could not ask (dev-users.self failed) or is older than the block."""
        email = _obj(_obj(self.data, "actor"), "devrev_user").get("email")
        return email if isinstance(email, str) and email.strip() else None


def _obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    """data[key] when it is a JSON object, else {} (a plan is read, never trusted to be well formed)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def signature_path(plan_path: str) -> str:
    """Where a plan's signature lives: beside it, `<plan>.sig` (ssh-keygen -Y sign's own default)."""
    return plan_path + ".sig"


def load_plan(path: str, kind: str | None = None) -> Plan:
    """The plan at `path` (a regular file holding a preview's JSON object); `kind`: the one a
    run takes ("preview" for the merge, "restore_preview" for the restore), None for either.
    UsageError, one line, for anything else."""
    try:
        with open_regular(path) as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"the plan {path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise UsageError(f"the plan {path}: larger than any preview; not a plan")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UsageError(f"the plan {path}: not a preview's JSON (it does not parse)") from None
    if not isinstance(data, dict) or data.get("kind") not in PLAN_KINDS:
        raise UsageError(f"the plan {path}: not a preview (write one with --preview --plan-out FILE)")
    if kind is not None and data["kind"] != kind:
        raise UsageError(f"the plan {path}: a plan for {PLAN_KINDS[data['kind']]}, not for {PLAN_KINDS[kind]}")
    malformed = sets_problem(data)
    if malformed is not None:
        raise UsageError(f"the plan {path}: {malformed}: not a preview this tool wrote")
    disagreement = summary_disagreement(data)
    if disagreement is not None:
        raise UsageError(f"the plan {path}: the plan's summary disagrees with its sets ({disagreement}): not a "
                         f"preview this tool wrote")
    return Plan(os.path.abspath(path), raw, data)


def sets_problem(data: dict[str, Any]) -> str | None:
    """None when every entry of the plan's `sets` is a JSON object whose status is one this tool's
    preview writes (MERGE_PREVIEW_STATUSES / RESTORE_PREVIEW_STATUSES); else the first that is
    not, in a few words. A status the tool never writes is one no count and no check of the run
    reads the same way (e.g. a would_merge set relabelled merge_refused is still merged)."""
    sets = data.get("sets")
    if sets is None:
        return None
    if not isinstance(sets, list):
        return "its sets are not a list"
    known = RESTORE_PREVIEW_STATUSES if data.get("kind") == "restore_preview" else MERGE_PREVIEW_STATUSES
    for at, record in enumerate(sets):
        if not isinstance(record, dict):
            return f"set {at + 1} is not an object ({neutralise(json.dumps(record))[:40]})"
        if record.get("status") not in known:
            said = neutralise(str(record.get("status")))[:40]
            return f"set {at + 1} has the status {said!r}, which no preview writes"
    return None


def held_back(record: dict[str, Any], *, ask_refused_again: bool) -> bool:
    """Does a merge run never start this set of its plan, whatever its savepoint says? The run's
    own rule: a set shown skipped is skipped without a call (merging.engine.SetMerger
    ._skip_as_previewed); a set shown already_* in the run's todo, or merge_refused when the run
    asks refused merges again, refuses the whole run (merging.preview_scope.scope_difference).
    Every other status (would_*, merge_refused, restored, failed, ...) may be started: what the
    savepoint holds, not the plan, decides those."""
    status = _status(record)
    return status == "skipped" or status.startswith("already_") or (status == "merge_refused" and ask_refused_again)


def may_start(data: dict[str, Any]) -> int:
    """How many of a merge plan's sets its run may start (held_back: every other)."""
    sets = data.get("sets")
    ask_again = bool(checked_scope(data).get("ask_refused_again"))
    return len([s for s in (sets if isinstance(sets, list) else []) if isinstance(s, dict)
                and not held_back(s, ask_refused_again=ask_again)])


def checked_scope(data: dict[str, Any]) -> dict[str, Any]:
    """The scope a run holds a merge plan to (merging.preview_scope.Scope.of_preview's fields):
    its "scope", else (an older preview) its CSV sha256, target and options."""
    scope = data.get("scope")
    if isinstance(scope, dict):
        return scope
    options = _obj(data, "options")
    return {"csv_sha256": _obj(data, "csv").get("sha256", ""), "target": data.get("target", ""),
            **{k: options.get(k) for k in ("keep_duplicate", "allow_cross_org", "only", "max_merges")}}


_MERGE_COUNTS = ("merge_sets", "would_merge", "skipped", "already_done", "failed")
_MERGE_ITEMS = ("tickets", "conversations", "messages", "attachments")
_RESTORE_COUNTS = ("sets", "would_restore", "already_restored", "failed")
_RESTORE_ITEMS = ("contacts_to_recreate", "items_to_give_back")


def _status(s: dict[str, Any]) -> str:
    return str(s.get("status") or "")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> int | float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _distinct(dups: list[dict[str, Any]], ids: str, names: str) -> int:
    found: set[str] = set()
    for d in dups:
        items = d.get(ids) or d.get(names) or []
        found |= {str(i) for i in items} if isinstance(items, list) else set()
    return len(found)


def counted_totals(data: dict[str, Any]) -> dict[str, int | float]:
    """The counts a plan's summary shows, from its sets (what the run is held to), not from its
    `totals` (which nothing the run does depends on): operator_view.reports.preview_totals and
    restore_reports.preview_totals count them the same way."""
    sets = [s for s in data.get("sets") or [] if isinstance(s, dict)] if isinstance(data.get("sets"), list) else []
    if data.get("kind") == "restore_preview":
        restoring = [s for s in sets if _status(s) == "would_restore"]
        # what the run is held to is each set's `writes` (restoring.preview_writes.PreviewWrites):
        # the counts come from them, not from the recreate / items fields nothing enforces
        writes = [w for s in restoring for w in _list(s.get("writes"))]
        kinds = [str(w.get("write")) if isinstance(w, dict) else "" for w in writes]
        return {"sets": len(sets), "would_restore": len(restoring),
                "already_restored": sum(1 for s in sets if _status(s) == "already_restored"),
                "failed": sum(1 for s in sets if _status(s) == "failed"),
                "contacts_to_recreate": kinds.count("recreate"),
                "items_to_give_back": kinds.count("item_back"),
                "writes": len(writes)}
    dups = [d for s in sets for d in s.get("duplicates") or [] if isinstance(d, dict)]
    return {"merge_sets": len(sets), "would_merge": sum(1 for s in sets if _status(s).startswith("would")),
            "skipped": sum(1 for s in sets if _status(s) == "skipped"),
            "already_done": sum(1 for s in sets if _status(s).startswith("already")),
            "failed": sum(1 for s in sets if _status(s) == "failed"),
            "tickets": _distinct(dups, "ticket_ids", "tickets"),
            "conversations": _distinct(dups, "conversation_ids", "conversations"),
            "messages": sum(_number(d.get("messages")) for d in dups),
            "attachments": sum(_number(d.get("attachments")) for d in dups),
            "estimated_calls": sum(_number(s.get("estimated_calls")) for s in sets)}


def summary_disagreement(data: dict[str, Any]) -> str | None:
    """None when what a plan says of itself (its `totals`, its top-level `target` and
    `csv.sha256`) is what its sets and scope say; else the first difference, in a few words. A
    preview this tool wrote always agrees; an edited one may show an approver one thing and run
    another."""
    try:
        counted = counted_totals(data)
    except (TypeError, AttributeError, ValueError):
        return "its sets cannot be read"
    totals = data.get("totals")
    if totals is not None and not isinstance(totals, dict):
        return "its totals are not an object"
    for key, value in counted.items():
        if isinstance(totals, dict) and key in totals and totals[key] != value:
            return f"totals.{key} {neutralise(str(totals[key]))[:40]}, its sets {value}"
    if data.get("kind") == "preview" and isinstance(data.get("scope"), dict):
        scope = data["scope"]
        if "target" in data and data.get("target") != scope.get("target"):
            said, checked = (neutralise(str(v))[:80] for v in (data.get("target"), scope.get("target")))
            return f"target {said}, its scope {checked}"
        csv_sha = _obj(data, "csv").get("sha256")
        if csv_sha is not None and csv_sha != scope.get("csv_sha256"):
            return "csv.sha256 is not its scope's csv_sha256"
    return None


def rows_difference(plan: Plan, rows: int) -> str | None:
    """A merge plan's csv.rows against the CSV the run read (None: the same, or not recorded)."""
    planned = _obj(plan.data, "csv").get("rows")
    if planned is None or planned == rows:
        return None
    return (f"the plan says its CSV has {neutralise(str(planned))[:20]} rows, this CSV has {rows}: not the CSV "
            f"approved")


def write_plan(report_json: str, plan_out: str) -> str:
    """Copy the preview just written (`report_json`) to `plan_out`, byte for byte and atomically;
    a signature left beside `plan_out` by an earlier plan is removed (it signed other bytes).
    Returns the one line that says where the plan is and how to approve it."""
    try:
        with open(report_json, "rb") as fh:
            raw = fh.read()
        atomic_write_bytes(plan_out, raw)
    except OSError as exc:
        raise UsageError(f"--plan-out {plan_out}: cannot be written ({describe_os_error(exc)}); the preview "
                         f"itself is {report_json} (--plan takes it too)") from None
    stale = signature_path(plan_out)
    if os.path.lexists(stale):
        with contextlib.suppress(OSError):
            os.unlink(stale)
            log.info("removed %s: it signed an earlier plan", stale)
    return (f"Plan written: {plan_out} (sha256 {hashlib.sha256(raw).hexdigest()[:16]}…); a second person "
            f"approves it with approve_plan.py {plan_out} --key KEY --identity EMAIL, then run with --plan "
            f"{plan_out}")


def valid_hours(plan: Plan) -> float:
    """How long the plan unlocks runs, in hours from its preview: the --preview-max-age the preview
    was made with (recorded in its options, so the approver signs it: one plan covers a job of
    several nights), else the fixed DEFAULT_MAX_AGE_HOURS the summary shows. Never the run's own
    --preview-max-age: a plan without a valid value (removed, out of bounds, NaN, a string) must
    not take whatever the runner passes. A value outside the option's bounds is not a plan's."""
    from runs.preview_gate import DEFAULT_MAX_AGE_HOURS
    hours = _obj(plan.data, "options").get("preview_max_age")
    if isinstance(hours, (int, float)) and not isinstance(hours, bool) and 0.01 <= hours <= MAX_VALID_HOURS:
        return float(hours)
    return DEFAULT_MAX_AGE_HOURS


def _valid_until(data: dict[str, Any], hours: Any) -> str:
    try:
        until = instant(data.get("created_at")) + timedelta(hours=float(hours))
    except (TypeError, ValueError):
        return "unknown"
    recorded = _obj(data, "options").get("preview_max_age")
    said = "the preview's --preview-max-age" if recorded == hours else \
        "the fixed default: the plan records no valid --preview-max-age"
    return f"{until.isoformat(timespec='minutes')} ({float(hours):g} hours: {said})"


def _age(created_at: Any) -> str:
    hours = (utc_now() - instant(created_at)).total_seconds() / 3600
    if hours < 0:
        return "dated in the future"
    return f"{hours * 60:.0f} minutes old" if hours < 1 else f"{hours:.1f} hours old"


def _author_line(data: dict[str, Any]) -> str:
    actor = _obj(data, "actor")
    who = _obj(actor, "devrev_user")
    person = " ".join(str(p) for p in (who.get("email"), f"({who['display_id']})" if who.get("display_id") else None)
                      if p) or "unknown (its preview could not ask DevRev who ran it)"
    where = "@".join(str(p) for p in (actor.get("os_user"), actor.get("host")) if p)
    return person + (f", as {where}" if where else "")


def _counts(totals: dict[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{totals[k]} {k.replace('_', ' ')}" for k in keys if isinstance(totals.get(k), int)) or "none"


def summary_lines(plan: Plan) -> list[str]:
    """What an approver reads before signing: the kind, target, author, input, sets, items and
    calls, each from the fields the run checks (the scope, the sets; never the plan's `totals`
    or the CSV's path, which nothing holds a run to), control characters escaped."""
    data, totals = plan.data, counted_totals(plan.data)
    scope = checked_scope(data) if plan.kind == "preview" else {}
    target = scope.get("target") if plan.kind == "preview" else data.get("target")
    lines = [f"plan      {plan.path}", f"sha256    {plan.sha256}",
             f"kind      {data.get('kind')} (run by {PLAN_KINDS.get(plan.kind, '?')} --plan)",
             f"made      {data.get('created_at')} ({_age(data.get('created_at'))}), run {data.get('run_id')}",
             f"valid to  {_valid_until(data, valid_hours(plan))}",
             f"author    {_author_line(data)}", f"target    {target}",
             f"complete  {'yes' if data.get('complete') is True else 'NO: it can never unlock a run'}"]
    if valid_hours(plan) > LONG_VALIDITY_HOURS:
        lines.insert(5, f"LONG      valid for {valid_hours(plan) / 24:g} days: longer than {LONG_VALIDITY_HOURS // 24} "
                        f"days — make sure you mean it")
    if plan.kind == "preview":
        csv = _obj(data, "csv")
        lines += [f"CSV sha256 {scope.get('csv_sha256')} ({csv.get('rows')} rows; checked by the run)",
                  f"CSV path  {csv.get('path')} (informational: where the preview read it; not checked)",
                  "options   " + (", ".join(f"{k}={v}" for k, v in sorted(scope.items())
                                           if k not in ("csv_sha256", "target") and v not in (None, False, [], ())
                                           and (k, v) != ("merge_note", True))
                                  or "defaults"),
                  f"sets      {totals['merge_sets']} merge sets: the run may start {may_start(data)} (every set not "
                  f"shown skipped or already done"
                  + (", nor merge_refused" if scope.get("ask_refused_again") else "") + "); "
                  + _counts(totals, _MERGE_COUNTS[2:]),
                  f"items     {_counts(totals, _MERGE_ITEMS)}, as the preview read them; a run moves what the "
                  f"duplicates own when it runs",
                  f"calls     about {totals['estimated_calls']} API calls for the sets themselves, as the preview "
                  f"read them"
                  + (f" (the preview's whole-job estimate, with the runs' preflight and canary: about {job})"
                     if isinstance(job := _obj(data, "estimate").get("calls"), int) else "")]
    else:
        options = _obj(data, "options")
        lines += [f"backups   {data.get('backup_dir')} (informational: the sets' backup fingerprints are checked)",
                  "options   " + (", ".join(f"{k}={v}" for k, v in sorted(options.items())
                                           if k in ("only", "no_restore_note") and v not in (None, False))
                                  or "defaults"),
                  f"sets      {_counts(totals, _RESTORE_COUNTS)}",
                  f"items     {_counts(totals, _RESTORE_ITEMS)} (from the writes listed: the run makes no other)",
                  f"calls     {totals['writes']} writes listed"]
    return [_escaped(neutralise(line, keep="").replace("\n", "\\n").replace("\t", "\\t")) for line in lines]


def _escaped(line: str) -> str:
    """`line` with every format character (Unicode category Cf: zero-width spaces and joiners,
    bidi marks, soft hyphens...) shown as its escape, so what the approver reads is what is there."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in line)


def _with(option: str, value: object) -> str:
    return (f"with {option} {value}" if value is not True else f"with {option}") if value else f"without {option}"


def options_difference(plan: dict[str, Any], *, only: str | None, no_restore_note: bool) -> str | None:
    """A restore plan's options against the run's (--only, --no-restore-note): the first that
    differs, in one line, or None. The approver signed these; the run takes no others."""
    options = _obj(plan, "options")
    planned_only = options.get("only") if isinstance(options.get("only"), str) else None
    pairs = [("--only", planned_only, only, (email_key(planned_only) if planned_only else None) !=
              (email_key(only) if only else None)),
             ("--no-restore-note", bool(options.get("no_restore_note")), no_restore_note,
              bool(options.get("no_restore_note")) != no_restore_note)]
    for option, planned, given, differs in pairs:
        if differs:
            return (f"the plan was made {_with(option, planned)}, this run goes {_with(option, given)}: run with "
                    f"the plan's options")
    return None


def age_refusal(plan: Plan) -> str | None:
    """Why the plan is too old (or dated in the future) to unlock a run, in one line; None when it
    is not. Its limit is its own (valid_hours): a run cannot raise it, so the way on is a new
    preview and a new approval."""
    from runs.preview_gate import too_old
    hours = valid_hours(plan)
    why = too_old(plan.data, hours)
    if why is None:
        return None
    why = why.split(" a preview unlocks a run for (--preview-max-age)")[0].split(": preview again")[0]
    return (f"the plan {plan.path}: {why} it was made and approved for (the preview's --preview-max-age; a run's "
            f"own does not change it): preview again, approve again")
