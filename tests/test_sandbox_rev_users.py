"""The emulator's rev-users.list and rev-users.scan, the walks find_duplicates.py makes:
the spec's filters, cursors, `limit` clamped to the page cap on the list, the server's
own page size on the scan (which takes no `limit`), and paging cost on a large tenant."""
from __future__ import annotations

import math

import pytest

from devrev_sandbox.dataset import build_contact_tenant
from devrev_sandbox.server import DevRevSandbox
from helpers import call, ok


def seed(n: int = 7) -> dict:
    users = [{"key": f"u{i}", "email": f"u{i}@acme.example", "workspace": "acme" if i % 2 else "globex",
              "created_date": f"2024-01-0{i + 1}T00:00:00.000Z", "is_verified": i != 3}
             for i in range(n)]
    users.append({"key": "copy", "email": "u0@acme.example", "workspace": "acme", "external_ref": "user_copy0"})
    return {"workspaces": [{"key": "acme"}, {"key": "globex"}], "rev_users": users}


def walk(sb, endpoint: str, body: dict) -> tuple[list[dict], int]:
    """Every contact of a walk, and the pages it took."""
    found, pages, cursor = [], 0, None
    while True:
        answer = ok(call(sb, endpoint, dict(body, cursor=cursor) if cursor else body))
        pages += 1
        found += answer["rev_users"]
        cursor = answer.get("next_cursor")
        if not cursor:
            return found, pages


@pytest.mark.parametrize("endpoint, body, page_size", [
    ("rev-users.list", {"limit": 3}, 3), ("rev-users.list", {"limit": 50}, 4),  # clamped to the cap
    ("rev-users.scan", {}, 2),
])
def test_walks_return_every_contact_once_in_pages_of_the_right_size(make_sandbox, endpoint, body, page_size):
    sb = make_sandbox(seed(), page_cap=4, scan_page_size=2)
    found, pages = walk(sb, endpoint, body)
    assert sorted(u["display_id"] for u in found) == sorted(
        u["display_id"] for u in sb.dump()["rev_users"].values())
    assert len(found) == 8 and pages == math.ceil(8 / page_size)


@pytest.mark.parametrize("endpoint", ["rev-users.list", "rev-users.scan"])
def test_filters_of_the_spec(make_sandbox, endpoint):
    sb = make_sandbox(seed())
    acme = [o for o in sb.dump()["rev_users"].values() if o["rev_org"]["display_name"] == "acme"][0]["rev_org"]["id"]

    def emails(body):
        return sorted(u.get("email", "") + ("*" if u["external_ref"].startswith("user_") else "")
                      for u in walk(sb, endpoint, body)[0])

    assert emails({"email": ["u0@acme.example"]}) == ["u0@acme.example", "u0@acme.example*"]
    assert emails({"external_ref": ["user_copy0"]}) == ["u0@acme.example*"]
    assert emails({"is_verified": False}) == ["u3@acme.example"]
    assert emails({"created_date": {"after": "2024-01-02T00:00:00.000Z", "before": "2024-01-03T00:00:00Z"}}) \
        == ["u1@acme.example", "u2@acme.example"]   # both ends inclusive
    assert emails({"rev_org": [acme], "email": ["u0@acme.example", "u1@acme.example"]}) \
        == ["u0@acme.example*", "u1@acme.example"]
    assert emails({"created_by": [sb.key_id("SYSU-1")]}) == ["u0@acme.example*"]   # user_ copies: the bot


def test_scan_takes_no_limit_and_its_cursor_is_bound_to_it(make_sandbox):
    sb = make_sandbox(seed(), spec_requests=False, scan_page_size=2)
    refused = call(sb, "rev-users.scan", {"limit": 5})
    assert refused.status_code == 400 and "limit" in refused.json()["message"]
    first = ok(call(sb, "rev-users.scan", {}))
    elsewhere = call(sb, "rev-users.list", {"cursor": first["next_cursor"]})
    assert elsewhere.status_code == 400 and elsewhere.json()["field_name"] == "cursor"
    assert ok(call(sb, "rev-users.scan", {}, method="GET"))["rev_users"] == first["rev_users"]


def test_a_merged_away_contact_leaves_both_walks(make_sandbox):
    sb = make_sandbox(seed(), merge_retire_after_gets=0)
    ok(call(sb, "rev-users.merge", {"primary_user": sb.key_id("u0"), "secondary_user": sb.key_id("copy")}))
    for endpoint in ("rev-users.list", "rev-users.scan"):
        assert sb.key_id("copy") not in {u["id"] for u in walk(sb, endpoint, {})[0]}


def test_contact_tenant_builder_hides_the_merge_sets_it_lists():
    tenant = build_contact_tenant(5_000, 40, seed=3)
    sandbox = DevRevSandbox(tenant.seed)
    users = {u["id"]: u for u in sandbox.dump()["rev_users"].values()}
    assert len(users) == tenant.contacts == 5_000
    assert sum(1 for u in users.values() if "email" not in u) == tenant.without_email
    assert 40 <= tenant.without_email <= 50   # 1%, bar the places group members took
    assert len(tenant.merge_sets) == 40 and len(tenant.skipped) == 8
    for found in tenant.merge_sets:
        primary, dups = users[found["primary"]], [users[d] for d in found["duplicates"]]
        assert primary["external_ref"].startswith("REVU-") and len(dups) in (1, 2)
        assert {u["email"] for u in [primary, *dups]} == {found["email"]}
        assert all(d["external_ref"].startswith("user_") for d in dups)
