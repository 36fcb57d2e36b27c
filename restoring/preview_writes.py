"""The writes a restore preview lists, one per object, and the rule that a run makes no other.

A restore is decided live (which items still carry the primary, whether the duplicate was
retired), so a preview read an hour ago may not match what the run finds. The preview lists
every write it would make; the run that the preview unlocks checks each write against that
list just before making it, and a write the preview did not list fails its set with one line
naming the object ("preview again"), so an admin never gets a write they were not shown.
Runs with --skip-preview-check have no list and are not held to one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# kind of write -> how the preview and the refusal name it
WRITE_KINDS = {
    "primary_refs": "set the primary's external_refs",
    "fields_back": "give the primary's fields --fill-blanks filled back",
    "primary_ref": "give the primary its own external_ref back",
    "recreate": "create the contact again",
    "contact_page": "write the contact's notes and files again",
    "item_back": "give the item back",
    "custom_fields_back": "give the item's custom fields back",
    "restore_note": "leave the restore note on the primary",
}


@dataclass(frozen=True)
class PlannedWrite:
    """One write a restore preview lists: its kind (WRITE_KINDS), the object written (the
    contact's or item's id; for contact-level writes of a duplicate, the duplicate's id) and
    the display id shown to the admin."""
    kind: str
    object_id: str
    display_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"write": self.kind, "id": self.object_id, "display_id": self.display_id}

    def line(self) -> str:
        return f"{WRITE_KINDS.get(self.kind, self.kind)}: {self.display_id or self.object_id}"


class WriteNotPreviewed(Exception):
    """A write the run's preview did not list; the set fails with this one line."""


def planned_writes(record: dict[str, Any], custom_field_items: dict[str, list[tuple[str, str]]],
                   primary_refs_after: list[str] | None, *, note: bool) -> list[PlannedWrite]:
    """Every write a restore of one set would make, from its preview record (restoring.engine
    _preview_set: "primary", "duplicates" with their "items"). custom_field_items: per
    duplicate id, the (id, display id) of each item whose custom fields it gets back;
    primary_refs_after: the primary's list of references the restore would write (None: no
    write); note: the run leaves a restore note on the primary."""
    primary = record.get("primary") or {}
    out: list[PlannedWrite] = []
    if primary_refs_after is not None:
        out.append(PlannedWrite("primary_refs", primary["id"], primary.get("display_id")))
    for dup in record.get("duplicates") or []:
        if dup.get("primary_ref_back"):
            out.append(PlannedWrite("primary_ref", dup["id"], primary.get("display_id")))
        if dup.get("recreate"):
            out.append(PlannedWrite("recreate", dup["id"], dup.get("display_id")))
            if dup.get("notes") or dup.get("files") or dup.get("record_note"):
                out.append(PlannedWrite("contact_page", dup["id"], dup.get("display_id")))
        out += [PlannedWrite("item_back", i["id"], i.get("display_id"))
                for i in dup.get("items") or [] if i.get("action") == "move_back"]
        out += [PlannedWrite("custom_fields_back", item_id, shown)
                for item_id, shown in custom_field_items.get(dup["id"], [])]
    if note:
        out.append(PlannedWrite("restore_note", primary["id"], primary.get("display_id")))
    return out


class PreviewWrites:
    """The writes the preview that unlocked a run listed, per set key; `check` before each write."""

    def __init__(self, preview_sets: Iterable[dict[str, Any]], preview_path: str):
        self.path = preview_path
        self._by_set: dict[str, set[tuple[str, str]]] = {}
        for record in preview_sets:
            if isinstance(record, dict) and isinstance(record.get("set_key"), str):
                self._by_set[record["set_key"]] = {
                    (str(w.get("write")), str(w.get("id"))) for w in record.get("writes") or [] if isinstance(w, dict)}

    def check(self, set_key: str, write: PlannedWrite) -> None:
        """Raises WriteNotPreviewed when the preview did not list `write` for this set."""
        if (write.kind, write.object_id) not in self._by_set.get(set_key, set()):
            raise WriteNotPreviewed(
                f"the restore would {write.line()}, which its preview ({self.path}) did not list (things changed "
                f"in DevRev since): nothing more of this set was written; preview again and read it")
