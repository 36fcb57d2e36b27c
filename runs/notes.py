"""The note a merge (or a restore) leaves on the primary contact's own timeline in DevRev.

No native merge leaves its history where agents look: after each set, one internal comment on
the primary says what was merged into it (or given back), when, by which run, what moved, and
where the backup is. It is a journaled write like every other: its `external_ref` (unique within
the contact's timeline, [C] S15) names the run's set, so a run whose answer was lost finds the
note it wrote instead of writing a second one.
"""
from __future__ import annotations

import logging
from typing import Any

from devrev_api.errors import ConflictError, ResponseError, ServerError, TransportError
from devrev_client import DevRevClient
from plumbing.version import TOOL_NAME, TOOL_VERSION
from runs.journal import Journal, step_name

log = logging.getLogger(__name__)

NOTE_REF_PREFIX = "devrev-contact-merge"   # every note's external_ref starts so (tests, reports)


def note_ref(kind: str, set_key: str, run_id: str) -> str:
    """The note's external_ref: `devrev-contact-merge:<kind>:<set key>:<run id>` (kind: merge
    or restore); one per set and run, so a re-run after a restore writes a new one."""
    return f"{NOTE_REF_PREFIX}:{kind}:{set_key}:{run_id}"


def merge_note_text(*, when: str, run_id: str, duplicates: list[dict[str, Any]], tickets: int, conversations: int,
                    custom_field_refs: int, backups: list[str], backup_dir: str) -> str:
    """The merge note: `duplicates` are the merged contacts' idents (display_id, external_ref)."""
    merged = "; ".join(f"{d.get('display_id')} ({d.get('external_ref')})" for d in duplicates)
    lines = [f"Merged into this contact by {TOOL_NAME} {TOOL_VERSION} on {when} (run {run_id}): {merged}.",
             f"Moved here: {tickets} ticket(s) and {conversations} conversation(s); {custom_field_refs} "
             f"custom-field reference(s) to the merged contact(s) were found.",
             f"Backups (restore_contacts.py can undo this merge from them): {', '.join(backups) or 'none'} "
             f"in {backup_dir}."]
    return "\n".join(lines)


def restore_note_text(*, when: str, run_id: str, duplicates: list[dict[str, Any]], items_back: int) -> str:
    """The restore note: `duplicates` as {display_id, external_ref, new_display_id}."""
    back = "; ".join(f"{d.get('display_id')} ({d.get('external_ref')}) as {d.get('new_display_id')}"
                     for d in duplicates)
    return (f"Restored by {TOOL_NAME} {TOOL_VERSION} on {when} (run {run_id}): {back}. {items_back} ticket(s) and "
            f"conversation(s) were given back to them.")


def write_note(client: DevRevClient, journal: Journal, set_key: str, contact_id: str, *, ref: str, text: str,
               step: str = "merge_note") -> str:
    """Write the note once (journal step `step`, a set step); returns the entry's id. After an
    intent without its done (a stop, a lost answer), the contact's timeline is searched for `ref`
    first. Raises DevRevError when DevRev refuses it (the set stays resumable)."""
    name = step_name(step)
    record = journal.step(set_key, name)
    if record and record["status"] == "done":
        return str((record["data"] or {}).get("entry"))
    if record:   # written before a stop? its external_ref says so
        ref = (record["data"] or {}).get("external_ref", ref)
        found = _written(client, contact_id, ref)
        if found is not None:
            journal.done(set_key, name, {"external_ref": ref, "entry": found})
            return found
    journal.intent(set_key, name, {"external_ref": ref})
    retries = client.retry.start()
    while True:
        try:
            entry_id = str(client.create_timeline_note(contact_id, text, external_ref=ref)["id"])
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
    journal.done(set_key, name, {"external_ref": ref, "entry": entry_id})
    log.info("note %s written on the contact's timeline", entry_id)
    return entry_id


def _written(client: DevRevClient, contact_id: str, ref: str) -> str | None:
    """The id of the entry on the contact's timeline marked `ref`, or None."""
    return next((str(e["id"]) for e in client.list_timeline_entries(contact_id) if e.get("external_ref") == ref), None)
