"""Undo one merge set from its backups: live plan, preview, and the journaled restore.

There is no unmerge in DevRev's API. A restore puts a set back as far as the API allows:
for each duplicate, latest merged first (so the merge's steps are undone in reverse),

1. if DevRev retired it: when the primary now carries the duplicate's `user_...`
   external_ref, the primary gets its original one back (from the backup); then the
   contact is created again (`rev-users.create`) with the backed-up email, display name,
   workspace and `user_...` external_ref. A duplicate that was kept is used as is;
2. every ticket and conversation the merge moved, after a fresh read (the listings by the
   primary, a page per 100 items, right before the writes: restoring.live_items), gets the
   (re-created) duplicate in place of the primary in `reported_by` / `members`, order
   kept (the items' writes in parallel on the --workers slots, each under its own lock);
   an item the primary was on before the merge keeps it and gets the duplicate back at its
   old place; any other change made since stays; deleted items are reported;
3. a listing by the (re-created) duplicate must return every item given back.

Every write is journaled (intent before, done after), as the merge's are.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from backup import CustomFieldMove, Move, ids_of
from devrev_api import assumptions as facts
from devrev_api.errors import (
    BadRequestError,
    ConflictError,
    DevRevError,
    NotFoundError,
    ResponseError,
    ServerError,
    TransportError,
)
from devrev_client import DevRevClient
from merging.custom_field_moves import CustomFieldRefused, holds, read_object, write_fields
from merging.engine import SetFailed, swap_user
from merging.field_fill import update_body
from merging.live_checks import is_retired
from operator_view.summary import plural
from plumbing.cli import log_subject
from plumbing.clock import iso_utc
from plumbing.fanout import Fanout, fan_map, slot_of
from restoring.backup_sets import BackupSet, DuplicateBackup
from restoring.contact_page import RECORD_FILES, ContactPageError, give_page_back, notes_on, page_counts
from restoring.fields_back import FieldsBack, plan_fields_back
from restoring.live_items import Users, read_items
from restoring.preview_writes import PlannedWrite, PreviewWrites, WriteNotPreviewed, planned_writes
from runs.journal import Journal, parse_step, step_name
from runs.notes import NoteResult, note_ref, restore_note_text, write_note
from runs.outcomes import RestoredDuplicate, SetOutcome, SetStatus, to_json
from runs.over_sets import is_temporary

log = logging.getLogger(__name__)

FINISHED = SetStatus.RESTORED
GIVE_BACK_OUTCOMES = ("moved_back", "already_back", "deleted_since", "left_alone")   # RestoredDuplicate's lists


# --------------------------------------------------------------------------- the lists
def after_merge(before: list[str], duplicates: set[str], primary: str) -> list[str]:
    """What the merge left on an item: each of the set's duplicates replaced by the primary."""
    return list(dict.fromkeys(primary if u in duplicates else u for u in before))


def restored_users(current: list[str], before: list[str], old: str, new: str, primary: str) -> list[str] | None:
    """The users an item gets back: `current` with the duplicate `new` (re-created from `old`)
    in place of the primary, order kept. When the primary was on the item before the merge
    (`before`), it keeps its place and the duplicate comes back where it was. None when the
    primary is no longer on an item it was moved to (someone changed it since: left alone).
    When the item still holds exactly the people the merge left on it, it gets the backup's
    order back (a ticket reported by [D, someone, P] comes back as [N, someone, P]).
    """
    if set(current) == set(after_merge(before, {old}, primary)):
        return list(dict.fromkeys(new if u == old else u for u in before))
    if primary in before:
        out = list(current)
        out.insert(min(before.index(old) if old in before else len(out), len(out)), new)
        return list(dict.fromkeys(out))
    if primary not in current:
        return None
    return swap_user(current, primary, new)


def _changes(current: list[str], expected: list[str]) -> dict:
    """How an item differs from what the merge left: users added and removed since."""
    added = [u for u in current if u not in expected]
    removed = [u for u in expected if u not in current]
    return {"added": added, "removed": removed} if added or removed else {}


# --------------------------------------------------------------------------- live reads
def _read_or_none(read: Callable[[str], dict], object_id: str) -> dict | None:
    try:
        return read(object_id)
    except NotFoundError:
        return None


def _readers(client: DevRevClient, kind: str):
    """(read, write) of a ticket or a conversation."""
    if kind == "ticket":
        return client.get_work, client.set_ticket_reporters
    return client.get_conversation, client.set_conversation_members


def live_primary(client: DevRevClient, bset: BackupSet) -> dict:
    """The primary, read live; SetFailed if it is gone or not active."""
    primary = bset.primary
    user = _read_or_none(client.get_rev_user, primary["id"])
    if user is None:
        raise SetFailed(f"the primary {primary.get('display_id')} is no longer in DevRev: nothing to give back to")
    if user.get("state", "active") != "active" or user.get("primary_identity"):
        raise SetFailed(f"the primary {primary.get('display_id')} is {user.get('state')!r} in DevRev now")
    return user


def missing_backups(client: DevRevClient, bset: BackupSet, primary: dict) -> list[str]:
    """The duplicates of the set's CSV rows that DevRev merged but whose backups are not in
    the backup folder (moved away, or a partial copy of backups/): a restore without them
    would leave the primary with their reference and their tickets, half undone. Returns
    their `user_...` references; [] when every merged duplicate has its backups here. A
    duplicate never touched (a stop before its turn, or --keep-duplicate) is not missing."""
    backed = {d.external_ref for d in bset.duplicates} | {d.id for d in bset.duplicates}
    missing = []
    for row in bset.csv_duplicates:
        if row["external_ref"] in backed or row["rev_user_id"] in backed:
            continue
        if primary.get("external_ref") == row["external_ref"]:
            missing.append(row["external_ref"])
            continue
        user = _read_or_none(client.get_rev_user, row["rev_user_id"])
        if user is not None and user.get("external_ref") == row["external_ref"] and not is_retired(user):
            continue                       # still there, never merged: nothing of it to undo
        if user is None or is_retired(user):
            missing.append(row["external_ref"])
    return missing


def _check_no_backup_missing(client: DevRevClient, bset: BackupSet, primary: dict) -> None:
    """SetFailed naming the missing backups, before anything of the set is touched."""
    missing = missing_backups(client, bset, primary)
    if missing:
        raise SetFailed(f"the backups of {', '.join(missing)} (merged into this primary) are not in the backup "
                        f"folder: a restore needs every backup of the set; put the missing folders back and "
                        f"preview again (nothing of this set was touched)")


def _holder_of(client: DevRevClient, external_ref: str, *, but: str | None = None) -> dict | None:
    """A contact that is not retired and holds `external_ref` (other than `but`), as its
    external_ref or in its `external_refs` list, or None."""
    for user in client.list_rev_users(external_ref=external_ref):
        holds = user.get("external_ref") == external_ref or external_ref in (user.get(facts.CONTACT_REFS_FIELD) or [])
        if user.get("id") != but and holds and not is_retired(user):
            return user
    return None


def plan_duplicate(client: DevRevClient, bset: BackupSet, dup: DuplicateBackup, primary: dict,
                   items_now: Mapping[str, Users]) -> dict:
    """What restoring one duplicate would do, read live; changes nothing. items_now: each moved
    item's users now (restoring.live_items.read_items; None: deleted since).

    Returns {"id", "display_id", "external_ref", "state": "retired" | "kept", "recreate": bool,
    "primary_ref_back": the primary's original ref when it must give the duplicate's back (else
    None), "blocked_by"?: display id of a contact holding the duplicate's ref, "backups": [folder],
    "items": [{"kind", "id", "display_id", "action": "move_back" | "already_back" | "left_alone" |
    "deleted_since", "changed_since"?: {"added": [id], "removed": [id]} ({} when unchanged)}],
    "custom_fields": [display ids of items whose custom fields it gets back], "notes", "files",
    "entries_not_writable": what its own page gets written again (restoring.contact_page)}.
    Raises DevRevError on a failed read.
    """
    live = _read_or_none(client.get_rev_user, dup.id)
    retired = is_retired(live)
    gives_back = retired and primary.get("external_ref") == dup.external_ref
    record: dict[str, Any] = {"id": dup.id, "display_id": dup.display_id, "external_ref": dup.external_ref,
              "state": "retired" if retired else "kept", "recreate": retired,
              "primary_ref_back": dup.primary_original_ref if gives_back else None,
              "backups": list(dup.folders), "items": []}
    if retired and not gives_back and dup.external_ref:
        # the primary's own list (external_refs) gives the reference back before the re-create
        holder = _holder_of(client, dup.external_ref, but=primary["id"])
        if holder is not None:
            record["blocked_by"] = holder.get("display_id") or holder["id"]
    set_dups = _set_duplicates(bset)
    for move in dup.moves:
        current = items_now[move.id]
        item = {"kind": move.kind, "id": move.id, "display_id": move.display_id}
        if current is None:
            item["action"] = "deleted_since"
        else:
            item["changed_since"] = _changes(current, after_merge(list(move.users), set_dups, primary["id"]))
            if not retired and dup.id in current:
                item["action"] = "already_back"
            elif restored_users(current, list(move.users), dup.old_id(move), dup.id, primary["id"]) is None:
                item["action"] = "left_alone"   # the primary was taken off it since
            else:
                item["action"] = "move_back"
        record["items"].append(item)
    record["custom_fields"] = [m.display_id for m in dup.custom_field_moves]
    if dup.not_in_backups:   # moved by the merge, before-image lost (an accepted backup loss)
        record["not_in_backups"] = list(dup.not_in_backups)
    record.update(page_counts(dup) if retired
                  else {"notes": 0, "files": 0, "entries_not_writable": 0, "record_note": 0})
    return record


def primary_refs_wanted(bset: BackupSet, primary: dict) -> list[str] | None:
    """The primary's list of references (`external_refs`) as the restore leaves it: its original
    reference first, the set's duplicates' references out, any it took since kept. None when
    DevRev keeps one reference per contact or the list is already so (no write)."""
    current = primary.get(facts.CONTACT_REFS_FIELD)
    if not isinstance(current, list):
        return None
    theirs = {d.external_ref for d in bset.duplicates}
    original = bset.primary.get("external_ref") or primary.get("display_id")
    wanted = list(dict.fromkeys([original, *(r for r in current if r not in theirs)]))
    return wanted if wanted != current else None


def preview_set(client: DevRevClient, bset: BackupSet, *, note: bool = True, pool: Fanout | None = None) -> dict:
    """_preview_set, every line it logs naming the set's email (cli.log_subject), holding one
    of the --workers slots (pool: its item reads borrow the free ones, plumbing.fanout)."""
    with log_subject(bset.email), slot_of(pool):
        return _preview_set(client, bset, note, pool)


def _set_duplicates(bset: BackupSet) -> set[str]:
    """Every id the set's duplicates had (a contact merged twice had two)."""
    return {i for d in bset.duplicates for i in [d.id, *d.replaces]}


def _preview_set(client: DevRevClient, bset: BackupSet, note: bool, pool: Fanout | None) -> dict:
    """What a restore of this set would do, read live; changes nothing.

    Returns {"email", "set_key", "fingerprint", "primary": {...}, "backups": [folder],
    "status": "would_restore" | "failed", "reason"?: backup_failed | primary_unusable |
    external_ref_taken, "error"?, "duplicates": [plan_duplicate(...), latest merged first],
    "writes": [PlannedWrite.to_json(), ...] every write a run would make (the run makes no other,
    restoring.preview_writes); note: the run leaves a restore note on the primary}.
    """
    record = to_json(blank_line(bset))
    record["backups_authentic"] = bset.all_authentic
    if bset.failed:
        record.update(status="failed", reason="backup_failed", error=_failed_text(bset))
        return record
    if bset.refused:
        record.update(status="failed", reason="not_what_the_merge_did", error=f"{bset.refused}; nothing of this set "
                                                                              f"was touched")
        return record
    try:
        primary = live_primary(client, bset)
    except SetFailed as exc:
        record.update(status="failed", reason="primary_unusable", error=str(exc))
        return record
    try:
        _check_no_backup_missing(client, bset, primary)
    except SetFailed as exc:
        record.update(status="failed", reason="backup_missing", error=str(exc))
        return record
    record["primary"]["external_ref_now"] = primary.get("external_ref")
    fields_back = plan_fields_back(bset.fills, primary)
    if fields_back.back or fields_back.left:   # what --fill-blanks wrote to the primary, given back
        record["primary"]["fields_back"], record["primary"]["fields_left"] = fields_back.back, fields_back.left
    # every item once, from the listings by the primary (the merge left it on them), a get for the rest
    set_dups = _set_duplicates(bset)
    live = read_items(client, primary["id"], [m for d in bset.duplicates for m in d.moves], pool,
                      trust=lambda move, users: not set_dups & set(users))   # a list lagging the merge: get it
    record["duplicates"] = [plan_duplicate(client, bset, d, primary, live) for d in reversed(bset.duplicates)]
    blocked = [d for d in record["duplicates"] if d.get("blocked_by")]
    if blocked:
        record.update(status="failed", reason="external_ref_taken",
                      error=f"{blocked[0]['external_ref']} is held by {blocked[0]['blocked_by']} now")
    else:
        record["status"] = "would_restore"
        lost = [i for d in record["duplicates"] for i in d.get("not_in_backups") or []]
        if lost:
            items = plural(len(lost), "ticket or conversation", "tickets and conversations")
            record["note"] = (f"part of this set cannot be undone: {items} the merge moved "
                              f"{'is' if len(lost) == 1 else 'are'} in no backup here (a backup lost and accepted as "
                              f"lost): they stay on the primary")
        fields = {d.id: [(m.id, m.display_id) for m in d.custom_field_moves] for d in bset.duplicates}
        writes = planned_writes(record, fields, primary_refs_wanted(bset, primary), note=note)
        if fields_back.body:
            writes.insert(0, PlannedWrite("fields_back", primary["id"], primary.get("display_id")))
        record["writes"] = [w.to_json() for w in writes]
    return record


def blank_line(bset: BackupSet) -> SetOutcome:
    """A set's restore report line before anything is known of it (runs.over_sets.SetRunKind)."""
    return SetOutcome(bset.email, bset.key, fingerprint=bset.fingerprint, backups=list(bset.folders),
                      primary={"id": bset.primary["id"], "display_id": bset.primary.get("display_id"),
                               "external_ref": bset.primary.get("external_ref")})


def _failed_text(bset: BackupSet, earlier_writes: int = 0) -> str:
    head = f"{plural(len(bset.failed), 'backup folder')} of this set {'does' if len(bset.failed) == 1 else 'do'} " \
           f"not verify ({bset.failed[0].line()})"
    if not earlier_writes:
        return f"{head}; nothing of this set was touched"
    return (f"{head}, and an earlier restore run already made {earlier_writes} journaled step(s) of this set: "
            f"it is partly restored; put the folder back byte for byte from your copy of the backups and re-run "
            f"to finish it (nothing more was changed now)")


def restored_earlier(journal: Journal, bset: BackupSet) -> dict | None:
    """The journal's record of this set's email and primary when an earlier run restored it
    whole, under any set key (a folder that stopped verifying since drops its duplicate from
    the key), else None."""
    prefix = f"{bset.email_key}|{bset.primary['id']}|"
    mine = {d.id for d in bset.duplicates}   # ...and of these very duplicates (not a later merge's)
    return next((r for r in journal.all_sets() if r["set_key"].startswith(prefix) and r["status"] == FINISHED
                 and mine <= set(r["set_key"][len(prefix):].split(","))), None)


def earlier_steps(journal: Journal, bset: BackupSet) -> int:
    """The journaled steps earlier runs made for this set's email and primary, under any set key:
    a folder that stopped verifying drops its duplicate from the key (BackupSet.key)."""
    prefix = f"{bset.email_key}|{bset.primary['id']}|"
    return sum(c["done"] + c["intent"] for key, c in journal.step_counts().items() if key.startswith(prefix))


def finished_record(bset: BackupSet, record: dict, *, preview: bool) -> SetOutcome:
    """The report line of a set an earlier run restored (from its journal record)."""
    return replace(blank_line(bset), status=SetStatus.ALREADY_RESTORED if preview else SetStatus.RESTORED,
                   resumed=True, earlier=True, note=f"restored in run {record['run_id']} (savepoint)",
                   duplicates=[RestoredDuplicate.from_json(d)
                               for d in (record.get("context") or {}).get("duplicates", [])])


def journal_progress(journal: Journal, bset: BackupSet) -> dict[str, Any]:
    """What the restore journal says was done for a set this run did not finish (stopped or
    interrupted), as SetOutcome fields: {"duplicates": [RestoredDuplicate with "recreated"
    and the display ids per outcome: moved_back, already_back, deleted_since, left_alone]},
    {} if nothing was done. Never raises: the journal may be what failed."""
    try:
        steps = journal.steps(bset.key)
    except Exception:  # noqa: BLE001 - a report line without numbers beats no report
        return {}
    out = []
    for dup in bset.duplicates:
        line = RestoredDuplicate(dup.id, dup.display_id, dup.external_ref,
                                 recreated=(steps.get(step_name("recreate", dup.id)) or {}).get("status") == "done")
        for move in dup.moves:
            record = steps.get(step_name(f"{move.kind}_back", dup.id, item=move.id)) or {}
            if record.get("status") == "done":
                _given_back(line, (record.get("data") or {}).get("outcome", "moved_back"), move.display_id)
        for field_move in dup.custom_field_moves:
            record = steps.get(step_name("custom_fields_back", dup.id, item=field_move.id)) or {}
            if record.get("status") == "done":
                back = (record.get("data") or {}).get("outcome") in ("moved_back", "already_back")
                (line.custom_fields_back if back else line.custom_fields_left).append(field_move.display_id)
        for name, record in steps.items():
            step = parse_step(name)
            if step.kind == "note_back" and step.duplicate == dup.id and record.get("status") == "done":
                line.files_back += int((record.get("data") or {}).get("files") or 0)
                line.notes_back += not str(step.item).startswith(RECORD_FILES)
        if line.recreated or line.moved_back or line.already_back or line.deleted_since or line.left_alone \
                or line.custom_fields_back or line.notes_back or line.files_back:
            out.append(line)
    return {"duplicates": out} if out else {}


def _given_back(line: RestoredDuplicate, outcome: str, display_id: str) -> None:
    """Add an item's display id to the list its give-back outcome names."""
    if outcome not in GIVE_BACK_OUTCOMES:   # a journal's word, checked before it names a field
        raise ValueError(f"unknown give-back outcome {outcome!r}")
    getattr(line, outcome).append(display_id)


# --------------------------------------------------------------------------- the real run
class SetRestorer:
    """Runs (or resumes) the restore of one merge set, journaling every write."""

    def __init__(self, client: DevRevClient, journal: Journal, clock: Callable[[], float] = time.monotonic,
                 listing_wait: float = 10.0, *, note: bool = True, previewed: PreviewWrites | None = None,
                 fanout: Fanout | None = None):
        """listing_wait: seconds a listing by the duplicate may take to show what it got back;
        note: leave a note on the primary's timeline once the set is restored (runs.notes);
        previewed: the writes the run's preview listed (None: --skip-preview-check, no list);
        fanout: the --workers slots, shared by the sets and the item reads and writes inside one
        (plumbing.fanout; None: one call at a time). The run may set it once it holds them."""
        self.previewed = previewed
        self.fanout = fanout
        self.client = client
        self.journal = journal
        self.note = note
        self.clock = clock
        self.listing_wait = listing_wait
        self._locks_guard = threading.Lock()
        self._item_locks: dict[str, threading.Lock] = {}   # two sets can share a ticket
        self._written: set[str] = set()   # items this run wrote: a listing may not show that yet

    def _may(self, key: str, write: PlannedWrite) -> None:
        """Raises SetFailed when the run's preview did not list this write (restoring.preview_writes)."""
        if self.previewed is not None:
            try:
                self.previewed.check(key, write)
            except WriteNotPreviewed as exc:
                raise SetFailed(str(exc)) from None

    def _item_lock(self, item_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._item_locks.setdefault(item_id, threading.Lock())

    def restore(self, bset: BackupSet) -> SetOutcome:
        """_restore, every line it logs naming the set's email (cli.log_subject), holding one
        of the --workers slots for the set (its item calls borrow the free ones)."""
        with log_subject(bset.email), slot_of(self.fanout):
            return self._restore(bset)

    def _restore(self, bset: BackupSet) -> SetOutcome:
        """Restore one set; returns its report line: the preview's header plus "status"
        ("restored" or "failed"), "error"?, "resumed", "duration_s" and per duplicate "new_id",
        "new_display_id", "recreated", "primary_ref_back" and the display ids it "moved_back",
        found "already_back", found "deleted_since" or "left_alone". Raises AuthError (401/403)
        and RunInterrupted; every other failure is the set's, journaled."""
        key, started = bset.key, self.clock()
        record = self.journal.set_record(key)
        if record and record["status"] == FINISHED:
            return finished_record(bset, record, preview=False)
        if bset.failed and (whole := restored_earlier(self.journal, bset)) is not None:
            done = finished_record(bset, whole, preview=False)
            done.note = f"{done.note}; since then {_failed_text(bset).split(';')[0]}: nothing to do"
            return done
        out = blank_line(bset)
        out.resumed = bool(record)
        try:
            if bset.failed:
                raise SetFailed(_failed_text(bset, earlier_steps(self.journal, bset)))
            if bset.refused:
                raise SetFailed(f"{bset.refused}; nothing more of this set was touched")
            self.journal.set_status(key, bset.email, "in_progress")
            primary = live_primary(self.client, bset)
            if not any(r["status"] == "done" for r in self.journal.steps(key).values()):
                _check_no_backup_missing(self.client, bset, primary)   # before the set's first write
            out.primary["external_ref_now"] = primary.get("external_ref")
            refs_back = self._references_back(key, bset, primary)
            if refs_back is not None:
                out.primary["external_refs_back"] = refs_back
            back = self._fields_back_to_primary(key, bset, primary)
            if back is not None:
                out.primary["fields_back"], out.primary["fields_left"] = back.back, back.left
            for dup in reversed(bset.duplicates):
                result = RestoredDuplicate(dup.id, dup.display_id, dup.external_ref, backups=list(dup.folders))
                out.duplicates.append(result)
                self._restore_duplicate(key, bset, dup, primary["id"], result)
            if self.note:
                note = self._leave_note(key, bset, out.duplicates, primary["id"])
                out.primary["restore_note"] = note.entry
                if note.refused:
                    out.primary["restore_note_refused"] = note.refused
            self.journal.set_status(key, bset.email, FINISHED, context={"duplicates": to_json(out.duplicates)})
            out.status = SetStatus.RESTORED
            lost = sum(len(d.not_in_backups) for d in bset.duplicates)
            if lost:   # said in the report too, not only in the preview
                out.note = (f"restored in part: {plural(lost, 'ticket or conversation', 'tickets and conversations')} "
                            f"the merge moved {'is' if lost == 1 else 'are'} in no backup (a lost backup): left on "
                            f"the primary")
        except (SetFailed, DevRevError) as exc:
            if isinstance(exc, DevRevError) and exc.status in (401, 403):
                raise
            self.journal.set_status(key, bset.email, "failed", error=str(exc))
            out.status, out.error = SetStatus.FAILED, str(exc)
            if is_temporary(exc):
                out.retry_later = True   # a later run may finish it alone (exit 75)
            log.error("restore failed: %s", exc)
        out.duration_s = round(self.clock() - started, 3)
        return out

    def _restore_duplicate(self, key: str, bset: BackupSet, dup: DuplicateBackup, primary_id: str,
                           result: RestoredDuplicate) -> None:
        new = self._contact_for(key, dup, primary_id, result)
        result.new_id, result.new_display_id = new["id"], new.get("display_id")
        live = self._read_items(key, bset, dup, primary_id)
        # the items are independent (each journaled and locked on its own): their writes in parallel
        outcomes = fan_map(self.fanout, lambda move: self._give_back(key, dup, move, new["id"], primary_id, live),
                           dup.moves)
        for move, (outcome, earlier) in zip(dup.moves, outcomes):
            _given_back(result, outcome, move.display_id)
            if outcome == "moved_back" and earlier:
                result.moved_back_earlier.append(move.display_id)   # a resumed set: "this run" does not count it
        fields = fan_map(self.fanout, lambda item: self._fields_back(key, dup, item, new["id"], primary_id),
                         dup.custom_field_moves)
        for field_move, outcome in zip(dup.custom_field_moves, fields):
            back = outcome in ("moved_back", "already_back")
            (result.custom_fields_back if back else result.custom_fields_left).append(field_move.display_id)
        self._verify_back(key, dup, new["id"])
        if result.recreated:   # a duplicate that was kept still has its own page
            page = page_counts(dup)
            if page.get("notes") or page.get("files") or page.get("record_note"):
                self._may(key, PlannedWrite("contact_page", dup.id, dup.display_id))
            try:
                give_page_back(self.client, self.journal, key, dup, new["id"], result)
            except ContactPageError as exc:
                raise SetFailed(f"the notes of {dup.display_id} cannot be written again: {exc}") from None
            result.notes_found_on_primary = notes_on(self.client, primary_id, dup)
        log.info("%s restored as %s (%s given back)", dup.display_id, new.get("display_id"),
                 plural(len(result.moved_back), "item"))

    # ------------------------------------------------------------------ the contact
    def _contact_for(self, key: str, dup: DuplicateBackup, primary_id: str, result: RestoredDuplicate) -> dict:
        """The duplicate to give the items back to: the kept one, or the one created again."""
        step = step_name("recreate", dup.id)
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            data = record["data"]
            result.recreated, result.primary_ref_back = not data.get("kept"), self._ref_given_back(key, dup)
            result.recreated_earlier = result.recreated and record.get("run_id") != self.journal.run_id
            return {"id": data["id"], "display_id": data.get("display_id")}
        if record is None:
            live = _read_or_none(self.client.get_rev_user, dup.id)
            if not is_retired(live):
                self.journal.done(key, step, {"id": dup.id, "display_id": dup.display_id, "kept": True})
                result.recreated, result.primary_ref_back = False, None
                return {"id": dup.id, "display_id": dup.display_id}
        self._may(key, PlannedWrite("recreate", dup.id, dup.display_id))
        result.primary_ref_back = self._give_primary_its_ref(key, dup, primary_id)
        new = self._create(key, dup, asked_before=record is not None)
        self.journal.done(key, step, {"id": new["id"], "display_id": new.get("display_id")})
        result.recreated = True
        log.info("created %s again as %s (external_ref %s)", dup.display_id, new.get("display_id"), dup.external_ref)
        return new

    def _leave_note(self, key: str, bset: BackupSet, duplicates: list[RestoredDuplicate],
                    primary_id: str) -> NoteResult:
        """The restore note on the primary's timeline: what was given back, to which contact."""
        self._may(key, PlannedWrite("restore_note", primary_id, bset.primary.get("display_id")))
        text = restore_note_text(when=iso_utc(), run_id=self.journal.run_id,
                                 duplicates=[{"display_id": d.display_id, "external_ref": d.external_ref,
                                              "new_display_id": d.new_display_id} for d in duplicates],
                                 items_back=sum(len(d.moved_back) for d in duplicates))
        return write_note(self.client, self.journal, key, primary_id, step="restore_note",
                          ref=note_ref("restore", key, self.journal.run_id), text=text)

    def _references_back(self, key: str, bset: BackupSet, primary: dict) -> list[str] | None:
        """Where DevRev keeps a list of references per contact (`external_refs`), the merge left
        every duplicate's reference in the primary's list: they leave it, the primary's original
        one first again, before any duplicate is created again (DevRev would refuse a reference
        the primary still holds). References the primary took since are kept. Returns the list
        written (None where DevRev keeps one reference per contact)."""
        step = step_name("primary_refs")
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            return (record["data"] or {}).get("after")
        live = self.client.get_rev_user(primary["id"]) if record else primary
        current = live.get(facts.CONTACT_REFS_FIELD)
        if not isinstance(current, list):
            self.journal.done(key, step, {"after": None})
            return None
        wanted = primary_refs_wanted(bset, live) or current
        if wanted != current:
            self._may(key, PlannedWrite("primary_refs", primary["id"], primary.get("display_id")))
            self.journal.intent(key, step, {"before": current, "after": wanted})
            try:
                self.client.update_rev_user_external_refs(primary["id"], wanted)
            except ConflictError:
                raise SetFailed(f"DevRev refuses the primary's references {wanted!r} (another contact holds one "
                                f"now); nothing more was changed for this set") from None
        self.journal.done(key, step, {"before": current, "after": wanted})
        return wanted

    def _fields_back_to_primary(self, key: str, bset: BackupSet, primary: dict) -> FieldsBack | None:
        """The primary's fields --fill-blanks filled, given back where the primary still holds
        what the fill wrote (restoring.fields_back); journaled, checked in DevRev's answer.
        None when the merge filled nothing."""
        if not bset.fills:
            return None
        step = step_name("fields_back")
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            data = record["data"] or {}
            return FieldsBack(back=list(data.get("back") or []), left=list(data.get("left") or []))
        now = self.client.get_rev_user(primary["id"]) if record else primary
        plan = plan_fields_back(bset.fills, now)
        if record is not None and not plan.back and (record["data"] or {}).get("back"):
            plan = FieldsBack(back=list(record["data"]["back"]), left=list(record["data"].get("left") or []))
        elif plan.body:
            self._may(key, PlannedWrite("fields_back", primary["id"], primary.get("display_id")))
            self.journal.intent(key, step, {"body": plan.body, "back": plan.back, "left": plan.left})
            answer = self.client.update_rev_user_fields(primary["id"], plan.body)
            again = plan_fields_back(bset.fills, answer)
            if again.back:
                raise SetFailed(f"DevRev did not give the primary's fields back ({', '.join(again.back)}): re-run to "
                                f"check again")
        self.journal.done(key, step, {"back": plan.back, "left": plan.left})
        if plan.left:
            log.warning("the primary's %s changed since --fill-blanks filled %s: left as %s",
                        ", ".join(plan.left), "it" if len(plan.left) == 1 else "them",
                        "it is" if len(plan.left) == 1 else "they are")
        return plan

    def _ref_given_back(self, key: str, dup: DuplicateBackup) -> str | None:
        record = self.journal.step(key, step_name("primary_ref", dup.id))
        return ((record or {}).get("data") or {}).get("after")

    def _give_primary_its_ref(self, key: str, dup: DuplicateBackup, primary_id: str) -> str | None:
        """If the primary carries the duplicate's reference, it gets its original one back."""
        step = step_name("primary_ref", dup.id)
        if self.journal.is_done(key, step):
            return self._ref_given_back(key, dup)
        now = self.client.get_rev_user(primary_id).get("external_ref")
        original = dup.primary_original_ref
        if now != dup.external_ref or not original or original == now:
            self.journal.done(key, step, {"not_needed": True, "now": now})
            return None
        self._may(key, PlannedWrite("primary_ref", dup.id, f"{now} -> {original}"))
        self.journal.intent(key, step, {"before": now, "after": original})
        try:
            self.client.update_rev_user_external_ref(primary_id, original)
        except ConflictError:
            holder = _holder_of(self.client, original, but=primary_id)
            raise SetFailed(f"the primary's original external_ref {original!r} is held by "
                            f"{(holder or {}).get('display_id', 'another contact')} now; nothing more was changed "
                            f"for this set") from None
        self.journal.done(key, step, {"before": now, "after": original})
        log.info("the primary gave back %s and carries %s again", now, original)
        return original

    def _adopt(self, dup: DuplicateBackup) -> dict | None:
        """After a create whose answer was lost: the contact it made, if DevRev has it."""
        if not dup.external_ref:
            return None
        holder = _holder_of(self.client, dup.external_ref, but=dup.id)
        if holder is not None and (holder.get("email") or "").casefold() == (dup.email or "").casefold():
            return holder
        return None

    def _create(self, key: str, dup: DuplicateBackup, *, asked_before: bool) -> dict:
        """rev-users.create, never twice: a lost answer is settled by looking the reference up."""
        step = step_name("recreate", dup.id)
        if asked_before and (found := self._adopt(dup)) is not None:
            log.info("%s was already created again as %s before the interruption", dup.display_id,
                     found.get("display_id"))
            return found
        if not dup.email or not dup.rev_org or not dup.external_ref:
            raise SetFailed(f"the backup of {dup.display_id} lacks its email, workspace or external_ref: "
                            f"it cannot be created again")
        self.journal.intent(key, step, {"email": dup.email, "external_ref": dup.external_ref})
        retries = self.client.retry.start()
        profile = update_body(dup.profile)
        while True:
            try:
                return self.client.create_rev_user(email=dup.email, display_name=dup.display_name,
                                                   rev_org=dup.rev_org, external_ref=dup.external_ref,
                                                   profile=profile)
            except BadRequestError as exc:
                if not profile:
                    raise
                # [I] a tenant whose contacts take none of these fields on create (a custom field
                # without its schema): nothing was created; the contact comes back without them
                log.warning("rev-users.create refused %s's other fields (%s): creating it with its email, name, "
                            "workspace and reference only", dup.display_id, exc)
                profile = {}
            except ConflictError:
                if (found := self._adopt(dup)) is not None and asked_before:
                    return found
                holder = _holder_of(self.client, dup.external_ref, but=dup.id)
                who = holder.get("display_id") or holder["id"] if holder else \
                    "a contact DevRev does not list (the retired one may keep it for a while: re-run later)"
                raise SetFailed(f"cannot create {dup.display_id} again: its external_ref {dup.external_ref} is "
                                f"held by {who}") from None
            except (TransportError, ServerError, ResponseError) as exc:
                delay = retries.next_delay()
                if delay is None:
                    raise
                log.warning("rev-users.create for %s: %s; checking before asking again", dup.display_id, exc)
                self.client.wait(delay)
                if (found := self._adopt(dup)) is not None:
                    return found

    # ------------------------------------------------------------------ the items
    def _read_items(self, key: str, bset: BackupSet, dup: DuplicateBackup, primary_id: str) -> dict[str, Users]:
        """The users now of the duplicate's items not yet given back and never started, read right
        before the writes from the listings by the primary (restoring.live_items: a page per 100
        items, a get for an item they do not return). An item an interrupted run started, or one
        this run wrote already, is read by _give_back itself (a fresh get, under its lock)."""
        steps = self.journal.steps(key)
        fresh = [m for m in dup.moves if step_name(f"{m.kind}_back", dup.id, item=m.id) not in steps
                 and m.id not in self._written]
        set_dups = _set_duplicates(bset)
        return read_items(self.client, primary_id, fresh, self.fanout,
                          trust=lambda move, users: not set_dups & set(users) and move.id not in self._written)

    def _give_back(self, key: str, dup: DuplicateBackup, move: Move, new_id: str, primary_id: str,
                   live: Mapping[str, Users]) -> tuple[str, bool]:
        """Give one item back to the duplicate, journaled; returns what happened to it
        (moved_back, already_back, deleted_since or left_alone) and whether an earlier run of
        an interrupted restore did it ("this run" does not count it). live: the item's users as
        read right before the writes (_read_items); an item not in it is read here."""
        step = step_name(f"{move.kind}_back", dup.id, item=move.id)
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            return (record["data"] or {}).get("outcome", "moved_back"), record.get("run_id") != self.journal.run_id
        read, write = _readers(self.client, move.kind)
        with self._item_lock(move.id):
            if record is None and move.id in live and move.id not in self._written:
                current: list[str] | None = live[move.id]
            else:   # started by an interrupted run, or written by this one since the listing: read it
                obj = _read_or_none(read, move.id)
                current = None if obj is None else ids_of(obj.get(move.field_name))
            if current is None:
                self.journal.done(key, step, {"outcome": "deleted_since"})
                log.warning("%s was deleted since the merge: not given back", move.display_id)
                return "deleted_since", False
            if new_id in current:
                outcome = "moved_back" if record else "already_back"
                self.journal.done(key, step, {"outcome": outcome, "after": current, "confirmed_by": "fresh read"})
                return outcome, False
            wanted = restored_users(current, list(move.users), dup.old_id(move), new_id, primary_id)
            if wanted is None:
                self.journal.done(key, step, {"outcome": "left_alone", "now": current})
                log.warning("%s: the primary was taken off it since the merge: left as it is", move.display_id)
                return "left_alone", False
            self._may(key, PlannedWrite("item_back", move.id, move.display_id))
            self.journal.intent(key, step, {"before": current, "after": wanted})
            try:
                updated = ids_of(write(move.id, wanted).get(move.field_name))
            except NotFoundError as exc:
                if _read_or_none(read, move.id) is None:
                    self.journal.done(key, step, {"outcome": "deleted_since"})
                    return "deleted_since", False
                raise SetFailed(f"{move.display_id}: DevRev refused the new {move.field_name} ({exc})") from None
            finally:
                self._written.add(move.id)
        if new_id not in updated:   # DevRev's answer is the item as it now stands
            raise SetFailed(f"{move.display_id}: DevRev did not apply the new {move.field_name} ({updated})")
        self.journal.done(key, step, {"outcome": "moved_back", "before": current, "after": updated})
        return "moved_back", False

    def _fields_back(self, key: str, dup: DuplicateBackup, item: CustomFieldMove, new_id: str,
                     primary_id: str) -> str:
        """Give an item's custom fields back to the duplicate (its re-created contact), journaled;
        the fields the merge changed only, each as restored_users says for its list (a single id:
        back only if the primary still holds it). Returns moved_back, already_back, left_alone
        (changed since the merge) or deleted_since."""
        step = step_name("custom_fields_back", dup.id, item=item.id)
        record = self.journal.step(key, step)
        if record and record["status"] == "done":
            return str((record["data"] or {}).get("outcome", "moved_back"))
        old = dup.earlier.get(item.id, dup.id)
        with self._item_lock(item.id):
            obj = read_object(self.client, item.kind, item.id)
            if obj is None:
                self.journal.done(key, step, {"outcome": "deleted_since"})
                return "deleted_since"
            now_fields = obj.get("custom_fields") or {}
            wanted: dict[str, Any] = {}
            for name, before in item.fields.items():
                now = now_fields.get(name)
                if holds(now, new_id):
                    continue
                back: list[str] | str | None = None
                if isinstance(before, list):
                    if isinstance(now, list):
                        back = restored_users(now, before, old, new_id, primary_id)
                elif now == primary_id and before == old:
                    back = new_id
                if back is not None:
                    wanted[name] = back
            if not wanted:
                outcome = "already_back" if all(holds(now_fields.get(n), new_id) for n in item.fields) \
                    else "left_alone"
                self.journal.done(key, step, {"outcome": outcome, "now": {n: now_fields.get(n) for n in item.fields}})
                return outcome
            self._may(key, PlannedWrite("custom_fields_back", item.id, item.display_id))
            self.journal.intent(key, step, {"before": {n: now_fields.get(n) for n in wanted}, "after": wanted})
            try:
                after = write_fields(self.client, item, wanted, obj.get("subtype"), gone=None, present=new_id)
            except CustomFieldRefused as exc:
                raise SetFailed(str(exc)) from None
            finally:
                self._written.add(item.id)
        self.journal.done(key, step, {"outcome": "moved_back", "after": after})
        return "moved_back"

    def _verify_back(self, key: str, dup: DuplicateBackup, new_id: str) -> None:
        """A listing by the duplicate must return every item given back to it."""
        step = step_name("verify_back", dup.id)
        if self.journal.is_done(key, step):
            return
        steps = self.journal.steps(key)
        given = {m.id: m.display_id for m in dup.moves
                 if ((steps.get(step_name(f"{m.kind}_back", dup.id, item=m.id)) or {}).get("data") or {})
                 .get("outcome") in ("moved_back", "already_back")}
        # DevRev's listings may lag its updates for a moment: look again, backing off, for a while
        waits = self.client.retry.with_(attempts=None, base=0.2, cap=2.0, jitter=False,
                                        clock=self.clock).waits(self.listing_wait)
        def listed(kind: str) -> set[str]:
            found = self.client.list_tickets(new_id) if kind == "ticket" else self.client.list_conversations(new_id)
            return {obj["id"] for obj in found}
        while given:   # tickets and conversations listed at once, on the free slots
            listed_now = set().union(*fan_map(self.fanout, listed, ("ticket", "conversation")))
            missing = sorted(name for item_id, name in given.items() if item_id not in listed_now)
            if not missing:
                break
            if next(waits, None) is None:
                raise SetFailed(f"a listing by {dup.display_id} does not return {', '.join(missing)} after "
                                f"{self.listing_wait:.0f} s; re-run to check again")
        self.journal.done(key, step, {"listed": sorted(given.values())})
