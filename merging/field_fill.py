"""The primary keeps the best of each contact: field differences, and the fill-blanks rule.

Admins ask to choose which values survive a merge; every CRM's own merge has a rule, and the
commonest (Intercom's, HubSpot's) fills the primary's blanks from the other contact. This
module is that rule, kept apart from the engine so it can be read and tested alone:

- `differences(primary, duplicates)`: the fields in which the contacts differ (every field of
  the contact object that is not an id, a stamp or the merge's own business), each contact's
  value, for the preview.
- `plan_fill(primary, duplicates, fields)`: what `--fill-blanks` writes to the primary: a field
  it lacks takes the newest duplicate's value; a list (phone numbers, tags) becomes the union,
  the primary's first; nothing the primary has is overwritten. Custom fields whose name says
  consent or opt-out are never filled: a person's choice is not widened by a merge.

Values are as DevRev answers them (tags as objects, S18); `update_body` turns a plan into what
rev-users.update takes (tags as ids).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from plumbing.cli import UsageError

FILLABLE = ("display_name", "description", "phone_numbers", "tags", "custom_fields")
LIST_FIELDS = ("phone_numbers", "tags")
# not compared: ids, stamps, schema bookkeeping, and what the merge itself changes or moves
NOT_COMPARED = {"id", "display_id", "type", "created_by", "created_date", "modified_by", "modified_date", "state",
                "external_ref", "external_refs", "primary_identity", "artifacts", "display_picture",
                "stock_schema_fragment", "custom_schema_fragments", "subtype"}
# a custom field named like this records a person's choice: never filled from another contact
CONSENT = re.compile(r"consent|opt.?out|opt.?in|unsubscri|do.?not|dnd|gdpr|marketing|subscri", re.IGNORECASE)


def parse_fields(text: str) -> tuple[str, ...]:
    """--fill-blanks FIELDS: "all", or a comma-separated list of FILLABLE; UsageError else."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return FILLABLE
    unknown = [n for n in names if n not in FILLABLE]
    if not names or unknown:
        why = " (full_name cannot be written through DevRev's API)" if "full_name" in unknown else ""
        raise UsageError(f"--fill-blanks takes 'all' or a list of {', '.join(FILLABLE)}"
                         + (f", not {', '.join(unknown)}{why}" if unknown else ""))
    return tuple(n for n in FILLABLE if n in names)


def blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def shown(name: str, value: Any) -> Any:
    """A field's value as the preview shows and compares it: tags by name (or id), a
    workspace by its display id, the rest as DevRev gave it."""
    if name == "tags" and isinstance(value, list):
        return sorted(_tag_id(t, name_first=True) for t in value)
    if isinstance(value, dict) and name == "rev_org":
        return value.get("display_id") or value.get("id")
    if isinstance(value, dict) and {"id", "display_id"} <= set(value):
        return value.get("display_id")
    return value


def _tag_id(tag: Any, *, name_first: bool = False) -> str:
    inner = tag.get("tag") if isinstance(tag, dict) and isinstance(tag.get("tag"), dict) else tag
    if not isinstance(inner, dict):
        return str(inner)
    if name_first:
        return str(inner.get("name") or inner.get("display_id") or inner.get("id"))
    return str(inner.get("id") or inner.get("display_id"))


def _fields_of(contact: dict) -> dict[str, Any]:
    """The compared fields of one contact: top-level ones, custom fields one by one."""
    out = {k: v for k, v in contact.items() if k not in NOT_COMPARED and k != "custom_fields"}
    for key, value in (contact.get("custom_fields") or {}).items():
        out[f"custom_fields.{key}"] = value
    return out


def differences(primary: dict, duplicates: list[dict]) -> list[dict[str, Any]]:
    """[{"field", "values": [{"contact": display id, "role": "primary" | "duplicate", "value":
    shown value (None: not set)}, ...the primary first], "consent"?: True}] for every field in
    which the primary and its duplicates (as DevRev answers them) differ; [] when they agree
    everywhere. The email compares case-folded."""
    contacts = [primary, *duplicates]
    fields = [_fields_of(c) for c in contacts]
    names = sorted({n for f in fields for n in f})
    out = []
    for name in names:
        values = [shown(name, f.get(name)) for f in fields]
        comparable = [v.casefold() if name == "email" and isinstance(v, str) else v for v in values]
        if all(v == comparable[0] for v in comparable[1:]) or all(blank(v) for v in values):
            continue
        row: dict[str, Any] = {"field": name, "values": [
            {"contact": str(c.get("display_id") or c.get("id")), "role": "duplicate" if n else "primary", "value": v}
            for n, (c, v) in enumerate(zip(contacts, values))]}
        if name.startswith("custom_fields.") and CONSENT.search(name):
            row["consent"] = True
        out.append(row)
    return out


@dataclass
class FillPlan:
    """What --fill-blanks writes to the primary: `values` {field: the value as DevRev answers
    it (for custom_fields, the whole dict)}, `filled` {field or custom_fields.key: shown value,
    where it came from}, `before` {field: the primary's value}."""
    values: dict[str, Any] = field(default_factory=dict)
    filled: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values)


def newest_first(duplicates: list[dict]) -> list[dict]:
    """The duplicates, the most recently created first (the one whose values win)."""
    return sorted(duplicates, key=lambda d: str(d.get("created_date") or ""), reverse=True)


def plan_fill(primary: dict, duplicates: list[dict], fields: tuple[str, ...]) -> FillPlan:
    """The fill-blanks rule on live contacts (see the module docstring); an empty plan when
    nothing is blank or no duplicate has a value."""
    plan = FillPlan()
    ordered = newest_first(duplicates)
    for name in fields:
        mine = primary.get(name)
        if name in LIST_FIELDS:
            union = list(mine or [])
            seen = {item_key(name, v) for v in union}
            for dup in ordered:
                for value in dup.get(name) or []:
                    if item_key(name, value) not in seen:
                        seen.add(item_key(name, value))
                        union.append(value)
            if len(union) > len(mine or []):
                plan.values[name], plan.before[name] = union, mine or []
                # in the order written, the primary's first (shown() sorts, for comparing)
                plan.filled[name] = [_tag_id(t, name_first=True) for t in union] if name == "tags" else union
        elif name == "custom_fields":
            _fill_custom_fields(plan, primary, ordered)
        elif blank(mine):
            source = next((d for d in ordered if not blank(d.get(name))), None)
            if source is not None:
                plan.values[name], plan.before[name] = source[name], mine
                plan.filled[name] = {"value": shown(name, source[name]), "from": source.get("display_id")}
    return plan


def item_key(name: str, value: Any) -> str:
    """One item of a list field as it is compared: a tag (answered {"tag": {...}}, sent {"id"})
    by its id, a phone number as itself."""
    return _tag_id(value) if name == "tags" else str(value)


def _fill_custom_fields(plan: FillPlan, primary: dict, ordered: list[dict]) -> None:
    mine = dict(primary.get("custom_fields") or {})
    merged = dict(mine)
    for dup in ordered:
        for key, value in (dup.get("custom_fields") or {}).items():
            if blank(merged.get(key)) and not blank(value) and not CONSENT.search(key):
                merged[key] = value
                plan.filled[f"custom_fields.{key}"] = {"value": value, "from": dup.get("display_id")}
    if merged != mine:
        plan.values["custom_fields"], plan.before["custom_fields"] = merged, mine


def update_body(values: dict[str, Any]) -> dict[str, Any]:
    """A plan's values as rev-users.update takes them: tags as ids ([{"id", "value"?}])."""
    body = dict(values)
    if "tags" in body:
        body["tags"] = [{"id": _tag_id(t), **({"value": t["value"]} if isinstance(t, dict) and t.get("value")
                                              else {})} for t in body["tags"]]
    return body


def applied(values: dict[str, Any], answer: dict) -> list[str]:
    """The fields of `values` that DevRev's answer (the contact as it now stands) does not
    hold as sent; [] when every one was applied."""
    wrong = []
    for name, value in values.items():
        now = answer.get(name)
        if name in LIST_FIELDS:
            if {item_key(name, v) for v in value} - {item_key(name, v) for v in now or []}:
                wrong.append(name)
        elif name == "custom_fields":
            if any((now or {}).get(k) != v for k, v in value.items() if v is not None):
                wrong.append(name)
        elif now != value:
            wrong.append(name)
    return wrong
