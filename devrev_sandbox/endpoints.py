"""The DevRev operations the emulator serves: the route table and one handler each.

A handler takes the state, the Settings of the emulator and the request body (already
checked for unknown fields), and returns the answer's JSON or raises ApiError. The
server calls it holding the state's lock, and persists the state after a write.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import ApiError
from .modes import BehaviourModes
from .state import SandboxState, iso
from .validation import (
    PAGING,
    boolean,
    check_fields,
    check_mode,
    custom_schema_spec,
    date_filter,
    enum_list,
    id_list,
    keyset_page,
    page,
    page_limit,
    require,
    resolve,
    schema_names_field,
    set_ids,
    sparse_page,
    string_list,
)


@dataclass(frozen=True)
class Settings:
    """The emulator's knobs the handlers read.

    page_cap: the largest page served. modes: how to play DevRev where its behaviour is
    unknown. locate_url(artifact) -> (presigned url, expiry epoch seconds): the file
    host's signer. upload_form(artifact) -> (upload url, form fields [{key, value}], expiry
    epoch seconds): the file host's presigned POST for a prepared artifact.
    """
    page_cap: int
    modes: BehaviourModes
    locate_url: Callable[[dict], tuple[str, float]]
    upload_form: Callable[[dict], tuple[str, list[dict], float]]


Handler = Callable[[SandboxState, Settings, dict], dict]


@dataclass(frozen=True)
class Route:
    func: Handler
    readonly: bool
    fields: frozenset          # accepted top-level request fields
    array_fields: frozenset = frozenset()
    status: int = 200          # the success status (201 for a create)


ROUTES: dict[str, Route] = {}


def route(endpoint: str, *, fields: set, readonly: bool, arrays: set = frozenset(), status: int = 200):
    """Register a handler for `endpoint`, refusing request fields not in `fields`;
    `status` is what it answers on success."""
    fields = frozenset(fields)

    def register(func: Handler) -> Handler:
        def checked(state: SandboxState, settings: Settings, body: dict) -> dict:
            check_fields(endpoint, body, fields)
            return func(state, settings, body)
        ROUTES[endpoint] = Route(checked, readonly, fields, frozenset(arrays), status)
        return func
    return register


def _listing(key: str, items: list[dict], next_cursor: str | None) -> dict:
    out = {key: items}
    if next_cursor:
        out["next_cursor"] = next_cursor
    return out


def _work_out(state: SandboxState, settings: Settings, work: dict) -> dict:
    return state.render_work(work, ticking=settings.modes.fields_change_by_themselves)


def _conversation_out(state: SandboxState, settings: Settings, conv: dict) -> dict:
    return state.render_conversation(conv, ticking=settings.modes.fields_change_by_themselves)


def _retired(state: SandboxState, settings: Settings, user: dict) -> bool:
    return state.retire_if_due(user, settings.modes)


def _gone(state: SandboxState, settings: Settings, user: dict) -> bool:
    """A retired contact that DevRev no longer serves at all."""
    return _retired(state, settings, user) and bool(user.get("_gone"))


def _rev_user(state: SandboxState, body: dict) -> dict:
    """The rev user that body["id"] names (404 for another kind of user)."""
    user = resolve(state, require(body, "id"), "id", state.users)
    if user["type"] != "rev_user":
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    return user


def _set_users(state: SandboxState, settings: Settings, body: dict, name: str, *,
               allow_empty: bool) -> list[str] | None:
    """The DONs of a {"set": [...]} of users, each existing and not retired."""
    ids = set_ids(body, name, allow_empty=allow_empty)
    if ids is None:
        return None
    resolved = []
    for value in ids:
        user = resolve(state, value, name, state.users, reference=True)
        if _retired(state, settings, user):
            raise ApiError(404, "not_found", f"user {value} not found")
        resolved.append(user["id"])
    return resolved


def _filter_on_retired(state: SandboxState, settings: Settings, ids: list[str] | None, name: str) -> None:
    """A list filtered by a retired contact answers as modes.retired_filter_answer says."""
    answer = settings.modes.retired_filter_answer
    if ids is None or answer == "empty":
        return
    for value in ids:
        user = state.users.get(value)
        if user is not None and user["type"] == "rev_user" and _retired(state, settings, user):
            if answer == "400":
                raise ApiError(400, "invalid_id", f"{name} names a deleted user: {value}", field_name=name)
            raise ApiError(404, "not_found", f"user {value} not found")


def _forbid(settings: Settings, endpoint: str) -> None:
    """403 for a write the token may not make (modes.token_permissions)."""
    permissions = settings.modes.token_permissions
    if permissions == "read_only" or (permissions == "no_merge" and endpoint == "rev-users.merge"):
        raise ApiError(403, "forbidden", f"the token is not allowed to call {endpoint}"
                       + (" (needs rev_user:all)" if endpoint == "rev-users.merge" else ""))


@route("dev-users.self", fields=set(), readonly=True)
def _dev_users_self(state: SandboxState, settings: Settings, body: dict) -> dict:
    return {"dev_user": state.render_dev_user(state.users[state.admin_id])}


@route("rev-users.get", fields={"id"}, readonly=True)
def _rev_users_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    user = _rev_user(state, body)
    state.count_get(user)
    if _gone(state, settings, user):
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    return {"rev_user": _render_contact(state, settings, user)}


def _refs_of(settings: Settings, user: dict) -> list[str]:
    """Every reference a contact holds: its external_ref, and with contact_external_refs
    the rest of its list."""
    first = [user["external_ref"]] if user.get("external_ref") else []
    return first + (user.get("external_refs_extra", []) if settings.modes.contact_external_refs else [])


def _render_contact(state: SandboxState, settings: Settings, user: dict) -> dict:
    out = state.render_user(user)
    if settings.modes.contact_external_refs:
        out["external_refs"] = _refs_of(settings, user)
    return out


_CONTACT_FILTERS = {"email", "external_ref", "rev_org", "created_by", "is_verified", "created_date", "modified_date"}
_CONTACT_ARRAYS = {"email", "external_ref", "rev_org", "created_by"}


def _contact_filter(state: SandboxState, settings: Settings, body: dict) -> Callable[[dict], bool]:
    """The filters rev-users.list and rev-users.scan share, as one predicate (exact values,
    as DevRev's are documented; date ranges inclusive at both ends)."""
    emails, refs = string_list(body, "email"), string_list(body, "external_ref")
    orgs, creators = id_list(state, body, "rev_org"), id_list(state, body, "created_by")
    verified = boolean(body, "is_verified")
    created, modified = date_filter(body, "created_date"), date_filter(body, "modified_date")

    def keep(u: dict) -> bool:
        return (not _gone(state, settings, u)
                and (emails is None or u.get("email") in emails)
                and (refs is None or any(r in refs for r in _refs_of(settings, u)))
                and (orgs is None or u.get("rev_org") in orgs)
                and (creators is None or u.get("created_by") in creators)
                and (verified is None or bool(u.get("is_verified")) == verified)
                and (created is None or created(u.get("created_date")))
                and (modified is None or modified(u.get("modified_date"))))
    return keep


@route("rev-users.list", fields=_CONTACT_FILTERS | PAGING, readonly=True, arrays=_CONTACT_ARRAYS)
def _rev_users_list(state: SandboxState, settings: Settings, body: dict) -> dict:
    limit = page_limit(body, settings.page_cap)
    check_mode(body)
    keep = _contact_filter(state, settings, body)
    first, cursor = keyset_page(body, state.rev_users_newest_first(), keep, "rev-users.list", limit)
    return _listing("rev_users", [_render_contact(state, settings, u) for u in first], cursor)


@route("rev-users.scan", fields=_CONTACT_FILTERS | {"cursor"}, readonly=True, arrays=_CONTACT_ARRAYS)
def _rev_users_scan(state: SandboxState, settings: Settings, body: dict) -> dict:
    """Like the list without `limit`, `mode` or `sort_by`: the server sets the page size."""
    keep = _contact_filter(state, settings, body)
    first, cursor = keyset_page(body, state.rev_users_newest_first(), keep, "rev-users.scan",
                                settings.modes.scan_page_size)
    return _listing("rev_users", [_render_contact(state, settings, u) for u in first], cursor)


@route("rev-users.update", fields={"id", "external_ref", "external_refs", "display_name", "description",
                                   "phone_numbers", "tags", "custom_fields"},
       readonly=False)
def _rev_users_update(state: SandboxState, settings: Settings, body: dict) -> dict:
    _forbid(settings, "rev-users.update")
    user = _rev_user(state, body)
    if _gone(state, settings, user):
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    if "external_refs" in body:
        _set_external_refs(state, settings, body, user)
    if "external_ref" in body:
        user["external_ref"] = _free_external_ref(state, settings, body, user)
        extra = [r for r in user.get("external_refs_extra", []) if r != user["external_ref"]]
        user.pop("external_refs_extra", None)
        if extra:
            user["external_refs_extra"] = extra
    for name in ("display_name", "description"):
        if name in body:
            user[name] = require(body, name)
    if body.get("description") == "":   # [I] an empty description clears it: answers leave it out
        user.pop("description", None)
    if "phone_numbers" in body:
        user["phone_numbers"] = _phone_numbers(body)
    if "tags" in body:
        user["tags"] = _tag_ids(state, body)
    for name in ("phone_numbers", "tags"):   # [I] an empty list clears the field: answers leave it out
        if name in body and not user.get(name):
            user.pop(name, None)
    if "custom_fields" in body:   # [I] the keys sent are set (null included), the others kept (the tool sends all)
        fields = body["custom_fields"]
        if not isinstance(fields, dict):
            raise ApiError(400, "invalid_field", "custom_fields must be an object", field_name="custom_fields")
        user["custom_fields"] = dict(user.get("custom_fields") or {}, **fields)
    state.touch(user)
    return {"rev_user": _render_contact(state, settings, user)}


_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _phone_numbers(body: dict) -> list[str]:
    """rev-users.update's phone_numbers: a list of E.164 numbers (S1: "in E.164 format")."""
    numbers = body["phone_numbers"]
    if not isinstance(numbers, list) or not all(isinstance(n, str) and _E164.fullmatch(n) for n in numbers):
        raise ApiError(400, "invalid_field", "phone_numbers must be a list of E.164 numbers (+14155550100)",
                       field_name="phone_numbers")
    return list(numbers)


def _tag_ids(state: SandboxState, body: dict) -> list[str]:
    """rev-users.update's tags ([{"id", "value"?}], set-tag-with-value in the beta spec): tags
    are sent as ids (a DON or TAG-n) and must exist; answers carry the tag objects (S18)."""
    tags = body["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), str) for t in tags):
        raise ApiError(400, "invalid_field", "tags must be a list of {\"id\": tag id}", field_name="tags")
    out = []
    for tag in tags:
        don = tag["id"] if tag["id"] in state.tags else state.by_display.get(tag["id"])
        if don not in state.tags:
            raise ApiError(400, "invalid_field", f"tag {tag['id']!r} not found", field_name="tags")
        if don not in out:
            out.append(don)
    return out


def _free_external_ref(state: SandboxState, settings: Settings, body: dict, user: dict | None) -> str:
    """body["external_ref"], non-empty and held by no contact (but `user`) that is not retired."""
    ref = require(body, "external_ref")
    if not ref.strip():
        raise ApiError(400, "invalid_field", "external_ref must not be empty", field_name="external_ref")
    _check_free(state, settings, ref, user)
    return ref


def _check_free(state: SandboxState, settings: Settings, ref: str, user: dict | None) -> None:
    """The conflict answer if a contact that is not retired (but `user`) holds `ref`."""
    for other in state.users.values():
        if other is not user and other["type"] == "rev_user" and ref in _refs_of(settings, other) \
                and not _retired(state, settings, other):
            status = settings.modes.external_ref_conflict_status
            raise ApiError(status, "conflict" if status == 409 else "bad_request",
                           f"external_ref {ref!r} is already used by another contact")


def _set_external_refs(state: SandboxState, settings: Settings, body: dict, user: dict) -> None:
    """rev-users.update's `external_refs` (the whole list; its first item becomes external_ref),
    with contact_external_refs on; refused (400) without it."""
    if not settings.modes.contact_external_refs:
        raise ApiError(400, "invalid_field", "external_refs: multi-association contacts are not enabled",
                       field_name="external_refs")
    refs = body["external_refs"]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs) \
            or len(set(refs)) != len(refs):
        raise ApiError(400, "invalid_field", "external_refs must be a list of distinct, non-empty strings",
                       field_name="external_refs")
    for ref in refs:
        _check_free(state, settings, ref, user)
    user["external_ref"] = refs[0]
    user.pop("external_refs_extra", None)
    if refs[1:]:
        user["external_refs_extra"] = list(refs[1:])


@route("rev-users.create", fields={"email", "display_name", "external_ref", "rev_org", "description",
                                   "phone_numbers", "tags", "custom_fields"}, readonly=False, status=201)
def _rev_users_create(state: SandboxState, settings: Settings, body: dict) -> dict:
    """A new contact (new id and display id, created now by the token's user); a retired
    contact is never brought back: its external_ref is free, so a new one can take it."""
    try:
        org = resolve(state, require(body, "rev_org"), "rev_org", state.orgs)  # the spec's example: a display id
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ApiError(400, "invalid_field", f"unknown rev_org {body['rev_org']}", field_name="rev_org") from None
    ref = _free_external_ref(state, settings, body, None) if "external_ref" in body else None
    fields = {name: require(body, name) for name in ("email", "display_name", "description") if name in body}
    if "phone_numbers" in body:
        fields["phone_numbers"] = _phone_numbers(body)
    if "tags" in body:
        fields["tags"] = _tag_ids(state, body)
    if "custom_fields" in body:
        if not isinstance(body["custom_fields"], dict):
            raise ApiError(400, "invalid_field", "custom_fields must be an object", field_name="custom_fields")
        fields["custom_fields"] = dict(body["custom_fields"])
    user = state.create_rev_user(org["id"], ref, **{k: v for k, v in fields.items() if v not in ([], "")})
    return {"rev_user": _render_contact(state, settings, user)}


@route("rev-users.merge", fields={"primary_user", "secondary_user"}, readonly=False)
def _rev_users_merge(state: SandboxState, settings: Settings, body: dict) -> dict:
    _forbid(settings, "rev-users.merge")
    require(body, "primary_user")
    require(body, "secondary_user")
    primary = resolve(state, body["primary_user"], "primary_user", state.users, reference=True)
    secondary = resolve(state, body["secondary_user"], "secondary_user", state.users, reference=True)
    for user, name in ((primary, "primary_user"), (secondary, "secondary_user")):
        if user["type"] != "rev_user" or _retired(state, settings, user):
            raise ApiError(404, "not_found", f"rev user {body[name]} not found")
    if primary is secondary:
        raise ApiError(400, "bad_request", "primary_user and secondary_user are the same user")
    if primary.get("_merge"):
        raise ApiError(400, "bad_request", "the primary user is itself being merged")
    pending = secondary.get("_merge")
    if pending:
        if pending["primary"] != primary["id"]:
            raise ApiError(400, "bad_request", "the secondary user is already being merged into another user")
        return {}
    if settings.modes.merge_job == "refused":
        raise ApiError(400, "bad_request", "merge limit exceeded: the user has reached the maximum number of "
                                           "merges allowed")
    state.begin_merge(secondary, primary["id"], after_gets=settings.modes.merge_retire_after_gets,
                      delay=settings.modes.merge_retire_delay, job=settings.modes.merge_job)
    return {}


_JOB_STATES = ["completed", "failed", "in_progress", "queued", "started"]
_JOB_ARRAYS = {"category", "created_by", "owned_by_id", "parent_ids", "sort_by", "state"}


@route("jobs.get", fields={"id"}, readonly=True)
def _jobs_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    job = state.jobs.get(require(body, "id"))
    if job is None:
        raise ApiError(404, "not_found", f"job {body['id']} not found")
    return {"job": state.render_job(job)}


@route("jobs.list", fields=_JOB_ARRAYS | PAGING, readonly=True, arrays=_JOB_ARRAYS)
def _jobs_list(state: SandboxState, settings: Settings, body: dict) -> dict:
    """Newest first, the only order the emulator serves (sort_by created_date:desc or none)."""
    limit = page_limit(body, settings.page_cap)
    check_mode(body)
    categories = string_list(body, "category")
    states = enum_list(body, "state", _JOB_STATES)
    creators = id_list(state, body, "created_by")
    for name in ("owned_by_id", "parent_ids"):
        id_list(state, body, name)
    sort = string_list(body, "sort_by")
    if sort not in (None, [], ["created_date:desc"]):
        raise ApiError(400, "invalid_field", "the emulator sorts jobs by created_date:desc only", field_name="sort_by")

    def keep(job: dict) -> bool:
        return ((categories is None or job["job_category"] in categories)
                and (states is None or job["state"] in states)
                and (creators is None or job["created_by"] in creators))
    newest_first = sorted(state.jobs.values(), key=lambda j: -j["_seq"])
    first, cursor = keyset_page(body, newest_first, keep, "jobs.list", limit)
    return _listing("jobs", [state.render_job(j) for j in first], cursor)


@route("works.get", fields={"id"}, readonly=True)
def _works_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    work = resolve(state, require(body, "id"), "id", state.works)
    return {"work": _work_out(state, settings, work)}


@route("works.list", fields={"type", "reported_by", "owned_by", "custom_fields"} | PAGING, readonly=True,
       arrays={"type", "reported_by", "owned_by"})
def _works_list(state: SandboxState, settings: Settings, body: dict) -> dict:
    types = enum_list(body, "type", ["issue", "ticket"])
    reporters = id_list(state, body, "reported_by")
    owners = id_list(state, body, "owned_by")
    custom = _custom_fields_filter(settings, body)
    _filter_on_retired(state, settings, reporters, "reported_by")
    listed = {w["id"]: _as_listed(state, w) for w in state.works.values()}
    items = [w for w in state.works.values()
             if (types is None or w["type"] in types)
             and (reporters is None or set(reporters) & set(listed[w["id"]]["reported_by"]))
             and (owners is None or set(owners) & set(w["owned_by"]))
             and (custom is None or custom(w))]
    first, cursor = page(body, items, "works.list", settings.page_cap, settings.modes.list_paging)
    return _listing("works", [_work_out(state, settings, listed[w["id"]]) for w in first], cursor)


def _as_listed(state: SandboxState, work: dict) -> dict:
    """The work as a lagging list shows it (mode listing_lag_seconds): its reporters from
    before the last write, until the lag is over."""
    lag = work.get("_listed_before")
    if lag and state.clock() < lag["until"]:
        return dict(work, reported_by=lag["reported_by"])
    return work


def _custom_fields_filter(settings: Settings, body: dict) -> Callable[[dict], bool] | None:
    """works.list's `custom_fields` filter ({field: value or [values]}) as a predicate, or None
    when absent; refused (400) unless modes.works_custom_fields_filter accepts it. A work
    matches when, for every field named, its value is one of the values or, list-valued,
    holds one of them."""
    if "custom_fields" not in body:
        return None
    if settings.modes.works_custom_fields_filter == "refused":
        raise ApiError(400, "bad_request", "works.list does not take the field 'custom_fields' on this tenant")
    wanted = body["custom_fields"]
    if not isinstance(wanted, dict) or not wanted:
        raise ApiError(400, "invalid_field", "custom_fields must be an object of field: value(s)",
                       field_name="custom_fields")
    choices = {name: value if isinstance(value, list) else [value] for name, value in wanted.items()}

    def keep(work: dict) -> bool:
        fields = work.get("custom_fields") or {}
        for name, values in choices.items():
            have = fields.get(name)
            held = have if isinstance(have, list) else [have] if name in fields else []
            if not any(v in held for v in values):
                return False
        return True
    return keep


def _set_custom_fields(state: SandboxState, settings: Settings, body: dict, obj: dict) -> None:
    """A write's `custom_fields`: each field's schema must be named in `custom_schema_spec`
    (validation.schema_names_field; else 400 invalid_field), and only the fields sent change
    (a null value clears one): "if a custom schema is not included it remains unchanged". A
    value naming a contact (a rev user id, alone or in a list) must name a live one (400)."""
    spec = custom_schema_spec(body)
    if "custom_fields" not in body:
        return
    fields = body["custom_fields"]
    if not isinstance(fields, dict):
        raise ApiError(400, "invalid_field", "custom_fields must be an object", field_name="custom_fields")
    for name, value in fields.items():
        if not schema_names_field(name, spec, obj.get("subtype")):
            raise ApiError(400, "invalid_field", f"custom field {name!r}: its schema is not named in "
                           "custom_schema_spec (tnt__: tenant_fragment, ctype__: the object's subtype, "
                           "<app>__: apps)", field_name="custom_fields")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("don:identity:") and ":revu/" in item:
                user = state.users.get(item)
                if user is None or _retired(state, settings, user):
                    raise ApiError(400, "invalid_field", f"custom field {name!r} names an unknown or deleted "
                                   f"contact {item}", field_name="custom_fields")
    current = dict(obj.get("custom_fields") or {})
    for name, value in fields.items():
        if value is None:
            current.pop(name, None)
        else:
            current[name] = value
    obj.pop("custom_fields", None)
    if current:
        obj["custom_fields"] = current


@route("works.update", fields={"id", "type", "reported_by", "owned_by", "custom_fields", "custom_schema_spec",
                               "custom_schema_fragments"}, readonly=False)
def _works_update(state: SandboxState, settings: Settings, body: dict) -> dict:
    _forbid(settings, "works.update")
    work = resolve(state, require(body, "id"), "id", state.works)
    if "type" in body and body["type"] != work["type"]:
        raise ApiError(400, "bad_request", f"type {body['type']!r} does not match the work's type")
    reporters = _set_users(state, settings, body, "reported_by", allow_empty=True)
    owners = _set_users(state, settings, body, "owned_by", allow_empty=False)
    fragments = string_list(body, "custom_schema_fragments", "ids")
    _set_custom_fields(state, settings, body, work)
    if fragments is not None:
        work["custom_schema_fragments"] = list(fragments)
    if reporters is not None:
        if settings.modes.listing_lag_seconds:
            work["_listed_before"] = {"reported_by": list(_as_listed(state, work)["reported_by"]),
                                      "until": state.clock() + settings.modes.listing_lag_seconds}
        work["reported_by"] = reporters
    if owners is not None:
        work["owned_by"] = owners
    state.touch(work)
    return {"work": _work_out(state, settings, work)}


@route("conversations.get", fields={"id"}, readonly=True)
def _conversations_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    conv = resolve(state, require(body, "id"), "id", state.conversations)
    return {"conversation": _conversation_out(state, settings, conv)}


def _org_ids(state: SandboxState, body: dict, name: str, kind: str) -> list[str] | None:
    """An `account` / `rev_orgs` filter: ids of that kind only (400 invalid_id for another object's)."""
    ids = id_list(state, body, name)
    for value in ids or ():
        if f":{kind}/" not in value:
            raise ApiError(400, "invalid_id", f"{name} must hold {kind} ids, got {value!r}", field_name=name)
    return ids


_CONVERSATION_ARRAYS = {"members", "owned_by", "account", "rev_orgs"}


@route("conversations.list", fields=_CONVERSATION_ARRAYS | PAGING, readonly=True, arrays=_CONVERSATION_ARRAYS)
def _conversations_list(state: SandboxState, settings: Settings, body: dict) -> dict:
    """members (modes.conversations_members_filter), owned_by, and (S15) the conversation's
    `account` or workspace (`rev_orgs`); the filters given all apply."""
    members = id_list(state, body, "members")
    owners = id_list(state, body, "owned_by")
    accounts, orgs = _org_ids(state, body, "account", "account"), _org_ids(state, body, "rev_orgs", "revo")
    _filter_on_retired(state, settings, members, "members")
    if members is not None and settings.modes.conversations_members_filter == "empty":
        members = []
    items = [c for c in state.conversations.values()
             if (members is None or set(members) & set(c["members"]))
             and (owners is None or set(owners) & set(c["owned_by"]))
             and (accounts is None or state.conversation_account(c) in accounts)
             and (orgs is None or c.get("_rev_org") in orgs)]
    first, cursor = page(body, items, "conversations.list", settings.page_cap, settings.modes.list_paging)
    return _listing("conversations", [_conversation_out(state, settings, c) for c in first], cursor)


@route("conversations.update", fields={"id", "members", "custom_fields", "custom_schema_spec"}, readonly=False)
def _conversations_update(state: SandboxState, settings: Settings, body: dict) -> dict:
    _forbid(settings, "conversations.update")
    conv = resolve(state, require(body, "id"), "id", state.conversations)
    members = _set_users(state, settings, body, "members", allow_empty=False)
    _set_custom_fields(state, settings, body, conv)
    if members is not None:
        conv["members"] = members
    state.touch(conv)
    return {"conversation": _conversation_out(state, settings, conv)}


def _visible(state: SandboxState, entry: dict) -> bool:
    """Private entries are seen by their author only (the token's user is the admin)."""
    return entry["visibility"] != "private" or entry["created_by"] == state.admin_id


@route("timeline-entries.list", fields={"object", "visibility"} | PAGING, readonly=True, arrays={"visibility"})
def _timeline_list(state: SandboxState, settings: Settings, body: dict) -> dict:
    object_id = require(body, "object")
    parent = _timeline_parent(state, settings, object_id)
    visibility = enum_list(body, "visibility", ["external", "internal", "private", "public"])
    items = [e for e in state.entries.get(parent["id"], [])
             if (visibility is None or e["visibility"] in visibility) and _visible(state, e)]
    if settings.modes.timeline_empty_pages:
        first, cursor = sparse_page(body, items, "timeline-entries.list", settings.page_cap,
                                    settings.modes.timeline_empty_pages)
    else:
        first, cursor = page(body, items, "timeline-entries.list", settings.page_cap)
    return _listing("timeline_entries", [state.render_entry(e) for e in first], cursor)


def _timeline_parent(state: SandboxState, settings: Settings, object_id: str) -> dict:
    """The ticket, conversation or contact (a rev_user has a timeline of its own, [C] S15
    timeline-entry-object-type) whose timeline `object_id` names."""
    contacts = {u["id"]: u for u in state.users.values() if u["type"] == "rev_user" and not _gone(state, settings, u)}
    return resolve(state, object_id, "object", {**state.works, **state.conversations, **contacts})


@route("timeline-entries.create", fields={"object", "type", "body", "body_type", "visibility", "external_ref",
                                        "artifacts"}, readonly=False, status=201)
def _timeline_create(state: SandboxState, settings: Settings, body: dict) -> dict:
    """A text comment on a timeline, with uploaded artifacts attached; its external_ref is
    unique within that timeline (409)."""
    _forbid(settings, "timeline-entries.create")
    parent = _timeline_parent(state, settings, require(body, "object"))
    if require(body, "type") != "timeline_comment":
        raise ApiError(400, "invalid_field", "type must be timeline_comment", field_name="type")
    if body.get("body_type", "text") != "text":
        raise ApiError(400, "invalid_field", "the sandbox writes text comments only", field_name="body_type")
    visibility = body.get("visibility", "external")
    if visibility not in ("external", "internal", "private", "public"):
        raise ApiError(400, "invalid_field", f"unknown visibility {visibility!r}", field_name="visibility")
    files = _attachable(state, body)
    ref = body.get("external_ref")
    if ref is not None and any(e.get("external_ref") == ref for e in state.entries.get(parent["id"], [])):
        raise ApiError(409, "conflict", f"external_ref {ref!r} is already used in this timeline")
    entry = state.add_comment(parent["id"], str(require(body, "body")), visibility=visibility, external_ref=ref,
                              artifacts=files)
    return {"timeline_entry": state.render_entry(entry)}


MAX_COMMENT_ARTIFACTS = 50   # timeline-entries-create-request-timeline-comment: artifacts maxItems


def _attachable(state: SandboxState, body: dict) -> list[str]:
    """The DONs of a comment's `artifacts`: at most 50 distinct ids (DONs: references, see
    facts.DISPLAY_IDS_ACCEPTED_IN_REFERENCES), each of an artifact that exists and was uploaded
    (a prepared one without content cannot be attached); else 400 invalid_field naming `artifacts`."""
    values = id_list(state, body, "artifacts") or []
    if len(values) > MAX_COMMENT_ARTIFACTS or len(set(values)) != len(values):
        raise ApiError(400, "invalid_field", f"artifacts must hold at most {MAX_COMMENT_ARTIFACTS} distinct ids",
                       field_name="artifacts")
    found = []
    for value in values:
        art = state.artifacts.get(value)
        if art is None or art.get("_pending"):
            raise ApiError(400, "invalid_field", f"artifact {value} does not exist or has not been uploaded",
                           field_name="artifacts")
        found.append(art["id"])
    return found


@route("timeline-entries.get", fields={"id"}, readonly=True)
def _timeline_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    entry_id = require(body, "id")
    for entries in state.entries.values():
        for entry in entries:
            if entry["id"] == entry_id and _visible(state, entry):
                return {"timeline_entry": state.render_entry(entry)}
    raise ApiError(404, "not_found", f"timeline entry {entry_id} not found")


@route("artifacts.get", fields={"id", "version"}, readonly=True)
def _artifacts_get(state: SandboxState, settings: Settings, body: dict) -> dict:
    art = resolve(state, require(body, "id"), "id", state.artifacts)
    return {"artifact": state.render_artifact(art),
            "version": {"version": "1", "timestamp": art["created_date"]}}


@route("artifacts.locate", fields={"id", "version"}, readonly=True)
def _artifacts_locate(state: SandboxState, settings: Settings, body: dict) -> dict:
    """A presigned URL of the artifact's bytes; 404 for one prepared and never uploaded."""
    art = resolve(state, require(body, "id"), "id", state.artifacts)
    if art.get("_pending"):
        raise ApiError(404, "not_found", f"artifact {body['id']} has no uploaded file yet")
    url, expires = settings.locate_url(art)
    return {"url": url, "expires_at": iso(expires)} if settings.modes.locate_expires_at else {"url": url}


# artifact-configuration-set (artifacts-prepare-request)
CONFIGURATION_SETS = ("article_media", "default", "email_media", "job_data", "marketplace_listing_icon",
                      "marketplace_media", "org_logo", "plug_css", "plug_setting", "plug_setting_banner_card",
                      "portal_css", "snap_in_functions_code", "snap_widget", "user_profile_picture", "work")


@route("artifacts.prepare", fields={"file_name", "file_type", "configuration_set"}, readonly=False)
def _artifacts_prepare(state: SandboxState, settings: Settings, body: dict) -> dict:
    """A new artifact without content, and the presigned POST its bytes go to (the file host
    takes the upload: server.DevRevSandbox._handle_upload). Until then artifacts.get answers
    its file without a size, artifacts.locate 404s and a comment cannot attach it."""
    _forbid(settings, "artifacts.prepare")
    name = require(body, "file_name")
    if not name.strip():
        raise ApiError(400, "invalid_field", "file_name must not be empty", field_name="file_name")
    file_type = body.get("file_type")
    if file_type is not None and (not isinstance(file_type, str) or not file_type.strip()):
        raise ApiError(400, "invalid_field", "file_type must be a non-empty string", field_name="file_type")
    config = body.get("configuration_set")
    if config is not None and config not in CONFIGURATION_SETS:
        raise ApiError(400, "invalid_enum_value", f"unknown configuration_set {config!r}",
                       field_name="configuration_set", value=str(config), allowed_values=list(CONFIGURATION_SETS))
    art = state.prepare_artifact(name, file_type)
    url, form, expires = settings.upload_form(art)
    art["_upload"] = {"form": form, "expires": expires}
    return {"id": art["id"], "url": url, "form_data": form}


WRITE_ENDPOINTS = frozenset(name for name, r in ROUTES.items() if not r.readonly)
