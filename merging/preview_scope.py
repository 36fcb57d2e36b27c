"""Does a preview show everything a real run is about to do? One comparison, one answer.

A real run may only do what an admin has read in a preview: the same CSV bytes, the same
DevRev, and for every set the run will touch, a preview line that shows that outcome.
Narrower runs are fine (fewer sets, --keep-duplicate after a merging preview, no
--allow-cross-org after a preview with it): the run then does less than was shown. A plan the
admin names (--plan, runs.plan_file) is the one exception: the run must be exactly its (plan_difference).
This module is the whole rule, kept apart from the CLI so it can be tested alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from contacts.csv_reader import email_key
from operator_view import reports
from plumbing.cli import UsageError
from runs.approval import CheckedPlan
from runs.plan_file import age_refusal, rows_difference
from runs.preview_gate import newest_complete


@dataclass(frozen=True)
class Scope:
    """Every option that changes what a run does (recorded in each preview as "scope").

    csv_sha256: the CSV's bytes; target: "sandbox" or DevRev's base URL; only: the email
    key of --only (None: every group); max_merges: --max-merges (None: no cap).
    """
    csv_sha256: str
    target: str
    keep_duplicate: bool = False
    allow_cross_org: bool = False
    only: str | None = None
    max_merges: int | None = None
    merge_note: bool | None = True   # None: a preview older than the merge note
    retry_skipped: bool | None = False   # sets an earlier run's live checks skipped are tried again
    ask_refused_again: bool | None = False   # merges DevRev refused before are asked again
    fill_blanks: tuple[str, ...] | list[str] | None = ()   # --fill-blanks: the primary's fields filled
    # --max-calls / --until: how much one run takes (the job spread over several runs); a run with a
    # budget does no more than the preview showed, only less per run
    max_calls: int | None = None
    until: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def of_preview(cls, preview: dict) -> "Scope":
        """The scope a preview was made with (older previews: from their options)."""
        recorded = preview.get("scope")
        if isinstance(recorded, dict):
            return cls(**{k: recorded.get(k) for k in cls.__dataclass_fields__})
        options = preview.get("options") or {}
        return cls(csv_sha256=(preview.get("csv") or {}).get("sha256", ""), target=preview.get("target", ""),
                   keep_duplicate=bool(options.get("keep_duplicate")),
                   allow_cross_org=bool(options.get("allow_cross_org")),
                   only=email_key(options["only"]) if options.get("only") else None,
                   max_merges=options.get("max_merges"))


def scope_difference(preview: dict, run: Scope, todo: list[tuple[str, str]]) -> str | None:
    """None when `preview` shows everything the run would do, else one line naming the
    first difference. todo: (email key, email) of each set the run will start, in order.
    A set the preview showed as skipped is fine: the run skips it too, without a call
    (merging.engine.SetMerger), so it never merges a set the preview showed as skipped."""
    shown = Scope.of_preview(preview)
    if shown.csv_sha256 != run.csv_sha256:
        return "the preview was made from other CSV bytes"
    if run.merge_note and not run.keep_duplicate and shown.merge_note is False:
        return ("the preview was made with --no-merge-note; this run would leave a note on each primary: add "
                "--no-merge-note, or preview without it")
    more = sorted(set(run.fill_blanks or ()) - set(shown.fill_blanks or ()))
    if more:
        return (f"the preview was made without --fill-blanks {','.join(more)}; this run would fill those fields: "
                f"preview with the same --fill-blanks first")
    if shown.target != run.target:
        return f"the preview was made against {shown.target}, this run goes to {run.target}"
    if preview.get("complete") is not True:
        return "the preview is incomplete (interrupted, or a set failed in it)"
    if shown.keep_duplicate and not run.keep_duplicate:
        return ("the preview was made with --keep-duplicate (no duplicate retired); this run would retire "
                "them: add --keep-duplicate, or preview without it")
    sets = {email_key(s["email"]): s for s in preview.get("sets", [])}
    unseen = [email for key, email in todo if key not in sets]
    if unseen:
        how = ", ".join(part for part in (f"--only {shown.only}" if shown.only else "",
                                          f"--max-merges {shown.max_merges}" if shown.max_merges else "") if part)
        return (f"the preview does not cover {len(unseen)} merge set(s) of this run (e.g. {unseen[0]})"
                + (f"; it was made with {how}" if how else "") + ": preview them first")
    for key, email in todo:
        record = sets[key]
        status = record.get("status", "")
        if status.startswith("already_"):
            return (f"the preview showed {email} as finished by an earlier run, but the savepoint says it is "
                    f"not: preview again with this savepoint")
        if status == "merge_refused" and run.ask_refused_again:
            return (f"the preview showed {email}'s merge as refused earlier and not asked again (made without "
                    f"--ask-refused-merges-again); this run would ask again: preview with it first")
        if status == "skipped" and record.get("skipped_earlier") and run.retry_skipped:
            return (f"the preview showed {email} as skipped by an earlier run (made without --retry-skipped); "
                    f"this run would try it again: preview with --retry-skipped first")
        if status == "skipped" and record.get("reason") == "cross_workspace" and run.allow_cross_org \
                and not shown.allow_cross_org:
            return (f"the preview skipped {email} (cross_workspace, made without --allow-cross-org); with "
                    f"--allow-cross-org this run would merge it: preview with --allow-cross-org first")
    return None


def choose_preview(previews: list[tuple[str, dict]], run: Scope, todo: list[tuple[str, str]], *,
                   max_age_hours: float | None = None) -> tuple[str | None, dict | None, str | None]:
    """The newest complete preview (previews: (path, data), newest first), if it shows
    everything the run would do and is at most `max_age_hours` old: (path, data, None); else
    (None, None, its difference) (runs.preview_gate: only the newest counts)."""
    return newest_complete(previews, lambda data: scope_difference(data, run, todo), max_age_hours=max_age_hours)


# a scope's field -> the option that sets it, and its value as the plan's reader would say it
_OPTIONS = {"keep_duplicate": "--keep-duplicate", "allow_cross_org": "--allow-cross-org", "only": "--only",
            "max_merges": "--max-merges", "merge_note": "--no-merge-note", "retry_skipped": "--retry-skipped",
            "ask_refused_again": "--ask-refused-merges-again", "fill_blanks": "--fill-blanks",
            "max_calls": "--max-calls", "until": "--until"}


def _with(field: str, value: object) -> str:
    """How the command line said a normalised value: "with --only a@x", "without --keep-duplicate"."""
    option = _OPTIONS[field]
    if field == "merge_note":
        return f"with {option}" if value is False else f"without {option}"
    if isinstance(value, bool):
        return f"{'with' if value else 'without'} {option}"
    if value is None or value == ():
        return f"without {option}"
    return f"with {option} {','.join(map(str, value)) if isinstance(value, tuple) else value}"


def _normal(field: str, value: object) -> object:
    """A recorded value as the run's (None in an older preview: the default of its day)."""
    if field == "merge_note":
        return value is not False
    if field == "fill_blanks":
        return tuple(value) if isinstance(value, (list, tuple)) else ()
    if field in ("retry_skipped", "ask_refused_again", "keep_duplicate", "allow_cross_org"):
        return bool(value)
    return value


def plan_difference(plan: dict, run: Scope) -> str | None:
    """None when this run is exactly the plan's (the same CSV bytes, DevRev and every option that
    changes what a run does), else one line naming the first difference. A plan is not a
    narrower-is-fine preview: the approver signed these options, and the run takes no others."""
    shown = Scope.of_preview(plan)
    if shown.csv_sha256 != run.csv_sha256:
        return (f"the plan was made from other CSV bytes (sha256 {str(shown.csv_sha256)[:16]}…, this CSV "
                f"{run.csv_sha256[:16]}…)")
    if shown.target != run.target:
        return f"the plan was made against {shown.target}, this run goes to {run.target}"
    for field in _OPTIONS:
        planned, given = _normal(field, getattr(shown, field)), _normal(field, getattr(run, field))
        if planned != given:
            return (f"the plan was made {_with(field, planned)}, this run goes {_with(field, given)}: run with "
                    f"the plan's options")
    return None


def plan_previews(named: CheckedPlan, scope: Scope, *, rows: int | None = None) -> list[tuple[str, dict]]:
    """The named plan as the one preview this run may follow (no newer preview replaces it);
    UsageError when the run is not exactly the plan's (`rows`: the CSV's as the run read it), or
    the plan is older than the age it was made for (runs.plan_file.valid_hours: the fixed default
    when it records none, never the run's --preview-max-age). preview_showing then holds each set to it."""
    difference = plan_difference(named.plan.data, scope)
    if difference is None and rows is not None:
        difference = rows_difference(named.plan, rows)
    if difference is not None:
        raise UsageError(f"this run is not the plan {named.plan.path}: {difference}")
    too_old = age_refusal(named.plan)
    if too_old is not None:
        raise UsageError(too_old)
    return [(named.plan.path, named.plan.data)]


def candidate_previews(report_dir: str, scope: Scope) -> list[tuple[str, dict]]:
    """The previews in `report_dir` of these CSV bytes against this DevRev, newest first.
    Raises UsageError (one line, exit 2) when none of them is complete."""
    found = reports.load_previews(report_dir, scope.csv_sha256, scope.target)
    if not any(data.get("complete") is True for _, data in found):
        raise UsageError(f"no complete preview of this CSV against {scope.target} in {report_dir}/: run "
                         f"with --preview first and read it (or pass --skip-preview-check)")
    return found


def preview_showing(candidates: list[tuple[str, dict]] | None, scope: Scope, todo: list[tuple[str, str]], *,
                    max_age_hours: float | None = None) -> tuple[str | None, dict[str, dict]]:
    """The newest preview that shows everything the run would do (todo: (email key, email)
    of each set it will start), at most `max_age_hours` old, and that preview's sets by email
    key; (None, {}) when the run needs no preview (candidates None). Raises UsageError naming
    the difference."""
    if candidates is None:
        return None, {}
    path, preview, difference = choose_preview(candidates, scope, todo, max_age_hours=max_age_hours)
    if path is None:
        raise UsageError(f"this run would do what no preview showed: {difference}")
    return path, {email_key(s["email"]): s for s in preview.get("sets", [])}
