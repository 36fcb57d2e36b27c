"""The preflight (`merge_contacts.py --check`, and the start of every preview and real run):
read-only proof that this DevRev tenant answers the way the merge relies on.

Three things cannot be known from the spec and fail late if wrong: whose token this is,
what rate limit DevRev announces, and whether the list filters the merge trusts to find
and to prove the absence of a contact's tickets and conversations really filter by that
contact on this tenant (devrev-api.md section 14: 6 of 6 real conversations.list calls by
member came back empty). Each check is one line; none writes anything.
"""
from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field

from backup import display_of, ids_of
from contacts.csv_reader import MergeSet
from devrev_api import assumptions as facts
from devrev_api.errors import AuthError, BadRequestError, DevRevError, NotFoundError, RunInterrupted, RunWideFault
from devrev_client import DevRevClient
from merging.live_checks import is_retired
from plumbing.cli import ExitCode

log = logging.getLogger(__name__)

SAMPLE = 20   # items of each listing compared (the first page is enough to see a filter ignored)


@dataclass
class Check:
    """One preflight check: its name, whether it passed, one line of detail, and the
    DevRev error behind a failure (the caller re-raises a rejected token)."""
    name: str
    ok: bool
    detail: str
    error: DevRevError | None = None

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED':6} {self.name}: {self.detail}"


def check_token(client: DevRevClient) -> Check:
    """dev-users.self: the token is accepted, and whose it is."""
    try:
        me = client.get_self()
    except DevRevError as exc:
        return Check("token", False, str(exc), exc)
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
    if not items:
        return Check(name, True, f"returned nothing for {label} (nothing to compare; check by hand that it "
                                 f"owns none)")
    each = "the one item" if len(items) == 1 else f"each of the {len(items)} items"
    return Check(name, True, f"{each} returned for {label} lists it in {field}")


def check_filters(client: DevRevClient, merge_set: MergeSet) -> list[Check]:
    """On the set's contacts: works.list reported_by and conversations.list members return
    only items that list that contact."""
    checks = []
    for row in merge_set.rows:
        try:
            contact = client.get_rev_user(row.rev_user_id)
        except NotFoundError:
            checks.append(Check(f"filters on {row.rev_user_id}", True, "not in DevRev (gone or merged): not checked"))
            continue
        except DevRevError as exc:
            checks.append(Check(f"filters on {row.rev_user_id}", False, str(exc), exc))
            continue
        if is_retired(contact):
            checks.append(Check(f"filters on {row.rev_user_id}", True, "merged already: not checked"))
            continue
        try:
            works = list(itertools.islice(client.list_reported_works(contact["id"]), SAMPLE))
            checks.append(_filter_check("works.list reported_by", works, "reported_by", contact))
            convs = list(itertools.islice(client.list_conversations(contact["id"]), SAMPLE))
            checks.append(_filter_check("conversations.list members", convs, "members", contact))
        except DevRevError as exc:
            checks.append(Check(f"filters on {row.rev_user_id}", False, str(exc), exc))
    return checks


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


def run_checks(client: DevRevClient, merge_set: MergeSet | None) -> list[Check]:
    """Every check, in order (the filters only when a set is given, and only once the
    token is accepted). Read-only: reads of DevRev, nothing else."""
    checks = [check_token(client)]
    if not checks[0].ok:
        return checks
    checks.append(check_rate_limit(client))
    if merge_set is not None:
        checks += check_filters(client, merge_set)
        checks.append(check_custom_fields_filter(client, merge_set.primary.rev_user_id))
    return checks


def at_start(client: DevRevClient, merge_set: MergeSet | None) -> ExitCode | None:
    """The preflight at the start of a preview or real run, each check logged: None when
    it passes, else the run's exit code (2 for a rejected token, 130 if stopped, 1 for
    any other failed check); nothing is started then."""
    try:
        checks = run_checks(client, merge_set)
    except RunInterrupted:
        log.error("stopped during the preflight; nothing was started")
        return ExitCode.INTERRUPTED
    for check in checks:
        if not check.ok and isinstance(check.error, RunWideFault):
            raise check.error     # DevRev unreachable: the run's one line says so
        if not check.ok and isinstance(check.error, AuthError):
            log.error("%s; stopping the run (no set is started)", check.error)
            return ExitCode.USAGE
        (log.info if check.ok else log.error)("preflight %s", check.line())
    if all(c.ok for c in checks):
        return None
    log.error("the preflight failed: nothing was started (run with --check to see it alone)")
    return ExitCode.FAILED
