"""What a restore gives back of --fill-blanks: the primary's fields as they were before the merge.

The merge journals each fill (the primary's values before and after, merging.field_fill). A
restore writes the before-values back, field by field, where the primary still holds what the
fill wrote: a field changed since (someone edited the phone numbers) is left as it is and
reported, as the restore does for tickets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from merging.field_fill import LIST_FIELDS, item_key, update_body


@dataclass
class FieldsBack:
    """body: rev-users.update's fields (tags as ids) that give the fills back ({} when none);
    back: the field names given back; left: those changed since the fill, left as they are."""
    body: dict[str, Any] = field(default_factory=dict)
    back: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def _same(name: str, now: Any, wrote: Any) -> bool:
    if name in LIST_FIELDS:
        return sorted(item_key(name, v) for v in now or []) == sorted(item_key(name, v) for v in wrote or [])
    return bool(now == wrote)


def plan_fields_back(fills: list[dict[str, Any]], primary: dict[str, Any]) -> FieldsBack:
    """The writes that undo `fills` (the merge journal's fill_blanks data, oldest first) on the
    primary as it is now (`primary`, a fresh read)."""
    plan = FieldsBack()
    values: dict[str, Any] = {}
    for fill in reversed(fills):   # the latest fill is undone first: its before is the earlier one's after
        before, after = fill.get("before") or {}, fill.get("after") or {}
        for name, wrote in after.items():
            if name == "custom_fields":
                now = dict(values.get("custom_fields", primary.get("custom_fields") or {}))
                earlier = before.get("custom_fields") or {}
                for key, value in (wrote or {}).items():
                    if earlier.get(key) == value:
                        continue   # not a key the fill set
                    if now.get(key) == value:
                        now[key] = earlier.get(key)   # None: the key goes
                        plan.back.append(f"custom_fields.{key}")
                    else:
                        plan.left.append(f"custom_fields.{key}")
                values["custom_fields"] = now
            elif _same(name, values.get(name, primary.get(name)), wrote):
                values[name] = before.get(name) if before.get(name) is not None else ([] if name in LIST_FIELDS
                                                                                      else "")
                plan.back.append(name)
            else:
                plan.left.append(name)
    if "custom_fields" in values and not any(b.startswith("custom_fields.") for b in plan.back):
        values.pop("custom_fields")
    plan.body = update_body(values) if values else {}
    return plan
