"""Reading and checking requests the way DevRev does: JSON bodies (or GET query strings),
required fields and their JSON types, ids (DONs; display ids only where DevRev is known
to take them), `{"set": [...]}` updates, enum lists, and keyset pagination.

Every check raises ApiError with DevRev's error type and field_name.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from devrev_api import assumptions as facts

from .errors import ApiError
from .state import SandboxState

PAGING = frozenset({"cursor", "limit", "mode"})


def parse_request(method: str, raw: bytes, query: str, array_fields: frozenset = frozenset()) -> dict:
    """The request as a dict: a POST's JSON object body, or a GET's query string
    (`a.b=v` nests, `limit` is an int, `array_fields` are comma-separated lists)."""
    if method == "GET":
        return _parse_query(query, array_fields)
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "parse_error", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    return body


def _parse_query(query: str, array_fields: frozenset) -> dict:
    body: dict = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        if name in array_fields:
            value = [v for v in value.split(",") if v]
        elif name == "limit":
            try:
                value = int(value)
            except ValueError:
                raise ApiError(400, "bad_request", "limit must be an integer") from None
        target = body
        *outer, last = name.split(".")
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = value
    return body


def check_fields(endpoint: str, body: dict, fields: frozenset) -> None:
    """Refuse fields the emulator does not implement, rather than ignore them."""
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ApiError(400, "bad_request", f"the sandbox does not support field {unknown[0]!r} on {endpoint}")


def require(body: dict, name: str, kind=str):
    """body[name], present and of JSON type `kind`."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, "missing_required_field", f"field {name} is required", field_name=name)
    if not isinstance(value, kind):
        raise ApiError(400, "invalid_field", f"field {name} has the wrong JSON type", field_name=name)
    return value


def resolve(state: SandboxState, value: Any, field_name: str, table: dict, *, reference: bool = False) -> dict:
    """Find an object of `table` by DON (or display id where DevRev is known to take one:
    not in references). Raises 400 invalid_id, or 404 for unknown or gone objects."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_id", f"invalid id in {field_name}", field_name=field_name)
    if not value.startswith("don:"):
        if reference and not facts.DISPLAY_IDS_ACCEPTED_IN_REFERENCES:
            raise ApiError(400, "invalid_id", f"{field_name} must be an object id (DON), got {value!r}",
                           field_name=field_name)
        value = state.by_display.get(value, value)
    obj = table.get(value)
    if obj is None or obj.get("_gone"):
        raise ApiError(404, "not_found", f"object {value} not found")
    return obj


def string_list(body: dict, name: str, what: str = "strings") -> list[str] | None:
    """body[name] as an array of strings, or None when absent."""
    if name not in body:
        return None
    values = body[name]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError(400, "invalid_field", f"{name} must be an array of {what}", field_name=name)
    return values


def id_list(state: SandboxState, body: dict, name: str) -> list[str] | None:
    """A filter's list of object ids (DONs), or None when absent."""
    values = string_list(body, name, "ids")
    if values is None:
        return None
    for value in values:
        if not value.startswith("don:") and not facts.DISPLAY_IDS_ACCEPTED_IN_REFERENCES:
            raise ApiError(400, "invalid_id", f"{name} must hold object ids (DONs), got {value!r}", field_name=name)
    return [state.by_display.get(v, v) for v in values]


def enum_list(body: dict, name: str, allowed: list[str]) -> list[str] | None:
    """A filter's list of enum values, or None when absent."""
    values = body.get(name)
    if values is not None and (not isinstance(values, list) or not set(values) <= set(allowed)):
        raise ApiError(400, "invalid_enum_value", f"{name} must be a list of {'|'.join(allowed)}",
                       field_name=name, value=json.dumps(values), allowed_values=allowed)
    return values


def set_ids(body: dict, name: str, *, allow_empty: bool) -> list[str] | None:
    """`reported_by` / `members` / `owned_by` updates take {"set": [ids]} and nothing else;
    the ids, unresolved, or None when the field is absent."""
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, dict) or set(value) != {"set"} or not isinstance(value["set"], list):
        raise ApiError(400, "invalid_field", f"{name} must be given as {{\"set\": [ids]}}", field_name=name)
    ids = value["set"]
    if not all(isinstance(v, str) for v in ids):
        raise ApiError(400, "invalid_field", f"{name}.set must hold ids", field_name=name)
    if len(set(ids)) != len(ids):
        raise ApiError(400, "invalid_field", f"{name}.set holds the same id twice", field_name=name)
    if not ids and not allow_empty:
        raise ApiError(400, "invalid_field", f"{name}.set must not be empty", field_name=name)
    return ids


def page(body: dict, items: list[dict], endpoint: str, page_cap: int,
         paging: str = "keyset") -> tuple[list[dict], str | None]:
    """One page and the next cursor (None at the end). The opaque cursor is bound to the
    endpoint and filters; `limit` is clamped to page_cap. paging "keyset": newest first
    by creation, stable under writes; "offset": newest modified first, the cursor an
    offset, so an item written between two pages shifts the ones after it."""
    limit = body.get("limit", facts.PAGE_LIMIT)
    if not isinstance(limit, int) or limit < 1:
        raise ApiError(400, "invalid_field", "limit must be a positive integer", field_name="limit")
    limit = min(limit, page_cap)
    mode = body.get("mode", "after")
    if mode not in ("after", "before"):
        raise ApiError(400, "invalid_enum_value", "mode must be after or before", field_name="mode",
                       value=str(mode), allowed_values=["after", "before"])
    digest = _filters_digest(endpoint, body)
    offset = paging == "offset"
    if offset:
        items = sorted(items, key=lambda o: (o.get("modified_date") or "", o["_seq"]), reverse=True)
    else:
        items = sorted(items, key=lambda o: o["_seq"], reverse=True)
    start = 0
    after = _cursor_key(body, digest)
    if after is not None:
        if offset:
            start = after
        else:
            items = [o for o in items if o["_seq"] < after]
    first = items[start:start + limit]
    next_cursor = None
    if len(items) > start + limit:
        key = start + limit if offset else first[-1]["_seq"]
        next_cursor = base64.urlsafe_b64encode(json.dumps({"k": key, "f": digest}).encode()).decode()
    return first, next_cursor


def sparse_page(body: dict, items: list[dict], endpoint: str, page_cap: int,
                empty_before_each: int) -> tuple[list[dict], str | None]:
    """`page` (keyset) as the 2026 spec allows a timeline to answer ([C] S15: "fewer (possibly
    zero) entries may be returned even if there are more"; the cursor always advances): each
    page holds one entry at most, and `empty_before_each` empty pages, each with a new cursor,
    come before every one of them."""
    page(body, [], endpoint, page_cap)        # the same checks of limit, mode and cursor
    digest = _filters_digest(endpoint, body)
    items = sorted(items, key=lambda o: o["_seq"], reverse=True)
    after = _cursor_key(body, digest)
    if after is not None:
        items = [o for o in items if o["_seq"] < after]
    if not items:
        return [], None
    served = _cursor_extra(body)
    if served < empty_before_each:
        key = after if after is not None else items[0]["_seq"] + 1
        return [], _encode_cursor(key, digest, served + 1)
    return items[:1], _encode_cursor(items[0]["_seq"], digest, 0) if len(items) > 1 else None


def _encode_cursor(key: int, digest: str, empties: int = 0) -> str:
    data = {"k": key, "f": digest, **({"e": empties} if empties else {})}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _cursor_extra(body: dict) -> int:
    """How many empty pages the cursor says were served in a row (sparse_page); 0 without one."""
    cursor = body.get("cursor")
    if not cursor:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor.encode()).decode()).get("e", 0))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return 0


def _cursor_key(body: dict, digest: str) -> int | None:
    """The position a request's cursor points after (None without a cursor); 400 as DevRev
    answers for a cursor that is not ours or was made for other filters."""
    cursor = body.get("cursor")
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        after, bound = int(data["k"]), data["f"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_field", "invalid cursor", field_name="cursor") from None
    if bound != digest:
        raise ApiError(400, "invalid_field", "cursor does not match the filters", field_name="cursor")
    return after


def _filters_digest(endpoint: str, body: dict) -> str:
    filters = json.dumps({k: v for k, v in body.items() if k not in PAGING}, sort_keys=True)
    return hashlib.sha256((endpoint + filters).encode()).hexdigest()[:12]


def keyset_page(body: dict, newest_first: list[dict], keep, endpoint: str, limit: int) -> tuple[list[dict], str | None]:
    """`page` for a large table already ordered newest first (descending `_seq`): the
    cursor is found by bisection and only the page's objects are tested with keep(obj),
    so a full walk of N objects costs O(N) in all, not O(N) per page. The cursor format
    and its binding to the endpoint and filters are `page`'s. `limit` is the page size
    the caller settled (clamped; a scan has no `limit` field)."""
    digest = _filters_digest(endpoint, body)
    start = 0
    after = _cursor_key(body, digest)
    if after is not None:
        start = bisect.bisect_left(newest_first, -after, key=lambda o: -o["_seq"])
        if start < len(newest_first) and newest_first[start]["_seq"] >= after:
            start += 1
    first: list[dict] = []
    more = False
    for obj in itertools.islice(newest_first, start, None):
        if not keep(obj):
            continue
        if len(first) == limit:
            more = True
            break
        first.append(obj)
    next_cursor = None
    if more:
        next_cursor = base64.urlsafe_b64encode(json.dumps({"k": first[-1]["_seq"], "f": digest}).encode()).decode()
    return first, next_cursor


def page_limit(body: dict, page_cap: int) -> int:
    """The request's `limit` (default facts.PAGE_LIMIT), checked and clamped to page_cap."""
    limit = body.get("limit", facts.PAGE_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ApiError(400, "invalid_field", "limit must be a positive integer", field_name="limit")
    return min(limit, page_cap)


def check_mode(body: dict) -> None:
    mode = body.get("mode", "after")
    if mode not in ("after", "before"):
        raise ApiError(400, "invalid_enum_value", "mode must be after or before", field_name="mode",
                       value=str(mode), allowed_values=["after", "before"])


def boolean(body: dict, name: str) -> bool | None:
    """A boolean filter (GET query strings carry "true"/"false"), or None when absent."""
    value = body.get(name)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"{name} must be a boolean", field_name=name)
    return value


def date_filter(body: dict, name: str):
    """A `date-time-filter` ({"after", "before"}, both inclusive) as a predicate on an
    ISO timestamp string, or None when absent."""
    spec = body.get(name)
    if spec is None:
        return None
    if not isinstance(spec, dict) or not set(spec) <= {"after", "before"}:
        raise ApiError(400, "invalid_field", f"{name} must be an object with after and/or before", field_name=name)
    bounds = {}
    for end, value in spec.items():
        try:
            bounds[end] = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, "invalid_field", f"{name}.{end} is not a date-time", field_name=name) from None

    def keep(stamp: str | None) -> bool:
        if not stamp:
            return False
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return (("after" not in bounds or moment >= bounds["after"])
                and ("before" not in bounds or moment <= bounds["before"]))
    return keep


_SCHEMA_SPEC_FIELDS = {"apps": list, "subtype": str, "tenant_fragment": bool, "validate_required_fields": bool}


def custom_schema_spec(body: dict) -> dict:
    """body's `custom_schema_spec` (custom-schema-spec: apps, subtype, tenant_fragment,
    validate_required_fields), checked; {} when absent."""
    spec = body.get("custom_schema_spec")
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ApiError(400, "invalid_field", "custom_schema_spec must be an object", field_name="custom_schema_spec")
    for name, value in spec.items():
        kind = _SCHEMA_SPEC_FIELDS.get(name)
        if kind is None or not isinstance(value, kind) or (kind is list and not all(isinstance(a, str) for a in value)):
            raise ApiError(400, "invalid_field", f"custom_schema_spec.{name} is not a custom-schema-spec field "
                           "of the right type", field_name="custom_schema_spec")
    return spec


def schema_names_field(name: str, spec: dict, subtype: str | None) -> bool:
    """Whether custom_schema_spec `spec` names the schema custom field `name` belongs to, on an
    object whose own `subtype` is `subtype`: DevRev refuses (400) a write of a custom field whose
    schema the request leaves out ([C] S15 custom-schema-spec). The schema is read from the
    name's prefix ([I] devrev_api.assumptions): `tnt__x` the tenant fragment (tenant_fragment:
    true), `ctype__x` the object's subtype (subtype: that subtype), any other `<prefix>__x` the
    app `<prefix>` (apps: [..., prefix, ...]); a name without `__` names no schema (False)."""
    prefix, sep, rest = name.partition("__")
    if not sep or not prefix or not rest:
        return False
    if prefix == "tnt":
        return spec.get("tenant_fragment") is True
    if prefix == "ctype":
        return subtype is not None and spec.get("subtype") == subtype
    return prefix in spec.get("apps", [])
