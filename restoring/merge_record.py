"""What the merge's own savepoint journal says it did: all a restore may give back.

A backup folder can be edited and resealed by anyone who can write it (its sums can be
recomputed), so a backup alone never decides what the restore writes. The merge journals, for
every set, the contacts as its live checks read them, each backup folder's manifest sha256,
and each item it moved with the users before and after. Before a restore (its preview
included) each set read from the backups is held to that record (hold_to_merge):

- each duplicate must be one the journal merged into this primary, and the contact the restore
  would create again must carry the values the journal recorded (email, display name,
  workspace, `user_...` reference); the primary's original reference too;
- each backup folder must be the one the journal recorded (same manifest sha256), where the
  journal recorded it (merges from version 1.3.0 on);
- each ticket, conversation and custom field the backup lists must be one the journal moved off
  that duplicate; the users it gets back are the journal's `before`, not the backup's;
  items the merge listed but did not move (already moved, vanished) are not written;
- the duplicate's own page may not hold more entries than the journal recorded backing up.

Anything else refuses the set, with one line naming the object. A set no merge journal
records is refused unless every one of its folders is authentic (MAC'd with this
installation's key, plumbing.manifest_key): then the backups are this installation's own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from backup import CustomFieldMove, Move
from contacts.csv_reader import email_key
from restoring.backup_sets import PROFILE_FIELDS, BackupSet, DuplicateBackup
from runs.journal import SavedSet, Step, parse_step, read_savepoint


@dataclass
class MergedDuplicate:
    """One duplicate as the merge journal recorded it, across every set that merged it."""
    id: str
    primary_id: str
    live: dict[str, Any]                 # the contact as the merge's live checks read it
    primary_ref: str | None              # the primary's external_ref when that merge started
    # (kind, item id) -> the users (or, for custom_fields, the fields) before the merge moved them;
    # None for an item the merge listed but did not move (already moved, vanished)
    moved: dict[tuple[str, str], Any] = field(default_factory=dict)
    folders: dict[str, str | None] = field(default_factory=dict)   # backup folder name -> manifest sha256
    contact_entries: int = 0             # the most entries of its own page a backup round recorded
    set_mates: set[str] = field(default_factory=set)   # the other duplicates its merge set merged with it


@dataclass
class MergeRecord:
    """Every duplicate the merge journal at `path` records, by id."""
    path: str
    duplicates: dict[str, MergedDuplicate]
    # primary id -> the fill_blanks step's data ({"before", "after", "filled"}): what --fill-blanks
    # wrote to that primary, which a restore gives back (the merges of every set into it, in order)
    fills: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "MergeRecord | None":
        """The record of the merge savepoint `path`; None when there is no such file. Raises
        runs.journal.JournalError (one line) when it cannot be read."""
        saved = read_savepoint(path)
        if saved is None:
            return None
        record = cls(path, {})
        for one in saved:
            record._add(one)
        return record

    def _add(self, saved: SavedSet) -> None:
        ctx: dict[str, Any] = saved.context if isinstance(saved.context, dict) else {}
        primary: dict[str, Any] = ctx["primary"] if isinstance(ctx.get("primary"), dict) else {}
        primary_id = primary.get("id")
        if not isinstance(primary_id, str):
            return
        idents = [i for i in ctx.get("duplicates") or [] if isinstance(i, dict) and isinstance(i.get("id"), str)]
        # the duplicates this set backed up: a restore of one of them needs the others' backups too
        backed_up = {p.duplicate for n, st in saved.steps.items() if st.get("status") == "done"
                     for p in [parse_step_or_none(n)] if p is not None and p.kind == "backup"}
        for ident in idents:
            live: dict[str, Any] = ident["live"] if isinstance(ident.get("live"), dict) else ident
            known = self.duplicates.setdefault(ident["id"], MergedDuplicate(
                ident["id"], primary_id, live, primary.get("external_ref")))
            if ident["id"] in backed_up:
                known.set_mates |= {i["id"] for i in idents if i["id"] != ident["id"] and i["id"] in backed_up}
        fill = saved.steps.get("fill_blanks") or {}
        filled: dict[str, Any] = fill["data"] if isinstance(fill.get("data"), dict) else {}
        if fill.get("status") == "done" and isinstance(filled.get("after"), dict) and filled["after"]:
            self.fills.setdefault(primary_id, []).append(filled)
        for name, step in saved.steps.items():
            try:
                parsed = parse_step(name)
            except ValueError:
                continue
            dup = self.duplicates.get(parsed.duplicate or "")
            if dup is None or dup.primary_id != primary_id:
                continue
            data: dict[str, Any] = step["data"] if isinstance(step.get("data"), dict) else {}
            if parsed.kind in ("ticket", "conversation", "custom_fields") and parsed.item:
                before = data.get("before")
                key = (parsed.kind, parsed.item)
                if before is not None or key not in dup.moved:
                    dup.moved[key] = before
            elif parsed.kind == "backup" and step.get("status") == "done" and isinstance(data.get("folder"), str):
                sha = data.get("manifest_sha256")
                dup.folders[os.path.basename(data["folder"].rstrip(os.sep))] = sha if isinstance(sha, str) else None
                entries = data.get("contact_entries")
                if isinstance(entries, int):
                    dup.contact_entries = max(dup.contact_entries, entries)


def parse_step_or_none(name: str) -> Step | None:
    """A step name parsed, or None when it is not one."""
    try:
        return parse_step(name)
    except ValueError:
        return None


class NotWhatTheMergeDid(Exception):
    """A backup claims what the merge journal does not record: the set is refused."""


def hold_to_merge(bset: BackupSet, record: MergeRecord | None, *, authentic: bool) -> BackupSet:
    """The set as the merge journal allows it to be restored: each duplicate's moves and custom
    field moves limited to what the journal records moving, with the journal's `before`.
    `authentic`: every folder of the set is MAC'd with this installation's key. Raises
    NotWhatTheMergeDid with one line naming the object the backup claims beyond the record."""
    where = f"the merge's savepoint {record.path}" if record is not None else "no merge savepoint"
    known = record is not None and any(d.id in record.duplicates for d in bset.duplicates)
    if not known:
        if authentic:
            return bset   # this installation's own backups, the merge journal gone: trusted as they are
        raise NotWhatTheMergeDid(
            f"{where} records no merge of {', '.join(d.display_id for d in bset.duplicates)} into "
            f"{bset.primary.get('display_id')}, and the backups are not authenticated by this installation's key: "
            f"a restore gives back only what a recorded merge did (give --merge-savepoint the merge's savepoint)")
    assert record is not None
    held = [_hold_duplicate(bset, dup, record, where) for dup in bset.duplicates]
    present = {i for d in bset.duplicates for i in [d.id, *d.replaces]}
    for dup in bset.duplicates:
        found = record.duplicates.get(dup.id)
        missing = sorted((found.set_mates if found else set()) - present)
        said = len(bset.csv_duplicates) > len(bset.duplicates)   # the backups' own rows name it: backup_missing
        if missing and not said:   # a set is restored whole or not at all, whatever the backups' rows say
            raise NotWhatTheMergeDid(f"{where} records that {dup.display_id} was merged into "
                                     f"{bset.primary.get('display_id')} with {', '.join(missing)}, whose backup is "
                                     f"not here: restore the set from all its backups")
    # the primary's record as the merge read it decides its original reference, not the backup's
    first = record.duplicates.get(bset.duplicates[0].id) if bset.duplicates else None
    primary = dict(bset.primary, external_ref=first.primary_ref) if first is not None else bset.primary
    return replace(bset, duplicates=held, primary=primary,
                   fills=list(record.fills.get(str(bset.primary.get("id")), [])))


def _hold_duplicate(bset: BackupSet, dup: DuplicateBackup, record: MergeRecord, where: str) -> DuplicateBackup:
    merged = [record.duplicates.get(i) for i in [dup.id, *dup.replaces]]
    for contact_id, found in zip([dup.id, *dup.replaces], merged):
        if found is None or found.primary_id != bset.primary.get("id"):
            raise NotWhatTheMergeDid(f"{dup.display_id}: {where} records no merge of {contact_id} into "
                                     f"{bset.primary.get('display_id')}")
    latest = merged[0]
    assert latest is not None
    _same_contact(dup, latest, where)
    if (dup.primary_original_ref or None) != (latest.primary_ref or None):
        raise NotWhatTheMergeDid(f"{bset.primary.get('display_id')}: the backup says its reference was "
                                 f"{dup.primary_original_ref!r}, {where} recorded {latest.primary_ref!r}")
    journaled = {n: sha for m in merged if m is not None for n, sha in m.folders.items()}
    records_sums = any(sha is not None for sha in journaled.values())   # merges from 1.3.0 on
    for folder in dup.folders:
        name = os.path.basename(folder.rstrip(os.sep))
        if records_sums and name not in journaled:   # renamed, or added: not a folder the merge made
            raise NotWhatTheMergeDid(f"{folder}: {where} records no backup folder of that name for "
                                     f"{dup.display_id} (a folder renamed or added since the merge)")
        if name in journaled and journaled[name] is not None and bset.fingerprints.get(name) != journaled[name]:
            raise NotWhatTheMergeDid(f"{folder}: the backup was changed after the merge made it (its manifest is not "
                                     f"the one {where} recorded)")
    moves = [_held_move(m, dup, record, where) for m in dup.moves]
    field_moves = [_held_fields(m, dup, record, where) for m in dup.custom_field_moves]
    entries = {e.get("id") for _folder, page in dup.contact_pages for e in page.entries}
    allowed = sum(m.contact_entries for m in merged if m is not None)
    if len(entries) > allowed and any(m is not None and m.folders for m in merged):
        raise NotWhatTheMergeDid(f"{dup.display_id}: the backup holds {len(entries)} entries of its own page, "
                                 f"{where} recorded {allowed}")
    listed = {(m.kind, m.id) for m in dup.moves}
    lost = sorted({item for m in merged if m is not None for (kind, item), before in m.moved.items()
                   if kind in ("ticket", "conversation") and isinstance(before, list) and (kind, item) not in listed})
    return replace(dup, moves=[m for m in moves if m is not None],
                   custom_field_moves=[m for m in field_moves if m is not None], not_in_backups=lost)


def _same_contact(dup: DuplicateBackup, merged: MergedDuplicate, where: str) -> None:
    """The values the restore would create the contact again with are the ones the merge read."""
    live = merged.live
    org = live.get("rev_org")
    recorded = {"email": email_key(str(live.get("email") or "")), "display_name": live.get("display_name"),
                "workspace": org.get("id") if isinstance(org, dict) else org,
                "external_ref": live.get("external_ref")}
    claimed = {"email": email_key(dup.email or ""), "display_name": dup.display_name, "workspace": dup.rev_org,
               "external_ref": dup.external_ref}
    for name in PROFILE_FIELDS:   # the rest it is created again with: as the merge read it, or nothing
        recorded[name] = live.get(name) if live.get(name) not in (None, "", [], {}) else None
        claimed[name] = dup.profile.get(name)
    for name, value in claimed.items():
        if value != recorded[name]:
            raise NotWhatTheMergeDid(f"{dup.display_id}: the backup gives its {name} as {value!r}, {where} recorded "
                                     f"{recorded[name]!r}")


def _moved(dup: DuplicateBackup, record: MergeRecord, kind: str, item_id: str) -> tuple[bool, Any]:
    """(recorded, before) for an item the backup lists under `dup`, looked up under the id the
    duplicate had when that merge moved it (DuplicateBackup.earlier)."""
    owner = record.duplicates.get(dup.earlier.get(item_id, dup.id))
    if owner is None or (kind, item_id) not in owner.moved:
        return False, None
    return True, owner.moved[(kind, item_id)]


def _held_move(move: Move, dup: DuplicateBackup, record: MergeRecord, where: str) -> Move | None:
    recorded, before = _moved(dup, record, move.kind, move.id)
    if not recorded:
        raise NotWhatTheMergeDid(f"{move.display_id}: the backup of {dup.display_id} lists it, but {where} records no "
                                 f"move of it off {dup.display_id}")
    if not isinstance(before, list) or not all(isinstance(u, str) for u in before):
        return None   # listed, not moved by the merge (moved already, or vanished): nothing to give back
    return replace(move, users=tuple(before))


def _held_fields(item: CustomFieldMove, dup: DuplicateBackup, record: MergeRecord,
                 where: str) -> CustomFieldMove | None:
    recorded, before = _moved(dup, record, "custom_fields", item.id)
    if not recorded:
        raise NotWhatTheMergeDid(f"{item.display_id}: the backup of {dup.display_id} lists its custom fields, but "
                                 f"{where} records no change of them")
    if not isinstance(before, dict):
        return None
    return replace(item, fields=dict(before))
