"""A local DevRev emulator: the stand-in for production in tests, benches and rehearsals.

A real HTTP server on 127.0.0.1 that speaks the part of the DevRev REST API the tool
uses, with the spec's shapes and DevRev's strictness (and, where DevRev's behaviour is
unknown, the strict side of the choices in `devrev_assumptions`). It also injects the
faults production has: latency, 5xx, dropped connections, 429 bursts, slow downloads.
Attachments are served by a second server on another port, without auth, from
presigned, expiring URLs.

    python devrev_sandbox.py --port 8080 --seed examples/demo_seed.json
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import json
import math
import os
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import devrev_assumptions as facts

DEFAULT_TOKEN = "sandbox-token"
REGION = "dvrv-us-1"
WRITE_ENDPOINTS = frozenset({"rev-users.update", "rev-users.merge", "works.update", "conversations.update"})
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def iso(ts: float) -> str:
    """DevRev timestamps: ISO-8601 UTC with milliseconds and Z."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def stable_suffix(key: str, length: int = 9) -> str:
    """A deterministic case-sensitive alphanumeric id suffix (like REVU-16BD3ZzTw)."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        out.append(_ALNUM[digit])
    return "".join(out)


def generated_bytes(seed: int, start: int, length: int) -> bytes:
    """Deterministic attachment content, produced in slices so huge files need no memory."""
    block = hashlib.sha256(f"artifact-content-{seed}".encode()).digest() * 128  # 4 KiB
    out = bytearray()
    pos = start
    while len(out) < length:
        offset = pos % len(block)
        take = min(len(block) - offset, length - len(out))
        out += block[offset:offset + take]
        pos += take
    return bytes(out)


class ApiError(Exception):
    """An error answer in DevRev's flat shape: {type, message, ...extra}."""

    def __init__(self, status: int, error_type: str | None, message: str, **extra):
        super().__init__(message)
        self.status, self.error_type, self.message, self.extra = status, error_type, message, extra

    def body(self) -> dict:
        body = {"message": self.message}
        if self.error_type:
            body["type"] = self.error_type
        body.update(self.extra)
        return body


# --------------------------------------------------------------------------- faults
@dataclass
class Scripted:
    """One canned answer for the next call of an endpoint (hostile-API tests)."""
    status: int = 200
    body: Any = None            # dict/list -> JSON; str/bytes -> sent as is
    headers: dict = field(default_factory=dict)
    drop: bool = False          # close the connection without answering
    content_type: str = "application/json"


@dataclass
class Faults:
    """Production's bad days, set per test. Shares are probabilities per API call."""
    latency: float = 0.0              # seconds added to every API call
    latency_jitter: float = 0.0       # plus uniform(0, jitter)
    error_rate: float = 0.0           # answered 500 or 503 before processing
    drop_rate: float = 0.0            # connection closed before processing
    drop_after_write_rate: float = 0.0  # a write is applied, then the connection closes
    burst_429_rate: float = 0.0       # chance a call starts a burst of 429s
    burst_429_length: int = 3
    burst_retry_after: int = 1        # Retry-After (seconds) sent in bursts
    html_502_rate: float = 0.0        # answered with an HTML 502 page (a proxy's)
    download_bytes_per_second: float | None = None
    seed: int = 0


# --------------------------------------------------------------------------- state
class SandboxState:
    """DevRev's objects, references stored as ids and rendered into summaries on output."""

    def __init__(self, devo: str = "DEVO1x", clock: Callable[[], float] = time.time):
        self.devo = devo
        self.clock = clock
        self.lock = threading.RLock()
        self.orgs: dict[str, dict] = {}
        self.users: dict[str, dict] = {}       # dev, sys and rev users by DON
        self.works: dict[str, dict] = {}
        self.conversations: dict[str, dict] = {}
        self.entries: dict[str, list[dict]] = {}   # parent DON -> entries (oldest first)
        self.artifacts: dict[str, dict] = {}
        self.by_display: dict[str, str] = {}
        self.keys: dict[str, str] = {}           # seed key -> DON
        self.seq = 0
        self.admin_id = self._add_user("dev_user", "devu/1", "DEVU-1", display_name="sandbox-admin",
                                       email="admin@sandbox.invalid", full_name="Sandbox Admin")
        self.bot_id = self._add_user("sys_user", "sysu/1", "SYSU-1", display_name="devrev-bot",
                                     full_name="DevRev Bot")

    # ids ------------------------------------------------------------------
    def don(self, kind: str, suffix: str) -> str:
        space = "identity" if kind.split("/")[0] in ("revu", "devu", "sysu", "revo", "svcacc") else "core"
        return f"don:{space}:{REGION}:devo/{self.devo}:{kind}/{suffix}"

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def now(self) -> str:
        return iso(self.clock())

    def _add_user(self, user_type: str, kind_suffix: str, display_id: str, **fields) -> str:
        kind, suffix = kind_suffix.split("/")
        don = self.don(kind, suffix)
        now = self.now()
        user = {"type": user_type, "id": don, "display_id": display_id, "state": "active",
                "created_date": now, "modified_date": now, "_seq": self.next_seq()}
        user.update({k: v for k, v in fields.items() if v is not None})
        self.users[don] = user
        self.by_display[display_id] = don
        return don

    # seeding --------------------------------------------------------------
    def load_seed(self, seed: dict) -> None:
        """Build objects from a seed (see sandbox_dataset.py for the format)."""
        with self.lock:
            self.devo = seed.get("devo", self.devo)
            for org in seed.get("workspaces", []):
                suffix = org.get("suffix") or stable_suffix("org:" + org["key"], 8)
                don = self.don("revo", suffix)
                self.orgs[don] = {"type": "rev_org", "id": don, "display_id": f"REV-{suffix}",
                                  "display_name": org.get("display_name", org["key"])}
                self.by_display[f"REV-{suffix}"] = don
                self.keys[org["key"]] = don
            for n, dev in enumerate(seed.get("dev_users", []), start=2):
                number = dev.get("number", n)
                self.keys[dev["key"]] = self._add_user(
                    "dev_user", f"devu/{number}", f"DEVU-{number}", display_name=dev.get("display_name", dev["key"]),
                    email=dev.get("email"), full_name=dev.get("full_name"))
            for rev in seed.get("rev_users", []):
                suffix = rev.get("suffix") or stable_suffix("revu:" + rev["key"])
                display_id = f"REVU-{suffix}"
                created_by = self.keys.get(rev.get("created_by", ""), self.bot_id if
                                           str(rev.get("external_ref", "")).startswith("user_") else self.admin_id)
                don = self._add_user("rev_user", f"revu/{suffix}", display_id,
                                     display_name=rev.get("display_name", rev.get("email")),
                                     email=rev.get("email"), full_name=rev.get("full_name"),
                                     external_ref=rev.get("external_ref") or display_id,
                                     rev_org=self.keys[rev["workspace"]], created_by=created_by,
                                     modified_by=created_by, is_verified=rev.get("is_verified", True),
                                     custom_fields=rev.get("custom_fields"))
                user = self.users[don]
                user["state"] = rev.get("state", "active")
                for stamp in ("created_date", "modified_date"):
                    if rev.get(stamp):
                        user[stamp] = rev[stamp]
                self.keys[rev["key"]] = don
            for number, ticket in enumerate(seed.get("tickets", []), start=1):
                self._seed_work(ticket, ticket.get("number", number))
            for number, conv in enumerate(seed.get("conversations", []), start=1):
                self._seed_conversation(conv, conv.get("number", number))

    def _ref(self, key: str) -> str:
        return self.keys.get(key) or self.by_display.get(key) or key

    def _seed_work(self, spec: dict, number: int) -> None:
        kind = spec.get("type", "ticket")  # "ticket" or "issue"
        don = self.don(kind, str(number))
        created = spec.get("created_date") or self.now()
        prefix = "TKT" if kind == "ticket" else "ISS"
        work = {"type": kind, "id": don, "display_id": f"{prefix}-{number}", "title": spec.get("title", f"Work {number}"),
                "reported_by": [self._ref(k) for k in spec.get("reported_by", [])],
                "owned_by": [self._ref(k) for k in spec.get("owned_by", [])] or [self.admin_id],
                "created_by": self._ref(spec.get("created_by", spec.get("reported_by", ["SYSU-1"])[0] if spec.get("reported_by") else "SYSU-1")),
                "created_date": created, "modified_date": spec.get("modified_date", created),
                "stage": {"name": spec.get("stage", "queued")}, "severity": spec.get("severity", "medium"),
                "source_channel": spec.get("source_channel", "email"), "_seq": self.next_seq()}
        work["modified_by"] = work["created_by"]
        if spec.get("body"):
            work["body"] = spec["body"]
        if spec.get("workspace") and kind == "ticket":
            work["rev_org"] = self._ref(spec["workspace"])
        if kind != "ticket":  # ticket-only fields
            for name in ("severity", "source_channel"):
                del work[name]
        work["artifacts"] = [self._seed_artifact(a, work["created_by"], created) for a in spec.get("artifacts", [])]
        self.works[don] = work
        self.by_display[work["display_id"]] = don
        if spec.get("key"):
            self.keys[spec["key"]] = don
        self._seed_comments(don, spec.get("comments", []))

    def _seed_conversation(self, spec: dict, number: int) -> None:
        don = self.don("conversation", str(number))
        created = spec.get("created_date") or self.now()
        members = [self._ref(k) for k in spec.get("members", [])]
        conv = {"id": don, "display_id": f"CONV-{number}", "title": spec.get("title", f"Conversation {number}"),
                "members": members, "owned_by": [self._ref(k) for k in spec.get("owned_by", [])],
                "created_by": self._ref(spec.get("created_by", members[0] if members else "SYSU-1")),
                "created_date": created, "modified_date": spec.get("modified_date", created),
                "stage": {"name": spec.get("stage", "waiting_on_user")},
                "source_channel": spec.get("source_channel", "chat"), "_seq": self.next_seq()}
        conv["modified_by"] = conv["created_by"]
        self.conversations[don] = conv
        self.by_display[conv["display_id"]] = don
        if spec.get("key"):
            self.keys[spec["key"]] = don
        self._seed_comments(don, spec.get("comments", []))

    def _seed_comments(self, parent: str, comments: list[dict]) -> None:
        entries = self.entries.setdefault(parent, [])
        for spec in comments:
            author = self._ref(spec.get("by", "DEVU-1"))
            number = self.next_seq()
            created = spec.get("created_date") or self.now()
            entries.append({"type": "timeline_comment", "id": f"{parent}:comment/{number}", "object": parent,
                            "body": spec.get("body", ""), "body_type": "text",
                            "visibility": spec.get("visibility", "external"), "created_by": author,
                            "created_date": created, "modified_date": created, "modified_by": author,
                            "artifacts": [self._seed_artifact(a, author, created) for a in spec.get("artifacts", [])],
                            "_seq": number})

    def _seed_artifact(self, spec: dict, author: str, created: str) -> str:
        number = spec.get("number") or (10000 + len(self.artifacts) + 1)
        don = self.don("artifact", str(number))
        content_b64 = spec.get("content_b64")
        size = len(base64.b64decode(content_b64)) if content_b64 is not None else int(spec.get("size", 0))
        self.artifacts[don] = {"id": don, "display_id": f"artifact-{number}", "created_by": author,
                               "created_date": created, "modified_date": created,
                               "file": {"name": spec.get("name", f"file-{number}.bin"),
                                        "type": spec.get("type", "application/octet-stream"),
                                        "size": int(spec.get("declared_size", size))},
                               "_size": size, "_content_b64": content_b64,
                               "_content_seed": spec.get("content_seed", number)}
        self.by_display[f"artifact-{number}"] = don
        return don

    def artifact_bytes(self, art: dict, start: int, length: int) -> bytes:
        if art.get("_content_b64") is not None:
            return base64.b64decode(art["_content_b64"])[start:start + length]
        return generated_bytes(art["_content_seed"], start, length)

    # rendering ------------------------------------------------------------
    def org_summary(self, org_id: str) -> dict:
        org = self.orgs[org_id]
        return {"type": "rev_org", "id": org["id"], "display_id": org["display_id"],
                "display_name": org["display_name"]}

    def user_summary(self, user_id: str) -> dict:
        user = self.users.get(user_id)
        if user is None:  # a reference to something this sandbox does not know
            return {"type": "rev_user", "id": user_id}
        out = {"type": user["type"], "id": user["id"], "display_id": user["display_id"]}
        for key in ("display_name", "email", "full_name", "state"):
            if user.get(key) is not None:
                out[key] = user[key]
        if user["type"] == "rev_user":
            out["external_ref"] = user["external_ref"]
            out["rev_org"] = self.org_summary(user["rev_org"])
        return out

    def artifact_summary(self, art_id: str) -> dict:
        art = self.artifacts[art_id]
        return {"id": art["id"], "display_id": art["display_id"], "file": dict(art["file"])}

    def render_user(self, user: dict) -> dict:
        out = self.user_summary(user["id"])
        out.pop("type", None)
        for key in ("created_date", "modified_date", "is_verified", "custom_fields"):
            if user.get(key) is not None:
                out[key] = copy.deepcopy(user[key])
        for key in ("created_by", "modified_by"):
            if user.get(key):
                out[key] = self.user_summary(user[key])
        if user.get("primary_identity"):
            out["primary_identity"] = self.user_summary(user["primary_identity"])
        return out

    def render_work(self, work: dict) -> dict:
        out = {k: copy.deepcopy(v) for k, v in work.items() if not k.startswith("_")}
        out["reported_by"] = [self.user_summary(u) for u in work["reported_by"]]
        out["owned_by"] = [self.user_summary(u) for u in work["owned_by"]]
        out["created_by"] = self.user_summary(work["created_by"])
        out["modified_by"] = self.user_summary(work["modified_by"])
        out["artifacts"] = [self.artifact_summary(a) for a in work.get("artifacts", [])]
        if not out["artifacts"]:
            del out["artifacts"]
        if work.get("rev_org"):
            out["rev_org"] = self.org_summary(work["rev_org"])
        return out

    def render_conversation(self, conv: dict) -> dict:
        out = {k: copy.deepcopy(v) for k, v in conv.items() if not k.startswith("_")}
        out["members"] = [self.user_summary(u) for u in conv["members"]]
        out["owned_by"] = [self.user_summary(u) for u in conv["owned_by"]]
        if not out["owned_by"]:
            del out["owned_by"]
        out["created_by"] = self.user_summary(conv["created_by"])
        out["modified_by"] = self.user_summary(conv["modified_by"])
        return out

    def render_entry(self, entry: dict) -> dict:
        parent = self.works.get(entry["object"]) or self.conversations.get(entry["object"])
        out = {k: copy.deepcopy(v) for k, v in entry.items() if not k.startswith("_")}
        out["object_display_id"] = parent["display_id"]
        out["object_type"] = "ticket" if entry["object"] in self.works else "conversation"
        out["created_by"] = self.user_summary(entry["created_by"])
        out["modified_by"] = self.user_summary(entry["modified_by"])
        out["artifacts"] = [self.artifact_summary(a) for a in entry["artifacts"]]
        if not out["artifacts"]:
            del out["artifacts"]
        return out

    def render_artifact(self, art: dict) -> dict:
        out = {k: copy.deepcopy(v) for k, v in art.items() if not k.startswith("_")}
        for key in ("created_by",):
            out[key] = self.user_summary(art[key])
        return out

    # persistence and inspection ---------------------------------------------
    def to_json(self) -> dict:
        with self.lock:
            return copy.deepcopy({"devo": self.devo, "seq": self.seq, "orgs": self.orgs, "users": self.users,
                                  "works": self.works, "conversations": self.conversations,
                                  "entries": self.entries, "artifacts": self.artifacts,
                                  "by_display": self.by_display, "keys": self.keys})

    def load_json(self, data: dict) -> None:
        with self.lock:
            for key in ("devo", "seq", "orgs", "users", "works", "conversations", "entries", "artifacts",
                        "by_display", "keys"):
                setattr(self, key, copy.deepcopy(data[key]))

    def dump(self) -> dict:
        """The state as a client would see it (rendered), for tests to diff."""
        with self.lock:
            return {
                "rev_users": {u["id"]: dict(self.render_user(u), _retired=bool(u.get("_retired")),
                                            _state=u["state"])
                              for u in self.users.values() if u["type"] == "rev_user"},
                "works": {w["id"]: self.render_work(w) for w in self.works.values()},
                "conversations": {c["id"]: self.render_conversation(c) for c in self.conversations.values()},
                "timeline_entries": {p: [self.render_entry(e) for e in es] for p, es in self.entries.items()},
                "artifacts": {a["id"]: self.render_artifact(a) for a in self.artifacts.values()},
            }


# --------------------------------------------------------------------------- the API
class DevRevSandbox:
    """The emulator: start() it, point a client at base_url, stop() it.

    token: the one valid token. page_cap: the largest page served. rate_limit:
    (calls, window_seconds) per token, or None. merge_retire_after_gets /
    merge_retire_delay: when a merged secondary retires (whichever comes first).
    merge_outcome: "404" | "primary_identity" | "deactivated". validator: called as
    validator(endpoint, request_body, status, response_body) for every answer the
    API produced itself (not for injected faults); tests use it for spec conformance.
    """

    def __init__(self, seed: dict | str | None = None, *, token: str = DEFAULT_TOKEN,
                 page_cap: int = facts.SANDBOX_PAGE_CAP, rate_limit: tuple[int, float] | None = None,
                 merge_retire_after_gets: int | None = 2, merge_retire_delay: float | None = None,
                 merge_outcome: str = facts.MERGE_RETIRE_OUTCOME,
                 merge_moves_references: bool = facts.MERGE_MOVES_REFERENCES,
                 external_ref_conflict_status: int = facts.EXTERNAL_REF_CONFLICT_STATUS,
                 url_ttl: float = 300.0, faults: Faults | None = None,
                 validator: Callable[[str, Any, int, Any], None] | None = None,
                 state_file: str | None = None, port: int = 0, files_port: int = 0,
                 clock: Callable[[], float] = time.time,
                 on_request: Callable[["DevRevSandbox", dict], None] | None = None):
        self.token = token
        self.page_cap = page_cap
        self.rate_limit = rate_limit
        self.merge_retire_after_gets = merge_retire_after_gets
        self.merge_retire_delay = merge_retire_delay
        self.merge_outcome = merge_outcome
        self.merge_moves_references = merge_moves_references
        self.external_ref_conflict_status = external_ref_conflict_status
        self.url_ttl = url_ttl
        self.faults = faults or Faults()
        self.validator = validator
        self.on_request = on_request
        self.state_file = state_file
        self.clock = clock
        self.state = SandboxState(clock=clock)
        if state_file and os.path.exists(state_file):
            with open(state_file, encoding="utf-8") as fh:
                self.state.load_json(json.load(fh))
        elif seed is not None:
            if isinstance(seed, str):
                with open(seed, encoding="utf-8") as fh:
                    seed = json.load(fh)
            self.state.load_seed(seed)
        self.request_log: list[dict] = []
        self._log_lock = threading.Lock()
        self._scripted: dict[str, deque] = {}
        self._rng = random.Random(self.faults.seed)
        self._burst_left = 0
        self._window_start: float | None = None
        self._window_used = 0
        self._secret = os.urandom(16)
        self._ports = (port, files_port)
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.base_url = self.files_base_url = ""

    # lifecycle ---------------------------------------------------------------
    def start(self) -> "DevRevSandbox":
        sandbox = self

        class ApiHandler(_Handler):
            def handle_request(self, method):
                sandbox._handle_api(self, method)

        class FilesHandler(_Handler):
            def handle_request(self, method):
                sandbox._handle_file(self, method)

        for port, handler in zip(self._ports, (ApiHandler, FilesHandler)):
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.base_url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.files_base_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        # shut both servers down at once: each shutdown() waits up to a poll interval
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self._servers:
            server.server_close()
        self._servers.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # inspection --------------------------------------------------------------
    def dump(self) -> dict:
        return self.state.dump()

    def key_id(self, key: str) -> str:
        """The DON of a seed key (or display id)."""
        return self.state._ref(key)

    def api_calls(self) -> list[dict]:
        with self._log_lock:
            return [e for e in self.request_log if e["server"] == "api"]

    def writes(self) -> list[dict]:
        """Every write call that changed state (answered or not)."""
        with self._log_lock:
            return [e for e in self.request_log if e.get("applied")]

    def write_attempts(self) -> list[dict]:
        with self._log_lock:
            return [e for e in self.request_log if e.get("endpoint") in WRITE_ENDPOINTS]

    def clear_log(self) -> None:
        with self._log_lock:
            self.request_log.clear()

    def add_ticket(self, spec: dict) -> str:
        """Create a ticket (or, with "type": "issue", an issue) now, as an integration would,
        from a seed-format spec; returns its DON."""
        with self.state.lock:
            number = 1 + max((int(w["display_id"].split("-")[1]) for w in self.state.works.values()), default=0)
            self.state._seed_work(spec, number)
            self._persist()
            return self.state.don(spec.get("type", "ticket"), str(number))

    def script(self, endpoint: str, *answers: Scripted) -> None:
        """Answer the next calls of `endpoint` with these canned answers, in order."""
        self._scripted.setdefault(endpoint, deque()).extend(answers)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._burst_left = 0

    def _log(self, entry: dict) -> dict:
        with self._log_lock:
            entry["seq"] = len(self.request_log) + 1
            self.request_log.append(entry)
        return entry

    # the API server ------------------------------------------------------------
    def _handle_api(self, handler: "_Handler", method: str) -> None:
        parts = urlsplit(handler.path)
        endpoint = parts.path.lstrip("/")
        raw = handler.read_body()
        auth_header = handler.headers.get("Authorization")
        entry = self._log({"server": "api", "method": method, "path": parts.path, "endpoint": endpoint,
                           "auth": auth_header is not None, "t": time.time(), "thread": threading.get_ident()})
        try:
            body = self._parse_request(method, endpoint, raw, parts.query)
            entry["body"] = body
        except ApiError as exc:
            entry["body"] = _safe_text(raw)
            body = None
            parse_error = exc
        else:
            parse_error = None

        if not self._authorized(auth_header):
            return self._answer(handler, entry, endpoint, body, ApiError(401, "unauthenticated",
                                "missing or invalid authorization token"))
        fault = self._pick_fault(endpoint)
        if fault is not None:
            return self._answer_fault(handler, entry, fault)
        limited = self._rate_limited()
        if limited is not None:
            entry["fault"] = "rate_limit"
            return self._answer(handler, entry, endpoint, body, limited, validate=True)
        self._sleep_latency()
        if parse_error is not None:
            return self._answer(handler, entry, endpoint, body, parse_error)
        version = handler.headers.get(facts.API_VERSION_HEADER)
        if version is not None and version not in facts.ACCEPTED_API_VERSIONS:
            return self._answer(handler, entry, endpoint, body,
                                ApiError(400, "invalid_api_version", f"unsupported API version {version!r}",
                                         value=version))
        route = ROUTES.get(endpoint)
        if route is None:
            return self._answer(handler, entry, endpoint, body, ApiError(404, None, "route not found"))
        if method == "GET" and not route.readonly:  # no such route: not this operation's answer to validate
            return self._answer(handler, entry, endpoint, body, ApiError(404, None, "route not found"),
                                validate=False)
        drop_after = (endpoint in WRITE_ENDPOINTS and self.faults.drop_after_write_rate
                      and self._chance(self.faults.drop_after_write_rate))
        try:
            with self.state.lock:
                result = route.func(self, body)
                if endpoint in WRITE_ENDPOINTS:
                    entry["applied"] = True
                    self._persist()
        except ApiError as exc:
            result = exc
        if self.on_request is not None:
            self.on_request(self, entry)
        if drop_after and entry.get("applied"):
            entry["fault"] = "drop_after_write"
            entry["status"] = None
            return handler.drop()
        self._answer(handler, entry, endpoint, body, result)

    def _parse_request(self, method: str, endpoint: str, raw: bytes, query: str) -> dict:
        if method == "GET":
            body: dict = {}
            route = ROUTES.get(endpoint)
            for name, values in parse_qs(query, keep_blank_values=True).items():
                value = values[-1]
                if route and name in route.array_fields:
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
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "parse_error", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "request body must be a JSON object")
        return body

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        token = header[7:].strip() if header.lower().startswith("bearer ") else header.strip()
        return hmac.compare_digest(token.encode(), self.token.encode())

    def _chance(self, share: float) -> bool:
        with self._log_lock:
            return self._rng.random() < share

    def _pick_fault(self, endpoint: str):
        queue = self._scripted.get(endpoint)
        if queue:
            try:
                return queue.popleft()
            except IndexError:
                pass
        f = self.faults
        with self._log_lock:
            rng = self._rng
            if self._burst_left > 0:
                self._burst_left -= 1
                return "429"
            if f.burst_429_rate and rng.random() < f.burst_429_rate:
                self._burst_left = max(0, f.burst_429_length - 1)
                return "429"
            if f.drop_rate and rng.random() < f.drop_rate:
                return "drop"
            if f.html_502_rate and rng.random() < f.html_502_rate:
                return "502"
            if f.error_rate and rng.random() < f.error_rate:
                return "500" if rng.random() < 0.5 else "503"
        return None

    def _answer_fault(self, handler, entry, fault) -> None:
        if isinstance(fault, Scripted):
            entry["fault"] = "scripted"
            if fault.drop:
                entry["status"] = None
                return handler.drop()
            if isinstance(fault.body, (dict, list)):
                data = json.dumps(fault.body).encode()
            elif isinstance(fault.body, str):
                data = fault.body.encode()
            else:
                data = fault.body or b""
            entry["status"] = fault.status
            return handler.send(fault.status, data, dict({"Content-Type": fault.content_type}, **fault.headers))
        entry["fault"] = fault
        if fault == "drop":
            entry["status"] = None
            return handler.drop()
        if fault == "429":
            retry = self.faults.burst_retry_after
            entry["status"] = 429
            return handler.send(429, _json({"type": "too_many_requests", "message": "too many requests",
                                            "retry_after": retry}),
                                {"Content-Type": "application/json", "Retry-After": str(retry)})
        if fault == "502":
            entry["status"] = 502
            return handler.send(502, b"<html><head><title>502 Bad Gateway</title></head>"
                                     b"<body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"})
        if fault == "500":
            entry["status"] = 500
            return handler.send(500, _json({"type": "internal_error", "message": "internal error",
                                            "reference_id": f"ref-{entry['seq']}"}),
                                {"Content-Type": "application/json"})
        entry["status"] = 503
        return handler.send(503, _json({"type": "service_unavailable", "message": "service unavailable"}),
                            {"Content-Type": "application/json"})

    def _rate_limited(self) -> ApiError | None:
        if not self.rate_limit:
            return None
        calls, window = self.rate_limit
        with self._log_lock:
            now = self.clock()
            if self._window_start is None or now >= self._window_start + window:
                self._window_start, self._window_used = now, 0
            reset = self._window_start + window
            if self._window_used >= calls:
                retry = max(1, math.ceil(reset - now))
                return ApiError(429, "too_many_requests", "rate limit exceeded", retry_after=retry)
            self._window_used += 1
        return None

    def _ratelimit_headers(self) -> dict:
        if not self.rate_limit:
            return {}
        calls, window = self.rate_limit
        with self._log_lock:
            if self._window_start is None:
                return {}
            reset = self._window_start + window
            return {"X-Ratelimit-Limit": str(calls),
                    "X-Ratelimit-Remaining": str(max(0, calls - self._window_used)),
                    "X-Ratelimit-Reset": str(math.ceil(reset))}

    def _sleep_latency(self) -> None:
        f = self.faults
        delay = f.latency + (random.uniform(0, f.latency_jitter) if f.latency_jitter else 0.0)
        if delay > 0:
            time.sleep(delay)

    def _answer(self, handler, entry, endpoint, body, result, validate: bool = True) -> None:
        if isinstance(result, ApiError):
            status, payload = result.status, result.body()
        else:
            status, payload = 200, result
        entry["status"] = status
        if self.validator is not None and validate and endpoint in ROUTES:
            self.validator(endpoint, body, status, payload)
        headers = {"Content-Type": "application/json"}
        headers.update(self._ratelimit_headers())
        if status == 429:
            headers["Retry-After"] = str(payload.get("retry_after", 1))
        handler.send(status, _json(payload), headers)

    def _persist(self) -> None:
        if not self.state_file:
            return
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.state.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    # the files server ---------------------------------------------------------
    def locate_url(self, art: dict) -> tuple[str, float]:
        expires = self.clock() + self.url_ttl
        number = art["display_id"].split("-", 1)[1]
        sig = hmac.new(self._secret, f"{number}:{int(expires)}".encode(), "sha256").hexdigest()[:32]
        return f"{self.files_base_url}/blobs/{number}?expires={int(expires)}&sig={sig}", expires

    def _handle_file(self, handler: "_Handler", method: str) -> None:
        parts = urlsplit(handler.path)
        entry = self._log({"server": "files", "method": method, "path": parts.path,
                           "auth": handler.headers.get("Authorization") is not None, "t": time.time()})
        match = re.fullmatch(r"/blobs/(\d+)", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method != "GET" or not match:
            entry["status"] = 404
            return handler.send(404, b"not found", {"Content-Type": "text/plain"})
        if entry["auth"]:
            # Like a presigned object store: a second credential is an error.
            entry["status"] = 400
            return handler.send(400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                                     b"allowed</Message></Error>", {"Content-Type": "application/xml"})
        number = match.group(1)
        expected = hmac.new(self._secret, f"{number}:{query.get('expires', '')}".encode(), "sha256").hexdigest()[:32]
        try:
            expired = self.clock() > float(query.get("expires", "0"))
        except ValueError:
            expired = True
        if not hmac.compare_digest(expected, query.get("sig", "")) or expired:
            entry["status"] = 403
            return handler.send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired"
                                     b"</Message></Error>", {"Content-Type": "application/xml"})
        with self.state.lock:
            art = self.state.artifacts.get(self.state.by_display.get(f"artifact-{number}", ""))
            art = copy.deepcopy(art) if art else None
        if art is None:
            entry["status"] = 404
            return handler.send(404, b"no such object", {"Content-Type": "text/plain"})
        entry["status"] = 200
        handler.send_stream(200, art["_size"], lambda start, n: self.state.artifact_bytes(art, start, n),
                            {"Content-Type": art["file"]["type"]}, self.faults.download_bytes_per_second)


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _safe_text(raw: bytes) -> str:
    return raw[:2000].decode("utf-8", "replace")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
    # client's delayed ACK add ~40 ms to every answer
    disable_nagle_algorithm = True

    def do_POST(self):
        self.handle_request("POST")

    def do_GET(self):
        self.handle_request("GET")

    def handle_request(self, method):  # replaced per server
        raise NotImplementedError

    def log_message(self, *args):  # keep test output clean
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, data: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_stream(self, status, size, read, headers, bytes_per_second=None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = 256 * 1024 if not bytes_per_second else max(1024, int(bytes_per_second / 20))
        sent = 0
        try:
            while sent < size:
                n = min(chunk, size - sent)
                self.wfile.write(read(sent, n))
                sent += n
                if bytes_per_second:
                    time.sleep(n / bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- endpoints
@dataclass
class Route:
    func: Callable[[DevRevSandbox, dict], dict]
    readonly: bool
    fields: frozenset          # accepted top-level request fields
    array_fields: frozenset = frozenset()


ROUTES: dict[str, Route] = {}
_PAGING = {"cursor", "limit", "mode"}


def route(endpoint: str, *, fields: set, readonly: bool, arrays: set = frozenset()):
    def register(func):
        def checked(sandbox: DevRevSandbox, body: dict) -> dict:
            unknown = sorted(set(body) - fields)
            if unknown:
                raise ApiError(400, "bad_request", f"the sandbox does not support field {unknown[0]!r} on {endpoint}",
                               )
            return func(sandbox, body)
        ROUTES[endpoint] = Route(checked, readonly, frozenset(fields), frozenset(arrays))
        return func
    return register


def _require(body: dict, name: str, kind=str):
    value = body.get(name)
    if value is None:
        raise ApiError(400, "missing_required_field", f"field {name} is required", field_name=name)
    if not isinstance(value, kind):
        raise ApiError(400, "invalid_field", f"field {name} has the wrong JSON type", field_name=name)
    return value


def _resolve(sb: DevRevSandbox, value: Any, field_name: str, table: dict, *, reference: bool = False) -> dict:
    """Find an object by DON (or display id where DevRev is known to take one)."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_id", f"invalid id in {field_name}", field_name=field_name)
    state = sb.state
    if not value.startswith("don:"):
        if reference and not facts.DISPLAY_IDS_ACCEPTED_IN_REFERENCES:
            raise ApiError(400, "invalid_id", f"{field_name} must be an object id (DON), got {value!r}",
                           field_name=field_name)
        value = state.by_display.get(value, value)
    obj = table.get(value)
    if obj is None or obj.get("_gone"):
        raise ApiError(404, "not_found", f"object {value} not found")
    return obj


def _id_list(sb, body: dict, name: str, table: dict) -> list[str] | None:
    if name not in body:
        return None
    values = body[name]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError(400, "invalid_field", f"{name} must be an array of ids", field_name=name)
    for value in values:
        if not value.startswith("don:") and not facts.DISPLAY_IDS_ACCEPTED_IN_REFERENCES:
            raise ApiError(400, "invalid_id", f"{name} must hold object ids (DONs), got {value!r}", field_name=name)
    return [sb.state.by_display.get(v, v) for v in values]


def _set_field(sb, body: dict, name: str, *, allow_empty: bool) -> list[str] | None:
    """`reported_by` / `members` / `owned_by` take {"set": [ids]} and nothing else."""
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
    resolved = []
    for value in ids:
        user = _resolve(sb, value, name, sb.state.users, reference=True)
        if _is_retired(sb, user):
            raise ApiError(404, "not_found", f"user {value} not found")
        resolved.append(user["id"])
    return resolved


def _page(sb: DevRevSandbox, body: dict, items: list[dict], filters_key: str) -> tuple[list[dict], str | None]:
    """Keyset pagination, newest first: an opaque cursor bound to the filters."""
    limit = body.get("limit", facts.PAGE_LIMIT)
    if not isinstance(limit, int) or limit < 1:
        raise ApiError(400, "invalid_field", "limit must be a positive integer", field_name="limit")
    limit = min(limit, sb.page_cap)
    mode = body.get("mode", "after")
    if mode not in ("after", "before"):
        raise ApiError(400, "invalid_enum_value", "mode must be after or before", field_name="mode",
                       value=str(mode), allowed_values=["after", "before"])
    digest = hashlib.sha256(filters_key.encode()).hexdigest()[:12]
    items = sorted(items, key=lambda o: o["_seq"], reverse=True)
    cursor = body.get("cursor")
    if cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
            after, bound = int(data["k"]), data["f"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ApiError(400, "invalid_field", "invalid cursor", field_name="cursor") from None
        if bound != digest:
            raise ApiError(400, "invalid_field", "cursor does not match the filters", field_name="cursor")
        items = [o for o in items if o["_seq"] < after]
    page = items[:limit]
    next_cursor = None
    if len(items) > limit:
        next_cursor = base64.urlsafe_b64encode(json.dumps({"k": page[-1]["_seq"], "f": digest}).encode()).decode()
    return page, next_cursor


def _filters_key(body: dict) -> str:
    return json.dumps({k: v for k, v in body.items() if k not in _PAGING}, sort_keys=True)


def _listing(key: str, page: list[dict], next_cursor: str | None) -> dict:
    out = {key: page}
    if next_cursor:
        out["next_cursor"] = next_cursor
    return out


def _touch(sb: DevRevSandbox, obj: dict) -> None:
    obj["modified_date"] = sb.state.now()
    obj["modified_by"] = sb.state.admin_id


def _is_retired(sb: DevRevSandbox, user: dict) -> bool:
    """Retire a merged secondary once its delay or poll count is reached."""
    pending = user.get("_merge")
    if pending and not user.get("_retired"):
        due = pending.get("gets_left") is not None and pending["gets_left"] <= 0
        due = due or (pending.get("at") is not None and sb.clock() >= pending["at"])
        if due:
            user["_retired"] = True
            if sb.merge_outcome == "404":
                user["_gone"] = True
                user["state"] = "deleted"
            elif sb.merge_outcome == "deactivated":
                user["state"] = "deactivated"
            else:
                user["primary_identity"] = pending["primary"]
            if sb.merge_moves_references:
                _move_references(sb, user["id"], pending["primary"])
            sb._persist()
    return bool(user.get("_retired"))


def _move_references(sb: DevRevSandbox, old: str, new: str) -> None:
    for obj, key in [(w, "reported_by") for w in sb.state.works.values()] + \
                    [(c, "members") for c in sb.state.conversations.values()]:
        if old in obj[key]:
            swapped = [new if u == old else u for u in obj[key]]
            obj[key] = list(dict.fromkeys(swapped))


@route("rev-users.get", fields={"id"}, readonly=True)
def _rev_users_get(sb: DevRevSandbox, body: dict) -> dict:
    user = _resolve(sb, _require(body, "id"), "id", sb.state.users)
    if user["type"] != "rev_user":
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    pending = user.get("_merge")
    if pending and pending.get("gets_left") is not None:
        pending["gets_left"] -= 1
    if _is_retired(sb, user) and user.get("_gone"):
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    return {"rev_user": sb.state.render_user(user)}


@route("rev-users.list", fields={"email", "external_ref", "rev_org"} | _PAGING, readonly=True,
       arrays={"email", "external_ref", "rev_org"})
def _rev_users_list(sb: DevRevSandbox, body: dict) -> dict:
    emails, refs = body.get("email"), body.get("external_ref")
    for name in ("email", "external_ref"):
        if name in body and (not isinstance(body[name], list) or not all(isinstance(v, str) for v in body[name])):
            raise ApiError(400, "invalid_field", f"{name} must be an array of strings", field_name=name)
    orgs = _id_list(sb, body, "rev_org", sb.state.orgs)
    items = [u for u in sb.state.users.values() if u["type"] == "rev_user" and not
             (_is_retired(sb, u) and u.get("_gone"))
             and (emails is None or u.get("email") in emails)
             and (refs is None or u.get("external_ref") in refs)
             and (orgs is None or u.get("rev_org") in orgs)]
    page, cursor = _page(sb, body, items, "rev-users.list" + _filters_key(body))
    return _listing("rev_users", [sb.state.render_user(u) for u in page], cursor)


@route("rev-users.update", fields={"id", "external_ref", "display_name", "description"}, readonly=False)
def _rev_users_update(sb: DevRevSandbox, body: dict) -> dict:
    user = _resolve(sb, _require(body, "id"), "id", sb.state.users)
    if user["type"] != "rev_user" or (_is_retired(sb, user) and user.get("_gone")):
        raise ApiError(404, "not_found", f"rev user {body['id']} not found")
    if "external_ref" in body:
        ref = _require(body, "external_ref")
        if not ref.strip():
            raise ApiError(400, "invalid_field", "external_ref must not be empty", field_name="external_ref")
        for other in sb.state.users.values():
            if other is not user and other["type"] == "rev_user" and other.get("external_ref") == ref \
                    and not _is_retired(sb, other):
                raise ApiError(sb.external_ref_conflict_status,
                               "conflict" if sb.external_ref_conflict_status == 409 else "bad_request",
                               f"external_ref {ref!r} is already used by another contact")
        user["external_ref"] = ref
    for name in ("display_name", "description"):
        if name in body:
            user[name] = _require(body, name)
    _touch(sb, user)
    return {"rev_user": sb.state.render_user(user)}


@route("rev-users.merge", fields={"primary_user", "secondary_user"}, readonly=False)
def _rev_users_merge(sb: DevRevSandbox, body: dict) -> dict:
    _require(body, "primary_user")
    _require(body, "secondary_user")
    primary = _resolve(sb, body["primary_user"], "primary_user", sb.state.users, reference=True)
    secondary = _resolve(sb, body["secondary_user"], "secondary_user", sb.state.users, reference=True)
    for user, name in ((primary, "primary_user"), (secondary, "secondary_user")):
        if user["type"] != "rev_user" or _is_retired(sb, user):
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
    secondary["_merge"] = {"primary": primary["id"],
                           "gets_left": sb.merge_retire_after_gets,
                           "at": None if sb.merge_retire_delay is None else sb.clock() + sb.merge_retire_delay}
    return {}


@route("works.get", fields={"id"}, readonly=True)
def _works_get(sb: DevRevSandbox, body: dict) -> dict:
    work = _resolve(sb, _require(body, "id"), "id", sb.state.works)
    return {"work": sb.state.render_work(work)}


@route("works.list", fields={"type", "reported_by", "owned_by"} | _PAGING, readonly=True,
       arrays={"type", "reported_by", "owned_by"})
def _works_list(sb: DevRevSandbox, body: dict) -> dict:
    types = body.get("type")
    if types is not None and (not isinstance(types, list) or not set(types) <= {"issue", "ticket"}):
        raise ApiError(400, "invalid_enum_value", "type must be a list of issue|ticket", field_name="type",
                       value=json.dumps(types), allowed_values=["issue", "ticket"])
    reporters = _id_list(sb, body, "reported_by", sb.state.users)
    owners = _id_list(sb, body, "owned_by", sb.state.users)
    items = [w for w in sb.state.works.values()
             if (types is None or w["type"] in types)
             and (reporters is None or set(reporters) & set(w["reported_by"]))
             and (owners is None or set(owners) & set(w["owned_by"]))]
    page, cursor = _page(sb, body, items, "works.list" + _filters_key(body))
    return _listing("works", [sb.state.render_work(w) for w in page], cursor)


@route("works.update", fields={"id", "type", "reported_by", "owned_by"}, readonly=False)
def _works_update(sb: DevRevSandbox, body: dict) -> dict:
    work = _resolve(sb, _require(body, "id"), "id", sb.state.works)
    if "type" in body and body["type"] != work["type"]:
        raise ApiError(400, "bad_request", f"type {body['type']!r} does not match the work's type")
    reporters = _set_field(sb, body, "reported_by", allow_empty=True)
    owners = _set_field(sb, body, "owned_by", allow_empty=False)
    if reporters is not None:
        work["reported_by"] = reporters
    if owners is not None:
        work["owned_by"] = owners
    _touch(sb, work)
    return {"work": sb.state.render_work(work)}


@route("conversations.get", fields={"id"}, readonly=True)
def _conversations_get(sb: DevRevSandbox, body: dict) -> dict:
    conv = _resolve(sb, _require(body, "id"), "id", sb.state.conversations)
    return {"conversation": sb.state.render_conversation(conv)}


@route("conversations.list", fields={"members", "owned_by"} | _PAGING, readonly=True, arrays={"members", "owned_by"})
def _conversations_list(sb: DevRevSandbox, body: dict) -> dict:
    members = _id_list(sb, body, "members", sb.state.users)
    owners = _id_list(sb, body, "owned_by", sb.state.users)
    items = [c for c in sb.state.conversations.values()
             if (members is None or set(members) & set(c["members"]))
             and (owners is None or set(owners) & set(c["owned_by"]))]
    page, cursor = _page(sb, body, items, "conversations.list" + _filters_key(body))
    return _listing("conversations", [sb.state.render_conversation(c) for c in page], cursor)


@route("conversations.update", fields={"id", "members"}, readonly=False)
def _conversations_update(sb: DevRevSandbox, body: dict) -> dict:
    conv = _resolve(sb, _require(body, "id"), "id", sb.state.conversations)
    members = _set_field(sb, body, "members", allow_empty=False)
    if members is not None:
        conv["members"] = members
    _touch(sb, conv)
    return {"conversation": sb.state.render_conversation(conv)}


@route("timeline-entries.list", fields={"object", "visibility"} | _PAGING, readonly=True, arrays={"visibility"})
def _timeline_list(sb: DevRevSandbox, body: dict) -> dict:
    object_id = _require(body, "object")
    table = {**sb.state.works, **sb.state.conversations}
    parent = _resolve(sb, object_id, "object", table)
    visibility = body.get("visibility")
    if visibility is not None and (not isinstance(visibility, list) or
                                   not set(visibility) <= {"external", "internal", "private", "public"}):
        raise ApiError(400, "invalid_enum_value", "visibility must be a list of external|internal|private|public",
                       field_name="visibility", value=json.dumps(visibility),
                       allowed_values=["external", "internal", "private", "public"])
    items = [e for e in sb.state.entries.get(parent["id"], [])
             if (visibility is None or e["visibility"] in visibility)
             and (e["visibility"] != "private" or e["created_by"] == sb.state.admin_id)]
    page, cursor = _page(sb, body, items, "timeline-entries.list" + _filters_key(body))
    return _listing("timeline_entries", [sb.state.render_entry(e) for e in page], cursor)


@route("timeline-entries.get", fields={"id"}, readonly=True)
def _timeline_get(sb: DevRevSandbox, body: dict) -> dict:
    entry_id = _require(body, "id")
    for entries in sb.state.entries.values():
        for entry in entries:
            if entry["id"] == entry_id and (entry["visibility"] != "private"
                                            or entry["created_by"] == sb.state.admin_id):
                return {"timeline_entry": sb.state.render_entry(entry)}
    raise ApiError(404, "not_found", f"timeline entry {entry_id} not found")


@route("artifacts.get", fields={"id", "version"}, readonly=True)
def _artifacts_get(sb: DevRevSandbox, body: dict) -> dict:
    art = _resolve(sb, _require(body, "id"), "id", sb.state.artifacts)
    return {"artifact": sb.state.render_artifact(art),
            "version": {"version": "1", "timestamp": art["created_date"]}}


@route("artifacts.locate", fields={"id", "version"}, readonly=True)
def _artifacts_locate(sb: DevRevSandbox, body: dict) -> dict:
    art = _resolve(sb, _require(body, "id"), "id", sb.state.artifacts)
    url, expires = sb.locate_url(art)
    return {"url": url, "expires_at": iso(expires)}


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the local DevRev emulator until Ctrl-C.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--files-port", type=int, default=0, help="port of the attachment host (default: any)")
    parser.add_argument("--seed", help="seed JSON file (see sandbox_dataset.py)")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--rate-limit", metavar="CALLS/SECONDS", help="server-side limit, e.g. 600/60")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    args = parser.parse_args(argv)
    rate_limit = None
    if args.rate_limit:
        try:
            calls, seconds = args.rate_limit.split("/")
            rate_limit = (int(calls), float(seconds))
        except ValueError:
            parser.error("--rate-limit must look like 600/60")
    if args.seed and not os.path.isfile(args.seed):
        parser.error(f"seed file not found: {args.seed}")
    sandbox = DevRevSandbox(args.seed, token=args.token, rate_limit=rate_limit, port=args.port,
                            files_port=args.files_port, faults=Faults(latency=args.latency)).start()
    print(f"DevRev sandbox on {sandbox.base_url} (attachments on {sandbox.files_base_url}); Ctrl-C stops it.")
    print(f"  export DEVREV_BASE_URL={sandbox.base_url} DEVREV_API_TOKEN={args.token}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
