"""Contact references held in the custom fields of tickets and conversations.

Email-created tickets name their contacts in list-valued custom fields (S10:
`app_email_integration__members`). A merge that moved only `reported_by` would leave the
duplicate named there; the 2026 public API can write custom fields, each with its schema named
(devrev_api.assumptions, the custom_fields section). Pure functions: what names a contact, what
the fields become when one contact takes another's place, and the schema spec a write needs.
"""
from __future__ import annotations

from typing import Any

from devrev_api import assumptions as facts

FieldValues = dict[str, Any]   # custom field name -> its value (a contact id, or a list of values)


def fields_naming(obj: dict[str, Any], contact_id: str) -> FieldValues:
    """The custom fields of `obj` whose value is `contact_id` or a list holding it, with their
    values as DevRev returned them ({} when none)."""
    return {name: value for name, value in sorted((obj.get("custom_fields") or {}).items())
            if value == contact_id or (isinstance(value, list) and contact_id in value)}


def swap_in_value(value: Any, old: str, new: str) -> Any:
    """`value` with contact `old` replaced by `new`: a list keeps its order and drops the
    repeat this can make; a single id is replaced; anything else is returned as is."""
    if isinstance(value, list):
        return list(dict.fromkeys(new if v == old else v for v in value))
    return new if value == old else value


def swapped_fields(fields: FieldValues, old: str, new: str) -> FieldValues:
    """Each field of `fields` with `old` replaced by `new` (swap_in_value)."""
    return {name: swap_in_value(value, old, new) for name, value in fields.items()}


def schema_spec(names: list[str] | tuple[str, ...] | set[str], subtype: str | None) -> dict[str, Any]:
    """The custom-schema-spec naming the schema of every field in `names`, read from each
    name's prefix ([I] devrev_api.assumptions: tnt__ the tenant fragment, ctype__ the object's
    subtype, any other `<app>__` that app). Raises ValueError for a name whose schema cannot
    be told (no `__`, or a subtype field on an object without a subtype): the write would be
    refused with 400, so the caller reports the field instead."""
    spec: dict[str, Any] = {}
    apps: list[str] = []
    for name in sorted(names):
        prefix, sep, rest = name.partition("__")
        if not sep or not prefix or not rest:
            raise ValueError(f"custom field {name!r}: its schema cannot be told from its name")
        if name.startswith(facts.TENANT_FIELD_PREFIX):
            spec["tenant_fragment"] = True
        elif name.startswith(facts.SUBTYPE_FIELD_PREFIX):
            if not subtype:
                raise ValueError(f"custom field {name!r} belongs to a subtype, and the object names none")
            spec["subtype"] = subtype
        elif prefix not in apps:
            apps.append(prefix)
    if apps:
        spec["apps"] = apps
    return spec
