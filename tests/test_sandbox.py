"""The emulator itself, spoken to with raw `requests` where the client would refuse to send
the bad thing: DevRev's strictness (set-only reference fields, DONs in filters, cursors bound
to their filters, unique external_ref), its shapes (flat errors, omitted fields, millisecond
timestamps, rate-limit headers), fault injection and the command line.
"""
from __future__ import annotations

import json
import re
import select
import subprocess
import sys

import pytest
import requests

from devrev_api.errors import TransportError
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Faults, Scripted
from devrev_sandbox.server import DEFAULT_TOKEN
from helpers import DUP_REF, ROOT, TEST_TOKEN, call, ok, references, seed  # noqa: F401

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def reporters(sb, key: str) -> list[str]:
    return [u["id"] for u in sb.dump()["works"][sb.key_id(key)]["reported_by"]]


def walk(value, path=""):
    """Yield (path, key, value) for every item of a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield path, i, v
            yield from walk(v, f"{path}[{i}]")


@pytest.fixture
def sb(make_sandbox):
    return make_sandbox(seed())


@pytest.fixture
def lax(make_sandbox):
    """A sandbox for requests that break the spec on purpose (its answers are still checked)."""
    return make_sandbox(seed(), spec_requests=False)


# ----------------------------------------------------------------------------- set-only fields
@pytest.mark.parametrize("endpoint, key, field, form", [
    ("works.update", "t1", "reported_by", "bare"),
    ("works.update", "t1", "reported_by", "add"),
    ("works.update", "t1", "reported_by", "remove"),
    ("works.update", "t1", "reported_by", "set+add"),
    ("works.update", "t1", "owned_by", "bare"),
    ("conversations.update", "c1", "members", "bare"),
    ("conversations.update", "c1", "members", "add"),
    ("conversations.update", "c1", "members", "remove"),
])
def test_reference_fields_take_set_only(lax, endpoint, key, field, form):
    jane = lax.key_id("jane")
    value = {"bare": [jane], "add": {"add": [jane]}, "remove": {"remove": [jane]},
             "set+add": {"set": [jane], "add": [jane]}}[form]
    body = {"id": lax.key_id(key), field: value}
    if endpoint == "works.update":
        body["type"] = "ticket"
    before = lax.dump()

    response = call(lax, endpoint, body)

    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "invalid_field" and error["field_name"] == field
    assert lax.dump() == before
    assert lax.writes() == []


def test_set_form_is_accepted_and_applied(sb):
    jane, agent = sb.key_id("jane"), sb.key_id("agent1")
    work = ok(call(sb, "works.update", {"id": sb.key_id("t1"), "type": "ticket",
                                        "reported_by": {"set": [jane]}}))["work"]
    conv = ok(call(sb, "conversations.update", {"id": sb.key_id("c1"), "members": {"set": [jane, agent]}}))
    assert [u["id"] for u in work["reported_by"]] == [jane] == reporters(sb, "t1")
    assert [m["id"] for m in conv["conversation"]["members"]] == [jane, agent]
    assert len(sb.writes()) == 2


def test_set_with_repeated_or_display_ids_refused(lax):
    jane = lax.key_id("jane")
    twice = call(lax, "works.update", {"id": lax.key_id("t1"), "reported_by": {"set": [jane, jane]}})
    display = call(lax, "works.update", {"id": lax.key_id("t1"),
                                         "reported_by": {"set": ["REVU-" + jane.split("/")[-1]]}})
    assert (twice.status_code, twice.json()["field_name"]) == (400, "reported_by")
    assert (display.status_code, display.json()["type"]) == (400, "invalid_id")
    assert reporters(lax, "t1") == [lax.key_id("jane-dup")]


# ----------------------------------------------------------------------------- auth
def test_missing_and_wrong_token_are_401_unauthenticated(sb):
    jane = sb.key_id("jane")
    for response in (call(sb, "rev-users.get", {"id": jane}, token=None),
                     call(sb, "rev-users.get", {"id": jane}, token="wrong-token"),
                     call(sb, "rev-users.get", {"id": jane}, token=""),
                     call(sb, "rev-users.get", {"id": jane}, headers={"Authorization": f"Basic {TEST_TOKEN}"})):
        assert response.status_code == 401
        assert response.json()["type"] == "unauthenticated"
    assert [e["status"] for e in sb.api_calls()] == [401] * 4


def test_bare_token_form_is_accepted(sb):
    jane = sb.key_id("jane")
    assert ok(call(sb, "rev-users.get", {"id": jane}, bearer=False))["rev_user"]["id"] == jane
    assert ok(call(sb, "rev-users.get", {"id": jane}, headers={"Authorization": f"bearer {TEST_TOKEN}"}))


# ----------------------------------------------------------------------------- not found and routes
@pytest.mark.parametrize("endpoint, kind", [("rev-users.get", "revu"), ("works.get", "ticket"),
                                            ("conversations.get", "conversation"), ("artifacts.locate", "artifact")])
def test_unknown_id_is_404_not_found(sb, endpoint, kind):
    space = "identity" if kind == "revu" else "core"
    response = call(sb, endpoint, {"id": f"don:{space}:dvrv-us-1:devo/DEVO1x:{kind}/nope404"})
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_unknown_route_is_404_without_type(sb):
    for response in (call(sb, "rev-users.frobnicate", {}),
                     call(sb, "works.update", method="GET", params={"id": sb.key_id("t1")})):
        assert response.status_code == 404
        assert response.json() == {"message": "route not found"}
    assert reporters(sb, "t1") == [sb.key_id("jane-dup")]


def test_unsupported_api_version_is_400(sb):
    response = call(sb, "rev-users.get", {"id": sb.key_id("jane")}, headers={"X-Devrev-Version": "1999-01-01"})
    assert response.status_code == 400 and response.json()["type"] == "invalid_api_version"


def test_body_that_is_not_a_json_object_is_400(lax):
    assert call(lax, "rev-users.get", "{not json").json()["type"] == "parse_error"
    assert call(lax, "rev-users.get", "[1]").status_code == 400


def test_unknown_request_field_is_refused(lax):
    response = call(lax, "rev-users.update", {"id": lax.key_id("jane"), "rev_org": lax.key_id("acme")})
    assert response.status_code == 400 and response.json()["type"] == "bad_request"
    assert lax.writes() == []


# ----------------------------------------------------------------------------- external_ref and merge
def test_taken_external_ref_conflicts_until_the_holder_is_merged_and_retired(make_sandbox):
    sb = make_sandbox(seed(), merge_retire_after_gets=2)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")

    first = call(sb, "rev-users.update", {"id": jane, "external_ref": DUP_REF})
    assert first.status_code == 409 and first.json()["type"] == "conflict"

    assert ok(call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup})) == {}
    # the merge is asynchronous: until the duplicate retires, its external_ref is still taken
    assert call(sb, "rev-users.update", {"id": jane, "external_ref": DUP_REF}).status_code == 409
    assert call(sb, "rev-users.get", {"id": dup}).status_code == 200
    assert call(sb, "rev-users.get", {"id": dup}).status_code == 404

    updated = ok(call(sb, "rev-users.update", {"id": jane, "external_ref": DUP_REF}))["rev_user"]
    assert updated["external_ref"] == DUP_REF
    assert sb.dump()["rev_users"][jane]["external_ref"] == DUP_REF
    listed = ok(call(sb, "rev-users.list", {"external_ref": [DUP_REF]}))["rev_users"]
    assert [u["id"] for u in listed] == [jane]


def test_empty_external_ref_refused(lax):
    response = call(lax, "rev-users.update", {"id": lax.key_id("jane"), "external_ref": "  "})
    assert response.status_code == 400 and response.json()["field_name"] == "external_ref"


@pytest.mark.parametrize("outcome", ["404", "primary_identity", "deactivated"])
def test_merge_acknowledges_then_retires_after_n_gets_and_moves_nothing(make_sandbox, outcome):
    sb = make_sandbox(seed(), merge_retire_after_gets=3, merge_outcome=outcome)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    before = references(sb)

    response = call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup})

    assert response.status_code == 200 and response.json() == {}
    assert references(sb) == before
    assert sb.dump()["rev_users"][dup]["_retired"] is False
    answers = [call(sb, "rev-users.get", {"id": dup}) for _ in range(3)]
    for early in answers[:2]:  # still there, untouched, on the first N-1 polls
        user = ok(early)["rev_user"]
        assert user["state"] == "active" and "primary_identity" not in user
    final = answers[2]
    if outcome == "404":
        assert final.status_code == 404 and final.json()["type"] == "not_found"
    elif outcome == "primary_identity":
        assert ok(final)["rev_user"]["primary_identity"]["id"] == jane
    else:
        assert ok(final)["rev_user"]["state"] == "deactivated"
    assert sb.dump()["rev_users"][dup]["_retired"] is True
    # the merge moved nothing by itself: tickets and conversations still name the duplicate
    assert references(sb) == before
    assert dup in reporters(sb, "t1") and dup in reporters(sb, "t2")
    assert [w["id"] for w in ok(call(sb, "works.list", {"reported_by": [dup]}))["works"]] == \
        [sb.key_id("t2"), sb.key_id("t1")]


@pytest.mark.parametrize("outcome", ["404", "primary_identity", "deactivated"])
def test_create_makes_a_new_contact_and_a_retired_one_never_comes_back(make_sandbox, make_client, outcome):
    sb = make_sandbox(seed(), merge_retire_after_gets=1, merge_outcome=outcome)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    org = sb.dump()["rev_users"][jane]["rev_org"]
    body = {"email": "jane@acme.example", "display_name": "Jane again", "rev_org": org["id"], "external_ref": DUP_REF}
    taken = call(sb, "rev-users.create", body)
    assert taken.status_code == 409 and taken.json()["type"] == "conflict"   # the duplicate still holds it
    ok(call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup}))
    call(sb, "rev-users.get", {"id": dup})                                    # retires it
    client = make_client(sb)
    created = client.create_rev_user(email=body["email"], display_name=body["display_name"], rev_org=org["display_id"],
                                     external_ref=DUP_REF)
    assert [e["status"] for e in sb.api_calls() if e["endpoint"] == "rev-users.create"] == [409, 201]
    assert created["id"] not in (dup, jane) and created["display_id"].startswith("REVU-")
    assert (created["email"], created["display_name"], created["external_ref"], created["rev_org"]["id"],
            created["state"]) == (body["email"], "Jane again", DUP_REF, org["id"], "active")
    assert ok(call(sb, "rev-users.get", {"id": created["display_id"]}))["rev_user"]["id"] == created["id"]
    old = sb.dump()["rev_users"][dup]
    assert old["_retired"] is True and old["_state"] == ("deactivated" if outcome == "deactivated" else
                                                          "deleted" if outcome == "404" else "active")
    assert [u["id"] for u in ok(call(sb, "rev-users.list", {"external_ref": [DUP_REF]}))["rev_users"]] == \
        [created["id"]] + ([dup] if outcome != "404" else [])
    assert call(sb, "rev-users.create", body).status_code == 409              # now the new one holds it


def test_create_without_a_workspace_or_with_an_unknown_one_is_refused(lax):
    missing = call(lax, "rev-users.create", {"email": "x@acme.example"})
    unknown = call(lax, "rev-users.create", {"email": "x@acme.example", "rev_org": "REV-nope"})
    assert (missing.status_code, missing.json()["field_name"]) == (400, "rev_org")
    assert (unknown.status_code, unknown.json()["field_name"]) == (400, "rev_org")   # the spec declares no 404


def test_merge_refuses_display_ids_and_self_merge(lax):
    jane = lax.key_id("jane")
    display = call(lax, "rev-users.merge", {"primary_user": jane,
                                            "secondary_user": "REVU-" + lax.key_id("jane-dup").split("/")[-1]})
    assert display.status_code == 400 and display.json() == dict(display.json(), type="invalid_id",
                                                                field_name="secondary_user")
    itself = call(lax, "rev-users.merge", {"primary_user": jane, "secondary_user": jane})
    assert itself.status_code == 400
    assert lax.dump()["rev_users"][jane]["_retired"] is False and lax.writes() == []


# ----------------------------------------------------------------------------- ids and cursors
def test_display_id_accepted_in_get_but_not_in_a_list_filter(lax):
    jane = lax.key_id("jane")
    display = lax.dump()["rev_users"][jane]["display_id"]
    assert display.startswith("REVU-")

    assert ok(call(lax, "rev-users.get", {"id": display}))["rev_user"]["id"] == jane
    refused = call(lax, "works.list", {"type": ["ticket"], "reported_by": [display]})

    assert refused.status_code == 400
    assert refused.json()["type"] == "invalid_id" and refused.json()["field_name"] == "reported_by"


def test_cursor_is_bound_to_its_filters(make_sandbox):
    tickets = [{"key": f"t{n}", "reported_by": ["jane-dup"], "owned_by": ["agent1"]} for n in range(5)]
    sb = make_sandbox(dict(seed(), tickets=tickets), page_cap=2, spec_requests=False)
    dup, jane = sb.key_id("jane-dup"), sb.key_id("jane")

    first = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 50}))  # clamped to the cap of 2
    assert len(first["works"]) == 2 and first["next_cursor"]
    same = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 2, "cursor": first["next_cursor"]}))
    assert len(same["works"]) == 2
    assert not {w["id"] for w in same["works"]} & {w["id"] for w in first["works"]}

    other = call(sb, "works.list", {"reported_by": [jane], "cursor": first["next_cursor"]})
    assert other.status_code == 400 and other.json()["field_name"] == "cursor"
    elsewhere = call(sb, "conversations.list", {"members": [dup], "cursor": first["next_cursor"]})
    assert elsewhere.status_code == 400 and elsewhere.json()["field_name"] == "cursor"
    garbage = call(sb, "works.list", {"reported_by": [dup], "cursor": "not-a-cursor"})
    assert garbage.status_code == 400 and garbage.json()["field_name"] == "cursor"


def test_last_page_has_no_next_cursor(make_sandbox):
    tickets = [{"key": f"t{n}", "reported_by": ["jane-dup"], "owned_by": ["agent1"]} for n in range(4)]
    sb = make_sandbox(dict(seed(), tickets=tickets))
    dup = sb.key_id("jane-dup")
    page1 = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 2}))
    page2 = ok(call(sb, "works.list", {"reported_by": [dup], "limit": 2, "cursor": page1["next_cursor"],
                                       "mode": "after"}))
    assert "next_cursor" not in page2 and len(page2["works"]) == 2
    assert len({w["id"] for w in page1["works"] + page2["works"]}) == 4


def test_get_query_form_with_comma_separated_reported_by(sb):
    dup, bob = sb.key_id("jane-dup"), sb.key_id("bob")

    got = ok(call(sb, "works.list", method="GET",
                  params={"type": "ticket", "reported_by": f"{dup},{bob}", "limit": "10"}))

    assert {w["id"] for w in got["works"]} == {sb.key_id("t1"), sb.key_id("t2"), sb.key_id("t3")}
    posted = ok(call(sb, "works.list", {"type": ["ticket"], "reported_by": [dup, bob], "limit": 10}))
    assert got == posted
    logged = [e for e in sb.api_calls() if e["method"] == "GET"][0]
    assert logged["body"]["reported_by"] == [dup, bob] and logged["body"]["limit"] == 10


# ----------------------------------------------------------------------------- shapes
def _exercise(sb) -> list[dict]:
    """Answers of every endpoint, a merged user with primary_identity included."""
    data = build_dataset(3, seed=5, tickets=(2, 3), conversations=(1, 2), comments=(1, 3), attachment_rate=0.9)
    sb.state.load_seed(data.seed)
    ms = data.merge_sets[0]
    primary, dup = sb.key_id(ms["primary"]), sb.key_id(ms["duplicates"][0])
    answers = [ok(call(sb, "rev-users.list", {"email": [ms["email"]]})),
               ok(call(sb, "rev-users.get", {"id": primary}))]
    works = ok(call(sb, "works.list", {"type": ["ticket"], "reported_by": [dup]}))
    convs = ok(call(sb, "conversations.list", {"members": [dup]}))
    answers += [works, convs]
    for obj in works["works"] + convs["conversations"]:
        entries = ok(call(sb, "timeline-entries.list", {"object": obj["id"]}))
        answers.append(entries)
        for entry in entries["timeline_entries"]:
            answers.append(ok(call(sb, "timeline-entries.get", {"id": entry["id"]})))
            for art in entry.get("artifacts", []):
                answers.append(ok(call(sb, "artifacts.get", {"id": art["id"]})))
                answers.append(ok(call(sb, "artifacts.locate", {"id": art["id"]})))
    ticket = works["works"][0]
    answers.append(ok(call(sb, "works.get", {"id": ticket["id"]})))
    answers.append(ok(call(sb, "works.update", {"id": ticket["id"], "type": "ticket",
                                                "reported_by": {"set": [primary]}})))
    answers.append(ok(call(sb, "conversations.get", {"id": convs["conversations"][0]["id"]})))
    answers.append(ok(call(sb, "rev-users.update", {"id": primary, "display_name": "Renamed"})))
    answers.append(ok(call(sb, "rev-users.merge", {"primary_user": primary, "secondary_user": dup})))
    sb.merge_outcome = "primary_identity"
    answers += [ok(call(sb, "rev-users.get", {"id": dup})) for _ in range(2)]
    assert answers[-1]["rev_user"]["primary_identity"]["id"] == primary
    assert any(a.get("artifact") for a in answers) and any(a.get("expires_at") for a in answers)
    return answers


def test_timestamps_have_milliseconds_and_z(sb):
    stamps = [(path, key, value) for answer in _exercise(sb) for path, key, value in walk(answer)
              if isinstance(key, str) and (key.endswith("_date") or key in ("timestamp", "expires_at"))]
    assert len(stamps) > 50
    bad = [(p, k, v) for p, k, v in stamps if not (isinstance(v, str) and TIMESTAMP.match(v))]
    assert not bad, bad[:5]


def test_no_json_null_anywhere_and_absent_fields_omitted(sb):
    answers = _exercise(sb)
    raw = [e for e in sb.api_calls()]
    assert all(e["status"] == 200 for e in raw)
    nulls = [(p, k) for answer in answers for p, k, v in walk(answer) if v is None]
    assert not nulls, nulls[:5]
    bob = ok(call(sb, "rev-users.get", {"id": sb.key_id("bob")}))["rev_user"]
    assert "full_name" not in bob and "primary_identity" not in bob  # omitted, not null
    work = ok(call(sb, "works.get", {"id": sb.key_id("t3")}))["work"]
    assert "artifacts" not in work and "body" not in work


def test_error_bodies_are_flat(lax):
    response = call(lax, "works.update", {"id": lax.key_id("t1"), "reported_by": [lax.key_id("jane")]})
    body = response.json()
    assert set(body) == {"type", "message", "field_name"}
    assert all(isinstance(v, str) for v in body.values())


# ----------------------------------------------------------------------------- rate limits
class Clock:
    def __init__(self, now: float = 1_700_000_000.5):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_limit_headers_and_429(make_sandbox):
    clock = Clock()
    sb = make_sandbox(seed(), rate_limit=(3, 60.0), clock=clock)
    jane = sb.key_id("jane")

    answers = [call(sb, "rev-users.get", {"id": jane}) for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-Ratelimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-Ratelimit-Limit"] == "3" for a in answers)
    reset = int(answers[0].headers["X-Ratelimit-Reset"])
    assert reset == 1_700_000_061 and all(int(a.headers["X-Ratelimit-Reset"]) == reset for a in answers)
    throttled = answers[3]
    body = throttled.json()
    assert body["type"] == "too_many_requests"
    assert int(throttled.headers["Retry-After"]) == body["retry_after"] == 60
    assert sb.api_calls()[3]["fault"] == "rate_limit"

    clock.now += 61  # the window resets
    again = call(sb, "rev-users.get", {"id": jane})
    assert again.status_code == 200 and again.headers["X-Ratelimit-Remaining"] == "2"


def test_no_rate_limit_headers_without_a_rate_limit(make_sandbox):
    sb = make_sandbox(seed(), rate_limit=None)
    response = call(sb, "rev-users.get", {"id": sb.key_id("jane")})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith("x-ratelimit")]


def test_by_default_every_answer_has_headers_of_a_five_minute_window(make_sandbox):
    clock = Clock(1_700_000_000.0)
    sb = make_sandbox(seed(), clock=clock)
    answers = [call(sb, "rev-users.get", {"id": sb.key_id("jane")}), call(sb, "works.get", {"id": "nope"})]
    assert [a.status_code for a in answers] == [200, 404]
    assert all(int(a.headers["X-Ratelimit-Reset"]) == 1_700_000_300 for a in answers)
    assert int(answers[1].headers["X-Ratelimit-Remaining"]) == int(answers[1].headers["X-Ratelimit-Limit"]) - 2


def test_burst_429_carries_header_and_body(make_sandbox):
    sb = make_sandbox(seed(), faults=Faults(burst_429_rate=1.0, burst_retry_after=4))
    response = call(sb, "works.get", {"id": sb.key_id("t1")})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "4" and response.json()["retry_after"] == 4


# ----------------------------------------------------------------------------- secrets and state
def test_request_log_never_contains_the_token(make_sandbox):
    # sends a malformed body and a token to the attachment host, both on purpose
    lax = make_sandbox(seed(), spec_requests=False, file_auth_expected=True)
    jane = lax.key_id("jane")
    call(lax, "rev-users.get", {"id": jane})
    call(lax, "rev-users.get", {"id": jane}, bearer=False)
    call(lax, "rev-users.get", {"id": jane}, token=TEST_TOKEN + "-wrong")
    call(lax, "rev-users.get", "{broken json")
    call(lax, "works.list", method="GET", params={"reported_by": jane})
    locate = ok(call(lax, "artifacts.locate", {"id": lax.key_id("artifact-9001")}))
    assert requests.get(locate["url"], timeout=10).status_code == 200
    requests.get(locate["url"], headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10)

    assert len(lax.request_log) == 8
    assert TEST_TOKEN not in json.dumps(lax.request_log, default=str)


def test_files_server_refuses_a_second_credential_and_bad_signatures(make_sandbox):
    sb = make_sandbox(seed(), file_auth_expected=True)  # sends the token to the attachment host on purpose
    url = ok(call(sb, "artifacts.locate", {"id": sb.key_id("artifact-9001")}))["url"]
    with_token = requests.get(url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10)
    forged = requests.get(re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 32, url), timeout=10)
    assert with_token.status_code == 400 and forged.status_code == 403
    plain = requests.get(url, timeout=10)
    assert plain.status_code == 200 and len(plain.content) == 64


def test_state_dump_is_json_serialisable_and_persists(make_sandbox, tmp_path):
    state_file = str(tmp_path / "state.json")
    sb = make_sandbox(seed(), state_file=state_file, merge_retire_after_gets=1)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    ok(call(sb, "works.update", {"id": sb.key_id("t1"), "type": "ticket", "reported_by": {"set": [jane]}}))
    ok(call(sb, "rev-users.merge", {"primary_user": jane, "secondary_user": dup}))
    assert call(sb, "rev-users.get", {"id": dup}).status_code == 404

    dumped = json.loads(json.dumps(sb.dump()))
    json.dumps(sb.state.to_json())
    assert dumped["rev_users"][dup]["_retired"] is True

    again = make_sandbox(None, state_file=state_file)
    assert again.dump() == sb.dump()
    assert call(again, "rev-users.get", {"id": dup}).status_code == 404


# ----------------------------------------------------------------------------- faults
def test_error_rate_gives_500_and_503_with_their_bodies(make_sandbox):
    sb = make_sandbox(seed(), faults=Faults(error_rate=1.0, seed=11))
    ticket = sb.key_id("t1")

    answers = [call(sb, "works.update", {"id": ticket, "type": "ticket",
                                         "reported_by": {"set": [sb.key_id("jane")]}}) for _ in range(12)]

    codes = {a.status_code for a in answers}
    assert codes == {500, 503}
    for answer in answers:
        body = answer.json()
        if answer.status_code == 500:
            assert body["type"] == "internal_error" and body["reference_id"] and body["message"]
        else:
            assert body["type"] == "service_unavailable" and body["message"]
    assert sb.writes() == [] and reporters(sb, "t1") == [sb.key_id("jane-dup")]


def test_drop_rate_drops_before_processing(make_sandbox):
    sb = make_sandbox(seed(), faults=Faults(drop_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        call(sb, "works.update", {"id": sb.key_id("t1"), "type": "ticket", "reported_by": {"set": [sb.key_id("jane")]}})
    assert [e["status"] for e in sb.api_calls()] == [None]
    assert sb.writes() == [] and reporters(sb, "t1") == [sb.key_id("jane-dup")]


def test_drop_after_write_applies_the_write_but_the_client_sees_transport_error(make_sandbox, make_client):
    sb = make_sandbox(seed(), faults=Faults(drop_after_write_rate=1.0))
    client = make_client(sb, sleep=lambda s: None)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")

    assert client.get_rev_user(jane)["id"] == jane  # reads are not dropped
    with pytest.raises(TransportError):
        client.merge_rev_users(jane, dup)

    merges = [e for e in sb.api_calls() if e["endpoint"] == "rev-users.merge"]
    assert [(e["applied"], e["fault"], e["status"]) for e in merges] == [(True, "drop_after_write", None)]
    assert ok(call(sb, "rev-users.get", {"id": dup}))["rev_user"]["state"] == "active"
    assert call(sb, "rev-users.get", {"id": dup}).status_code == 404  # the merge did happen
    assert sb.dump()["rev_users"][dup]["_retired"] is True


def test_html_502_fault(make_sandbox):
    sb = make_sandbox(seed(), faults=Faults(html_502_rate=1.0))
    response = call(sb, "rev-users.get", {"id": sb.key_id("jane")})
    assert response.status_code == 502 and response.headers["Content-Type"] == "text/html"
    assert response.text.startswith("<html>")


def test_scripted_answers_are_used_in_order_then_real_ones(sb):
    sb.script("rev-users.get", Scripted(503, {"type": "service_unavailable", "message": "x"}),
              Scripted(200, "not json", content_type="text/plain"))
    jane = sb.key_id("jane")
    got = [call(sb, "rev-users.get", {"id": jane}) for _ in range(3)]
    assert [g.status_code for g in got] == [503, 200, 200]
    assert got[1].text == "not json" and got[2].json()["rev_user"]["id"] == jane
    assert [e.get("fault") for e in sb.api_calls()] == ["scripted", "scripted", None]


# ----------------------------------------------------------------------------- command line
def test_command_line_starts_serves_and_stops(tmp_path):
    data = build_dataset(2, seed=4, skipped=False)
    seed_path = tmp_path / "seed.json"
    data.write(str(seed_path), str(tmp_path / "contacts.csv"))
    proc = subprocess.Popen([sys.executable, "-m", "devrev_sandbox", "--port", "0",
                             "--seed", str(seed_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the emulator printed nothing within 15 s"
        first = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", first)
        assert match, first
        base_url = match.group(1)
        assert not base_url.endswith(":0")

        response = requests.post(f"{base_url}/rev-users.list", json={"limit": 100},
                                 headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["rev_users"]) == len(data.seed["rev_users"])
        assert requests.post(f"{base_url}/rev-users.list", json={}, timeout=10).status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def test_command_line_rejects_a_missing_seed(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devrev_sandbox", "--port", "0",
                             "--seed", str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "seed file not found" in result.stderr
