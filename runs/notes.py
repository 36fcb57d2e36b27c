"""The note a merge (or a restore) leaves on the primary contact's own timeline in DevRev.

No native merge leaves its history where agents look: after each set, one internal comment on
the primary says what was merged into it (or given back), when, by which run, what moved, and
where the backup is. It is a journaled write like every other: its `external_ref` (unique within
the contact's timeline, [C] S15) names the run's set, so a run whose answer was lost finds the
note it wrote instead of writing a second one.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from devrev_api.errors import ConflictError, DevRevError, ResponseError, ServerError, TransportError
from devrev_client import DevRevClient
from plumbing.version import TOOL_NAME, TOOL_VERSION
from runs.journal import Journal, step_name

log = logging.getLogger(__name__)

NOTE_REF_PREFIX = "devrev-contact-merge"   # every note's external_ref starts so (tests, reports)


def note_ref(kind: str, set_key: str, run_id: str) -> str:
    """The note's external_ref: `devrev-contact-merge:<kind>:<16 hex of the set key's sha256>:<run
    id>` (kind: merge or restore): one per set and run, so a re-run after a restore writes a new
    one; short whatever the set (DevRev caps it at 512 characters, S15) and without the email."""
    digest = hashlib.sha256(set_key.encode("utf-8")).hexdigest()[:16]
    return f"{NOTE_REF_PREFIX}:{kind}:{digest}:{run_id}"


def _count(n: int, noun: str, nouns: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def merge_note_text(*, when: str, run_id: str, duplicates: list[dict[str, Any]], tickets: int, conversations: int,
                    custom_field_refs: int, backups: list[str], backup_dir: str) -> str:
    """The merge note: `duplicates` are the merged contacts' idents (display_id, external_ref)."""
    merged = "; ".join(f"{d.get('display_id')} ({d.get('external_ref')})" for d in duplicates)
    lines = [f"Merged into this contact by {TOOL_NAME} {TOOL_VERSION} on {when} (run {run_id}): {merged}.",
             f"Moved here: {_count(tickets, 'ticket')} and {_count(conversations, 'conversation')}; "
             f"{_count(custom_field_refs, 'ticket or conversation', 'tickets or conversations')} whose custom "
             f"fields named them now name this contact.",
             f"Backups (restore_contacts.py can undo this merge from them): {', '.join(backups) or 'none'} "
             f"in {backup_dir}."]
    return "\n".join(lines)


def restore_note_text(*, when: str, run_id: str, duplicates: list[dict[str, Any]], items_back: int) -> str:
    """The restore note: `duplicates` as {display_id, external_ref, new_display_id}."""
    back = "; ".join(f"{d.get('display_id')} ({d.get('external_ref')}) as {d.get('new_display_id')}"
                     for d in duplicates)
    return (f"Restored by {TOOL_NAME} {TOOL_VERSION} on {when} (run {run_id}): {back}. "
            f"{_count(items_back, 'ticket or conversation', 'tickets and conversations')} given back to them.")


@dataclass(frozen=True)
class NoteResult:
    """What became of a note: its timeline entry's id, or why DevRev refused it."""
    entry: str | None
    refused: str | None = None


def write_note(client: DevRevClient, journal: Journal, set_key: str, contact_id: str, *, ref: str, text: str,
               step: str = "merge_note") -> NoteResult:
    """Write the note once (journal step `step`, a set step). After an intent without its done
    (a stop, a lost answer), the contact's timeline is searched for `ref` first. A note DevRev
    refuses (a 4xx: the token may not comment on contacts, a field it does not take) is recorded
    as refused and never stops the set: the merge it reports is done. Raises DevRevError only for
    a failure that outlasts the retries (5xx, no connection): the set stays resumable."""
    name = step_name(step)
    record = journal.step(set_key, name)
    if record and record["status"] == "done":
        data = record["data"] or {}
        return NoteResult(data.get("entry"), data.get("refused"))
    try:
        return NoteResult(_write(client, journal, set_key, contact_id, name, record, ref=ref, text=text))
    except DevRevError as exc:
        if exc.status is None or exc.status >= 500 or exc.status in (401, 429):
            raise
        journal.done(set_key, name, {"external_ref": ref, "entry": None, "refused": str(exc)})
        log.warning("the note on the contact's timeline was not written: %s (--no-merge-note and --no-restore-note "
                    "leave it out)", exc)
        return NoteResult(None, str(exc))


def write_entry(client: DevRevClient, journal: Journal, set_key: str, contact_id: str, step: str, *, ref: str,
                text: str, upload: Callable[[], list[str]] | None = None, data: dict[str, Any] | None = None) -> str:
    """Write one internal comment on a contact's timeline once, under the journal step named
    `step` (a full step name), marked `ref`; `upload()` gives the ids of the files to attach,
    called only when the comment is really written (after its intent). Returns the entry's id;
    a step done already returns the id it recorded. Raises DevRevError when DevRev refuses it
    or a failure outlasts the retries (the step stays an intent: a re-run looks for `ref`)."""
    record = journal.step(set_key, step)
    if record and record["status"] == "done":
        return str((record["data"] or {}).get("entry"))
    return _write(client, journal, set_key, contact_id, step, record, ref=ref, text=text, upload=upload, data=data)


def _write(client: DevRevClient, journal: Journal, set_key: str, contact_id: str, name: str,
           record: dict[str, Any] | None, *, ref: str, text: str, upload: Callable[[], list[str]] | None = None,
           data: dict[str, Any] | None = None) -> str:
    extra = dict(data or {})
    if record:   # written before a stop? its external_ref says so
        ref = (record["data"] or {}).get("external_ref", ref)
        found = _written(client, contact_id, ref)
        if found is not None:
            journal.done(set_key, name, {**extra, "external_ref": ref, "entry": found})
            return found
    journal.intent(set_key, name, {**extra, "external_ref": ref})
    artifacts = upload() if upload is not None else None
    retries = client.retry.start()
    while True:
        try:
            entry_id = str(client.create_timeline_note(contact_id, text, external_ref=ref, artifacts=artifacts)["id"])
            break
        except ConflictError:              # the external_ref is taken on this timeline: by this very note
            found = _written(client, contact_id, ref)
            if found is None:
                raise
            entry_id = found
            break
        except (TransportError, ServerError, ResponseError) as exc:
            delay = retries.next_delay(exc.retry_after)
            if delay is None:
                raise
            log.warning("timeline-entries.create: %s; checking before writing the note again", exc)
            client.wait(delay)
            found = _written(client, contact_id, ref)   # the answer may be all that was lost
            if found is not None:
                entry_id = found
                break
    journal.done(set_key, name, {**extra, "external_ref": ref, "entry": entry_id})
    log.info("note %s written on the contact's timeline", entry_id)
    return entry_id


def _written(client: DevRevClient, contact_id: str, ref: str) -> str | None:
    """The id of the entry on the contact's timeline marked `ref`, or None."""
    return next((str(e["id"]) for e in client.list_timeline_entries(contact_id) if e.get("external_ref") == ref), None)
