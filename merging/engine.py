"""One merge set, end to end: live checks, preview, and the journaled real merge.

For each duplicate of a set, in rounds: back up what it owns and verify the backup,
move each ticket (`reported_by`) and conversation (`members`) to the primary after a
fresh read, then verify that the duplicate owns nothing and that every moved item
lists the primary. Items that appear under the duplicate meanwhile start another
round with their own backup. Then `rev-users.merge`, a poll until the duplicate is
retired, and finally the primary takes the newest duplicate's `user_...` reference.
Every write is journaled (intent before, done after), so a re-run resumes exactly.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from backup import (
    BackupError,
    BackupFolderError,
    Move,
    collect,
    custom_field_refs,
    display_of,
    estimate_size,
    ids_of,
    load_custom_field_moves,
    load_moves,
    manifest_sha256_of,
    remove_partials,
    tickets_naming,
    write_backup,
)
from backup_checks.damaged import accept_path, aside_note, refusal, set_aside, writes_sent
from backup_checks.verification import verify_backup
from contacts.csv_reader import DUPLICATE_PREFIX, MergeSet
from devrev_api import assumptions as facts
from devrev_api.errors import (
    BadRequestError,
    ConflictError,
    DevRevError,
    NotFoundError,
    PermissionDeniedError,
    ResponseError,
    RunWideFault,
    ServerError,
    TransportError,
)
from devrev_client import DevRevClient
from merging.call_estimates import estimate_calls, set_overhead_calls
from merging.custom_field_moves import CustomFieldRefused, move_custom_fields
from merging.field_fill import FillPlan, applied, differences, plan_fill, update_body
from merging.live_checks import (
    SetSkipped,
    frozen_items,
    is_retired,
    other_works,
    primary_change,
    recreated_duplicates,
    resolve_contacts,
)
from merging.merge_jobs import merge_job_of
from merging.plan import blank_line, finished_outcome, set_key
from merging.preflight import CustomFieldsFilter
from merging.preview_estimate import contact_page_and_field_refs, sampled_duplicate
from merging.set_numbers import journal_numbers
from operator_view.summary import plural
from plumbing.cli import log_subject
from plumbing.clock import instant, iso_utc, utc_now
from plumbing.fanout import Fanout, fan_map, slot_of
from runs.journal import Journal, is_finished, parse_step, step_name
from runs.notes import NoteResult, merge_note_text, note_ref, write_note
from runs.outcomes import SetOutcome, SetStatus
from runs.over_sets import is_temporary

log = logging.getLogger(__name__)


class SetFailed(Exception):
    """This set cannot go on now; the journal keeps where it stopped. retry_later: DevRev is
    still working on it (a merge job in progress), so a later run finishes it."""

    def __init__(self, message: str, *, retry_later: bool = False, reason: str | None = None):
        super().__init__(message)
        self.retry_later = retry_later
        self.reason = reason or ("merge_pending" if retry_later else None)   # a code for scripts


class RunAborted(Exception):
    """Stop the whole run: a backup just written that does not verify (the disk may be failing),
    or a backup folder that cannot be written."""


@dataclass
class MergeOptions:
    backup_dir: str
    run_id: str
    keep_duplicate: bool = False
    allow_cross_org: bool = False
    merge_timeout: float = 120.0
    preview_full: bool = False     # --preview --full: read every timeline entry, not a sample
    fanout: Fanout | None = None   # --workers slots, shared by sets and the parallel calls inside one
    poll_start: float = 0.2
    poll_cap: float = 4.0
    max_rounds: int = 3
    merge_note: bool = True        # leave a note on each merged primary's timeline (--no-merge-note: not)
    ask_refused_again: bool = False   # --ask-refused-merges-again: one more request where DevRev refused before
    target: str | None = None      # the DevRev backed up from, in each backup (runs.support.backup_target)
    fill_blanks: tuple[str, ...] = ()   # --fill-blanks: the primary's blank fields filled (merging.field_fill)
    # whether works.list takes the custom_fields filter: probed once per run (preflight.CustomFieldsFilter)
    custom_fields_filter: CustomFieldsFilter = field(default_factory=CustomFieldsFilter)


def swap_user(ids: list[str], old: str, new: str) -> list[str]:
    """Replace `old` by `new`, keeping order and dropping repeats."""
    return list(dict.fromkeys(new if i == old else i for i in ids))


def preview_set(client: DevRevClient, ms: MergeSet, options: MergeOptions) -> dict:
    """What a real run would do to this set, read live; changes nothing. Every line logged
    meanwhile names the set's email. Holds one --workers slot."""
    with log_subject(ms.email), slot_of(options.fanout):
        return _preview_set(client, ms, options)


def _preview_set(client: DevRevClient, ms: MergeSet, options: MergeOptions) -> dict:
    record: dict[str, Any] = {"email": ms.email, "set_key": set_key(ms), "primary": ms.primary.rev_user_id,
                              "csv_rows": [r.as_dict() for r in ms.rows]}
    if ms.earlier_primary is not None:
        record["primary_from"] = ms.earlier_primary.note
    try:
        primary, duplicates = resolve_contacts(client, ms, allow_cross_org=options.allow_cross_org)
    except SetSkipped as exc:
        record.update(status="skipped", reason=exc.reason, detail=exc.detail)
        return record
    record["primary"] = {"id": primary["id"], "display_id": primary.get("display_id"),
                         "external_ref": primary.get("external_ref")}
    record["field_differences"] = differences(primary, duplicates)
    fill = plan_fill(primary, duplicates, options.fill_blanks) if options.fill_blanks else None
    if fill is not None:
        record["fills"] = fill.filled   # what --fill-blanks writes to the primary (a run writes no more)
    record["duplicates"] = []
    merging = not options.keep_duplicate
    keeps_refs = isinstance(primary.get(facts.CONTACT_REFS_FIELD), list)
    calls = set_overhead_calls(len(duplicates), merge=merging, keeps_refs=keeps_refs) + \
        (1 if merging and options.merge_note else 0) + (2 if fill else 0)   # the merge note; a read and the fill
    record["merge_note"] = merging and options.merge_note
    size = 0
    filter_accepted = bool(duplicates) and options.custom_fields_filter.ask(client, duplicates[0]["id"])
    record["custom_fields_filter"] = filter_accepted
    for dup in duplicates:
        ident = {"id": dup["id"], "display_id": dup.get("display_id"), "external_ref": dup.get("external_ref"),
                 "modified_date": dup.get("modified_date")}
        if not options.preview_full:
            fields, dup_calls, dup_size = sampled_duplicate(client, dup["id"], merge=merging, pool=options.fanout)
        else:
            fields, dup_calls, dup_size = _read_whole(client, dup, merging, options)
        extra, extra_calls, extra_size = contact_page_and_field_refs(
            client, dup, fields["custom_field_refs"], filter_accepted=filter_accepted, page_limit=client.page_limit)
        calls, size = calls + dup_calls + extra_calls, size + dup_size + extra_size
        record["duplicates"].append({**ident, **fields, **extra})
    record.update(status="would_merge" if not options.keep_duplicate else "would_move",
                  estimated_calls=calls, estimated_backup_bytes=size,
                  **({"new_external_ref": None} if options.keep_duplicate else reference_plan(primary, duplicates)))
    blocking = [f"{d['display_id']} reports {', '.join(d['other_works'])}" for d in record["duplicates"]
                if d.get("other_works")]
    if blocking:   # the merge would stop at them after moving the rest: skip the set whole instead
        record.update(status="skipped", reason="other_work_items",
                      detail="; ".join(blocking) + " (work items that are not tickets, which the tool does not "
                      "move): move them to the primary by hand, then preview again")
    return record


def _read_whole(client: DevRevClient, dup: dict, merging: bool, options: MergeOptions) -> tuple[dict, int, int]:
    """--preview --full: every timeline entry of every object read; (fields, calls, bytes)."""
    snap = collect(client, dup["id"], options.fanout)
    fields = {
        "tickets": [display_of(t) for t in snap.tickets], "ticket_ids": [t["id"] for t in snap.tickets],
        "conversations": [display_of(c) for c in snap.conversations],
        "conversation_ids": [c["id"] for c in snap.conversations],
        "messages": snap.message_count, "timeline_entries": sum(len(e) for e in snap.entries.values()),
        "attachments": len(snap.attachments), "attachment_bytes": snap.attachment_bytes, "estimated": False,
        "custom_field_refs": [r["object"] for r in custom_field_refs(snap.objects, dup["id"])],
        "other_works": other_works(list(client.list_reported_works(dup["id"]))),
        "frozen": frozen_items(snap.objects)}
    return fields, estimate_calls(snap, client.page_limit, merge=merging), estimate_size(snap)


def _newest(duplicates: list[dict]) -> dict:
    """The duplicate modified most recently: the primary takes its `user_` reference."""
    return max(duplicates, key=lambda d: instant(d.get("modified_date")))


def _newest_first(duplicates: list[dict]) -> list[dict]:
    return sorted(duplicates, key=lambda d: instant(d.get("modified_date")), reverse=True)


def reference_plan(primary: dict, duplicates: list[dict]) -> dict:
    """What a merge does with the duplicates' `user_...` references, as a preview says it:
    {"new_external_ref": the newest's (the primary's external_ref), and either
    "external_refs_kept": the primary's whole list (where DevRev keeps `external_refs`), or
    "refs_without_contact": the other duplicates' references, which no contact will hold}."""
    newest = _newest(duplicates).get("external_ref")
    others = [d.get("external_ref") for d in _newest_first(duplicates) if d.get("external_ref") != newest]
    taken_before = primary.get("external_ref")
    if taken_before and taken_before.startswith(DUPLICATE_PREFIX) and taken_before != newest \
            and taken_before not in others:
        others.append(taken_before)   # a primary an earlier merge gave a user_ reference gives it up now
    current = primary.get(facts.CONTACT_REFS_FIELD)
    if isinstance(current, list):   # the newest becomes the external_ref; the primary keeps its own too
        own = [primary["external_ref"]] if primary.get("external_ref") else []
        kept = list(dict.fromkeys([newest, *others, *own, *current]))
        return {"new_external_ref": newest, "external_refs_kept": kept}
    return {"new_external_ref": newest, "refs_without_contact": others}


# --------------------------------------------------------------------------- the real run
class SetMerger:
    """Runs (or resumes) the merge of one set against DevRev, journaling every step."""

    def __init__(self, client: DevRevClient, journal: Journal, options: MergeOptions,
                 previews: dict[str, dict] | None = None, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.journal = journal
        self.options = options
        self.previews = previews or {}
        self.clock = clock
        # Two sets can share a ticket (both duplicates reported it). Workers take the item's
        # lock from read to write, and re-read an item another worker wrote since they listed it.
        self._locks_guard = threading.Lock()
        self._item_locks: dict[str, threading.Lock] = {}
        self._written_at: dict[str, float] = {}
        self.merge_denied: str | None = None   # why rev-users.merge is refused (403), once it was
        self._filter_held_back = False         # said once: the preview could not use the custom_fields filter

    def _item_lock(self, item_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._item_locks.setdefault(item_id, threading.Lock())

    def merge(self, ms: MergeSet) -> SetOutcome:
        """Merge (or resume) one set; returns its report line. Every line logged meanwhile,
        by any module, names the set's email (cli.log_subject). Holds one --workers slot."""
        with log_subject(ms.email), slot_of(self.options.fanout):
            return self._merge_set(ms)

    def _merge_set(self, ms: MergeSet) -> SetOutcome:
        key = set_key(ms)
        started = self.clock()
        record = self.journal.set_record(key)
        if record and is_finished(record["status"], self.options.keep_duplicate):
            return finished_outcome(ms, record, self.journal.steps(key))
        outcome = blank_line(ms)
        ctx = record["context"] if record and record.get("context") else None
        outcome.resumed = ctx is not None
        try:
            if ctx is None and self._skip_as_previewed(key, ms, outcome):
                return outcome
            if ctx is None:
                ctx = self._start(key, ms)
                self._check_fills_as_previewed(ms, ctx)   # before the set's first write
            else:
                self._check_primary_still_active(ctx)
                self._check_not_recreated(key, ctx)
                if not self.journal.is_done(key, step_name("fill_blanks")):
                    self._check_fills_as_previewed(ms, ctx)   # a re-run too: never fills what no preview showed
            outcome.primary = ctx["primary"]["display_id"]
            for dup in ctx["duplicates"]:
                self._merge_duplicate(key, ms, ctx, dup)
            self._finish(key, ms, ctx, outcome)
        except SetSkipped as exc:
            self.journal.set_status(key, ms.email, "skipped", reason=exc.reason, error=exc.detail)
            outcome.status, outcome.reason, outcome.error = SetStatus.SKIPPED, exc.reason, exc.detail
        except BackupFolderError as exc:
            # the backup folder itself cannot be written: every set would fail alike
            raise RunAborted(f"{exc}; nothing was changed for {ms.email}: fix the folder and re-run to "
                             f"resume") from None
        except (SetFailed, BackupError, DevRevError) as exc:
            if _stops_the_run(exc):
                raise  # the run stops; the set stays resumable from its journal
            reason = exc.reason if isinstance(exc, SetFailed) else None
            self.journal.set_status(key, ms.email, "failed", reason=reason, error=str(exc))
            outcome.status, outcome.error, outcome.reason = SetStatus.FAILED, str(exc), reason
            if isinstance(exc, SetFailed) and exc.retry_later or is_temporary(exc):
                outcome.retry_later = True   # a later run may finish it alone (exit 75)
            log.error("failed: %s", exc)
        finally:
            outcome.duration_s = round(self.clock() - started, 3)
            if ctx is not None:
                with contextlib.suppress(Exception):  # the journal may be what failed
                    steps = self.journal.steps(key)
                    outcome = replace(outcome, **journal_numbers(steps, ctx["duplicates"], self.journal.run_id))
                    outcome.fields_filled = ((steps.get(step_name("fill_blanks")) or {}).get("data") or {}
                                             ).get("filled") or None
        return outcome

    def _skip_as_previewed(self, key: str, ms: MergeSet, outcome: SetOutcome) -> bool:
        """Never merge a set the preview showed as skipped, even if it would pass now: True
        (and the set recorded skipped) when the preview skipped it."""
        shown = self.previews.get(ms.key) or {}
        if shown.get("status") != "skipped":
            return False
        detail = f"skipped as in the preview: {shown.get('detail')}"
        self.journal.set_status(key, ms.email, "skipped", reason=shown.get("reason"), error=detail)
        outcome.status, outcome.reason, outcome.error = SetStatus.SKIPPED, shown.get("reason"), detail
        return True

    def _start(self, key: str, ms: MergeSet) -> dict:
        """A set seen for the first time: the live checks (SetSkipped), then its context in
        the journal: {"primary": ident, "duplicates": [ident, ...], "csv_rows": [...]}."""
        primary, duplicates = resolve_contacts(self.client, ms, allow_cross_org=self.options.allow_cross_org)
        # the duplicate whose reference the primary will take goes last, so that
        # reference stays held until the very end
        duplicates = sorted(duplicates, key=lambda d: instant(d.get("modified_date")))
        ctx = {"primary": _ident(primary), "duplicates": [_ident(d) for d in duplicates],
               "csv_rows": [r.as_dict() for r in ms.rows]}
        self.journal.set_status(key, ms.email, "in_progress", context=ctx)
        return ctx

    def _finish(self, key: str, ms: MergeSet, ctx: dict, outcome: SetOutcome) -> None:
        """Every duplicate is cleared (and retired, when merging): the primary takes the newest
        reference, and the set is recorded merged, or moved_only when the duplicates stay."""
        if self.options.keep_duplicate:
            status = SetStatus.MOVED_ONLY
        elif self.merge_denied and not all(self.journal.is_done(key, step_name("retired", d["id"]))
                                           for d in ctx["duplicates"]):
            status = SetStatus.MOVED_ONLY
            outcome.note = self.merge_denied
        else:
            if not self.journal.is_done(key, step_name("external_ref")):
                self._recheck_primary(ctx["primary"], "it was not given the duplicates' reference (the duplicates "
                                      "are retired)", compare_reference=self.journal.step(key, step_name(
                                          "external_ref")) is None)
            outcome.external_ref_set = self._take_reference(key, ctx)
            outcome.other_duplicate_refs = [d["external_ref"] for d in ctx["duplicates"]
                                            if d["external_ref"] != outcome.external_ref_set]
            own = ctx["primary"].get("external_ref")
            if own and own.startswith(DUPLICATE_PREFIX) and own != outcome.external_ref_set:
                outcome.other_duplicate_refs.append(own)   # taken by an earlier merge, given up now
            outcome.external_refs_kept = self._keep_every_reference(key, ctx, outcome.external_ref_set)
            kept = outcome.external_refs_kept or [outcome.external_ref_set]
            outcome.refs_without_contact = [r for r in outcome.other_duplicate_refs if r not in kept]
            if self.options.merge_note:
                note = self._leave_note(key, ctx)
                outcome.merge_note, outcome.merge_note_refused = note.entry, note.refused
            status = SetStatus.MERGED
        ctx["external_ref_set"] = outcome.external_ref_set
        # what a later run's report says of this set (plan.finished_outcome)
        ctx.update(external_refs_kept=outcome.external_refs_kept, refs_without_contact=outcome.refs_without_contact,
                   merge_note=outcome.merge_note, merge_note_refused=outcome.merge_note_refused)
        self.journal.set_status(key, ms.email, status, context=ctx)
        outcome.status = status

    def _check_primary_still_active(self, ctx: dict) -> None:
        """On resume: the primary read when the set started must still be there and active."""
        primary = ctx["primary"]
        try:
            user = self.client.get_rev_user(primary["id"])
        except NotFoundError:
            raise SetFailed(f"the primary {primary['display_id']} is no longer in DevRev; nothing more was "
                            f"changed for this set (its backups hold what was moved)") from None
        if user.get("state", "active") != "active" or user.get("primary_identity"):
            raise SetFailed(f"the primary {primary['display_id']} is {user.get('state')!r} in DevRev now; "
                            f"nothing more was changed for this set")

    def _recheck_primary(self, primary: dict, not_done: str, *, compare_reference: bool = True) -> None:
        """Right before rev-users.merge and before the primary takes the reference: a fresh read
        must still pass the live checks the primary passed when the set started (active, not
        merged, same email, workspace and reference). SetFailed naming what changed; `not_done`
        says what was therefore not done."""
        try:
            now = self.client.get_rev_user(primary["id"])
        except NotFoundError:
            now = None
        change = primary_change(now, primary.get("live") or primary, compare_reference=compare_reference)
        if change:
            raise SetFailed(f"the primary {primary['display_id']} {change} since this set's live checks: "
                            f"{not_done}; the tickets and conversations moved so far stay on the primary (the "
                            f"set's backups hold them); check the contact in DevRev, then re-run")

    def _check_not_recreated(self, key: str, ctx: dict) -> None:
        """On resume: a duplicate whose reference another active contact holds now was merged
        and then restored (restore_contacts.py) or made again by its integration: going on
        would report the set merged while that contact keeps its tickets."""
        again = recreated_duplicates(self.client, ctx)
        if again:
            raise SetFailed(f"{', '.join(again)}: a contact holds a retired duplicate's reference again (restored, "
                            f"or made again by the integration) since this set started; nothing more was changed: "
                            f"make a fresh CSV (find_duplicates.py), preview it and merge it")

    # ------------------------------------------------------------------ one duplicate
    def _merge_duplicate(self, key: str, ms: MergeSet, ctx: dict, dup: dict) -> None:
        """Clear the duplicate (backup, move, verify), retire it, then look once more."""
        d = dup["id"]
        if not self.journal.is_done(key, step_name("retired", d)):
            self._clear(key, ms, ctx, dup)
            self._fill_blanks(key, ctx)   # backed up (the primary's record before is in the backup), not retired
            retire = not (self.options.keep_duplicate or self.merge_denied)
            if not (retire and self._merge_and_retire(key, dup, ctx["primary"])):
                return
        if not self.journal.is_done(key, step_name("swept", d)):
            # Anything filed under the duplicate while DevRev processed the merge would be left
            # on a retired contact: one more look, and the same backup-and-move if needed.
            self.journal.done(key, step_name("swept", d), self._sweep(key, ms, ctx, dup))

    def _fill_plan(self, ctx: dict, primary: dict | None = None) -> FillPlan:
        """The fill-blanks plan from the contacts as the set's live checks read them (or, given,
        the primary as it is now): what the preview showed, or less, never more."""
        return plan_fill(primary or ctx["primary"]["live"], [d["live"] for d in ctx["duplicates"]],
                         self.options.fill_blanks)

    def _check_fills_as_previewed(self, ms: MergeSet, ctx: dict) -> None:
        """--fill-blanks writes only what the preview showed for this set: SetFailed (before any
        write) when the values to fill changed since."""
        shown = self.previews.get(ms.key)
        if not self.options.fill_blanks or shown is None:
            return
        planned = self._fill_plan(ctx).filled
        # the fields this run fills (a narrower --fill-blanks than the preview's is fine)
        previewed = {k: v for k, v in (shown.get("fills") or {}).items()
                     if k.split(".")[0] in self.options.fill_blanks}
        if planned != previewed:
            changed = sorted(set(planned) ^ set(previewed) or {k for k in planned if planned[k] != previewed.get(k)})
            raise SetFailed(f"the fields --fill-blanks would fill changed since the preview ({', '.join(changed)}): "
                            f"nothing was written for this set; preview again")

    def _fill_blanks(self, key: str, ctx: dict) -> None:
        """--fill-blanks: the primary's blank fields filled from its duplicates (merging.field_fill),
        journaled, checked in DevRev's answer. Read fresh first: a field filled since is left as
        it is, and nothing beyond the set's plan is written."""
        step = step_name("fill_blanks")
        record = self.journal.step(key, step)
        if not self.options.fill_blanks or (record and record["status"] == "done"):
            return
        primary_id = ctx["primary"]["id"]
        planned = self._fill_plan(ctx)
        now = self.client.get_rev_user(primary_id) if planned else {}
        if record is not None and not applied(record["data"].get("after") or {}, now):
            self.journal.done(key, step, dict(record["data"], confirmed_by="fresh read"))
            return
        fresh = self._fill_plan(ctx, now) if planned else FillPlan()
        values = {k: v for k, v in fresh.values.items() if k in planned.values}
        if not values:
            self.journal.done(key, step, {"filled": {}})
            return
        data = {"before": {k: fresh.before.get(k) for k in values}, "after": values,
                "filled": {k: v for k, v in fresh.filled.items() if k.split(".")[0] in values}}
        self.journal.intent(key, step, data)
        answer = self.client.update_rev_user_fields(primary_id, update_body(values))
        wrong = applied(values, answer)
        if wrong:
            raise SetFailed(f"DevRev did not apply {', '.join(wrong)} to the primary's fields (--fill-blanks): "
                            f"re-run to check again")
        self.journal.done(key, step, data)
        log.info("filled the primary's blank fields: %s", ", ".join(sorted(data["filled"])))

    def _sweep(self, key: str, ms: MergeSet, ctx: dict, dup: dict) -> dict | None:
        """The look after the merge. A listing filtered by the retired duplicate may be
        refused (400/404, devrev_api.assumptions.RETIRED_FILTER_ERRORS): once a fresh read shows
        the duplicate retired, that means it owns nothing."""
        try:
            self._clear(key, ms, ctx, dup)
            return None
        except (BadRequestError, NotFoundError) as exc:
            if exc.status not in facts.RETIRED_FILTER_ERRORS or exc.endpoint not in _OWNER_LISTINGS \
                    or not is_retired(self._read_duplicate(dup["id"])):
                raise
            log.info("%s: DevRev refuses %s filtered by the retired %s (%s): it owns nothing", ms.email,
                     exc.endpoint, dup["display_id"], exc.status)
            return {"owns_nothing": f"{exc.endpoint} answered {exc.status} for the retired duplicate"}

    def _clear(self, key: str, ms: MergeSet, ctx: dict, dup: dict) -> None:
        """Back up and move what the duplicate owns, round after round, until a listing
        taken after the moves shows it owns nothing."""
        d = dup["id"]
        steps = [parse_step(name) for name in self.journal.steps(key)]
        round_no = max((s.round for s in steps if s.kind == "backup" and s.duplicate == d), default=0)
        if round_no == 0:
            round_no = 1
        elif self.journal.is_done(key, step_name("verify", d, round_no)):
            # the last round ended clean, but earlier: look again before relying on it
            if not self._leftovers(dup, ms):
                return
            round_no += 1
        for turn in range(self.options.max_rounds):
            folder = self._backup(key, ms, ctx, dup, round_no)
            self._move_all(key, folder, dup, ctx["primary"]["id"], round_no)
            leftovers = self._verify(key, ms, dup, round_no)
            if not leftovers:
                return
            log.warning("%s appeared under %s meanwhile: backing them up and moving them too",
                        ", ".join(leftovers), dup["display_id"])
            round_no += 1
            if turn + 1 < self.options.max_rounds:   # a little longer each time: lists and integrations settle
                self.client.wait(facts.ROUND_PAUSE_SECONDS * 2 ** turn)
        raise SetFailed(f"new tickets or conversations kept appearing under {dup['display_id']} for "
                        f"{self.options.max_rounds} rounds (last: {', '.join(leftovers)}); pause the integration "
                        f"that files them and re-run")

    def _backup(self, key: str, ms: MergeSet, ctx: dict, dup: dict, round_no: int) -> str:
        step = step_name("backup", dup["id"], round_no)
        record = self.journal.step(key, step)
        replaced = None
        if record and record["status"] == "done":
            folder = record["data"]["folder"]
            check = verify_backup(folder)
            if check.ok:
                return folder
            replaced = self._set_aside(key, ms, dup, folder, f"{check.problems[0][0]}: {check.problems[0][1]}")
        elif record:  # a backup was started and interrupted: its .partial folder goes first
            for name in remove_partials(self.options.backup_dir, ms.email, dup["display_id"]):
                log.info("removed the interrupted backup %s", name)
        self.journal.intent(key, step, {"round": round_no, **({"replaces": replaced} if replaced else {})})
        # Both contacts as the live checks read them: the tool never writes the duplicate,
        # and the primary's external_ref changes only after every duplicate is retired.
        # Streamed: each timeline goes to disk as it is read (memory flat in the duplicate's size).
        # its own page is read while it is a contact: once the merge was asked, DevRev deleted or moved it
        def write(custom_field_filter: bool):
            return write_backup(self.client, self.options.backup_dir, email=ms.email, csv_rows=ctx["csv_rows"],
                                primary=ctx["primary"]["live"], duplicate=dup["live"], run_id=self.options.run_id,
                                pool=self.options.fanout,
                                contact_page=self.journal.step(key, step_name("merge", dup["id"])) is None,
                                custom_field_filter=custom_field_filter, target=self.options.target)
        filtered = self._filter_accepted(dup, ms)
        try:
            result = write(filtered)
        except BadRequestError as exc:
            if not (filtered and exc.endpoint == "works.list"):
                raise
            self.options.custom_fields_filter.refused_now(exc)
            result = write(False)
        counts, folder, total_bytes = result.counts, result.folder, result.total_bytes
        refs = [r["object"] for r in custom_field_refs(result.snapshot.objects + result.snapshot.custom_field_tickets,
                                                       dup["id"])]
        del result   # what was kept of each object: not held while the backup is read back
        check = verify_backup(folder)
        if not check.ok:
            raise RunAborted(f"the backup {folder} of {ms.email} does not verify "
                             f"({check.problems[0][0]}: {check.problems[0][1]}); nothing was changed for it")
        del check
        data = {"folder": folder, "round": round_no, "manifest_sha256": manifest_sha256_of(folder),
                "messages": counts["messages"],
                "attachments": counts["attachments"], "bytes": total_bytes,
                **({"replaces": replaced} if replaced else {})}
        if round_no == 1:
            data.update(self._drift(ms, dup, set(counts["entries"])))
        data["custom_field_refs"] = refs
        data.update(contact_entries=counts["contact_entries"], contact_files=counts["contact_files"])
        self.journal.done(key, step, data)
        log.info("backed up %s: %s, %s, %s, %s -> %s", dup["display_id"], plural(counts["tickets"], "ticket"),
                 plural(counts["conversations"], "conversation"), plural(counts["messages"], "message"),
                 plural(counts["attachments"], "attachment"), folder)
        return folder

    def _set_aside(self, key: str, ms: MergeSet, dup: dict, folder: str, problem: str) -> dict:
        """A backup the journal recorded as verified no longer verifies. Before any write for
        the duplicate, or once the operator accepted its loss: renamed aside (never deleted),
        and the caller backs the round up afresh; returns what to journal about it. After a
        write: SetFailed (this set only; the message names both ways on)."""
        sent = writes_sent(self.journal.steps(key), dup["id"])
        accepted = os.path.exists(accept_path(folder))
        if sent and not accepted:
            raise SetFailed(refusal(folder, ms.email, dup["display_id"], problem, sent))
        moved_to = set_aside(folder, utc_now())
        log.warning("%s", aside_note(folder, problem, moved_to, dup["display_id"], accepted))
        return {"folder": folder, "problem": problem, "set_aside_as": moved_to, "loss_accepted": accepted,
                "writes_before": len(sent)}

    def _drift(self, ms: MergeSet, dup: dict, now: set[str]) -> dict:
        """Tickets and conversations that appeared or vanished since the preview."""
        preview = self.previews.get(ms.key)
        seen = next((p for p in (preview or {}).get("duplicates", []) if p.get("id") == dup["id"]), None)
        if seen is None:
            return {}
        before = set(seen.get("tickets", [])) | set(seen.get("conversations", []))
        appeared = sorted(now - before)
        if appeared:   # named on screen and in the log, not only in the report (issue 24)
            log.warning("%s: %s appeared since the preview; backed up and moved with the rest: %s",
                        dup.get("display_id"), plural(len(appeared), "ticket or conversation",
                                                      "tickets and conversations"), ", ".join(appeared))
        return {"drift_appeared": appeared, "drift_vanished": sorted(before - now)}

    def _move_all(self, key: str, folder: str, dup: dict, primary_id: str, round_no: int) -> None:
        """Move what the backup lists, from one fresh paged read taken right before the writes."""
        moves = load_moves(folder)
        plan = (("ticket", self.client.list_tickets, self.client.get_work, self.client.set_ticket_reporters),
                ("conversation", self.client.list_conversations, self.client.get_conversation,
                 self.client.set_conversation_members))
        for kind, listing, read, write in plan:
            items = [m for m in moves if m.kind == kind]
            steps = {item.id: step_name(kind, dup["id"], round_no, item.id) for item in items}
            pending = [item for item in items if not self.journal.is_done(key, steps[item.id])]
            if not pending:
                continue
            listed_at = self.clock()
            # only the ids of the field that moves are kept (copies: a reference to DevRev's list would keep
            # every user record of the page alive), so a huge duplicate's listing stays small
            fresh = {obj["id"]: {Move.FIELDS[kind]: [{"id": i} for i in ids_of(obj.get(Move.FIELDS[kind]))]}
                     for obj in listing(dup["id"])}
            earlier = self._moved_earlier(key, kind, dup["id"], round_no)

            def move_one(item: Move, read=read, write=write, fresh=fresh, listed_at=listed_at, steps=steps,
                         earlier=earlier) -> None:
                with self._item_lock(item.id):
                    current = fresh.get(item.id)
                    # moved by this set before (a listing may still show its old list), or by another set since
                    if item.id in earlier or self._written_at.get(item.id, float("-inf")) >= listed_at:
                        current = self._read_or_none(read, item.id)  # another set moved it since: read it again
                        if current is not None and dup["id"] not in ids_of(current.get(item.field_name)):
                            current = None
                    self._move(key, steps[item.id], item, dup["id"], primary_id, current, read, write)

            # the items are independent (each journaled and locked on its own): in parallel
            fan_map(self.options.fanout, move_one, pending)
        self._close_unlisted(key, {m.id for m in moves}, dup["id"], primary_id, round_no)
        self._move_custom_fields(key, folder, dup, primary_id, round_no)

    def _moved_earlier(self, key: str, kind: str, dup_id: str, round_no: int) -> set[str]:
        """The ids of the `kind` items this set moved off the duplicate in an earlier round."""
        found: set[str] = set()
        for name, record in self.journal.steps(key).items():
            step = parse_step(name)
            if step.kind == kind and step.duplicate == dup_id and step.round is not None and step.round < round_no \
                    and step.item is not None and record["status"] == "done":
                found.add(step.item)
        return found

    def _move_custom_fields(self, key: str, folder: str, dup: dict, primary_id: str, round_no: int) -> None:
        """The primary in place of the duplicate in the custom fields of every object the backup
        lists as naming it there (merging.custom_field_moves), each under its item's lock."""
        def move_one(item) -> None:
            with self._item_lock(item.id):
                try:
                    move_custom_fields(self.client, self.journal, key,
                                       step_name("custom_fields", dup["id"], round_no, item.id), item,
                                       dup["id"], primary_id)
                except CustomFieldRefused as exc:
                    raise SetFailed(str(exc)) from None
                finally:
                    self._written_at[item.id] = self.clock()
        fan_map(self.options.fanout, move_one, load_custom_field_moves(folder))

    def _filter_accepted(self, dup: dict, ms: MergeSet) -> bool:
        """Whether to look for tickets naming the duplicate only in a custom field: works.list takes
        the custom_fields filter (asked once per run), and the set's preview looked for them too (a
        run never moves what its preview could not show)."""
        accepted = self.options.custom_fields_filter.ask(self.client, dup["id"])
        if accepted and (self.previews.get(ms.key) or {}).get("custom_fields_filter") is False:
            with self._locks_guard:
                first, self._filter_held_back = not self._filter_held_back, True
            if first:
                log.warning("works.list takes the custom_fields filter now, but the preview could not use it: tickets "
                            "that name a duplicate only in a custom field are not looked for in this run either "
                            "(it does what the preview showed); preview again to include them")
            return False
        return accepted

    def _close_unlisted(self, key: str, listed: set[str], dup_id: str, primary_id: str, round_no: int) -> None:
        """Moves of this round left as intents that the round's backup does not list (it was
        replaced after an accepted loss, and the item had left the duplicate): settled by a
        fresh read, as any interrupted move is."""
        readers = {"ticket": (self.client.get_work, self.client.set_ticket_reporters),
                   "conversation": (self.client.get_conversation, self.client.set_conversation_members)}
        for name, rec in self.journal.steps(key).items():
            step = parse_step(name)
            if rec["status"] == "intent" and step.kind in readers and step.duplicate == dup_id \
                    and step.round == round_no and step.item not in listed:
                item = Move(step.kind, step.item, step.item, ())
                self._move(key, name, item, dup_id, primary_id, None, *readers[step.kind])

    @staticmethod
    def _read_or_none(read: Callable[[str], dict], object_id: str) -> dict | None:
        """A fresh read; None when DevRev says the object is gone (404)."""
        try:
            return read(object_id)
        except NotFoundError:
            return None

    def _move(self, key: str, step: str, item: Move, dup_id: str, primary_id: str, fresh: dict | None,
              read, write) -> None:
        """Swap the duplicate for the primary on one item, journaled; never twice."""
        field_name = item.field_name
        previous = self.journal.step(key, step)
        if fresh is None:
            # The duplicate is no longer on it. If we sent the change before an interruption,
            # confirm with a read that DevRev applied it; otherwise someone else changed it.
            if previous is None:
                self.journal.done(key, step, {"already": True})
                return
            obj = self._read_or_none(read, item.id)
            if obj is None:
                self.journal.done(key, step, {"vanished": True})
                log.warning("%s vanished from DevRev", item.display_id)
                return
            current = ids_of(obj.get(field_name))
            if dup_id in current:  # listing lag: treat as still to move
                fresh = obj
            else:
                data = {"before": previous["data"]["before"], "after": current, "confirmed_by": "fresh read"} \
                    if primary_id in current else {"already": True, "now": current}
                self.journal.done(key, step, data)
                return
        current = ids_of(fresh.get(field_name))
        wanted = swap_user(current, dup_id, primary_id)
        self.journal.intent(key, step, {"before": current, "after": wanted})
        try:
            updated = ids_of(write(item.id, wanted).get(field_name))
        except NotFoundError as exc:
            # 404 may name the item or a user in the new list: tell the two apart
            if self._read_or_none(read, item.id) is None:
                self.journal.done(key, step, {"vanished": True})
                log.warning("%s vanished from DevRev before it could be moved", item.display_id)
                return
            raise SetFailed(f"{item.display_id}: DevRev refused the new {field_name} ({exc}); a contact in "
                            f"it may have been deleted") from None
        finally:
            self._written_at[item.id] = self.clock()
        # DevRev's answer is the item as it now stands: it must list the primary, not the duplicate.
        if dup_id in updated or primary_id not in updated:
            raise SetFailed(f"{item.display_id}: DevRev did not apply the new {field_name} ({updated})")
        self.journal.done(key, step, {"before": current, "after": updated})
        log.debug("moved %s: %s %s -> %s", item.display_id, field_name, current, updated)

    def _leftovers(self, dup: dict, ms: MergeSet) -> list[str]:
        """What the duplicate still owns: tickets and conversations to move. Work items of
        other types (issues) are not the tool's to move: they stop the set instead."""
        works = self._still_owned(list(self.client.list_reported_works(dup["id"])), self.client.get_work,
                                  "reported_by", dup)
        others = other_works(works)
        if others:
            raise SetFailed(f"{dup['display_id']} still reports {', '.join(others)} (work items that are not "
                            f"tickets, which the tool does not move): move them to the primary by hand, then re-run")
        conversations = self._still_owned(list(self.client.list_conversations(dup["id"], strict=True)),
                                          self.client.get_conversation, "members", dup)
        left = [display_of(w) for w in works] + [display_of(c) for c in conversations]
        if self._filter_accepted(dup, ms):   # a ticket naming it in a custom field only is still its own
            try:
                left += [shown for t in tickets_naming(self.client, dup["id"]) for shown in [display_of(t)]
                         if shown not in left]
            except BadRequestError as exc:
                if is_retired(self._read_duplicate(dup["id"])):
                    raise   # a listing by a retired contact: _sweep decides
                self.options.custom_fields_filter.refused_now(exc)
        return left

    def _still_owned(self, listed: list[dict], read: Callable[[str], dict], field_name: str, dup: dict) -> list[dict]:
        """The listed items a fresh read shows still naming the duplicate in `field_name`. DevRev's
        lists may show an item's old reporters or members for a while after a write ([I] issue 22):
        an item whose fresh read no longer names the duplicate was moved already, not new."""
        kept: list[dict] = []
        lagging: list[dict] = []
        for obj in listed:
            fresh = self._read_or_none(read, obj["id"])
            (kept if fresh is not None and dup["id"] in ids_of(fresh.get(field_name)) else lagging).append(obj)
        if lagging:
            log.info("%s still listed under %s, but a fresh read shows %s moved (DevRev's list lags behind "
                     "its writes)", ", ".join(display_of(o) for o in lagging), dup["display_id"],
                     "it" if len(lagging) == 1 else "them")
        return kept

    def _verify(self, key: str, ms: MergeSet, dup: dict, round_no: int) -> list[str]:
        """[] when the duplicate owns nothing any more (each move was checked on DevRev's answer)."""
        left = self._leftovers(dup, ms)
        if not left:
            self.journal.done(key, step_name("verify", dup["id"], round_no), {"owns_nothing": True})
        return left

    # ------------------------------------------------------------------ retiring
    def _read_duplicate(self, dup_id: str) -> dict | None:
        return self._read_or_none(self.client.get_rev_user, dup_id)

    def _ask_merge(self, dup: dict, primary_id: str, *, asked_before: bool) -> None:
        """rev-users.merge, which the client never repeats by itself: when the answer is lost
        or DevRev fails, ask again (a bounded number of times, backing off) only after a fresh
        read shows the duplicate is not retired yet. asked_before: an earlier run recorded the
        intent but not DevRev's answer; if DevRev now refuses the repeat, polling decides."""
        retries = self.client.retry.start()
        while True:
            try:
                self.client.merge_rev_users(primary_id, dup["id"])
                return
            except NotFoundError:
                if is_retired(self._read_duplicate(dup["id"])):
                    return
                raise
            except (BadRequestError, ConflictError) as exc:
                if not asked_before:
                    raise
                log.warning("rev-users.merge for %s asked again: %s; waiting for the first request instead",
                            dup["display_id"], exc)
                return
            except (TransportError, ServerError, ResponseError) as exc:
                # The answer was lost: the merge may or may not have been accepted.
                delay = retries.next_delay()
                if delay is None:
                    raise
                log.warning("rev-users.merge for %s: %s; checking before asking again", dup["display_id"], exc)
                self.client.wait(delay)
                if is_retired(self._read_duplicate(dup["id"])):
                    return

    def _merge_and_retire(self, key: str, dup: dict, primary: dict) -> bool:
        """rev-users.merge and the poll until the duplicate is retired: True; False when
        DevRev refuses the merge with 403 (the token may not merge: nothing was done).
        SetFailed when DevRev refused it with a reason (final: a later run says so at once),
        when its merge job is still running after --merge-timeout (retry_later), or when the
        job failed (or none exists) MERGE_ATTEMPTS times in all, across runs."""
        merge_step, retired_step = step_name("merge", dup["id"]), step_name("retired", dup["id"])
        record = self.journal.step(key, merge_step)
        refused = record and record["status"] == "done" and (record["data"] or {}).get("refused")
        if refused and self.options.ask_refused_again:   # the admin says the cause is gone: one more request
            self._ask_journaled(key, dup, primary, attempt=_attempt(record) + 1, asked_before=False,
                                after=f"refused before: {refused}")
        elif refused:
            raise SetFailed(_refused_line(dup, refused), reason="merge_refused")
        elif not self.journal.is_done(key, merge_step):
            if record and is_retired(self._read_duplicate(dup["id"])):
                self.journal.done(key, merge_step, dict(record["data"] or {}, confirmed_by="fresh read"))
            elif not self._ask_journaled(key, dup, primary, attempt=_attempt(record), asked_before=bool(record)):
                return False
        if self.journal.is_done(key, retired_step):
            return True
        asked_at = self._asked_at(key, dup)
        if asked_at is not None and _wall() - asked_at >= self.options.merge_timeout \
                and not is_retired(self._read_duplicate(dup["id"])):
            # asked by an earlier run and waited out then: DevRev's job decides at once, no second wait
            self._ask_again_or_stop(key, dup, primary)
        while True:
            waits = self._poll_waits()
            while not is_retired(user := self._read_duplicate(dup["id"])):
                if next(waits, _TIME_UP) is _TIME_UP:
                    break
            else:
                self.journal.done(key, retired_step, {"state": "gone" if user is None else user.get("state")})
                log.info("%s is retired", dup["display_id"])
                return True
            self._ask_again_or_stop(key, dup, primary)

    def _asked_at(self, key: str, dup: dict) -> float | None:
        """When the last rev-users.merge of `dup` was asked (epoch seconds, journaled), or None."""
        value = ((self.journal.step(key, step_name("merge", dup["id"])) or {}).get("data") or {}).get("asked_at")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def _ask_journaled(self, key: str, dup: dict, primary: dict, *, attempt: int, asked_before: bool,
                       after: str | None = None) -> bool:
        """One journaled rev-users.merge (attempt `attempt`), after the primary was read again:
        True once DevRev acknowledged it; False when it refused with 403 (nothing done). A
        400/409 on a first ask is DevRev's reason for refusing: journaled as final, SetFailed."""
        self._recheck_primary(primary, f"{dup['display_id']} was not merged into it and nothing was retired")
        merge_step, primary_id = step_name("merge", dup["id"]), primary["id"]
        data = {"primary_user": primary_id, "secondary_user": dup["id"], "attempt": attempt,
                "asked_at": round(_wall(), 3), **({"after": after} if after else {})}
        self.journal.intent(key, merge_step, data)
        try:
            self._ask_merge(dup, primary_id, asked_before=asked_before)
        except PermissionDeniedError as exc:
            self.journal.forget(key, merge_step)  # refused outright: nothing was done
            if exc.object_ids:                    # about these contacts, not about merging: this set only
                raise SetFailed(f"rev-users.merge of {dup['display_id']}: {exc}") from None
            self._deny_merges(exc)
            return False
        except (BadRequestError, ConflictError) as exc:
            reason = f"{exc.message}: {exc.status} {exc.error_type or 'bad_request'}"
            self.journal.done(key, merge_step, dict(data, refused=reason))
            raise SetFailed(_refused_line(dup, reason), reason="merge_refused") from None
        self.journal.done(key, merge_step, data)
        log.info("asked DevRev to merge %s into the primary%s", dup["display_id"],
                 f" (attempt {attempt} of {facts.MERGE_ATTEMPTS})" if attempt > 1 else "")
        return True

    def _ask_again_or_stop(self, key: str, dup: dict, primary: dict) -> None:
        """--merge-timeout ran out with the duplicate still active: DevRev's merge job decides.
        Running: SetFailed(retry_later). Failed, or no job: a new journaled attempt, up to
        MERGE_ATTEMPTS in all; after that SetFailed."""
        lookup = merge_job_of(self.client, dup["id"])
        if is_retired(self._read_duplicate(dup["id"])):
            return   # retired meanwhile: the poll sees it
        asked_at = self._asked_at(key, dup)
        since = _wall() - asked_at if asked_at is not None else self.options.merge_timeout
        seconds = max(since, self.options.merge_timeout)
        job, waited = lookup.job, f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:g} s"
        if job is not None and not job.failed:
            raise SetFailed(f"{dup['display_id']} is not retired {waited} after rev-users.merge: DevRev's merge "
                            f"{job.describe()}; re-run later to finish it", retry_later=True)
        attempt = _attempt(self.journal.step(key, step_name("merge", dup["id"])))
        what = job.describe() if job is not None else (
            f"no merge job could be read ({lookup.unreadable})" if lookup.unreadable else "DevRev shows no merge job")
        if attempt >= facts.MERGE_ATTEMPTS:
            raise SetFailed(f"{dup['display_id']} is still active after {plural(attempt, 'merge request')} "
                            f"({what}); its tickets and conversations are on the primary; ask DevRev support "
                            f"why the merge fails, then merge it in DevRev or re-run with a fresh savepoint",
                            reason="merge_failed")
        log.warning("%s is still active %s after rev-users.merge (%s): asking again (attempt %d of %d)",
                    dup["display_id"], waited, what, attempt + 1, facts.MERGE_ATTEMPTS)
        self._ask_journaled(key, dup, primary, attempt=attempt + 1, asked_before=True, after=what)

    def _deny_merges(self, exc: DevRevError) -> None:
        """The token may not merge: say so once; every set from now on ends moved_only."""
        with self._locks_guard:
            first = self.merge_denied is None
            self.merge_denied = (f"DevRev refused rev-users.merge ({exc.status} {exc.error_type or 'forbidden'}): "
                                 f"the token lacks the permission to merge contacts ({facts.MERGE_PERMISSION} "
                                 f"for a scoped token); tickets and conversations are moved, the duplicates "
                                 f"kept; re-run with a token that may merge to finish")
        if first:
            log.error("%s", self.merge_denied)

    def _take_reference(self, key: str, ctx: dict) -> str:
        """Give the primary the newest duplicate's `user_...` reference."""
        target = _newest(ctx["duplicates"])["external_ref"]
        step = step_name("external_ref")
        if self.journal.is_done(key, step):
            return target
        primary_id = ctx["primary"]["id"]
        current = ctx["primary"]["external_ref"]  # as the live check read it; only this step changes it
        if self.journal.step(key, step):  # interrupted after the intent: read what DevRev holds now
            current = self.client.get_rev_user(primary_id).get("external_ref")
        if current != target:
            self.journal.intent(key, step, {"before": current, "after": target})
            waits = self._poll_waits()
            while True:
                try:
                    self.client.update_rev_user_external_ref(primary_id, target)
                    break
                except DevRevError as exc:
                    if exc.status != facts.EXTERNAL_REF_CONFLICT_STATUS:
                        raise
                # the retired duplicate may hold the reference for a moment longer
                if next(waits, _TIME_UP) is _TIME_UP:
                    raise SetFailed(f"DevRev still refuses external_ref {target!r} for the primary: it is "
                                    f"held by {self._holder_of(target)}; re-run to finish once it is free")
        self.journal.done(key, step, {"before": current, "after": target})
        log.info("the primary %s now carries external_ref %s", ctx["primary"]["display_id"], target)
        return target

    def _leave_note(self, key: str, ctx: dict) -> NoteResult:
        """The merge note on the primary's timeline (runs.notes)."""
        numbers = journal_numbers(self.journal.steps(key), ctx["duplicates"])
        dups = numbers["duplicates"]
        text = merge_note_text(when=iso_utc(), run_id=self.options.run_id, duplicates=ctx["duplicates"],
                               tickets=len(numbers["moved_ticket_ids"]),
                               conversations=len(numbers["moved_conversation_ids"]),
                               custom_field_refs=sum(len(d.custom_fields_moved) for d in dups),
                               backups=[os.path.basename(b) for d in dups for b in d.backups],
                               backup_dir=self.options.backup_dir)
        return write_note(self.client, self.journal, key, ctx["primary"]["id"],
                          ref=note_ref("merge", key, self.options.run_id), text=text)

    def _keep_every_reference(self, key: str, ctx: dict, taken: str) -> list[str] | None:
        """Where DevRev keeps a list of references per contact (a read of the primary returns
        `external_refs`), the primary keeps every retired duplicate's `user_...` reference in
        it, the newest first, so an integration that still knows any of them finds the person
        instead of creating it again; returns the list. None where DevRev keeps one reference
        per contact: the other duplicates' references then belong to no contact (the report
        says which). [C] S16/S17 external_refs; devrev-api.md section 15."""
        step = step_name("external_refs")
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            return (record["data"] or {}).get("after")
        primary_id = ctx["primary"]["id"]
        current = self.client.get_rev_user(primary_id).get(facts.CONTACT_REFS_FIELD)
        if not isinstance(current, list):
            self.journal.done(key, step, {"after": None, "kept_by_devrev": "one reference per contact"})
            return None
        # the newest first (the external_ref), then the others, then the primary's own, kept too
        wanted = list(dict.fromkeys([taken, *(d["external_ref"] for d in _newest_first(ctx["duplicates"])),
                                     *([ctx["primary"]["external_ref"]] if ctx["primary"].get("external_ref") else []),
                                     *current]))
        if wanted != current:
            self.journal.intent(key, step, {"before": current, "after": wanted})
            waits = self._poll_waits()
            while True:
                try:
                    self.client.update_rev_user_external_refs(primary_id, wanted)
                    break
                except DevRevError as exc:
                    if exc.status != facts.EXTERNAL_REF_CONFLICT_STATUS:
                        raise
                if next(waits, _TIME_UP) is _TIME_UP:   # a retired duplicate may hold its reference a moment longer
                    raise SetFailed(f"DevRev still refuses the references {wanted!r} for the primary; re-run to "
                                    f"finish once they are free")
        self.journal.done(key, step, {"before": current, "after": wanted})
        log.info("the primary %s keeps the references %s", ctx["primary"]["display_id"], ", ".join(wanted))
        return wanted

    def _poll_waits(self) -> Iterator[float]:
        """Backing-off waits (poll_start, doubling to poll_cap, no jitter) through the client's
        wait until they add up to --merge-timeout seconds: each next() waits once; the
        generator ends when the time is up. Counted in seconds waited, not read from a clock,
        so the reads in between lengthen it a little and a fake wait in tests shortens it."""
        waited = [0.0]

        def wait(seconds: float) -> None:
            self.client.wait(seconds)
            waited[0] += seconds
        policy = self.client.retry.with_(attempts=None, base=self.options.poll_start, cap=self.options.poll_cap,
                                         jitter=False, sleep=wait, clock=lambda: waited[0])
        return policy.waits(self.options.merge_timeout)

    def _holder_of(self, external_ref: str) -> str:
        """Who holds a reference, for the error message (best effort)."""
        try:
            holders = [u.get("display_id") or u["id"] for u in self.client.list_rev_users(external_ref=external_ref)]
        except DevRevError:
            holders = []
        return ", ".join(holders) if holders else "a contact DevRev does not list (being retired?)"


_TIME_UP = object()


def _wall() -> float:
    """Epoch seconds, for when a merge was asked (journaled, read by later runs); a test's to patch."""
    return time.time()


def _attempt(record: dict | None) -> int:
    """Which rev-users.merge attempt the journal's merge step records (1 before any)."""
    value = ((record or {}).get("data") or {}).get("attempt", 1)
    return value if isinstance(value, int) and value >= 1 else 1


def _refused_line(dup: dict, reason: str) -> str:
    return (f"DevRev refused to merge {dup['display_id']} into the primary ({reason}); final for this set: its "
            f"tickets and conversations are on the primary and {dup['display_id']} stays active; a re-run "
            f"does not ask again")
_OWNER_LISTINGS = ("works.list", "conversations.list")


def _stops_the_run(exc: Exception) -> bool:
    """A fault of the whole run (DevRev unreachable, a rejected token): not this set's failure.
    A 403 naming its objects (`object_ids`) is about those objects: only their set fails."""
    if isinstance(exc, RunWideFault):
        return True
    return isinstance(exc, DevRevError) and (exc.status == 401 or (exc.status == 403 and not exc.object_ids))


def _ident(user: dict) -> dict:
    return {"id": user["id"], "display_id": user.get("display_id") or user["id"],
            "external_ref": user.get("external_ref"), "modified_date": user.get("modified_date"), "live": user}
