"""What a run says about each merge set: the statuses, and one typed record per set and per duplicate.

The merge and the restore hand these to the one run over sets (`runs.over_sets`), which puts them
in the report; `to_json` is the one place they become the report's JSON, which the CSV, the HTML
page and the screen all read. Their field names are the report format's (CHANGELOG.md lists its
changes); the restore's duplicates are also what its journal keeps for a finished set.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


class SetStatus(enum.StrEnum):
    """A merge set's status in a report (a preview's statuses start with would_ or already_)."""

    MERGED = "merged"                  # moved and the duplicates retired
    MOVED_ONLY = "moved_only"          # moved, the duplicates kept (--keep-duplicate, or merging refused)
    RESTORED = "restored"              # put back from its backups
    SKIPPED = "skipped"                # a live check said not to touch it
    FAILED = "failed"
    INTERRUPTED = "interrupted"        # the set in flight when Ctrl-C or SIGTERM came: resumable
    PENDING = "pending"                # not finished because the run stopped: resumable
    WOULD_MERGE = "would_merge"
    WOULD_MOVE = "would_move"
    WOULD_RESTORE = "would_restore"
    ALREADY_MERGED = "already_merged"
    ALREADY_MOVED_ONLY = "already_moved_only"
    ALREADY_RESTORED = "already_restored"

    @property
    def unfinished(self) -> bool:
        """The run left it to be resumed (the journal says what DevRev holds)."""
        return self in (SetStatus.INTERRUPTED, SetStatus.PENDING, SetStatus.FAILED)


@dataclass
class DuplicateOutcome:
    """One duplicate's part of a merge set's report line, its numbers read from the journal
    (merging.set_numbers)."""
    id: str
    display_id: str
    external_ref: str | None
    tickets_moved: int = 0
    conversations_moved: int = 0
    messages: int = 0
    attachments: int = 0
    backups: list[str] = field(default_factory=list)
    backups_verified: bool = False
    drift_appeared: list[str] = field(default_factory=list)
    drift_vanished: list[str] = field(default_factory=list)
    custom_field_refs: list[str] = field(default_factory=list)   # objects naming it in custom fields
    custom_fields_moved: list[str] = field(default_factory=list)  # ...whose fields now name the primary
    contact_entries: int = 0      # entries of its own page (contact timeline) backed up
    contact_files: int = 0        # files of its own page backed up
    retired: bool = False


@dataclass
class RestoredDuplicate:
    """One duplicate's part of a restore's report line; the restore journal keeps these (as
    JSON) for a finished set. The four lists hold display ids of tickets and conversations."""
    id: str
    display_id: str | None
    external_ref: str | None
    backups: list[str] = field(default_factory=list)
    new_id: str | None = None
    new_display_id: str | None = None
    recreated: bool = False
    recreated_earlier: bool = False   # created again by an earlier run of an interrupted restore
    primary_ref_back: str | None = None
    moved_back: list[str] = field(default_factory=list)
    moved_back_earlier: list[str] = field(default_factory=list)   # of moved_back, those an earlier run gave back
    already_back: list[str] = field(default_factory=list)
    deleted_since: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    custom_fields_back: list[str] = field(default_factory=list)   # items whose custom fields name it again
    custom_fields_left: list[str] = field(default_factory=list)   # ...changed since the merge: left as they are
    notes_back: int = 0            # notes of its own page written again on the re-created contact
    files_back: int = 0            # files re-attached to them
    entries_not_writable: int = 0  # entries of its page of other types (system events): the API writes none
    notes_found_on_primary: int = 0   # its notes DevRev's merge had moved to the primary (left there)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RestoredDuplicate":
        """Read one back from a journal's context (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SetOutcome:
    """One merge set's line in a merge or restore report.

    `primary` is the primary's display id in a merge report, and {"id", "display_id",
    "external_ref", "external_ref_now"?} in a restore's. `duplicates` are DuplicateOutcome
    (merge) or RestoredDuplicate (restore). The fields after `duplicates` are only in the
    JSON when set."""
    email: str
    set_key: str
    status: SetStatus | None = None
    reason: str | None = None
    error: str | None = None
    primary: Any = None
    duplicates: list[Any] = field(default_factory=list)
    note: str | None = None
    resumed: bool | None = None
    finished_earlier: bool | None = None   # merge: an earlier run finished it
    earlier: bool | None = None            # restore: an earlier run restored it
    not_reached: bool | None = None        # this run never started it
    retry_later: bool | None = None        # merge: DevRev still works on it (a merge job running); re-run later
    duration_s: float | None = None
    # the merge's
    external_ref_set: str | None = None
    other_duplicate_refs: list[str] | None = None
    external_refs_kept: list[str] | None = None    # the primary's whole list, where DevRev keeps one
    refs_without_contact: list[str] | None = None  # duplicates' refs no contact holds after the merge
    merge_note: str | None = None                  # the note's timeline entry on the primary (runs.notes)
    merge_note_refused: str | None = None          # why DevRev refused the note (the merge itself is done)
    moved_ticket_ids: list[str] | None = None
    moved_conversation_ids: list[str] | None = None
    fields_filled: dict[str, Any] | None = None   # --fill-blanks: the primary's fields filled, and from where
    this_run_ticket_ids: list[str] | None = None          # of those, the ones this run moved (set_numbers)
    this_run_conversation_ids: list[str] | None = None
    # the restore's
    fingerprint: str | None = None
    backups: list[str] | None = None


_ALWAYS = ("email", "set_key", "status", "reason", "error", "primary", "duplicates")


def to_json(record: Any) -> Any:
    """A record (or a list or dict of them) as the report's JSON: dataclasses as objects,
    statuses as their strings; a SetOutcome's optional fields only when set."""
    if isinstance(record, SetOutcome):
        return {f.name: to_json(value) for f in dataclasses.fields(record)
                for value in [getattr(record, f.name)] if f.name in _ALWAYS or value is not None}
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, dict):
        return {k: to_json(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [to_json(v) for v in record]
    return record
