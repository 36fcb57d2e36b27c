"""What a restore reads from backups/: verified folders, grouped into merge sets to undo.

Every folder is verified first (the same check as verify_backups.py); a folder that does
not verify, or whose metadata cannot be read, is never used, and its merge set is held
back whole (an undo from part of a set's backups would leave it half restored). Folders
are checked by `verification.verify_backup` and read only through backup.py's layout
helpers and typed loaders (`load_metadata`, `load_moves`).

A merge set here is the email and primary of the backups; each of its duplicates gathers
its folders (one per backup round) in the order the merge wrote them, and its moves:
each ticket and conversation once, with the users it had before the merge (the earliest
backup that lists it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import backup
from backup import BackupError, CustomFieldMove, Move, SavedContactPage
from backup_checks import verification
from contacts.csv_reader import DUPLICATE_PREFIX, email_key


@dataclass(frozen=True)
class FailedFolder:
    """A backup folder that is not used: the folder, the file and the reason of its first problem."""
    folder: str
    path: str
    reason: str
    email: str | None = None   # the merge set it belongs to, when that can be told

    def line(self) -> str:
        """One line for the log and the console, as verify_backups.py prints it."""
        return f"FAILED {self.folder}: {self.path}: {self.reason}"


PROFILE_FIELDS = ("phone_numbers", "description", "tags", "custom_fields")   # re-created with the contact


@dataclass
class DuplicateBackup:
    """One merged duplicate as its backups recorded it (the contact's record before the merge)."""
    id: str
    display_id: str
    email: str | None
    display_name: str | None
    rev_org: str | None          # the workspace's id
    external_ref: str | None     # the duplicate's user_... reference
    primary_original_ref: str | None   # the primary's external_ref before the merge
    # the rest of the contact a restore creates it again with (as backed up): phone numbers,
    # description, tags (as DevRev answers them), custom fields; {} for none
    profile: dict = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    # objects whose custom fields named it, with those fields before the merge (earliest backup wins)
    custom_field_moves: list[CustomFieldMove] = field(default_factory=list)
    # its own page, as each backup round that read it saved it: (folder, page)
    contact_pages: list[tuple[str, SavedContactPage]] = field(default_factory=list)
    # item id -> the contact that was on it before the merge, when an earlier merge of the
    # same contact (same external_ref, an older id) moved it; see _supersede
    earlier: dict[str, str] = field(default_factory=dict)
    replaces: list[str] = field(default_factory=list)   # those older ids
    # items the merge journal records moving off it that no backup here lists (a backup lost and
    # accepted as lost, `<folder>.accept-loss`, after those moves): the restore cannot give them back
    not_in_backups: list[str] = field(default_factory=list)

    def old_id(self, move: Move) -> str:
        """The duplicate's id on this item before the merge that moved it."""
        return self.earlier.get(move.id, self.id)


@dataclass
class BackupSet:
    """A merge set to undo: its email, its primary (as backed up) and its duplicates in the
    order the merge handled them. failed: folders of this set that did not verify."""
    email: str
    primary: dict
    duplicates: list[DuplicateBackup]
    fingerprints: dict[str, str]            # folder name -> manifest sha256
    failed: list[FailedFolder] = field(default_factory=list)
    # the duplicates the merge set's CSV rows named, as the backups recorded them:
    # [{"rev_user_id", "external_ref"}]; a merged one without a folder here is a missing backup
    csv_duplicates: list[dict] = field(default_factory=list)
    authentic: set[str] = field(default_factory=set)   # folder names MAC'd with this installation's key
    # why the merge journal does not allow this set to be restored (restoring.merge_record), or None
    refused: str | None = None
    # what --fill-blanks wrote to the primary, per the merge journal ({"before", "after"} each): given back
    fills: list[dict] = field(default_factory=list)

    @property
    def all_authentic(self) -> bool:
        return bool(self.fingerprints) and set(self.fingerprints) <= self.authentic

    @property
    def key(self) -> str:
        """Identifies the set across runs: email key, primary id, the duplicates' ids."""
        dups = ",".join(sorted(d.id for d in self.duplicates))
        return f"{email_key(self.email)}|{self.primary['id']}|{dups}"

    @property
    def email_key(self) -> str:
        return email_key(self.email)

    @property
    def fingerprint(self) -> str:
        """sha256 over the set's folders and their manifests: a preview is of these exact backups."""
        text = json.dumps(sorted(self.fingerprints.items()), separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def folders(self) -> list[str]:
        return [f for d in self.duplicates for f in d.folders]


@dataclass
class _Folder:
    path: str
    started_at: str
    metadata: dict
    moves: list[Move]
    manifest_sha256: str
    custom_field_moves: list[CustomFieldMove]
    contact_page: SavedContactPage | None
    authentic: bool = False


_FOLDER_NAME = re.compile(r"_\d{8}_\d{6}_")


def _read_folder(path: str) -> _Folder | FailedFolder:
    """A verified, readable folder, or why it is not used."""
    try:
        check = verification.verify_backup(path)
    except OSError as exc:
        return FailedFolder(path, ".", f"cannot be checked ({exc.strerror or exc})")
    if not check.ok:
        where, reason = check.problems[0]
        more = f" (and {len(check.problems) - 1} more problems)" if len(check.problems) > 1 else ""
        return FailedFolder(path, where, reason + more, _email_of(path))
    try:
        metadata = backup.load_metadata(path)
        moves = backup.load_moves(path)
        field_moves = backup.load_custom_field_moves(path)
        page = backup.load_contact_page(path)
        digest = backup.manifest_sha256_of(path)
        if digest is None:
            raise ValueError("manifest_sha256")
        for part in ("primary", "duplicate"):
            if not isinstance(metadata.get(part), dict) or not isinstance(metadata[part].get("id"), str):
                raise ValueError(part)
        email = (metadata.get("merge_set") or {}).get("email")
        if not isinstance(email, str) or not email:
            raise ValueError("email")
    except BackupError as exc:
        return FailedFolder(path, backup.METADATA, str(exc))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return FailedFolder(path, backup.METADATA, "not a readable backup record (contacts, email or moves missing)",
                            _email_of(path))
    return _Folder(path, str(metadata.get("started_at") or ""), metadata, moves, digest, field_moves, page,
                   check.authentic)


def _email_of(path: str) -> str | None:
    """The set of a folder that cannot be used: from its metadata if readable (None if not)."""
    try:
        email = (backup.load_metadata(path).get("merge_set") or {}).get("email")
        return email if isinstance(email, str) and email else None
    except (OSError, ValueError, AttributeError):
        return None


def _duplicate(folder: _Folder) -> DuplicateBackup:
    dup, refs = folder.metadata["duplicate"], folder.metadata.get("original_external_refs") or {}
    return DuplicateBackup(
        id=dup["id"], display_id=dup.get("display_id") or dup["id"], email=dup.get("email"),
        display_name=dup.get("display_name"), rev_org=(dup.get("rev_org") or {}).get("id"),
        external_ref=refs.get("duplicate", dup.get("external_ref")),
        primary_original_ref=refs.get("primary", folder.metadata["primary"].get("external_ref")),
        profile={k: dup[k] for k in PROFILE_FIELDS if dup.get(k) not in (None, "", [], {})})


def load_backup_sets(backup_dir: str, target: str | None = None,
                     elsewhere: list[str] | None = None) -> tuple[list[BackupSet], list[FailedFolder]]:
    """Every backup folder under `backup_dir`, verified and grouped into merge sets.

    Returns (sets in the order of their first backup, every folder that is not used).
    A set with a failed folder carries it in `failed` and must not be restored. Given a
    `target` (runs.support.backup_target), verified folders made against another DevRev (or an
    earlier life of the sandbox emulator) belong to no set here: their paths go to `elsewhere`.
    Raises OSError if `backup_dir` cannot be listed.
    """
    # `--backup-dir backups/<one backup>` means that folder, as for verify_backups.py
    read = [_read_folder(path) for path in verification.backup_folders(backup_dir)]
    failed = [r for r in read if isinstance(r, FailedFolder)]
    good = sorted((r for r in read if isinstance(r, _Folder)), key=lambda f: (f.started_at, f.path))
    if target is not None:
        other = [f for f in good if isinstance(f.metadata.get("target"), str) and f.metadata["target"] != target]
        if elsewhere is not None:
            elsewhere.extend(f.path for f in other)
        good = [f for f in good if f not in other]
    sets: dict[tuple[str, str], BackupSet] = {}
    for folder in good:
        email = folder.metadata["merge_set"]["email"]
        key = (email_key(email), folder.metadata["primary"]["id"])
        bset = sets.setdefault(key, BackupSet(email, folder.metadata["primary"], [], {}))
        _add_folder(bset, folder)
    for bad in failed:
        for bset in sets.values():
            if _belongs(bad, bset):
                bset.failed.append(bad)
    for bset in sets.values():
        _supersede(bset)
    return list(sets.values()), failed


def _supersede(bset: BackupSet) -> None:
    """Two duplicates of one set with the same external_ref are one contact merged twice (a
    restore, or the integration, created it again in between): the latest stands for both,
    and gets back what either merge moved."""
    latest: dict[str, DuplicateBackup] = {}
    for dup in reversed(bset.duplicates):
        keep = latest.setdefault(dup.external_ref or dup.id, dup)
        if keep is dup:
            continue
        keep.folders[:0] = dup.folders
        seen = {(m.kind, m.id) for m in keep.moves}
        for move in dup.moves:
            if (move.kind, move.id) not in seen:
                keep.moves.append(move)
                keep.earlier[move.id] = dup.old_id(move)
        fields_seen = {m.id for m in keep.custom_field_moves}
        for field_move in dup.custom_field_moves:
            if field_move.id not in fields_seen:
                keep.custom_field_moves.append(field_move)
                keep.earlier.setdefault(field_move.id, dup.earlier.get(field_move.id, dup.id))
        # its own page: the latest contact's (a restore wrote the earlier one's notes on it)
        keep.replaces.append(dup.id)
    bset.duplicates = [d for d in bset.duplicates if latest.get(d.external_ref or d.id) is d]


def _add_folder(bset: BackupSet, folder: _Folder) -> None:
    dup_id = folder.metadata["duplicate"]["id"]
    dup = next((d for d in bset.duplicates if d.id == dup_id), None)
    if dup is None:
        dup = _duplicate(folder)
        bset.duplicates.append(dup)
    dup.folders.append(folder.path)
    seen = {(m.kind, m.id) for m in dup.moves}
    dup.moves += [m for m in folder.moves if (m.kind, m.id) not in seen]   # the earliest backup's users win
    fields_seen = {m.id for m in dup.custom_field_moves}
    dup.custom_field_moves += [m for m in folder.custom_field_moves if m.id not in fields_seen]
    if folder.contact_page is not None:
        dup.contact_pages.append((folder.path, folder.contact_page))
    bset.fingerprints[os.path.basename(folder.path)] = folder.manifest_sha256
    if folder.authentic:
        bset.authentic.add(os.path.basename(folder.path))
    for row in folder.metadata["merge_set"].get("csv_rows") or []:
        ref, rev_user_id = row.get("EXTERNAL_REF"), row.get("REV_USER_ID")
        if isinstance(ref, str) and ref.startswith(DUPLICATE_PREFIX) and isinstance(rev_user_id, str) \
                and all(d["external_ref"] != ref for d in bset.csv_duplicates):
            bset.csv_duplicates.append({"rev_user_id": rev_user_id, "external_ref": ref})


def _belongs(bad: FailedFolder, bset: BackupSet) -> bool:
    """A failed folder belongs to a set by its metadata's email, else by its folder name."""
    if bad.email is not None:
        return email_key(bad.email) == bset.email_key
    name = os.path.basename(bad.folder.rstrip(os.sep))
    prefix = backup.folder_prefix(bset.email) + "_"
    return name.startswith(prefix) and bool(_FOLDER_NAME.match(name[len(prefix) - 1:]))
