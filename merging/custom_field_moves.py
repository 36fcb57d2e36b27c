"""The merge's custom-field moves: the duplicate replaced by the primary in the custom fields of
each ticket and conversation that names it there (devrev_api/custom_fields.py says how).

One journaled write per object, after the backup that lists it (backup.CustomFieldMove holds
the values before), from a fresh read, with only the changed fields and their schemas sent;
DevRev's answer must show the primary in each field and the duplicate in none.
"""
from __future__ import annotations

import logging
from typing import Any

from backup import CustomFieldMove
from devrev_api.custom_fields import fields_naming, schema_spec, swapped_fields
from devrev_api.errors import NotFoundError
from devrev_client import DevRevClient
from runs.journal import Journal

log = logging.getLogger(__name__)


class CustomFieldRefused(Exception):
    """The custom fields of one object cannot be moved (the set fails; its journal keeps where)."""


def read_object(client: DevRevClient, kind: str, object_id: str) -> dict[str, Any] | None:
    """A fresh read of a ticket or conversation; None when DevRev says it is gone (404)."""
    try:
        return client.get_work(object_id) if kind == "ticket" else client.get_conversation(object_id)
    except NotFoundError:
        return None


def holds(value: Any, contact_id: str) -> bool:
    """Whether a custom field's value names the contact (itself, or in its list)."""
    return value == contact_id or (isinstance(value, list) and contact_id in value)


def write_fields(client: DevRevClient, item: CustomFieldMove, wanted: dict[str, Any], subtype: str | None,
                 *, gone: str | None, present: str) -> dict[str, Any]:
    """Send `wanted` (those fields only, their schemas named) and check DevRev's answer: each
    field must now name `present` and none `gone` (when given). Returns the fields as DevRev holds them.
    Raises CustomFieldRefused when a schema cannot be told or the answer does not show the
    change, DevRevError when DevRev refuses the write."""
    try:
        spec = schema_spec(list(wanted), subtype)
    except ValueError as exc:
        raise CustomFieldRefused(f"{item.display_id}: {exc}; move that reference by hand") from None
    answer = client.set_custom_fields(item.kind, item.id, wanted, spec)
    after = {name: (answer.get("custom_fields") or {}).get(name) for name in wanted}
    if any((gone is not None and holds(v, gone)) or not holds(v, present) for v in after.values()):
        raise CustomFieldRefused(f"{item.display_id}: DevRev did not apply the new custom fields ({after})")
    return after


def move_custom_fields(client: DevRevClient, journal: Journal, set_key: str, step: str, item: CustomFieldMove,
                       duplicate_id: str, primary_id: str) -> None:
    """Replace the duplicate by the primary in the object's custom fields, journaled under
    `step`; never twice (a step done is skipped; an intent is settled by the fresh read)."""
    record = journal.step(set_key, step)
    if record and record["status"] == "done":
        return
    obj = read_object(client, item.kind, item.id)
    if obj is None:
        journal.done(set_key, step, {"vanished": True})
        log.warning("%s vanished from DevRev before its custom fields could be moved", item.display_id)
        return
    current = fields_naming(obj, duplicate_id)
    if not current:   # moved before a stop (the intent's answer was lost), or by someone else
        data = {"already": True} if record is None else \
            {**(record["data"] or {}), "display_id": item.display_id, "confirmed_by": "fresh read"}
        journal.done(set_key, step, data)
        return
    wanted = swapped_fields(current, duplicate_id, primary_id)
    journal.intent(set_key, step, {"before": current, "after": wanted})
    after = write_fields(client, item, wanted, obj.get("subtype"), gone=duplicate_id, present=primary_id)
    journal.done(set_key, step, {"display_id": item.display_id, "before": current, "after": after})
    log.debug("moved the custom fields %s of %s", ", ".join(sorted(after)), item.display_id)
