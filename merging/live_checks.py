"""The live checks of a merge set: both sides read from DevRev and compared with the CSV.

Run before anything is backed up or written, by the preview and by the real run alike; a
set that fails them is skipped untouched (not a failure), with a stable reason code.
"""
from __future__ import annotations

from backup import display_of
from contacts.csv_reader import MergeSet, email_key
from devrev_api import assumptions as facts
from devrev_api.errors import NotFoundError
from devrev_client import DevRevClient


def is_retired(user: dict | None) -> bool:
    """How a merged duplicate looks once DevRev has processed the merge ([I]): gone (None,
    a 404), in one of devrev_api.assumptions.RETIRED_STATES, or carrying `primary_identity`."""
    return user is None or user.get("state") in facts.RETIRED_STATES or bool(user.get("primary_identity"))


def recreated_duplicates(client: DevRevClient, ctx: dict) -> list[str]:
    """The set's duplicates (its journal context) whose `user_...` reference an active
    contact other than the duplicate itself and the primary holds now: merged, then restored
    or made again by the integration (DevRev keeps external_ref unique among active
    contacts, so a duplicate never merged cannot be one). ["<ref> (now <display id>)"];
    one rev-users.list per duplicate."""
    found = []
    for dup in ctx["duplicates"]:
        ref = dup.get("external_ref")
        if not ref:
            continue
        holder = next((u for u in client.list_rev_users(external_ref=ref)
                       if u.get("id") not in (dup["id"], ctx["primary"]["id"]) and u.get("external_ref") == ref
                       and not is_retired(u)), None)
        if holder is not None:
            found.append(f"{ref} (now {holder.get('display_id') or holder.get('id')})")
    return found


class SetSkipped(Exception):
    """The live checks skip this set, untouched (not a failure). `reason` is a stable code
    listed in README.md: contact_not_found, email_mismatch, external_ref_mismatch,
    contact_inactive, same_contact, cross_workspace."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _org(user: dict) -> str | None:
    return (user.get("rev_org") or {}).get("id")


# --------------------------------------------------------------------------- live checks
def resolve_contacts(client: DevRevClient, ms: MergeSet, *, allow_cross_org: bool) -> tuple[dict, list[dict]]:
    """Read both sides live and check they are still what the CSV says; SetSkipped if not."""
    live = []
    for row in ms.rows:
        try:
            user = client.get_rev_user(row.rev_user_id)
        except NotFoundError:
            raise SetSkipped("contact_not_found", f"{row.rev_user_id} (line {row.line}) is not in DevRev") from None
        if email_key(user.get("email") or "") != ms.key:
            raise SetSkipped("email_mismatch", f"{row.rev_user_id} has email {user.get('email')!r} in DevRev")
        if user.get("external_ref") != row.external_ref:
            raise SetSkipped("external_ref_mismatch", f"{row.rev_user_id} has external_ref "
                                                      f"{user.get('external_ref')!r} in DevRev")
        if user.get("state", "active") != "active" or user.get("primary_identity"):
            raise SetSkipped("contact_inactive", f"{row.rev_user_id} is {user.get('state')!r} in DevRev")
        live.append(user)
    primary, duplicates = live[0], live[1:]
    earlier = ms.earlier_primary
    if earlier is not None and earlier.run_id is None \
            and earlier.display_id not in (primary.get(facts.CONTACT_REFS_FIELD) or []):
        # recognised from the CSV's EXTERNAL_REFS alone: DevRev must still say it keeps its own reference
        raise SetSkipped("external_ref_mismatch", f"{ms.primary.rev_user_id} does not hold its own "
                                                  f"{earlier.display_id} among its external_refs in DevRev")
    if len({u["id"] for u in live}) != len(live):
        raise SetSkipped("same_contact", "two rows of the set are the same DevRev contact")
    if not allow_cross_org and any(_org(d) != _org(primary) for d in duplicates):
        raise SetSkipped("cross_workspace", "a duplicate is in another workspace than the primary")
    return primary, duplicates


def primary_change(now: dict | None, then: dict, *, compare_reference: bool = True) -> str | None:
    """What keeps the primary, read again (`now`; None: a 404), from passing the live checks it
    passed as `then`: "is no longer in DevRev", "is 'deactivated' now", "has email ... now",
    ...; None when nothing did. compare_reference=False once the tool may have sent its own."""
    if now is None:
        return "is no longer in DevRev"
    if now.get("primary_identity"):
        return "was merged into another contact"
    if now.get("state", "active") != "active":
        return f"is {now.get('state')!r} now"
    if email_key(now.get("email") or "") != email_key(then.get("email") or ""):
        return f"has email {now.get('email')!r} now (was {then.get('email')!r})"
    if _org(now) != _org(then):
        return "is in another workspace now"
    if compare_reference and now.get("external_ref") != then.get("external_ref"):
        return f"has external_ref {now.get('external_ref')!r} now (was {then.get('external_ref')!r})"
    return None


def other_works(works: list[dict]) -> list[str]:
    """The work items among `works` that are not tickets (issues, and in the 2026 API
    opportunities and tasks), as "<type> <display id>": the merge stops at them."""
    return [f"{w.get('type') or 'work'} {display_of(w)}" for w in works if w.get("type") != "ticket"]


def frozen_items(objects: list[dict]) -> list[str]:
    """The tickets and conversations DevRev marks `is_frozen` ([C] S15; [I] an update may be
    refused on them), as display ids."""
    return [display_of(o) for o in objects if o.get("is_frozen")]
