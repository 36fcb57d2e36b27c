"""The preflight (`merge_contacts.py --check`, and the start of every preview and real run):
read-only proof that this DevRev tenant answers the way the merge relies on.

Three things cannot be known from the spec and fail late if wrong: whose token this is,
what rate limit DevRev announces, and whether the list filters the merge trusts to find
and to prove the absence of a contact's tickets and conversations really filter by that
contact on this tenant (devrev-api.md section 14: 6 of 6 real conversations.list calls by
member came back empty). Each check is one line; none writes anything. After the token's
check, which goes alone, the reads are independent and go at once (a small Fanout of
PREFLIGHT_WORKERS): a run's start was a chain of about ten calls, 4 s at 400 ms.
"""
from __future__ import annotations

import functools
import itertools
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence
from urllib.parse import urlsplit

from backup import display_of, ids_of
from contacts.csv_reader import MergeSet
from devrev_api import assumptions as facts
from devrev_api.errors import AuthError, BadRequestError, DevRevError, NotFoundError, RunInterrupted, RunWideFault
from devrev_client import DevRevClient
from merging.live_checks import is_retired
from plumbing import json_summary
from plumbing.cli import ExitCode
from plumbing.fanout import Fanout, fan_map

log = logging.getLogger(__name__)

SAMPLE = 20   # items of each listing compared (the first page is enough to see a filter ignored)
WORKSPACE_SCAN = 100   # conversations of the workspace looked through for a known one
KNOWN_MEMBER = "conversations.list by a known member"
NOTHING_TO_COMPARE = ", nothing to compare"
PREFLIGHT_WORKERS = 8   # its reads at once: the run's workers are sized later, on these answers' times


@dataclass
class Check:
    """One preflight check: its name, whether it failed (ok False stops a run), one line of
    detail, and the DevRev error behind a failure (the caller re-raises a rejected token).
    checked False: it could not run (detail says why): neither passed nor failed."""
    name: str
    ok: bool
    detail: str
    error: DevRevError | None = None
    checked: bool = True

    @property
    def passed(self) -> bool:
        return self.ok and self.checked

    def line(self) -> str:
        word = "FAILED" if not self.ok else "ok" if self.checked else "not checked"
        return f"{word:6} {self.name}: {self.detail}"


def not_checked(name: str, why: str) -> Check:
    return Check(name, True, why, checked=False)


def tally(checks: list[Check]) -> str:
    """'N ok, M not checked, K failed': a check that could not run is not counted as passed."""
    passed, failed = sum(c.passed for c in checks), sum(not c.ok for c in checks)
    return f"{passed} ok, {len(checks) - passed - failed} not checked, {failed} failed"


def _path_hint(base_url: str, exc: DevRevError) -> str:
    """A refusal of dev-users.self at a base URL with a path: the path, not the token, may be
    what is wrong (DevRev's API has none: https://api.devrev.ai/dev-users.self); "" otherwise."""
    path = urlsplit(base_url).path.strip("/")
    wrong = f"DEVREV_BASE_URL has the path /{path}, and DevRev's API takes none (e.g. https://api.devrev.ai)"
    if isinstance(exc, NotFoundError):   # the token was never looked at: nothing answers there
        return f": {base_url} does not serve DevRev's API" + (f" ({wrong})" if path else "; check DEVREV_BASE_URL")
    if path and isinstance(exc, AuthError):
        return f"; or the base URL is wrong: {wrong}"
    return ""


def check_token(client: DevRevClient) -> Check:
    """dev-users.self: the token is accepted, and whose it is."""
    try:
        me = client.get_self()
    except DevRevError as exc:
        return Check("token", False, str(exc) + _path_hint(client.base_url, exc), exc)
    who = " ".join(str(p) for p in (me.get("display_id"), f"({me.get('email')})" if me.get("email") else None) if p)
    return Check("token", True, f"accepted; it belongs to {who or me.get('id')}")


def check_rate_limit(client: DevRevClient) -> Check:
    """What DevRev announces in X-Ratelimit-Limit (read from the answers so far), and the pace."""
    limit = client.pacer.announced_limit
    pace = f"the tool paces at {client.calls_per_minute:.0f} calls per minute"
    if limit is None:
        return Check("rate limit", True, f"DevRev announced none (no X-Ratelimit-Limit); {pace}")
    return Check("rate limit", True, f"DevRev announces {limit} calls per window for this token (shared with its "
                                     f"other integrations); {pace}")


def _filter_check(name: str, items: list[dict], field: str, contact: dict) -> Check:
    strays = [display_of(i) for i in items if contact["id"] not in ids_of(i.get(field))]
    label = contact.get("display_id") or contact["id"]
    if strays:
        return Check(name, False, f"returned {', '.join(strays[:3])} for {label}, which do not list it in {field}: "
                                  f"the filter is not applied as the merge relies on")
    if not items:   # proves nothing by itself; check_filters upgrades it where the filter is proven
        return not_checked(name, f"returned nothing for {label}{NOTHING_TO_COMPARE}")
    each = "the one item" if len(items) == 1 else f"each of the {len(items)} items"
    return Check(name, True, f"{each} returned for {label} lists it in {field}")


def check_known_member(client: DevRevClient, contact: dict, prefer: set[str]) -> Check:
    """The positive control of the members filter: a conversation of the contact's workspace
    with a contact member (one of `prefer`, the set's contacts, if any) must come back when
    listing that member's conversations. A filter answering nothing passes every other check."""
    org = contact.get("rev_org") or {}
    where = org.get("display_id") or org.get("id") or "its workspace"
    if not org.get("id"):
        return not_checked(KNOWN_MEMBER, f"{display_of(contact)} has no workspace (rev_org) to find a conversation in")
    try:
        scanned = list(itertools.islice(client.list_conversations(None, rev_org=org["id"]), WORKSPACE_SCAN))
    except (BadRequestError, NotFoundError) as exc:
        return not_checked(KNOWN_MEMBER, f"listing the conversations of {where} was refused ({exc})")
    except DevRevError as exc:
        return Check(KNOWN_MEMBER, False, str(exc), exc)
    candidates = [(conv, member) for conv in scanned for member in conv.get("members") or []
                  if member.get("type") == "rev_user" and member.get("id") and not is_retired(member)]
    if not candidates:
        return not_checked(KNOWN_MEMBER, f"no conversation of {where} with a contact member to test the filter with")
    conv, member = next(((c, m) for c, m in candidates if m["id"] in prefer), candidates[0])
    try:
        found = any(c.get("id") == conv["id"] for c in client.list_conversations(member["id"]))
    except (BadRequestError, NotFoundError) as exc:   # e.g. a member merged since: proves nothing either way
        return not_checked(KNOWN_MEMBER, f"listing {display_of(member)}'s conversations was refused ({exc})")
    except DevRevError as exc:
        return Check(KNOWN_MEMBER, False, str(exc), exc)
    about = f"{display_of(conv)} of {where}, which {display_of(member)} is in,"
    if not found:
        return Check(KNOWN_MEMBER, False, f"{about} is not returned when listing {display_of(member)}'s "
                                          f"conversations: the filter misses conversations the merge must move")
    return Check(KNOWN_MEMBER, True, f"{about} is returned when listing {display_of(member)}'s conversations")


def _proven(check: Check, checks: list[Check], control: Check) -> Check:
    """A listing that returned nothing is a pass where the same filter is proven in this
    preflight: items of another contact that list it, or (members) the known conversation."""
    if check.checked or check.name not in ("works.list reported_by", "conversations.list members"):
        return check
    if any(c.name == check.name and c.passed for c in checks):
        return replace(check, checked=True, detail=check.detail.replace(
            NOTHING_TO_COMPARE, " (the same filter returns another contact's items, so it owns none)"))
    if check.name == "conversations.list members" and control.passed:
        return replace(check, checked=True, detail=check.detail.replace(
            NOTHING_TO_COMPARE, " (the filter returns a known conversation, below, so it owns none)"))
    return check


def _read_contact(client: DevRevClient, rev_user_id: str) -> dict | Check:
    """A row's contact as DevRev has it, or the check saying why its filters cannot be tried."""
    name = f"filters on {rev_user_id}"
    try:
        contact = client.get_rev_user(rev_user_id)
    except NotFoundError:
        return not_checked(name, "not in DevRev (gone or merged)")
    except DevRevError as exc:
        return Check(name, False, str(exc), exc)
    return not_checked(name, "merged already") if is_retired(contact) else contact


def _caught(read: Callable[[], Check]) -> Check | DevRevError:
    """read(), or the DevRevError it raised (turned into a check by its caller)."""
    try:
        return read()
    except DevRevError as exc:
        return exc


def check_filters(client: DevRevClient, merge_set: MergeSet, pool: Fanout | None = None,
                  also: Sequence[Callable[[], Check]] = ()) -> list[Check]:
    """On the set's contacts: works.list reported_by and conversations.list members return
    only items that list that contact; then the members filter's known conversation, in the
    workspace of the set's first contact in DevRev; then the checks `also` (run with the last
    reads). The contacts are read at once, then their listings and the known conversation's
    (over `pool`'s free slots)."""
    read: list[dict | Check] = fan_map(pool, lambda row: _read_contact(client, row.rev_user_id), merge_set.rows)
    live = [c for c in read if isinstance(c, dict)]

    def works(contact: dict) -> Check:
        return _filter_check("works.list reported_by",
                             list(itertools.islice(client.list_reported_works(contact["id"]), SAMPLE)),
                             "reported_by", contact)

    def conversations(contact: dict) -> Check:
        return _filter_check("conversations.list members",
                             list(itertools.islice(client.list_conversations(contact["id"]), SAMPLE)),
                             "members", contact)

    def control() -> Check:
        if not live:
            return not_checked(KNOWN_MEMBER, "no contact of the set is in DevRev to find a workspace by")
        return check_known_member(client, live[0], {c["id"] for c in live})

    # the first contact's two listings go first, then every other read at once: the first call
    # of each listing stays the first contact's, as when the preflight went one call at a time
    # (a test scripting DevRev's next answer of an endpoint, or a log read in order, meets it)
    lists: list[Callable[[], Check]] = [functools.partial(f, contact) for contact in live
                                        for f in (works, conversations)]
    first = fan_map(pool, _caught, lists[:2])
    last = fan_map(pool, _caught, [*also, control, *lists[2:]])
    extra, (known, *others) = last[:len(also)], last[len(also):]
    answers = iter(first + others)
    checks: list[Check] = []
    for row, got in zip(merge_set.rows, read):
        if isinstance(got, Check):
            checks.append(got)
            continue
        for answer in (next(answers), next(answers)):   # as the listings went one after the other:
            if isinstance(answer, DevRevError):          # the first failure ends the contact's checks
                checks.append(Check(f"filters on {row.rev_user_id}", False, str(answer), answer))
                break
            checks.append(answer)
    control_check = known if isinstance(known, Check) else Check(KNOWN_MEMBER, False, str(known), known)
    return [_proven(c, checks, control_check) for c in checks] + [control_check] + [
        c if isinstance(c, Check) else Check("preflight read", False, str(c), c) for c in extra]


def probe_custom_fields_filter(client: DevRevClient, contact_id: str) -> bool:
    """Whether works.list takes the `custom_fields` filter on this tenant (one read of one
    item: a 400 says no). [C] S16/S17; [I] devrev_api.assumptions.CONTACT_CUSTOM_FIELDS.
    Raises DevRevError for any other failure."""
    try:
        client.call("works.list", {"type": ["ticket"], "custom_fields": {facts.CONTACT_CUSTOM_FIELDS[0]: [contact_id]},
                                   "limit": 1}, retry_transient=True)
        return True
    except BadRequestError:
        return False


@dataclass
class CustomFieldsFilter:
    """The probe's answer, asked once per run (by the preview or the first backup), shared by
    every set: None until asked."""
    accepted: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refused_now(self, exc: DevRevError) -> None:
        """A listing with the filter was refused after the probe said yes: no more use of it this run."""
        with self._lock:
            self.accepted = False
        log.warning("works.list refused the custom_fields filter after the probe took it (%s): tickets naming a "
                    "duplicate only in a custom field are no longer looked for in this run", exc)

    def ask(self, client: DevRevClient, contact_id: str) -> bool:
        with self._lock:
            if self.accepted is None:
                self.accepted = probe_custom_fields_filter(client, contact_id)
                log.debug("%s", custom_fields_filter_line(self.accepted))   # the preflight and the summary say it
            return self.accepted


def custom_fields_filter_line(accepted: bool) -> str:
    if accepted:
        return ("taken: tickets that name a duplicate only in a custom field are found, backed up and moved too")
    return ("not taken by this DevRev (400): tickets that name a duplicate only in a custom field cannot be found "
            "(how many is unknown); the custom fields of the tickets and conversations a duplicate is on are moved")


def check_custom_fields_filter(client: DevRevClient, contact_id: str) -> Check:
    try:
        accepted = probe_custom_fields_filter(client, contact_id)
    except DevRevError as exc:
        return Check("works.list custom_fields", False, str(exc), exc)
    return Check("works.list custom_fields", True, custom_fields_filter_line(accepted))


def run_checks(client: DevRevClient, merge_set: MergeSet | None, pool: Fanout | None = None) -> list[Check]:
    """Every check, in order (the filters only when a set is given, and only once the
    token is accepted). Read-only: reads of DevRev, nothing else. After the token's, the
    reads go at once over `pool` (None: a Fanout of PREFLIGHT_WORKERS for the preflight)."""
    checks = [check_token(client)]
    if not checks[0].ok:
        return checks
    checks.append(check_rate_limit(client))
    if merge_set is None:
        return checks
    own = Fanout(PREFLIGHT_WORKERS) if pool is None else None
    try:
        return checks + check_filters(client, merge_set, own or pool, also=[
            functools.partial(check_custom_fields_filter, client, merge_set.primary.rev_user_id)])
    finally:
        if own is not None:
            own.close()


def at_start(client: DevRevClient, merge_set: MergeSet | None) -> ExitCode | None:
    """The preflight at the start of a preview or real run, each check logged: None when
    none failed, else the run's exit code (2 for a rejected token, 130 if stopped, 1 for
    any other failed check); nothing is started then. A check that could not run does not
    stop the run (nothing proved the tenant wrong, and a tenant too small to test would be
    locked out): it is logged as a warning and counted apart from the passes."""
    try:
        checks = run_checks(client, merge_set)
    except RunInterrupted:
        log.error("stopped during the preflight; nothing was started")
        return ExitCode.INTERRUPTED
    for check in checks:
        if not check.ok and isinstance(check.error, RunWideFault):
            raise check.error     # DevRev unreachable: the run's one line says so
        if not check.ok and (isinstance(check.error, AuthError)
                             or check.name == "token" and isinstance(check.error, NotFoundError)):
            # a refused token, or a base URL where DevRev's API is not: configuration, exit 2
            log.error("%s; stopping the run (no set is started)", check.detail)
            json_summary.note_error(check.detail)
            return ExitCode.USAGE
        (log.info if check.passed else log.warning if check.ok else log.error)("preflight %s", check.line())
    if all(c.ok for c in checks):
        if not all(c.checked for c in checks):
            log.warning("preflight: %s; the run goes on (run with --check to see it alone)", tally(checks))
        return None
    log.error("the preflight failed: nothing was started (run with --check to see it alone)")
    json_summary.note_error("the preflight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in checks
                                                                  if not c.ok))
    return ExitCode.FAILED
