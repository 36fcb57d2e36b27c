"""Backups you can trust: everything a duplicate contact owns, on disk and verified.

Nothing changes in DevRev for a contact until `write_backup` has saved, and
`backup_checks.verification.verify_backup` has checked, a folder holding both contacts, every ticket and
conversation the duplicate is on (with their original reporters and members, enough
to undo the merge), every timeline entry of those, and every attachment's bytes:

    backups/<email>_<YYYYMMDD_HHMMSS>_<duplicate display id>/
      metadata.json  tickets.json  conversations.json
      conversations/<TKT-n | CONV-n>/messages.json
      conversations/<TKT-n | CONV-n>/attachments/<artifact id>_<file name>
      contact/messages.json                          the duplicate's own timeline (its contact page)
      contact/attachments/<artifact id>_<file name>  files of those notes and of the contact itself
      custom_field_tickets.json   tickets naming the duplicate only in a custom field (where found)
      verification.json   (written last: path, size, sha256 of every file; counts)

The folder is built as `<name>.partial` and renamed when complete, so a crash never
leaves a folder that looks whole. Folders are 0700 and files 0600. The names above are
spelled once, in the "layout" section below; the writer, the checker (backup_checks/verification.py),
the engine, the restore and verify_backups.py all go through it, and read a folder back
through the typed loaders at the end.
"""
from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Iterable, Iterator

from devrev_api import assumptions as facts
from devrev_api.custom_fields import fields_naming
from devrev_api.errors import DownloadError
from devrev_client import DevRevClient
from plumbing import manifest_key
from plumbing.clock import iso_utc, utc_now
from plumbing.fanout import Fanout, fan_map
from plumbing.files import (
    durable_file,
    fsync_dir,
    json_bytes,
    make_private_dir,
    open_regular,
    safe_name,
    write_json_list,
)
from plumbing.version import TOOL_NAME, TOOL_VERSION

FORMAT_VERSION = 2          # 2: the contact page and custom-field references (a format-1 folder has neither)
DISK_MARGIN_BYTES = 16 << 20


class BackupError(Exception):
    """The backup could not be completed; nothing may change for this contact."""


class BackupFolderError(BackupError):
    """The backup folder itself cannot be written (permission, read-only, gone): every
    backup of the run would fail alike, so the run stops rather than failing set by set."""


_FOLDER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR)


# --------------------------------------------------------------------------- layout
# Relative paths inside a backup folder use "/" (they are stored in the manifest).
METADATA = "metadata.json"
TICKETS = "tickets.json"
CONVERSATIONS = "conversations.json"
MANIFEST = "verification.json"
JSON_FILES = (METADATA, TICKETS, CONVERSATIONS)
CONTACT_PAGE = "contact/messages.json"
CONTACT_FOLDER = "contact"
CUSTOM_FIELD_TICKETS = "custom_field_tickets.json"
PARTIAL_SUFFIX = ".partial"
FOLDER_TIME_FORMAT = "%Y%m%d_%H%M%S"


def folder_prefix(email: str) -> str:
    """How every backup folder of a merge set's email starts (before `_<time>_...`)."""
    return safe_name(email.strip().casefold(), max_bytes=80, fallback="contact")


def _duplicate_part(duplicate_display_id: str) -> str:
    return safe_name(duplicate_display_id, max_bytes=40, fallback="duplicate")


def backup_folder_name(email: str, duplicate_display_id: str, moment: datetime) -> str:
    """`<email>_<YYYYMMDD_HHMMSS>_<duplicate display id>` (UTC), each part made file-safe."""
    return f"{folder_prefix(email)}_{moment.strftime(FOLDER_TIME_FORMAT)}_{_duplicate_part(duplicate_display_id)}"


def partial_path(final: str) -> str:
    """The folder a backup is built in before it is renamed to `final`."""
    return final + PARTIAL_SUFFIX


def is_partial_of(name: str, email: str, duplicate_display_id: str) -> bool:
    """Whether folder `name` is an unfinished backup of this email's duplicate (any time,
    with or without a `-N` suffix)."""
    if not name.endswith(PARTIAL_SUFFIX) or not name.startswith(folder_prefix(email) + "_"):
        return False
    stem, suffix = name[: -len(PARTIAL_SUFFIX)], "_" + _duplicate_part(duplicate_display_id)
    return stem.endswith(suffix) or stem.rpartition("-")[0].endswith(suffix)


def object_folder(display_id: str) -> str:
    return safe_name(display_id, max_bytes=60, fallback="object")


def messages_path(object_display_id: str) -> str:
    """`conversations/<object>/messages.json`: the timeline entries of a ticket or conversation."""
    return f"conversations/{object_folder(object_display_id)}/messages.json"


def attachment_prefix(object_display_id: str, artifact_label: str, *, on_contact: bool = False) -> str:
    """`conversations/<object>/attachments/<artifact>_` (`contact/attachments/<artifact>_` for
    the duplicate's own page): every file of that artifact starts so."""
    folder = CONTACT_FOLDER if on_contact else f"conversations/{object_folder(object_display_id)}"
    return f"{folder}/attachments/{safe_name(artifact_label, max_bytes=40, fallback='artifact')}_"


def attachment_path(object_display_id: str, artifact_label: str, file_name: str, *, on_contact: bool = False) -> str:
    """Where an attachment's bytes are saved (`file_name` as DevRev gives it)."""
    return attachment_prefix(object_display_id, artifact_label, on_contact=on_contact) + safe_name(file_name)


def is_attachment(relpath: str) -> bool:
    return "/attachments/" in relpath


def file_path(folder: str, relpath: str) -> str:
    """The OS path of a file named by its relative path inside a backup folder."""
    return os.path.join(folder, *relpath.split("/"))


# --------------------------------------------------------------------------- reading DevRev
@dataclass
class Attachment:
    object_display_id: str
    artifact_id: str
    display_id: str
    name: str
    size: int | None
    mime_type: str | None
    on_contact: bool = False      # a file of the duplicate's own page (its notes or its record)

    @property
    def relpath(self) -> str:
        return attachment_path(self.object_display_id, self.display_id, self.name, on_contact=self.on_contact)


@dataclass
class Snapshot:
    """Everything a duplicate owns right now, as DevRev returned it."""
    tickets: list[dict[str, Any]]
    conversations: list[dict[str, Any]]
    entries: dict[str, list[dict[str, Any]]]  # object display id -> its timeline entries
    attachments: list[Attachment]
    # tickets that name the duplicate only in a custom field (works.list's custom_fields filter)
    custom_field_tickets: list[dict[str, Any]] = field(default_factory=list)
    contact_page: ContactPage | None = None

    @property
    def objects(self) -> list[dict[str, Any]]:
        return self.tickets + self.conversations

    @property
    def message_count(self) -> int:
        return sum(1 for es in self.entries.values() for e in es if e.get("type") == facts.MESSAGE_ENTRY_TYPE)

    @property
    def attachment_bytes(self) -> int:
        return sum(a.size or 0 for a in self.attachments)


def display_of(obj: dict[str, Any]) -> str:
    display_id: str = obj.get("display_id") or obj["id"]
    return display_id


def _referenced_artifacts(obj: dict[str, Any], entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Artifact summaries referenced by an object and its entries, each once."""
    seen: dict[str, dict[str, Any]] = {}
    for holder in [obj, *entries]:
        for art in holder.get("artifacts") or []:
            if isinstance(art, dict) and art.get("id") and art["id"] not in seen:
                seen[art["id"]] = art
    return list(seen.values())


def collect(client: DevRevClient, duplicate_id: str, pool: Fanout | None = None) -> Snapshot:
    """List, live, the tickets and conversations of a duplicate and all they hold. With a
    pool, the timelines of different objects are read in parallel (fanout.Fanout)."""
    snapshot = Snapshot(list(client.list_tickets(duplicate_id)), list(client.list_conversations(duplicate_id)), {}, [])
    read_timelines(client, snapshot, pool)
    return snapshot


def read_timelines(client: DevRevClient, snapshot: Snapshot, pool: Fanout | None,
                   writer: _Writer | None = None) -> tuple[dict[str, int], int]:
    """Each object's timeline entries and the attachments they reference, added to
    `snapshot`; with a writer, the entries go to the object's messages.json instead of
    `snapshot.entries` (memory flat in the number of objects). Returns (entries per object
    display id, messages)."""
    def one(obj: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None, int, list[Attachment], int]:
        display_id = display_of(obj)
        entries = list(client.list_timeline_entries(obj["id"]))
        attachments = _attachments(client, display_id, _referenced_artifacts(obj, entries))
        messages = sum(1 for e in entries if e.get("type") == facts.MESSAGE_ENTRY_TYPE)
        if writer is not None:
            writer.write_json(messages_path(display_id), entries)
        return display_id, entries if writer is None else None, len(entries), attachments, messages

    counts, messages = {}, 0
    for display_id, entries, count, attachments, object_messages in fan_map(pool, one, snapshot.objects):
        counts[display_id], messages = count, messages + object_messages
        snapshot.attachments += attachments
        if entries is not None:
            snapshot.entries[display_id] = entries
    return counts, messages


def _attachments(client: DevRevClient, holder_display_id: str, artifacts: list[dict[str, Any]], *,
                 on_contact: bool = False) -> list[Attachment]:
    """The files of these artifact summaries; a bare summary ({id, display_id}) costs one
    artifacts.get for its name and size."""
    out = []
    for art in artifacts:
        info = art.get("file") or {}
        if not info.get("name") or info.get("size") is None:
            info = (client.get_artifact(art["id"]).get("artifact") or {}).get("file") or {}
        out.append(Attachment(holder_display_id, art["id"], artifact_label(art), str(info.get("name") or "attachment"),
                              info.get("size"), info.get("type"), on_contact=on_contact))
    return out


@dataclass
class ContactPage:
    """The duplicate's own contact page: every entry of its timeline (agents' notes and system
    events) and the files of those notes and of the contact record itself. DevRev's merge
    deletes the secondary ([C] S15, devrev-api.md section 14), so these exist only here after it."""
    entries: list[dict[str, Any]]
    attachments: list[Attachment]

    @property
    def notes(self) -> int:
        """The entries the restore can write again (comments)."""
        return sum(1 for e in self.entries if e.get("type") == facts.MESSAGE_ENTRY_TYPE)

    @property
    def file_bytes(self) -> int:
        return sum(a.size or 0 for a in self.attachments)


def read_contact_page(client: DevRevClient, contact: dict[str, Any]) -> ContactPage:
    """The contact's timeline (every page) and files, `contact` being its record as
    rev-users.get returned it (its `artifacts` are the files on the record). Raises
    DevRevError on a failed read."""
    entries = list(client.list_timeline_entries(contact["id"]))
    return ContactPage(entries, _attachments(client, display_of(contact), _referenced_artifacts(contact, entries),
                                             on_contact=True))


def custom_field_refs(objects: Iterable[dict[str, Any]], contact_id: str) -> list[dict[str, Any]]:
    """The objects whose custom_fields name the contact, as [{"object": display id, "id":
    DON, "fields": [field names]}] (devrev_api.custom_fields.fields_naming)."""
    found = []
    for obj in objects:
        names = sorted(fields_naming(obj, contact_id))
        if names:
            found.append({"object": display_of(obj), "id": obj.get("id"), "fields": names})
    return found


@dataclass(frozen=True)
class CustomFieldMove:
    """One ticket or conversation whose custom fields name the duplicate, with those fields'
    values before the merge (what an undo gives back) and its subtype (its schema)."""
    kind: str                 # "ticket" or "conversation"
    id: str
    display_id: str
    fields: dict[str, Any]    # field name -> value before the merge
    subtype: str | None = None

    @classmethod
    def of(cls, kind: str, obj: dict[str, Any], contact_id: str) -> "CustomFieldMove | None":
        fields = fields_naming(obj, contact_id)
        return cls(kind, obj["id"], display_of(obj), fields, obj.get("subtype")) if fields else None

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> "CustomFieldMove":
        """From one entry of metadata.json's custom_field_moves; ValueError if it lacks a part."""
        if entry.get("kind") not in Move.FIELDS or not isinstance(entry.get("id"), str) \
                or not isinstance(entry.get("fields"), dict) or not entry["fields"]:
            raise ValueError(f"not a custom-field move: {entry!r}")
        subtype = entry.get("subtype")
        return cls(entry["kind"], entry["id"], str(entry.get("display_id") or entry["id"]), dict(entry["fields"]),
                   subtype if isinstance(subtype, str) else None)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "display_id": self.display_id, "fields": self.fields,
                "subtype": self.subtype}


def custom_field_moves(snapshot: "Snapshot", contact_id: str) -> list[CustomFieldMove]:
    """Every object of the snapshot (those found by a custom field only included) whose
    custom fields name the contact."""
    kinds = [("ticket", o) for o in snapshot.tickets + snapshot.custom_field_tickets] + \
        [("conversation", o) for o in snapshot.conversations]
    moves = (CustomFieldMove.of(kind, obj, contact_id) for kind, obj in kinds)
    return [m for m in moves if m is not None]


def artifact_label(art: dict[str, Any]) -> str:
    """The artifact's display id, or (when a summary lacks it) one made from its DON's
    last segment, so two artifacts never share a file name."""
    if art.get("display_id"):
        label: str = art["display_id"]
        return label
    return "artifact-" + str(art["id"]).rstrip("/").rsplit("/", 1)[-1]


def ids_of(users: Iterable[object] | None) -> list[str]:
    return [u["id"] for u in users or [] if isinstance(u, dict) and u.get("id")]


@dataclass(frozen=True)
class Move:
    """One ticket or conversation a backup holds, with the users it had before the merge
    (its `reported_by` or `members`): what the engine moves, and what an undo restores."""
    kind: str                 # "ticket" or "conversation"
    id: str
    display_id: str
    users: tuple[str, ...]

    FIELDS = {"ticket": "reported_by", "conversation": "members"}

    @property
    def field_name(self) -> str:
        """The DevRev field that lists the contact: reported_by or members."""
        return self.FIELDS[self.kind]

    @classmethod
    def of(cls, kind: str, obj: dict[str, Any]) -> "Move":
        """The move of a ticket or conversation as DevRev returned it."""
        return cls(kind, obj["id"], display_of(obj), tuple(ids_of(obj.get(cls.FIELDS[kind]))))

    @classmethod
    def from_json(cls, kind: str, entry: dict[str, Any]) -> "Move":
        """From one entry of metadata.json's moves; ValueError if it lacks a part."""
        users = entry[cls.FIELDS[kind]]
        if not isinstance(entry["id"], str) or not isinstance(users, list) \
                or not all(isinstance(u, str) for u in users):
            raise ValueError(f"not a {kind} move: {entry!r}")
        return cls(kind, entry["id"], str(entry.get("display_id") or entry["id"]), tuple(users))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "display_id": self.display_id, self.field_name: list(self.users)}


# --------------------------------------------------------------------------- writing
@dataclass
class BackupResult:
    folder: str
    counts: dict[str, Any]
    total_bytes: int
    snapshot: Snapshot


def _digest_json(obj: Any) -> tuple[bytes, str]:
    data = json_bytes(obj)
    return data, hashlib.sha256(data).hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 over every field but itself and the MAC (plumbing.manifest_key), which seals it."""
    body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", manifest_key.MAC_FIELD)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def manifest_sha256_of(folder: str) -> str | None:
    """The `manifest_sha256` a backup's verification.json holds (it names the whole backup: the
    merge journals it, the restore holds the folder to it); None when unreadable."""
    try:
        value = json.loads(read_regular(file_path(folder, MANIFEST)).decode("utf-8")).get("manifest_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class _Writer:
    """Writes files into the .partial folder, remembering size and sha256 of each."""

    def __init__(self, root: str):
        self.root = root
        self.files: list[dict[str, Any]] = []
        self.dirs: set[str] = {root}

    def _path(self, relpath: str) -> str:
        path = file_path(self.root, relpath)
        folder = os.path.dirname(path)
        if folder not in self.dirs:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            for d in _parents(folder, self.root):
                os.chmod(d, 0o700)
                self.dirs.add(d)
        return path

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with durable_file(self._path(relpath), sync_dir=False) as fh:  # sync_dirs() syncs the folders
            fh.write(data)
        self.files.append({"path": relpath, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def write_json(self, relpath: str, obj: Any) -> None:
        self.write_bytes(relpath, json_bytes(obj))

    def write_json_list(self, relpath: str, items: Iterable[Any]) -> None:
        """Exactly json_bytes(list(items)), written item by item: the list is never in memory."""
        with durable_file(self._path(relpath), sync_dir=False) as fh:
            size, sha256 = write_json_list(fh, items)
        self.files.append({"path": relpath, "size": size, "sha256": sha256})

    def download(self, client: DevRevClient, att: Attachment) -> None:
        """Fetch one attachment (retried by the client's policy; an expired URL is located
        again); each attempt writes a fresh file, and a broken-off one leaves no file."""
        path = self._path(att.relpath)
        try:
            result = client.downloads.download_artifact(att.artifact_id, lambda: durable_file(path, sync_dir=False),
                                              expected_size=att.size)
        except DownloadError as exc:
            raise BackupError(f"attachment {att.display_id} ({att.name!r}) of {att.object_display_id} "
                              f"could not be downloaded: {exc}") from None
        self.files.append({"path": att.relpath, "size": result.size, "sha256": result.sha256})

    def sync_dirs(self) -> None:
        for folder in sorted(self.dirs, key=len, reverse=True):
            fsync_dir(folder)


def _parents(folder: str, root: str) -> list[str]:
    out = []
    while os.path.abspath(folder) != os.path.abspath(root):
        out.append(folder)
        folder = os.path.dirname(folder)
    return out


def _reserve_folder(backup_root: str, name: str) -> tuple[str, str]:
    """A final name not yet taken (a `-2` suffix if the same second is reused)."""
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{name}-{n}"
        final = os.path.join(backup_root, candidate)
        partial = partial_path(final)
        if not os.path.exists(final) and not os.path.exists(partial):
            os.mkdir(partial, 0o700)
            os.chmod(partial, 0o700)
            return final, partial
    raise BackupError(f"could not find a free backup folder name for {name}")


def check_free_space(folder: str, needed: int) -> None:
    """BackupError when `folder`'s disk cannot take `needed` bytes and the margin; when it is
    below the margin itself (no backup can fit), BackupFolderError: the run stops once, with
    the real figure, instead of failing every set with the same line."""
    free = shutil.disk_usage(folder).free
    if free < DISK_MARGIN_BYTES:
        raise BackupFolderError(f"not enough free disk space in {folder} for any backup: {_mib(free)} MiB are free, "
                                f"and every backup keeps {_mib(DISK_MARGIN_BYTES)} MiB free; free some space or "
                                f"give --backup-dir on a larger disk")
    if free < needed + DISK_MARGIN_BYTES:
        raise BackupError(f"not enough free disk space in {folder}: the backup needs about "
                          f"{_mib(needed)} MiB (+{_mib(DISK_MARGIN_BYTES)} MiB margin), {_mib(free)} MiB are free")


def _os_reason(exc: OSError) -> str:
    return "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


def estimate_size(snapshot: Snapshot, json_overhead: int = 4096) -> int:
    json_size = sum(len(json.dumps(o)) for o in snapshot.objects)
    json_size += sum(len(json.dumps(es)) for es in snapshot.entries.values())
    return 2 * json_size + snapshot.attachment_bytes + json_overhead * (1 + len(snapshot.objects))


def write_backup(client: DevRevClient, backup_root: str, *, email: str, csv_rows: list[dict[str, Any]],
                 primary: dict[str, Any], duplicate: dict[str, Any], run_id: str, snapshot: Snapshot | None = None,
                 pool: Fanout | None = None, contact_page: bool = True,
                 custom_field_filter: bool = False, target: str | None = None) -> BackupResult:
    """Back up everything `duplicate` owns (plus both contacts) and return the folder.

    Raises BackupError (with the .partial folder removed) on any failure: a download
    that breaks off, a full disk, a write error; BackupFolderError when `backup_root`
    itself cannot be written. Without a `snapshot`, each object's timeline is written as
    soon as it is read and not kept (memory flat in the number of objects; the result's
    snapshot then holds no entries: `counts` has them). With a pool, timelines are read
    and attachments downloaded in parallel. contact_page: read and save the duplicate's own
    timeline and files (False once DevRev retired it: its page is gone or moved);
    custom_field_filter: also list the tickets naming it only in a custom field (works.list's
    custom_fields filter, where the tenant takes it: the preflight's probe); target: the DevRev
    it was read from, recorded in metadata.json (DevRev's base URL, or "sandbox:<epoch>" for a
    sandbox rehearsal), so a restore never takes a backup to another DevRev.
    """
    started, final, partial = _start_folder(backup_root, email, duplicate, snapshot)
    writer = _Writer(partial)
    try:
        snapshot, entry_counts, messages = _write_objects(client, writer, backup_root, duplicate, snapshot, pool)
        if custom_field_filter:
            snapshot.custom_field_tickets = _tickets_naming(client, snapshot, duplicate["id"])
            writer.write_json(CUSTOM_FIELD_TICKETS, snapshot.custom_field_tickets)
        if contact_page and snapshot.contact_page is None:
            snapshot.contact_page = read_contact_page(client, duplicate)
        page = snapshot.contact_page if contact_page else None
        if page is not None:
            writer.write_json(CONTACT_PAGE, page.entries)
            check_free_space(backup_root, page.file_bytes)
            fan_map(pool, lambda att: writer.download(client, att), page.attachments)
        writer.write_json(METADATA, _metadata(writer, snapshot, started, email=email, csv_rows=csv_rows,
                                              primary=primary, duplicate=duplicate, run_id=run_id, page=page,
                                              target=target))
        counts = {"tickets": len(snapshot.tickets), "conversations": len(snapshot.conversations),
                  "entries": entry_counts, "messages": messages, "attachments": len(snapshot.attachments),
                  "custom_field_tickets": len(snapshot.custom_field_tickets) if custom_field_filter else None,
                  "contact_entries": len(page.entries) if page else None,
                  "contact_files": len(page.attachments) if page else None}
        _seal(writer, counts, final, backup_root)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(f"could not write the backup for {email} in {backup_root}: {_os_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    total = sum(f["size"] for f in writer.files)
    return BackupResult(final, counts, total, snapshot)


def _start_folder(backup_root: str, email: str, duplicate: dict[str, Any],
                  snapshot: Snapshot | None) -> tuple[datetime, str, str]:
    """(start time, final folder, its .partial folder created 0700) after the free-space
    check; a streamed backup (no `snapshot`) checks its attachments' space once it has
    listed them."""
    try:
        make_private_dir(backup_root)
    except OSError as exc:
        raise BackupFolderError(f"could not create the backup folder {backup_root}: {_os_reason(exc)}") from None
    started = utc_now()
    try:
        check_free_space(backup_root, 0 if snapshot is None else estimate_size(snapshot))
        return (started, *_reserve_folder(backup_root, backup_folder_name(email, display_of(duplicate), started)))
    except OSError as exc:
        kind = BackupFolderError if exc.errno in _FOLDER_ERRNOS else BackupError
        raise kind(f"could not start the backup for {email} in {backup_root}: {_os_reason(exc)}") from None


def _write_objects(client: DevRevClient, writer: _Writer, backup_root: str, duplicate: dict[str, Any],
                   snapshot: Snapshot | None, pool: Fanout | None) -> tuple[Snapshot, dict[str, int], int]:
    """The listings, every timeline and every attachment, written; returns (the snapshot,
    entries per object display id, messages). Without a snapshot, listings and timelines
    go to disk as they are read."""
    if snapshot is None:
        snapshot = _list_to_disk(client, writer, duplicate["id"])
        entry_counts, messages = read_timelines(client, snapshot, pool, writer)
        check_free_space(backup_root, snapshot.attachment_bytes)
        fan_map(pool, lambda att: writer.download(client, att), snapshot.attachments)
        return snapshot, entry_counts, messages
    for obj in snapshot.objects:
        writer.write_json(messages_path(display_of(obj)), snapshot.entries[display_of(obj)])
    entry_counts = {display_of(o): len(snapshot.entries[display_of(o)]) for o in snapshot.objects}
    fan_map(pool, lambda att: writer.download(client, att), snapshot.attachments)
    writer.write_json(TICKETS, snapshot.tickets)
    writer.write_json(CONVERSATIONS, snapshot.conversations)
    return snapshot, entry_counts, snapshot.message_count


def tickets_naming(client: DevRevClient, contact_id: str, names: Iterable[str] = facts.CONTACT_CUSTOM_FIELDS,
                   *, besides: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Tickets whose custom fields `names` name the contact (works.list's custom_fields filter,
    one listing per field), each once, but those whose id is in `besides`. Raises DevRevError
    (BadRequestError where the tenant refuses the filter)."""
    skip = set(besides)
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names)):
        for ticket in client.list_tickets_naming(name, contact_id):
            if ticket["id"] not in skip and fields_naming(ticket, contact_id):
                found.setdefault(ticket["id"], ticket)
    return list(found.values())


def _tickets_naming(client: DevRevClient, snapshot: Snapshot, contact_id: str) -> list[dict[str, Any]]:
    """Tickets that name the contact in a custom field (the known contact fields, and any field
    naming it on a listed object) and are not among the tickets it reports."""
    names = set(facts.CONTACT_CUSTOM_FIELDS)
    for obj in snapshot.objects:
        names.update(fields_naming(obj, contact_id))
    return tickets_naming(client, contact_id, names, besides=(t["id"] for t in snapshot.tickets))


def _file_json(att: Attachment, saved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"object": att.object_display_id, "artifact_id": att.artifact_id, "display_id": att.display_id,
            "file_name": att.name, "mime_type": att.mime_type, "declared_size": att.size,
            "path": att.relpath, "sha256": saved[att.relpath]["sha256"]}


def _metadata(writer: _Writer, snapshot: Snapshot, started: datetime, *, email: str, csv_rows: list[dict[str, Any]],
              primary: dict[str, Any], duplicate: dict[str, Any], run_id: str,
              page: ContactPage | None, target: str | None = None) -> dict[str, Any]:
    """metadata.json: both contacts, the moves an undo needs, and each attachment's file
    (its sha256 as `writer` saved it)."""
    saved = {f["path"]: f for f in writer.files}
    return {
        "format": FORMAT_VERSION,
        "tool": {"name": TOOL_NAME, "version": TOOL_VERSION},
        "run_id": run_id,
        "target": target,            # the DevRev it was read from (restore refuses another)
        "started_at": iso_utc(started),
        "finished_at": iso_utc(),
        "merge_set": {"email": email, "csv_rows": csv_rows},
        "primary": primary,
        "duplicate": duplicate,
        "original_external_refs": {"primary": primary.get("external_ref"),
                                   "duplicate": duplicate.get("external_ref")},
        "moves": {"tickets": [Move.of("ticket", t).to_json() for t in snapshot.tickets],
                  "conversations": [Move.of("conversation", c).to_json() for c in snapshot.conversations]},
        "custom_field_refs": custom_field_refs(snapshot.objects + snapshot.custom_field_tickets, duplicate["id"]),
        "custom_field_moves": [m.to_json() for m in custom_field_moves(snapshot, duplicate["id"])],
        "attachments": [_file_json(a, saved) for a in snapshot.attachments],
        "contact_page": None if page is None else {
            "entries": len(page.entries), "notes": page.notes,
            "record_artifacts": [a["id"] for a in duplicate.get("artifacts") or []
                                 if isinstance(a, dict) and a.get("id")],
            "files": [_file_json(a, saved) for a in page.attachments]},
        "undo": ("To undo: for each entry of moves.tickets call works.update with reported_by "
                 "{\"set\": <reported_by>}, for each of moves.conversations conversations.update with "
                 "members {\"set\": <members>}, give each of custom_field_moves its fields back (works.update / "
                 "conversations.update custom_fields with custom_schema_spec), and set the primary's external_ref "
                 "back to original_external_refs.primary. A contact retired by rev-users.merge cannot be restored "
                 "through the API; recreate it from `duplicate` if needed, and write the notes of "
                 "contact/messages.json on it again (restore_contacts.py does all of this)."),
    }


def _seal(writer: _Writer, counts: dict[str, Any], final: str, backup_root: str) -> None:
    """verification.json written last (every file's path, size, sha256; the counts), the
    folders synced, and the .partial folder renamed to `final`."""
    manifest = {"format": FORMAT_VERSION, "created_at": iso_utc(),
                "files": sorted(writer.files, key=lambda f: f["path"]), "counts": counts}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    key = manifest_key.load_key(create=True)
    if key is not None:
        manifest[manifest_key.MAC_FIELD] = manifest_key.mac_of(manifest, key)
    with durable_file(file_path(writer.root, MANIFEST), sync_dir=False) as fh:
        fh.write(json_bytes(manifest))
    writer.sync_dirs()
    os.rename(writer.root, final)
    fsync_dir(backup_root)


def _list_to_disk(client: DevRevClient, writer: _Writer, duplicate_id: str) -> Snapshot:
    """tickets.json and conversations.json written page by page as DevRev lists them; the
    returned snapshot keeps of each object only what the backup needs later (its id,
    display id, reporters or members, artifact summaries)."""
    def kept(kind: str, objects: Iterable[dict[str, Any]], into: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for obj in objects:
            into.append(_kept_copy(obj, Move.FIELDS[kind], duplicate_id))
            yield obj

    snapshot = Snapshot([], [], {}, [])
    writer.write_json_list(TICKETS, kept("ticket", client.list_tickets(duplicate_id), snapshot.tickets))
    writer.write_json_list(CONVERSATIONS, kept("conversation", client.list_conversations(duplicate_id),
                                               snapshot.conversations))
    return snapshot


def _kept_copy(obj: dict[str, Any], users_field: str, duplicate_id: str) -> dict[str, Any]:
    """What a streamed backup keeps of one listed object until it is sealed: its id, display
    id, the ids of its reporters or members (as {"id": ...}: all Move.of reads), and copies of
    its artifact summaries (id, display id, file name, size, type: all read_timelines reads).
    Copies, never references into DevRev's answer: a reference to the object's user list
    would keep each whole user record (and its page's JSON) alive, about 2 KiB an object."""
    keep: dict[str, Any] = {k: obj[k] for k in ("id", "display_id") if k in obj}
    if users_field in obj:
        keep[users_field] = [{"id": i} for i in ids_of(obj.get(users_field))]
    if "artifacts" in obj:
        keep["artifacts"] = [_artifact_summary(a) for a in obj.get("artifacts") or [] if isinstance(a, dict)]
    if fields_naming(obj, duplicate_id):   # listed in metadata.json (custom_field_moves)
        keep.update({k: obj[k] for k in ("custom_fields", "subtype") if k in obj})
    return keep


def _artifact_summary(art: dict[str, Any]) -> dict[str, Any]:
    """An artifact summary reduced to what naming and sizing its file reads."""
    out: dict[str, Any] = {k: art[k] for k in ("id", "display_id") if k in art}
    info = art.get("file")
    if isinstance(info, dict):
        out["file"] = {k: info[k] for k in ("name", "size", "type") if k in info}
    return out


def remove_partials(backup_root: str, email: str, duplicate_display_id: str) -> list[str]:
    """Remove the .partial folders a crashed backup of this duplicate left behind."""
    if not os.path.isdir(backup_root):
        return []
    removed = []
    for name in os.listdir(backup_root):
        if is_partial_of(name, email, duplicate_display_id):
            shutil.rmtree(os.path.join(backup_root, name), ignore_errors=True)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------- typed loaders
# What a reader of a backup folder reads at most: a JSON file (the manifest included) is read
# whole and parsed, so it is capped (a real one holds a few MiB: 7,000 tickets are ~35 MiB), and
# its nesting too (DevRev's objects nest a dozen levels; a file nested deeper than the cap is
# refused before anything walks it). Attachments are streamed, bounded by the manifest's size.
MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 200


class JsonLimitError(ValueError):
    """A backup's JSON file nested deeper than MAX_JSON_DEPTH (one line, no traceback)."""


def _cap(limit: int | None) -> int:
    return MAX_JSON_BYTES if limit is None else max(0, min(int(limit), MAX_JSON_BYTES))


def _too_large(path: str, limit: int | None, size: int) -> OSError:
    what = "the size its manifest records" if limit is not None and limit < MAX_JSON_BYTES else \
        f"the {MAX_JSON_BYTES >> 20} MiB a backup's JSON file may hold"
    return OSError(errno.EFBIG, f"larger than {what} ({size} bytes)", path)


def read_regular(path: str, limit: int | None = None) -> bytes:
    """A backup file's bytes (open_regular), at most `limit` (the size its manifest records,
    where the reader knows it) and never more than MAX_JSON_BYTES: a larger file raises OSError
    (EFBIG) before it is read, whatever its size claims while it is read."""
    cap = _cap(limit)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        # read(n) allocates n bytes up front: ask for what fstat says (+1 to see a file that grew)
        data = fh.read(size + 1) if size <= cap else b""
        if len(data) > size:   # it grew since: the rest, up to the cap (as before)
            data += fh.read(cap + 1 - len(data))
    if size > cap or len(data) > cap:
        raise _too_large(path, limit, max(size, len(data)))
    return data


def _check_depth(value: Any, depth: int) -> None:
    """JsonLimitError if `value` (itself at `depth`) nests deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, depth)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise JsonLimitError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def parse_json(data: bytes, object_hook: Any = None) -> Any:
    """A backup file's JSON value; ValueError if it is not JSON, JsonLimitError if it nests
    deeper than MAX_JSON_DEPTH (never a RecursionError)."""
    try:
        value = json.loads(data.decode("utf-8"), object_hook=object_hook)
    except RecursionError:
        raise JsonLimitError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_depth(value, 1)
    return value


# A JSON file larger than this that holds a list (tickets.json of a huge duplicate: 7,000
# tickets are ~35 MiB) is parsed one item at a time: its bytes and text are never whole in
# memory, only the items as object_hook leaves them (the checks keep a few fields of each).
STREAM_LIST_BYTES = 1 << 20
_SLICE = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _TextSlices:
    """A backup file's text read in slices and decoded as UTF-8 on the way; never more than
    `limit` bytes (OSError EFBIG), as read_regular."""

    def __init__(self, fh: BinaryIO, path: str, limit: int | None):
        self.fh, self.path, self.limit, self.cap = fh, path, limit, _cap(limit)
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.read_bytes, self.eof = "", 0, 0, False

    def more(self, size: int) -> None:
        chunk = self.fh.read(size)
        self.read_bytes += len(chunk)
        if self.read_bytes > self.cap:
            raise _too_large(self.path, self.limit, self.read_bytes)
        self.eof = not chunk
        self.text = self.text[self.pos:] + self.utf8.decode(chunk, final=self.eof)
        self.pos = 0

    def next_char(self) -> str:
        """The next character after JSON whitespace ("" at the end of the file); not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()   # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                return ""
            self.more(_SLICE)

    def value(self, decoder: json.JSONDecoder) -> Any:
        """The JSON value at the position. A value that ends within two characters of the text
        read so far may be cut short (a number: "1" of "1e5"), so more is read first; an
        unfinished one reads twice as much each time (linear in the item's size)."""
        want = _SLICE
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
                if end + 2 < len(self.text) or self.eof:
                    self.pos = end
                    return value
            except json.JSONDecodeError:
                if self.eof:
                    raise
            self.more(want)
            want *= 2


def _parse_list_slices(fh: BinaryIO, path: str, limit: int | None, object_hook: Any) -> list[Any] | None:
    """The JSON list in `fh`, parsed item by item (json's own scanner, so the same values and
    errors as json.loads); None when the file does not hold a list (the caller parses it whole)."""
    text = _TextSlices(fh, path, limit)
    if text.next_char() != "[":
        return None
    text.pos += 1
    decoder = json.JSONDecoder(object_hook=object_hook)
    items: list[Any] = []
    if text.next_char() == "]":
        text.pos += 1
    else:
        while True:
            text.next_char()
            item = text.value(decoder)
            _check_depth(item, 2)
            items.append(item)
            delimiter = text.next_char()
            text.pos += 1
            if delimiter == "]":
                break
            if delimiter != ",":
                raise ValueError("Expecting ',' delimiter or ']' in a list")
    if text.next_char() != "":
        raise ValueError("Extra data after the list")
    return items


def load_json(path: str, limit: int | None = None, object_hook: Any = None) -> Any:
    """A backup's JSON file read and parsed within the caps (read_regular, parse_json); a list
    larger than STREAM_LIST_BYTES item by item (memory: its items, not its text)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if STREAM_LIST_BYTES < size <= _cap(limit):
            try:
                items = _parse_list_slices(fh, path, limit, object_hook)
            except RecursionError:
                raise JsonLimitError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
            if items is not None:
                return items
    return parse_json(read_regular(path, limit), object_hook)


def load_metadata(folder: str) -> dict[str, Any]:
    """metadata.json of a backup, as written. Raises OSError (also for a link or a FIFO in its
    place, or a file over the cap) or ValueError if unreadable or nested too deep."""
    metadata: dict[str, Any] = load_json(file_path(folder, METADATA))
    return metadata   # as written (a hand-edited file: the callers' checks)


def load_moves(folder: str) -> list[Move]:
    """What a backup says to move, tickets first: `metadata.json["moves"]`, whose shape is

        {"tickets":       [{"id": DON, "display_id": "TKT-1", "reported_by": [DON, ...]}, ...],
         "conversations": [{"id": DON, "display_id": "CONV-1", "members": [DON, ...]}, ...]}

    Raises BackupError (naming the folder) when metadata.json cannot be read or `moves`
    does not have that shape.
    """
    try:
        moves = load_metadata(folder).get("moves")
        if not isinstance(moves, dict):   # (indexing it would raise TypeError all the same)
            raise TypeError("moves is not an object")
        return [Move.from_json(kind, entry) for kind, key in (("ticket", "tickets"), ("conversation", "conversations"))
                for entry in moves[key]]
    except OSError as exc:
        raise BackupError(f"cannot read {METADATA} of the backup {folder}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError(f"{METADATA} of the backup {folder} has no readable list of moves") from None


def load_custom_field_moves(folder: str) -> list[CustomFieldMove]:
    """`metadata.json["custom_field_moves"]` ([] in a format-1 backup, which has none):
    [{"kind": "ticket" | "conversation", "id": DON, "display_id", "fields": {name: value
    before the merge}, "subtype": str | null}]. Raises BackupError when it is not that shape."""
    try:
        entries = load_metadata(folder).get("custom_field_moves") or []
        if not isinstance(entries, list):
            raise TypeError("custom_field_moves is not a list")
        return [CustomFieldMove.from_json(entry) for entry in entries]
    except OSError as exc:
        raise BackupError(f"cannot read {METADATA} of the backup {folder}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError(f"{METADATA} of the backup {folder} has no readable list of custom-field moves") from None


@dataclass(frozen=True)
class SavedFile:
    """One file of the duplicate's page as the backup holds it (path checked by verify_backup)."""
    artifact_id: str
    file_name: str
    mime_type: str | None
    path: str            # relative to the backup folder
    size: int


@dataclass(frozen=True)
class SavedContactPage:
    """The duplicate's own page as a backup holds it: its timeline entries (oldest first, as
    DevRev listed them), the files by artifact id, and the ids of the files on the record."""
    entries: list[dict[str, Any]]
    files: dict[str, SavedFile]
    record_artifacts: list[str]


def load_contact_page(folder: str) -> SavedContactPage | None:
    """The contact page a backup holds, or None (a format-1 backup, or a round taken after
    DevRev retired the duplicate). Sizes come from the manifest (verify_backup checked them),
    never from metadata.json. Raises BackupError when the files cannot be read."""
    try:
        metadata = load_metadata(folder)
        page = metadata.get("contact_page")
        if page is None:
            return None
        sizes = {f["path"]: int(f["size"]) for f in load_json(file_path(folder, MANIFEST))["files"]}
        entries = load_json(file_path(folder, CONTACT_PAGE), sizes.get(CONTACT_PAGE))
        files = {}
        for item in page["files"]:
            path = str(item["path"])
            if path not in sizes or not path.startswith(CONTACT_FOLDER + "/attachments/"):
                raise ValueError(f"file {path!r} is not a listed file of the contact page")
            files[str(item["artifact_id"])] = SavedFile(str(item["artifact_id"]), str(item["file_name"]),
                                                        item.get("mime_type"), path, sizes[path])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("the contact page is not a list of entries")
        return SavedContactPage(entries, files, [str(a) for a in page.get("record_artifacts") or []])
    except OSError as exc:
        raise BackupError(f"cannot read the contact page of the backup {folder}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"the contact page of the backup {folder} is not readable ({exc})") from None
