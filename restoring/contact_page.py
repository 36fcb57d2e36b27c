"""The restore's give-back of a duplicate's own contact page: its notes and files, written again.

DevRev's merge deletes the secondary contact (or moves its page to the primary: [I], emulator
mode contact_timeline_on_merge), and no API writes an entry with another author or date. So each
comment the backup holds is written again on the re-created contact as an internal comment whose
text starts with who wrote it, when, and with what visibility; its files are uploaded again from
the backup and attached. Files that were on the contact record itself (not on a note) go on one
more note. Entries of other types (system events) cannot be written: they are counted. Each note
is a journaled write marked with an external_ref made from the original entry's id, so a re-run
writes none twice (runs.notes.write_entry).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from backup import SavedContactPage, SavedFile, file_path
from devrev_api import assumptions as facts
from devrev_client import DevRevClient
from plumbing.clock import instant
from plumbing.files import open_regular
from plumbing.version import TOOL_NAME
from restoring.backup_sets import DuplicateBackup
from runs.journal import Journal, step_name
from runs.notes import NOTE_REF_PREFIX, write_entry
from runs.outcomes import RestoredDuplicate

log = logging.getLogger(__name__)

RECORD_FILES = "record-files"     # the journal item of the note that carries the record's files
MAX_FILES_PER_NOTE = 50           # [C] S15 timeline-entries-create-request-timeline-comment.artifacts maxItems


class ContactPageError(Exception):
    """A file of the backup cannot be read back as the manifest recorded it."""


def note_back_ref(entry_id: str) -> str:
    """The external_ref of a note written again: from the original entry's id (24 hex of its
    sha256), so the same note is recognised on the contact's timeline after a stop."""
    return f"{NOTE_REF_PREFIX}:note-back:{hashlib.sha256(entry_id.encode('utf-8')).hexdigest()[:24]}"


def _author(entry: dict[str, Any]) -> str:
    who = entry.get("created_by")
    if not isinstance(who, dict):
        return str(who or "an unknown author")
    name = who.get("full_name") or who.get("display_name")
    ident = who.get("email") or who.get("display_id") or who.get("id")
    return f"{name} ({ident})" if name and ident and name != ident else str(name or ident or "an unknown author")


def note_back_text(entry: dict[str, Any], duplicate_display_id: str) -> str:
    """The note's text: who wrote it, when and how visible (the API cannot set these), then its body."""
    head = (f"[Restored by {TOOL_NAME} from the backup of contact {duplicate_display_id}. Originally written by "
            f"{_author(entry)} on {entry.get('created_date') or 'an unknown date'}, visibility "
            f"{entry.get('visibility') or 'unknown'}.]")
    body = entry.get("body")
    return head if not isinstance(body, str) or not body else f"{head}\n\n{body}"


def record_files_text(duplicate_display_id: str, names: list[str]) -> str:
    return (f"[Restored by {TOOL_NAME} from the backup of contact {duplicate_display_id}: the files that were on "
            f"the contact itself before it was merged: {', '.join(names)}.]")


def read_saved_file(folder: str, saved: SavedFile) -> bytes:
    """The bytes of a backed-up file: a regular file (no link followed), exactly the size the
    manifest recorded. Raises ContactPageError otherwise."""
    try:
        with open_regular(file_path(folder, saved.path)) as fh:
            data = fh.read(saved.size + 1)
    except OSError as exc:
        raise ContactPageError(f"{saved.path} of {folder} cannot be read ({exc.strerror})") from None
    if len(data) != saved.size:
        raise ContactPageError(f"{saved.path} of {folder} is not the {saved.size} bytes its manifest records")
    return data


def give_page_back(client: DevRevClient, journal: Journal, set_key: str, dup: DuplicateBackup, contact_id: str,
                   result: RestoredDuplicate) -> None:
    """Write the duplicate's notes (and the files of its record) again on `contact_id`, oldest
    first, each once; count them in `result`. Raises DevRevError when DevRev refuses one (the
    set fails and a re-run goes on from there), ContactPageError when a backed-up file is unreadable."""
    seen: set[str] = set()
    record_files: dict[str, tuple[str, SavedFile]] = {}
    for folder, page in dup.contact_pages:
        for entry in oldest_first(page.entries):
            entry_id = entry.get("id")
            if not isinstance(entry_id, str) or not entry_id or entry_id in seen:
                continue
            seen.add(entry_id)
            if entry.get("type") != facts.MESSAGE_ENTRY_TYPE:
                result.entries_not_writable += 1
                continue
            files = _files_of(entry, page)
            item = entry_id if "|" not in entry_id else hashlib.sha256(entry_id.encode("utf-8")).hexdigest()
            _write(client, journal, set_key, dup, contact_id, item, note_back_text(entry, dup.display_id),
                   folder, files, result)
            result.notes_back += 1
        on_notes = {a.get("id") for e in page.entries for a in e.get("artifacts") or [] if isinstance(a, dict)}
        for artifact_id in page.record_artifacts:
            if artifact_id in page.files and artifact_id not in on_notes:
                record_files.setdefault(artifact_id, (folder, page.files[artifact_id]))
    if record_files:
        by_folder: dict[str, list[SavedFile]] = {}
        for folder, saved in record_files.values():
            by_folder.setdefault(folder, []).append(saved)
        for n, (folder, files) in enumerate(by_folder.items()):
            _write(client, journal, set_key, dup, contact_id, f"{RECORD_FILES}-{n + 1}",
                   record_files_text(dup.display_id, [f.file_name for f in files]), folder, files, result)


def notes_on(client: DevRevClient, contact_id: str, dup: DuplicateBackup) -> int:
    """How many of the duplicate's backed-up entries are on `contact_id`'s timeline (a merge that
    moved its page to the primary: [I] devrev_api.assumptions): they stay there, and the report says
    how many. One listing; 0 without a read when the backups hold no entry."""
    ids = {e.get("id") for _folder, page in dup.contact_pages for e in page.entries}
    if not ids:
        return 0
    return sum(1 for e in client.list_timeline_entries(contact_id) if e.get("id") in ids)


def page_counts(dup: DuplicateBackup) -> dict[str, int]:
    """What give_page_back would write, from the backups alone: {"notes", "files",
    "entries_not_writable", "record_note"} (record_note: 1 when the record's own files go on one
    more note; those files count in "files")."""
    seen: set[str] = set()
    notes = files = other = 0
    on_record: set[str] = set()
    for _folder, page in dup.contact_pages:
        on_notes = set()
        for entry in page.entries:
            entry_id = entry.get("id")
            if not isinstance(entry_id, str) or entry_id in seen:
                continue
            seen.add(entry_id)
            if entry.get("type") != facts.MESSAGE_ENTRY_TYPE:
                other += 1
                continue
            notes += 1
            found = _files_of(entry, page)
            files += len(found)
            on_notes |= {f.artifact_id for f in found}
        on_record |= {a for a in page.record_artifacts if a in page.files and a not in on_notes}
    return {"notes": notes, "files": files + len(on_record), "entries_not_writable": other,
            "record_note": 1 if on_record else 0}


def oldest_first(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries by creation time (DevRev lists newest first), so the notes come back in their order."""
    return sorted(entries, key=lambda e: (instant(e.get("created_date")), str(e.get("id") or "")))


def _files_of(entry: dict[str, Any], page: SavedContactPage) -> list[SavedFile]:
    ids = [a.get("id") for a in entry.get("artifacts") or [] if isinstance(a, dict)]
    return [page.files[i] for i in ids if isinstance(i, str) and i in page.files][:MAX_FILES_PER_NOTE]


def _write(client: DevRevClient, journal: Journal, set_key: str, dup: DuplicateBackup, contact_id: str, item: str,
           text: str, folder: str, files: list[SavedFile], result: RestoredDuplicate) -> None:
    step = step_name("note_back", dup.id, item=item)

    def upload() -> list[str]:
        return [client.uploads.upload(f.file_name, read_saved_file(folder, f), f.mime_type) for f in files]

    write_entry(client, journal, set_key, contact_id, step, ref=note_back_ref(f"{dup.id}:{item}"), text=text,
                upload=upload if files else None, data={"files": len(files)})
    result.files_back += len(files)
