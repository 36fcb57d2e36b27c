"""DevRevClient against the local emulator: paging, every error class, retries, pacing,
secrets, downloads and configuration.

No real sleeping: clients get a fake `sleep=` that records the waits they ask for (the one
exception is the real-time pacing test at the end, ~2-4 s). Each test asserts what the
emulator saw (request_log, state) as well as what the client returned or raised.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import re
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devrev_api.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    ConflictError,
    DevRevError,
    DownloadError,
    MovedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseError,
    RunInterrupted,
    ServerError,
    TransportError,
)
from devrev_api.pacing import ServerPacer
from devrev_client import DevRevClient
from devrev_sandbox.faults import Faults, Scripted
from helpers import TEST_TOKEN

DUP_REF = "user_" + "Ab3dE6gH9jK2mN5pQ8sT1v"
HELLO = b"hello attachment \x00\x01\x02 bytes"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def small_seed(tickets: int = 1) -> dict:
    """One workspace, an agent, a contact and its `user_` duplicate, tickets, a conversation."""
    return {
        "workspaces": [{"key": "acme", "display_name": "Acme Inc"}],
        "dev_users": [{"key": "agent1", "email": "agent1@support.example"}],
        "rev_users": [
            {"key": "jane", "email": "jane@acme.example", "workspace": "acme", "full_name": "Jane Roe"},
            {"key": "jane-dup", "email": "jane@acme.example", "workspace": "acme", "external_ref": DUP_REF},
        ],
        "tickets": [
            {"key": f"t{n}", "title": f"Ticket {n}", "reported_by": ["jane-dup"], "owned_by": ["agent1"],
             "workspace": "acme",
             "artifacts": ([{"number": 7001, "name": "hello.bin", "content_b64": _b64(HELLO)},
                            {"number": 7002, "name": "big.bin", "size": 300_000},
                            {"number": 7003, "name": "short.bin", "size": 1000, "declared_size": 2000}]
                           if n == 0 else [])}
            for n in range(tickets)],
        "conversations": [{"key": "c0", "members": ["jane-dup", "agent1"], "owned_by": ["agent1"]}],
    }


class FakeSleep:
    """Records every wait the client asks for instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeClock:
    """A clock shared by the emulator and the client's pacer; sleeping advances it."""

    def __init__(self, start: float = 1_700_000_000.25):
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def api_calls(sb, endpoint: str) -> list[dict]:
    return [e for e in sb.api_calls() if e["endpoint"] == endpoint]


def statuses(sb, endpoint: str) -> list:
    return [e["status"] for e in api_calls(sb, endpoint)]


@pytest.fixture
def sleeper():
    return FakeSleep()


@pytest.fixture
def env(make_sandbox, make_client, sleeper):
    """(sandbox, client, dons) on the small seed; the client never really sleeps."""
    sb = make_sandbox(small_seed())
    client = make_client(sb, sleep=sleeper)
    dons = {k: sb.key_id(k) for k in ("jane", "jane-dup", "agent1", "t0", "c0")}
    return sb, client, dons


# ----------------------------------------------------------------------------- paging
def test_paging_across_pages_smaller_than_asked_every_item_once(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed(tickets=120), page_cap=40)
    client = make_client(sb, page_limit=50, sleep=sleeper)
    dup = sb.key_id("jane-dup")

    tickets = list(client.list_tickets(dup))

    ids = [t["id"] for t in tickets]
    assert len(ids) == 120 and len(set(ids)) == 120
    assert set(ids) == set(sb.dump()["works"])
    calls = api_calls(sb, "works.list")
    # 40 + 40 + 40: every page is shorter than the 50 asked for, yet the client goes on,
    # because only a missing next_cursor ends the listing.
    assert [c["status"] for c in calls] == [200, 200, 200]
    assert all(c["body"]["limit"] == 50 for c in calls)
    assert "cursor" not in calls[0]["body"]
    assert calls[1]["body"]["cursor"] != calls[2]["body"]["cursor"]
    assert all(c["body"]["mode"] == "after" for c in calls[1:])
    assert sleeper.waits == []


def test_full_page_without_next_cursor_ends_the_listing(make_sandbox, make_client):
    sb = make_sandbox(small_seed(tickets=40), page_cap=40)
    client = make_client(sb, page_limit=40)

    tickets = list(client.list_tickets(sb.key_id("jane-dup")))

    assert len({t["id"] for t in tickets}) == 40
    assert statuses(sb, "works.list") == [200]  # a full page is not a reason to ask again


def test_paging_follows_the_next_cursor_it_was_given(env):
    sb, client, dons = env
    work = sb.dump()["works"][dons["t0"]]
    other = dict(work, id=work["id"] + "0", display_id=work["display_id"] + "0")
    sb.script("works.list",
              Scripted(body={"works": [work], "next_cursor": "cursor-A"}),
              Scripted(body={"works": [other]}))

    got = list(client.list_tickets(dons["jane-dup"]))

    assert [w["id"] for w in got] == [work["id"], other["id"]]
    bodies = [c["body"] for c in api_calls(sb, "works.list")]
    assert len(bodies) == 2
    assert bodies[1]["cursor"] == "cursor-A" and bodies[1]["mode"] == "after"
    assert bodies[1]["reported_by"] == bodies[0]["reported_by"] == [dons["jane-dup"]]


def test_empty_page_repeating_its_cursor_stops_cleanly(env, caplog):
    sb, client, dons = env
    work = sb.dump()["works"][dons["t0"]]
    sb.script("works.list",
              Scripted(body={"works": [work], "next_cursor": "cursor-A"}),
              Scripted(body={"works": [], "next_cursor": "cursor-A"}))
    caplog.set_level(logging.WARNING, logger="devrev_client")

    got = list(client.list_tickets(dons["jane-dup"]))

    assert [w["id"] for w in got] == [work["id"]]
    assert statuses(sb, "works.list") == [200, 200]  # the finite script was enough: no third call
    assert any("repeated cursor" in r.getMessage() and "works.list" in r.getMessage() for r in caplog.records)


def test_non_empty_page_repeating_a_cursor_raises(env):
    sb, client, dons = env
    work = sb.dump()["works"][dons["t0"]]
    other = dict(work, id=work["id"] + "9")
    # A finite script: a client that kept paging would reach the real emulator with a
    # foreign cursor and get a BadRequestError instead of the ResponseError expected here.
    sb.script("works.list",
              Scripted(body={"works": [work], "next_cursor": "cursor-A"}),
              Scripted(body={"works": [other], "next_cursor": "cursor-A"}))

    with pytest.raises(ResponseError) as info:
        list(client.list_tickets(dons["jane-dup"]))

    assert info.value.endpoint == "works.list"
    assert "cursor" in str(info.value)
    assert statuses(sb, "works.list") == [200, 200]


def test_page_without_items_list_is_a_response_error(env):
    sb, client, dons = env
    sb.script("works.list", Scripted(body={"next_cursor": "x"}))
    with pytest.raises(ResponseError, match="works"):
        list(client.list_tickets(dons["jane-dup"]))
    assert statuses(sb, "works.list") == [200]


# ----------------------------------------------------------------------------- error classes
def test_wrong_token_is_auth_error_telling_to_check_the_token(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed())
    client = make_client(sb, token="not-the-right-token", sleep=sleeper)

    with pytest.raises(AuthError) as info:
        client.get_rev_user(sb.key_id("jane"))

    exc = info.value
    assert type(exc) is AuthError
    assert exc.status == 401 and exc.error_type == "unauthenticated" and exc.endpoint == "rev-users.get"
    assert "DEVREV_API_TOKEN" in str(exc)
    assert "not-the-right-token" not in str(exc) + repr(exc)
    assert statuses(sb, "rev-users.get") == [401]  # never retried
    assert api_calls(sb, "rev-users.get")[0]["auth"] is True
    assert sleeper.waits == []


def test_forbidden_is_permission_denied(env):
    sb, client, dons = env
    sb.script("rev-users.merge", Scripted(403, {"type": "forbidden", "message": "not allowed to merge"}))

    with pytest.raises(PermissionDeniedError) as info:
        client.merge_rev_users(dons["jane"], dons["jane-dup"])

    assert isinstance(info.value, AuthError)  # callers catching auth problems catch this too
    assert info.value.status == 403 and info.value.error_type == "forbidden"
    assert "not allowed to merge" in str(info.value) and "permission" in str(info.value)
    assert statuses(sb, "rev-users.merge") == [403]
    assert sb.dump()["rev_users"][dons["jane-dup"]]["_retired"] is False


def test_unknown_id_is_not_found(env):
    sb, client, dons = env
    missing = dons["jane"][:-3] + "zzz"

    with pytest.raises(NotFoundError) as info:
        client.get_rev_user(missing)

    assert info.value.status == 404 and info.value.error_type == "not_found"
    assert statuses(sb, "rev-users.get") == [404]


def test_bare_list_for_reported_by_is_bad_request(make_sandbox, make_client):
    sb = make_sandbox(small_seed(), spec_requests=False)  # the request breaks the spec on purpose
    client = make_client(sb)
    ticket, dup, jane = sb.key_id("t0"), sb.key_id("jane-dup"), sb.key_id("jane")
    before = sb.dump()["works"][ticket]

    with pytest.raises(BadRequestError) as info:
        client.call("works.update", {"id": ticket, "type": "ticket", "reported_by": [jane]}, retry_transient=True)

    exc = info.value
    assert exc.status == 400 and exc.error_type == "invalid_field" and exc.field_name == "reported_by"
    assert "reported_by" in str(exc)
    assert statuses(sb, "works.update") == [400]
    assert sb.dump()["works"][ticket] == before
    assert [u["id"] for u in before["reported_by"]] == [dup]


def test_taken_external_ref_is_conflict(env):
    sb, client, dons = env

    with pytest.raises(ConflictError) as info:
        client.update_rev_user_external_ref(dons["jane"], DUP_REF)

    assert info.value.status == 409 and info.value.error_type == "conflict"
    assert statuses(sb, "rev-users.update") == [409]  # a 4xx is never retried, even on a retryable call
    assert sb.dump()["rev_users"][dons["jane"]]["external_ref"] != DUP_REF


def test_429_forever_gives_rate_limit_error_after_bounded_retries(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed(), faults=Faults(burst_429_rate=1.0, burst_retry_after=2))
    client = make_client(sb, sleep=sleeper, max_throttle_retries=4)

    with pytest.raises(RateLimitError) as info:
        client.get_rev_user(sb.key_id("jane"))

    assert info.value.status == 429 and info.value.retry_after == 2
    assert statuses(sb, "rev-users.get") == [429] * 5
    assert sleeper.waits == [2, 2, 2, 2]


def test_5xx_on_a_read_is_retried_then_server_error(make_sandbox, make_client, sleeper, caplog):
    sb = make_sandbox(small_seed(), faults=Faults(error_rate=1.0, seed=3))
    client = make_client(sb, sleep=sleeper, max_retries=3)
    caplog.set_level(logging.DEBUG, logger="devrev_client")

    with pytest.raises(ServerError) as info:
        client.get_rev_user(sb.key_id("jane"))

    assert info.value.status in (500, 503)
    assert info.value.error_type in ("internal_error", "service_unavailable")
    got = statuses(sb, "rev-users.get")
    assert len(got) == 4 and set(got) <= {500, 503}
    assert len(sleeper.waits) == 3
    # each retry is in the log file (DEBUG); the console hears only of faults that last
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    warnings = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(warnings) == 3
    for record, status, wait in zip(warnings, got, sleeper.waits):
        message = record.getMessage()
        assert "rev-users.get" in message and str(status) in message and f"{wait:.2f}s" in message


def test_dropped_connections_give_transport_error(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed(), faults=Faults(drop_rate=1.0))
    client = make_client(sb, sleep=sleeper, max_retries=2)

    with pytest.raises(TransportError) as info:
        client.get_rev_user(sb.key_id("jane"))

    assert info.value.endpoint == "rev-users.get" and "127.0.0.1" in str(info.value)
    assert statuses(sb, "rev-users.get") == [None, None, None]  # 1 try + 2 retries, all dropped
    assert len(sleeper.waits) == 2


def test_dropped_merge_is_not_repeated(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed())
    client = make_client(sb, sleep=sleeper)
    sb.script("rev-users.merge", Scripted(drop=True))

    with pytest.raises(TransportError):
        client.merge_rev_users(sb.key_id("jane"), sb.key_id("jane-dup"))

    assert statuses(sb, "rev-users.merge") == [None]
    assert sleeper.waits == []


class _RawServer:
    """A loopback server answering every request with the same raw bytes, then closing."""

    def __init__(self, raw: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.raw = raw
        self.requests = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests += 1
                conn.sendall(self.raw)

    def close(self):
        self.sock.close()


def test_answer_broken_off_mid_body_is_transport_error(sleeper):
    # Content-Length promises 100 bytes; 14 arrive, then the connection closes.
    server = _RawServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                        b"Connection: close\r\n\r\n{\"rev_user\": {")
    try:
        client = DevRevClient(TEST_TOKEN, server.url, sleep=sleeper, calls_per_minute=1e6, max_retries=1,
                              backoff_base=0.01)
        with pytest.raises(TransportError) as info:
            client.get_rev_user("don:identity:dvrv-us-1:devo/DEVO1x:revu/abc")
        assert info.value.endpoint == "rev-users.get"
        assert server.requests == 2  # a read: retried once, then given up
        with pytest.raises(TransportError):
            client.merge_rev_users("don:a", "don:b")
        assert server.requests == 3  # a merge: never repeated
        client.close()
    finally:
        server.close()


@pytest.mark.parametrize("body, content_type", [
    ('{"rev_user": {"id": "don:identity:dvrv-us-1:devo/DEVO1x:revu/x", "display', "application/json"),
    ("<html><body>OK</body></html>", "text/html"),
    ("", "application/json"),
    ("[1, 2]", "application/json"),
])
def test_unreadable_200_is_response_error(env, body, content_type):
    sb, client, dons = env
    sb.script("rev-users.get", *[Scripted(200, body, content_type=content_type)] * 6)

    with pytest.raises(ResponseError) as info:
        client.get_rev_user(dons["jane"])

    assert info.value.status == 200 and info.value.endpoint == "rev-users.get"
    assert "<" not in str(info.value)
    assert statuses(sb, "rev-users.get") == [200] * 6  # a read: 1 try + max_retries (5)


def test_unreadable_200_on_a_write_is_not_repeated(env):
    sb, client, dons = env
    sb.script("rev-users.merge", Scripted(200, "{", content_type="application/json"))

    with pytest.raises(ResponseError):
        client.merge_rev_users(dons["jane"], dons["jane-dup"])

    assert statuses(sb, "rev-users.merge") == [200]


@pytest.mark.parametrize("method, key", [
    ("get_rev_user", "jane"), ("get_work", "t0"), ("get_conversation", "c0")])
def test_200_without_the_promised_object_is_response_error(env, method, key):
    sb, client, dons = env
    endpoint = {"get_rev_user": "rev-users.get", "get_work": "works.get", "get_conversation": "conversations.get"}
    sb.script(endpoint[method], Scripted(200, {"unexpected": True}))

    with pytest.raises(ResponseError) as info:
        getattr(client, method)(dons[key])

    assert info.value.endpoint == endpoint[method]
    assert statuses(sb, endpoint[method]) == [200]


def test_301_raises_moved_error_and_is_not_followed(env):
    sb, client, dons = env
    new_location = f"{sb.base_url}/rev-users.get?id=don:identity:dvrv-us-1:devo/DEVO1x:revu/NEW"
    sb.script("rev-users.get", Scripted(301, {"message": "moved"}, headers={"Location": new_location}))

    with pytest.raises(MovedError) as info:
        client.get_rev_user(dons["jane"])

    assert info.value.status == 301 and info.value.location == new_location
    assert "re-export" in str(info.value)
    # exactly one request reached DevRev: the POST, answered 301; no GET to the Location
    assert [(e["method"], e["status"]) for e in sb.api_calls()] == [("POST", 301)]


def test_error_body_without_type_is_still_a_clean_error(env):
    sb, client, dons = env
    sb.script("rev-users.get", Scripted(404, {"message": "route not found"}))
    sb.script("works.get", Scripted(400, {"detail": "only a detail here"}))

    with pytest.raises(NotFoundError) as info:
        client.get_rev_user(dons["jane"])
    assert info.value.error_type is None
    assert str(info.value) == "rev-users.get: route not found (404)"

    with pytest.raises(BadRequestError) as info:
        client.get_work(dons["t0"])
    assert "only a detail here" in str(info.value) and info.value.error_type is None


def test_html_502_gives_server_error_without_html(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed(), faults=Faults(html_502_rate=1.0))
    client = make_client(sb, sleep=sleeper, max_retries=2)

    with pytest.raises(ServerError) as info:
        client.get_rev_user(sb.key_id("jane"))

    text = str(info.value)
    assert info.value.status == 502
    assert not re.search(r"<[^>]*>", text), text
    assert "Bad Gateway" not in text and "text/html" in text
    assert statuses(sb, "rev-users.get") == [502, 502, 502]


def test_unknown_status_is_a_plain_devrev_error(env):
    sb, client, dons = env
    sb.script("rev-users.get", Scripted(418, {"type": "teapot", "message": "short and stout"}))
    with pytest.raises(DevRevError) as info:
        client.get_rev_user(dons["jane"])
    assert type(info.value) is DevRevError and info.value.status == 418
    assert statuses(sb, "rev-users.get") == [418]


# ----------------------------------------------------------------------------- retry policy
def _throttle(headers=None, **body):
    return Scripted(429, dict({"type": "too_many_requests", "message": "slow down"}, **body),
                    headers=headers or {})


def test_retry_after_header_wins_over_body(env, sleeper, caplog):
    sb, client, dons = env
    sb.script("rev-users.get", _throttle({"Retry-After": "7"}, retry_after=3))
    caplog.set_level(logging.WARNING, logger="devrev_client")

    user = client.get_rev_user(dons["jane"])

    assert user["id"] == dons["jane"]
    assert sleeper.waits == [7]
    assert statuses(sb, "rev-users.get") == [429, 200]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "rev-users.get" in record.getMessage() and "429" in record.getMessage()
    assert "7.00s" in record.getMessage()


def test_body_retry_after_used_without_header(env, sleeper):
    sb, client, dons = env
    sb.script("rev-users.get", _throttle(retry_after=3))
    client.get_rev_user(dons["jane"])
    assert sleeper.waits == [3]


def test_huge_retry_after_is_capped_to_the_window(env, sleeper):
    sb, client, dons = env
    sb.script("rev-users.get", _throttle({"Retry-After": "86400"}))
    client.get_rev_user(dons["jane"])
    assert sleeper.waits == [300]


def test_429_without_hint_backs_off_exponentially_with_jitter(make_sandbox, make_client, sleeper, caplog):
    sb = make_sandbox(small_seed())
    client = make_client(sb, sleep=sleeper, backoff_base=0.5, backoff_cap=8.0)
    sb.script("rev-users.get", *[_throttle() for _ in range(4)])
    caplog.set_level(logging.WARNING, logger="devrev_client")

    client.get_rev_user(sb.key_id("jane"))

    waits = sleeper.waits
    assert len(waits) == 4
    assert 0 < waits[0] <= 0.5
    for attempt, wait in enumerate(waits):
        ceiling = 0.5 * 2 ** attempt
        assert ceiling / 2 <= wait <= ceiling
    assert any(w != 0.5 * 2 ** i for i, w in enumerate(waits))  # jittered, not the bare ceilings
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 4
    assert all("rev-users.get" in m and "429" in m and f"{w:.2f}s" in m for m, w in zip(messages, waits))
    assert statuses(sb, "rev-users.get") == [429] * 4 + [200]


def test_429_is_retried_even_on_a_merge(env, sleeper):
    sb, client, dons = env
    sb.script("rev-users.merge", _throttle({"Retry-After": "1"}))

    assert client.merge_rev_users(dons["jane"], dons["jane-dup"]) == {}

    assert statuses(sb, "rev-users.merge") == [429, 200]
    assert sleeper.waits == [1]
    assert len(sb.writes()) == 1


def test_5xx_on_merge_is_not_retried(env, sleeper):
    sb, client, dons = env
    sb.script("rev-users.merge", Scripted(500, {"type": "internal_error", "message": "boom", "reference_id": "r1"}))

    with pytest.raises(ServerError) as info:
        client.merge_rev_users(dons["jane"], dons["jane-dup"])

    assert info.value.status == 500 and info.value.error_type == "internal_error"
    assert statuses(sb, "rev-users.merge") == [500]
    assert sleeper.waits == []
    assert sb.writes() == []


@pytest.mark.parametrize("status, cls", [(400, BadRequestError), (401, AuthError), (403, PermissionDeniedError),
                                         (404, NotFoundError), (409, ConflictError)])
def test_4xx_never_retried(env, sleeper, status, cls):
    sb, client, dons = env
    sb.script("works.get", Scripted(status, {"type": "x", "message": "no"}))

    with pytest.raises(cls):
        client.get_work(dons["t0"])

    assert statuses(sb, "works.get") == [status]
    assert sleeper.waits == []


def test_set_style_ticket_update_is_retried_after_503(env, sleeper):
    sb, client, dons = env
    sb.script("works.update", Scripted(503, {"type": "service_unavailable", "message": "try later"}))

    work = client.set_ticket_reporters(dons["t0"], [dons["jane"]])

    assert [u["id"] for u in work["reported_by"]] == [dons["jane"]]
    assert [u["id"] for u in sb.dump()["works"][dons["t0"]]["reported_by"]] == [dons["jane"]]
    assert statuses(sb, "works.update") == [503, 200]
    assert len(sleeper.waits) == 1 and 0 < sleeper.waits[0] <= 0.05


def test_write_applied_then_dropped_surfaces_as_transport_error(make_sandbox, make_client, sleeper):
    sb = make_sandbox(small_seed(), faults=Faults(drop_after_write_rate=1.0))
    client = make_client(sb, sleep=sleeper, max_retries=1)
    ticket, jane = sb.key_id("t0"), sb.key_id("jane")

    with pytest.raises(TransportError):
        client.set_ticket_reporters(ticket, [jane])

    assert [u["id"] for u in sb.dump()["works"][ticket]["reported_by"]] == [jane]  # applied nonetheless
    assert [e["fault"] for e in sb.writes()] == ["drop_after_write", "drop_after_write"]


# ----------------------------------------------------------------------------- secrets
def test_token_never_in_logs_errors_or_repr(make_sandbox, make_client, sleeper, caplog):
    caplog.set_level(logging.DEBUG)  # root, so urllib3's connection logs are captured too
    sb = make_sandbox(small_seed())
    client = make_client(sb, sleep=sleeper, max_retries=1, max_throttle_retries=1)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    # a hostile server echoing the token back in its messages and headers
    sb.script("rev-users.get",
              Scripted(400, {"type": "bad_request", "message": f"bad token {TEST_TOKEN}"}),
              Scripted(301, {}, headers={"Location": f"https://x.example/?t={TEST_TOKEN}"}),
              Scripted(500, {"type": "internal_error", "message": TEST_TOKEN}),
              Scripted(502, f"<html>{TEST_TOKEN}</html>", content_type="text/html"),
              _throttle({"Retry-After": "1"}, detail=TEST_TOKEN),
              _throttle({"Retry-After": "1"}),
              Scripted(drop=True), Scripted(drop=True),
              Scripted(200, TEST_TOKEN, content_type="text/plain"),
              Scripted(200, TEST_TOKEN, content_type="text/plain"))
    errors = []
    for _ in range(6):
        with pytest.raises(DevRevError) as info:
            client.get_rev_user(jane)
        errors.append(info.value)
    assert [type(e) for e in errors] == [BadRequestError, MovedError, ServerError, RateLimitError,
                                          TransportError, ResponseError]
    with pytest.raises(ConflictError) as info:
        client.update_rev_user_external_ref(jane, DUP_REF)
    errors.append(info.value)
    wrong = make_client(sb, token=TEST_TOKEN + "x", sleep=sleeper)
    with pytest.raises(AuthError) as info:
        wrong.get_rev_user(jane)
    errors.append(info.value)
    client.get_rev_user(dup)  # and a success, logged by urllib3 at DEBUG

    assert any(r.name.startswith("urllib3") for r in caplog.records)  # DEBUG capture really worked
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert TEST_TOKEN not in caplog.text
    for record in caplog.records:
        assert TEST_TOKEN not in record.getMessage()
    for exc in errors:
        rendered = str(exc) + repr(exc) + "".join(traceback.format_exception(exc)) + repr(vars(exc))
        assert TEST_TOKEN not in rendered, type(exc)
    assert TEST_TOKEN not in repr(client) and TEST_TOKEN not in str(client)
    assert "Authorization" not in client.session.headers  # only ever added per API call
    assert TEST_TOKEN not in json.dumps(sb.request_log, default=str)
    assert all(e["auth"] for e in sb.api_calls())


# ----------------------------------------------------------------------------- downloads
def _artifact(sb, number: int) -> dict:
    return sb.state.artifacts[sb.key_id(f"artifact-{number}")]


@pytest.mark.parametrize("number", [7001, 7002])
def test_download_without_token_and_with_correct_sha256(env, number):
    sb, client, dons = env
    art = _artifact(sb, number)
    located = client.locate_artifact(art["id"])
    out = io.BytesIO()

    result = client.downloads.download(located["url"], out, expected_size=art["file"]["size"], chunk_size=64 * 1024)

    served = sb.state.artifact_bytes(art, 0, art["_size"])
    assert result.size == len(served) == art["file"]["size"]
    assert result.sha256 == hashlib.sha256(served).hexdigest()
    assert out.getvalue() == served
    if number == 7001:
        assert served == HELLO
    files = [e for e in sb.request_log if e["server"] == "files"]
    assert [(e["auth"], e["status"]) for e in files] == [(False, 200)]
    assert api_calls(sb, "artifacts.locate")[0]["auth"] is True


def test_download_shorter_than_declared(env):
    sb, client, dons = env
    art = _artifact(sb, 7003)
    assert art["file"]["size"] == 2000 and art["_size"] == 1000

    with pytest.raises(DownloadError) as info:
        client.downloads.download(client.locate_artifact(art["id"])["url"], io.BytesIO(),
                                  expected_size=art["file"]["size"])

    assert info.value.expired is False
    assert "1000" in str(info.value) and "2000" in str(info.value)


def test_download_larger_than_declared(env):
    sb, client, dons = env
    art = _artifact(sb, 7002)
    with pytest.raises(DownloadError, match="larger"):
        client.downloads.download(client.locate_artifact(art["id"])["url"], io.BytesIO(), expected_size=1000)


def test_expired_download_url(make_sandbox, make_client):
    clock = FakeClock()
    sb = make_sandbox(small_seed(), clock=clock, url_ttl=60)
    client = make_client(sb)
    art = _artifact(sb, 7001)
    url = client.locate_artifact(art["id"])["url"]
    clock.now += 3600

    with pytest.raises(DownloadError) as info:
        client.downloads.download(url, io.BytesIO(), expected_size=art["file"]["size"])

    assert info.value.expired is True and info.value.status == 403
    assert [e["status"] for e in sb.request_log if e["server"] == "files"] == [403]


@pytest.mark.parametrize("url", ["http://files.example.com/blobs/1?sig=x", "ftp://127.0.0.1/blob", "file:///etc/passwd"])
def test_download_refuses_plain_http_off_loopback(env, url):
    sb, client, dons = env
    out = io.BytesIO()
    with pytest.raises(DownloadError, match="https"):
        client.downloads.download(url, out)
    assert out.getvalue() == b""


@contextlib.contextmanager
def redirect_server(location: str, seen: list | None = None):
    """A loopback host answering every GET with a 302 to `location`; yields its port."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            if seen is not None:
                seen.append(dict(self.headers))
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_download_follows_redirect_to_another_loopback_host_without_auth(env):
    sb, client, dons = env
    art = _artifact(sb, 7001)
    seen = []
    with redirect_server(client.locate_artifact(art["id"])["url"], seen) as port:
        out = io.BytesIO()
        result = client.downloads.download(f"http://localhost:{port}/start", out, expected_size=len(HELLO))
    assert out.getvalue() == HELLO and result.sha256 == hashlib.sha256(HELLO).hexdigest()
    assert len(seen) == 1 and not any(k.lower() == "authorization" for k in seen[0])
    assert [e["auth"] for e in sb.request_log if e["server"] == "files"] == [False]


def test_download_redirect_off_https_is_refused(env):
    sb, client, dons = env
    with redirect_server("http://evil.example.com/steal") as port:
        with pytest.raises(DownloadError, match="https"):
            client.downloads.download(f"http://127.0.0.1:{port}/start", io.BytesIO())


# ----------------------------------------------------------------------------- configuration
def test_plain_http_base_url_refused():
    with pytest.raises(ConfigError, match="https"):
        DevRevClient(TEST_TOKEN, "http://api.example.com")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:8080",
                                 "https://api.devrev.ai"])
def test_https_and_loopback_http_accepted(url):
    client = DevRevClient(TEST_TOKEN, url)
    assert client.base_url == url
    client.close()


@pytest.mark.parametrize("url", ["http://localhost.example.com", "http://127.0.0.1.nip.io", "https://",
                                 "api.devrev.ai"])
def test_look_alike_loopback_and_hostless_urls_refused(url):
    with pytest.raises(ConfigError):
        DevRevClient(TEST_TOKEN, url)


@pytest.mark.parametrize("token", ["", "   ", None, "Bearer ", "tok en", "tok\nen"])
def test_empty_or_malformed_token_refused(token):
    with pytest.raises(ConfigError, match="DEVREV_API_TOKEN"):
        DevRevClient(token, "https://api.devrev.ai")


def test_bearer_prefix_in_the_token_is_stripped(make_sandbox, make_client):
    sb = make_sandbox(small_seed())
    client = make_client(sb, token=f"Bearer {TEST_TOKEN}")
    assert client.get_rev_user(sb.key_id("jane"))["email"] == "jane@acme.example"


def test_from_env_reads_the_three_variables(make_sandbox):
    sb = make_sandbox(small_seed())
    client = DevRevClient.from_env({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_BASE_URL": sb.base_url,
                                    "DEVREV_RATE_LIMIT": "600000"})
    try:
        assert client.base_url == sb.base_url and client.calls_per_minute == 600000
        assert client.get_rev_user(sb.key_id("jane"))["id"] == sb.key_id("jane")
    finally:
        client.close()
    default = DevRevClient.from_env({"DEVREV_API_TOKEN": TEST_TOKEN})
    assert default.base_url == "https://api.devrev.ai" and default.calls_per_minute == 200
    default.close()


@pytest.mark.parametrize("env_vars, match", [
    ({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_RATE_LIMIT": "fast"}, "DEVREV_RATE_LIMIT"),
    ({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_RATE_LIMIT": "0"}, "DEVREV_RATE_LIMIT"),
    ({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_RATE_LIMIT": "-5"}, "DEVREV_RATE_LIMIT"),
    ({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_RATE_LIMIT": "nan"}, "DEVREV_RATE_LIMIT"),
    ({"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_BASE_URL": "http://api.example.com"}, "https"),
    ({}, "DEVREV_API_TOKEN"),
])
def test_from_env_bad_values_are_config_errors(env_vars, match):
    with pytest.raises(ConfigError, match=match):
        DevRevClient.from_env(env_vars)


# ----------------------------------------------------------------------------- pacing
def test_pacer_waits_for_reset_at_the_margin():
    clock = FakeClock(1000.0)
    pacer = ServerPacer(margin=2, clock=clock)
    assert pacer.reserve() == 0.0  # nothing known yet
    pacer.release({"X-Ratelimit-Remaining": "2", "X-Ratelimit-Reset": "1010"})

    wait = pacer.reserve()
    assert 10.0 <= wait <= 10.1
    pacer.release({"X-Ratelimit-Remaining": "2", "X-Ratelimit-Reset": "1010"})
    clock.now = 1010.0
    assert pacer.reserve() == 0.0  # the window has reset


def test_pacer_lets_calls_go_with_plenty_remaining_and_counts_in_flight():
    clock = FakeClock(1000.0)
    pacer = ServerPacer(margin=2, clock=clock)
    pacer.reserve()
    pacer.release({"X-Ratelimit-Remaining": "900", "X-Ratelimit-Reset": "1300"})
    assert pacer.reserve() == 0.0
    pacer.release({"X-Ratelimit-Remaining": "4", "X-Ratelimit-Reset": "1300"})
    # four left, margin two: two calls may be in flight at once, the third waits
    assert pacer.reserve() == 0.0
    assert pacer.reserve() == 0.0
    assert pacer.reserve() == pytest.approx(300.05)


def test_pacer_ignores_missing_or_garbage_headers():
    pacer = ServerPacer(margin=2, clock=FakeClock(1000.0))
    pacer.reserve()
    pacer.release({"X-Ratelimit-Remaining": "soon", "X-Ratelimit-Reset": "1010"})
    assert pacer.reserve() == 0.0
    pacer.release({})
    assert pacer.reserve() == 0.0


def _paced_run(make_sandbox, make_client, margin):
    clock = FakeClock()
    sb = make_sandbox(small_seed(), rate_limit=(5, 2.0), clock=clock)
    client = make_client(sb, sleep=clock.sleep, pacer=ServerPacer(margin=margin, clock=clock))
    jane = sb.key_id("jane")
    for _ in range(12):
        assert client.get_rev_user(jane)["id"] == jane
    return sb, clock


def test_pacing_avoids_429_end_to_end_with_a_fake_clock(make_sandbox, make_client):
    sb, clock = _paced_run(make_sandbox, make_client, margin=2)

    assert statuses(sb, "rev-users.get") == [200] * 12
    # 5 per window, margin 2: three calls per window, then a wait until the reset
    # X-Ratelimit-Reset is whole epoch seconds (rounded up), so a wait is at most window + 1 s
    assert len(clock.waits) == 3 and all(0 < w <= 3.1 for w in clock.waits)


def test_without_pacing_the_same_run_meets_429(make_sandbox, make_client):
    sb, _ = _paced_run(make_sandbox, make_client, margin=-10**9)  # a pacer that never holds back
    assert statuses(sb, "rev-users.get").count(429) >= 1


@pytest.mark.slow
def test_pacing_avoids_429_in_real_time(make_sandbox, make_client):
    sb = make_sandbox(small_seed(), rate_limit=(6, 1.0))
    client = make_client(sb)  # real sleeping: about two window resets, 2-4 s
    jane = sb.key_id("jane")
    for _ in range(12):
        client.get_rev_user(jane)
    got = statuses(sb, "rev-users.get")
    assert got.count(200) == 12 and got.count(429) <= 1


def _slow_paced_client(make_sandbox, make_client):
    """A client whose own cap is 2 calls per minute (a 30 s slot), its first call spent."""
    sb = make_sandbox(small_seed())
    client = make_client(sb, calls_per_minute=2)
    jane = sb.key_id("jane")
    client.get_rev_user(jane)
    return sb, client, jane


def test_ctrl_c_cuts_the_client_side_pacing_wait_short(make_sandbox, make_client):
    """Field finding: Ctrl-C waited out the whole pacing period (30 s at --rate-limit 2)."""
    sb, client, jane = _slow_paced_client(make_sandbox, make_client)
    timer = threading.Timer(0.2, client.stop_event.set)   # Ctrl-C while the next call waits its slot
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RunInterrupted):
            client.get_rev_user(jane)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0   # not the 30 s slot
    assert len(api_calls(sb, "rev-users.get")) == 1   # the interrupted call was never sent


def test_a_stopped_client_sends_nothing_and_does_not_wait_for_its_pace(make_sandbox, make_client):
    sb, client, jane = _slow_paced_client(make_sandbox, make_client)
    client.stop_event.set()
    started = time.monotonic()
    with pytest.raises(RunInterrupted):
        client.get_rev_user(jane)
    assert time.monotonic() - started < 2.0
    assert len(api_calls(sb, "rev-users.get")) == 1
