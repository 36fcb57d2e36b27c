"""The emulator's two HTTP servers on 127.0.0.1: the DevRev API and the attachment host.

The API server checks the token, injects the configured faults, applies the server-side
rate limit, parses the request and hands it to its route; every call is logged (without
the token) for tests to inspect. The attachment host serves artifact bytes from
presigned, expiring URLs, without auth, like an object store, and takes the uploads
artifacts.prepare presigns (a multipart/form-data POST, like an object store's).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
import math
import os
import re
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from devrev_api import assumptions as facts
from plumbing.files import atomic_write_bytes

from .endpoints import ROUTES, WRITE_ENDPOINTS, Settings
from .errors import ApiError, json_bytes
from .faults import ENDLESS_BODY_CAP, JSON, FaultAnswer, FaultInjector, Faults, RateLimiter, Scripted, retry_after_value
from .modes import MODE_NAMES, BehaviourModes
from .state import SandboxState, iso
from .validation import parse_request

DEFAULT_TOKEN = "sandbox-token"
# DevRev's documented window (5 minutes) with a quota no test or rehearsal reaches, so
# every answer carries X-Ratelimit-* headers as DevRev's do; pass rate_limit=None for none.
DEFAULT_RATE_LIMIT = (100_000, float(facts.RATE_LIMIT_WINDOW_SECONDS))
# The largest upload the file host takes (a bigger one: 400 EntityTooLarge, nothing stored).
UPLOAD_MAX_BYTES = 64 * 1024 * 1024


class DevRevSandbox:
    """The emulator: start() it, point a client at base_url, stop() it.

    token: the one valid token. page_cap: the largest page served. rate_limit:
    (calls, window_seconds) per token, calls per DevRev's 5-minute window, or None (no
    limit, no X-Ratelimit-* headers); the default is DEFAULT_RATE_LIMIT. rate_limit_shared:
    calls other integrations of the same token spend at the start of every window (DevRev's
    quota is per user, across all of that user's clients). modes: how to play DevRev where its
    behaviour is unknown (BehaviourModes); each mode may also be given as a keyword of
    its name (merge_retire_after_gets=1, merge_outcome="deactivated", ...), which wins
    over `modes`, and read or set as an attribute of that name. validator: called as
    validator(endpoint, request_body, status, response_body) for every answer the
    API produced itself (not for injected faults); tests use it for spec conformance.
    on_request(sandbox, log_entry) is called after each routed call, holding no lock.
    Raises TypeError for an unknown keyword, ValueError for a bad mode value.
    """

    def __init__(self, seed: dict | str | None = None, *, token: str = DEFAULT_TOKEN,
                 page_cap: int = facts.SANDBOX_PAGE_CAP,
                 rate_limit: tuple[int, float] | int | None = DEFAULT_RATE_LIMIT, rate_limit_shared: int = 0,
                 modes: BehaviourModes | None = None,
                 url_ttl: float = 300.0, faults: Faults | None = None,
                 validator: Callable[[str, Any, int, Any], None] | None = None,
                 state_file: str | None = None, port: int = 0, files_port: int = 0,
                 clock: Callable[[], float] = time.time,
                 on_request: Callable[["DevRevSandbox", dict], None] | None = None, **mode_values):
        unknown = sorted(set(mode_values) - set(MODE_NAMES))
        if unknown:
            raise TypeError(f"DevRevSandbox() got an unexpected keyword argument {unknown[0]!r}")
        self.token = token
        self.page_cap = page_cap
        self.modes = replace(modes or BehaviourModes(), **mode_values)
        self.url_ttl = url_ttl
        self.validator = validator
        self.on_request = on_request
        self.state_file = state_file
        self.clock = clock
        self.state = SandboxState(clock=clock)
        if state_file and os.path.exists(state_file):
            self.state.load_json(_read_json(state_file))
        elif seed is not None:
            self.state.load_seed(_read_json(seed) if isinstance(seed, str) else seed)
        self.request_log: list[dict] = []
        self._log_lock = threading.Lock()
        self._injector = FaultInjector(faults or Faults())
        self._scripted = self._injector.scripted   # endpoint -> queue of canned answers (tests inspect it)
        if isinstance(rate_limit, int):  # calls per DevRev's 5-minute window
            rate_limit = (rate_limit, float(facts.RATE_LIMIT_WINDOW_SECONDS))
        self._limiter = RateLimiter(rate_limit, clock, rate_limit_shared)
        self._secret = os.urandom(16)
        self._issued: dict[str, float] = {}   # a download URL's signature -> when it was last issued
        self._ports = (port, files_port)
        self._servers: list[ThreadingHTTPServer] = []
        self.base_url = self.files_base_url = ""

    # lifecycle ---------------------------------------------------------------
    def start(self) -> "DevRevSandbox":
        for port, serve in zip(self._ports, (self._handle_api, self._handle_file)):
            # answers carry the emulator's own time in their Date header (a fake clock's, in tests)
            handler = type("Handler", (_Handler,), {"serve": staticmethod(serve),
                                                    "now": staticmethod(lambda: self.clock())})
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
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

    # configuration -----------------------------------------------------------
    @property
    def rate_limit(self) -> tuple[int, float] | None:
        return self._limiter.limit

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    def set_faults(self, faults: Faults) -> None:
        self._injector.set_faults(faults)

    def script(self, endpoint: str, *answers: Scripted) -> None:
        """Answer the next calls of `endpoint` with these canned answers, in order."""
        self._injector.script(endpoint, answers)

    def settings(self) -> Settings:
        """The knobs the endpoint handlers read, as configured now."""
        return Settings(page_cap=self.page_cap, modes=self.modes, locate_url=self.locate_url,
                        upload_form=self.upload_form)

    # inspection --------------------------------------------------------------
    def dump(self) -> dict:
        return self.state.dump()

    def key_id(self, key: str) -> str:
        """The DON of a seed key (or display id)."""
        return self.state.ref(key)

    def _log_where(self, keep: Callable[[dict], bool]) -> list[dict]:
        with self._log_lock:
            return [e for e in self.request_log if keep(e)]

    def api_calls(self) -> list[dict]:
        return self._log_where(lambda e: e["server"] == "api")

    def writes(self) -> list[dict]:
        """Every write call that changed state (answered or not), uploads to the file host
        included (server "files", endpoint "upload")."""
        return self._log_where(lambda e: bool(e.get("applied")))

    def write_attempts(self) -> list[dict]:
        return self._log_where(lambda e: e.get("endpoint") in WRITE_ENDPOINTS)

    def clear_log(self) -> None:
        with self._log_lock:
            self.request_log.clear()

    def add_ticket(self, spec: dict) -> str:
        """Create a ticket (or, with "type": "issue", an issue) now, as an integration would,
        from a seed-format spec; returns its DON."""
        with self.state.lock:
            don = self.state.add_work(spec)
            self._persist()
            return don

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
        route = ROUTES.get(endpoint)
        body, parse_error = None, None
        try:
            body = parse_request(method, raw, parts.query, route.array_fields if route else frozenset())
            entry["body"] = body
        except ApiError as exc:
            entry["body"], parse_error = raw[:2000].decode("utf-8", "replace"), exc

        if not self._authorized(auth_header):
            return self._answer(handler, entry, body,
                                ApiError(401, "unauthenticated", "missing or invalid authorization token"))
        if self.faults.endless_body == endpoint:
            entry["fault"], entry["status"] = "endless", 200
            return handler.send_endless(b'{"%s":[' % endpoint.split(".")[0].encode(), b'{"id":"x"},', JSON)
        refused = self._injector.token_refused()
        if refused is not None:
            entry["fault"] = "token_refused"
            return self._answer(handler, entry, body, refused)
        until = self._injector.throttled_until(endpoint, self.clock())
        if until is not None:
            entry["fault"] = "throttle"
            return self._answer(handler, entry, body, ApiError(429, "too_many_requests", "throttled",
                                                               retry_after=max(1, math.ceil(until - self.clock()))),
                                until=until)
        fault = self._injector.pick(endpoint, entry["seq"])
        if fault is not None:
            return self._answer_fault(handler, entry, fault)
        limited = self._limiter.check()
        if limited is not None:
            entry["fault"] = "rate_limit"
            return self._answer(handler, entry, body, limited)
        self._injector.sleep_latency()
        refusal = parse_error or _version_refusal(handler)
        if refusal is not None:
            return self._answer(handler, entry, body, refusal)
        if route is None or (method == "GET" and not route.readonly):
            # no such route: not an answer of that operation to validate
            return self._answer(handler, entry, body, ApiError(404, None, "route not found"), validate=False)
        forbidden = self._injector.forbidden(_named_objects(self.state, body)) \
            if endpoint in WRITE_ENDPOINTS else None
        if forbidden is not None:
            entry["fault"] = "forbidden"
            return self._answer(handler, entry, body, forbidden)
        drop_after = (endpoint in WRITE_ENDPOINTS and self.faults.drop_after_write_rate
                      and self._injector.chance(self.faults.drop_after_write_rate))
        result = self._run(route, endpoint, body, entry)
        if self.on_request is not None:
            self.on_request(self, entry)
        if drop_after and entry.get("applied"):
            entry["fault"] = "drop_after_write"
            entry["status"] = None
            return handler.drop()
        self._answer(handler, entry, body, result, ok_status=route.status)

    def _run(self, route, endpoint: str, body: dict, entry: dict):
        """Apply the route under the state lock; persist what changed."""
        with self.state.lock:
            try:
                result = route.func(self.state, self.settings(), body)
                if endpoint in WRITE_ENDPOINTS:
                    entry["applied"] = True
                    self.state.changed = True
                return result
            except ApiError as exc:
                return exc
            finally:
                if self.state.changed:
                    self._persist()

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        token = header[7:].strip() if header.lower().startswith("bearer ") else header.strip()
        return hmac.compare_digest(token.encode(), self.token.encode())

    def _answer_fault(self, handler: "_Handler", entry: dict, fault: FaultAnswer) -> None:
        entry["fault"], entry["status"] = fault.kind, fault.status
        if fault.status is None:
            return handler.drop()
        headers = dict(fault.headers)
        if fault.kind == "429" and "Retry-After" in headers:  # a burst's (scripted answers go as written)
            headers["Retry-After"] = retry_after_value(float(headers["Retry-After"]), self.modes.retry_after_form,
                                                       self.clock())
        handler.send(fault.status, fault.data, headers)

    def _answer(self, handler: "_Handler", entry: dict, body, result, validate: bool = True,
                ok_status: int = 200, until: float | None = None) -> None:
        """Send a route's answer (or ApiError); a 429's Retry-After in the modes' form
        (`until`: the end of a throttle window, so every 429 of it names the same moment)."""
        if isinstance(result, ApiError):
            status, payload = result.status, result.body()
        else:
            status, payload = ok_status, result
        entry["status"] = status
        if self.validator is not None and validate and entry["endpoint"] in ROUTES:
            self.validator(entry["endpoint"], body, status, payload)
        headers = {"Content-Type": JSON}
        headers.update(self._limiter.headers(self.modes.server_clock_skew,
                                             fractional=self.modes.rate_limit_reset == "fractional"))
        if status == 429:
            now = self.clock()
            seconds = until - now if until is not None else float(payload.get("retry_after", 1))
            headers["Retry-After"] = retry_after_value(seconds, self.modes.retry_after_form, now)
        handler.send(status, json_bytes(payload), headers)

    def _persist(self) -> None:
        self.state.changed = False
        if not self.state_file:
            return
        # the emulator's state holds the demo's contacts: private, and never half-written
        atomic_write_bytes(self.state_file, json.dumps(self.state.to_json()).encode("utf-8"))

    # the files server ---------------------------------------------------------
    def _signature(self, number: str, expires: str) -> str:
        return hmac.new(self._secret, f"{number}:{expires}".encode(), "sha256").hexdigest()[:32]

    def locate_url(self, art: dict) -> tuple[str, float]:
        """A presigned URL of the artifact's bytes on the file host, and its expiry (epoch s)."""
        expires = self.clock() + self.url_ttl
        number = art["display_id"].split("-", 1)[1]
        sig = self._signature(number, str(int(expires)))
        self._issued[sig] = self.clock()   # modes.download_url_refused_seconds counts from here
        return f"{self.files_base_url}/blobs/{number}?expires={int(expires)}&sig={sig}", expires

    def upload_form(self, art: dict) -> tuple[str, list[dict], float]:
        """The presigned POST of a prepared artifact: the file host's URL for it, the form
        fields an upload must carry as they are (an object store's key, content type, policy
        and signature), and when they expire (epoch s)."""
        expires = self.clock() + self.url_ttl
        number = art["display_id"].split("-", 1)[1]
        key = f"{self.state.devo}/artifacts/{number}/{art['file']['name']}"
        fields = {"key": key}
        if art["file"].get("type"):
            fields["Content-Type"] = art["file"]["type"]
        policy = {"expiration": iso(expires), "conditions": [{k: v} for k, v in fields.items()]}
        fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
        fields["x-amz-signature"] = hmac.new(self._secret, f"upload:{number}:{fields['policy']}".encode(),
                                             hashlib.sha256).hexdigest()
        return f"{self.files_base_url}/upload/{number}", [{"key": k, "value": v} for k, v in fields.items()], expires

    def _handle_file(self, handler: "_Handler", method: str) -> None:
        parts = urlsplit(handler.path)
        entry = self._log({"server": "files", "method": method, "path": parts.path,
                           "auth": handler.headers.get("Authorization") is not None, "t": time.time()})
        upload = re.fullmatch(r"/upload/(\d+)", parts.path)
        if method == "POST" and upload:
            entry["endpoint"] = "upload"   # named like an API call, so writes() can say what changed
            return self._handle_upload(handler, entry, upload.group(1))
        match = re.fullmatch(r"/blobs/(\d+)", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method != "GET" or not match:
            return _send_error(handler, entry, 404, b"not found")
        if entry["auth"]:
            # Like a presigned object store: a second credential is an error.
            return _send_error(handler, entry, 400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth "
                                                    b"mechanism allowed</Message></Error>")
        number = match.group(1)
        expected = self._signature(number, query.get("expires", ""))
        try:
            expired = self.clock() > float(query.get("expires", "0"))
        except ValueError:
            expired = True
        if not hmac.compare_digest(expected, query.get("sig", "")) or expired:
            return _send_error(handler, entry, 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired"
                                                    b"</Message></Error>")
        if self.clock() < self._issued.get(expected, 0.0) + self.modes.download_url_refused_seconds:
            entry["fault"] = "fresh_url_refused"
            return _send_error(handler, entry, 403, b"<Error><Code>AccessDenied</Code><Message>Access Denied"
                                                    b"</Message></Error>")
        art = self.state.artifact_copy(number)
        if art is None or art.get("_pending"):
            return _send_error(handler, entry, 404, b"no such object")
        if self.faults.endless_body == "download":
            entry["fault"], entry["status"] = "endless", 200
            return handler.send_endless(b"", b"\0", art["file"]["type"])
        fault = self._injector.pick_download()
        entry["fault"] = fault
        if fault == "503":
            return _send_error(handler, entry, 503, b"<Error><Code>SlowDown</Code><Message>Please reduce your "
                                                    b"request rate</Message></Error>")
        if fault == "drop":
            entry["status"] = None
            return handler.drop()
        if fault == "stall":
            time.sleep(self.faults.download_stall)
        entry["status"] = 200
        handler.send_stream(200, art["_size"], lambda start, n: self.state.artifact_bytes(art, start, n),
                            {"Content-Type": art["file"]["type"]}, self.faults.download_bytes_per_second,
                            cut_at=art["_size"] // 2 if fault == "cut" else None)


    def _handle_upload(self, handler: "_Handler", entry: dict, number: str) -> None:
        """An upload to a prepared artifact (artifacts.prepare's url): multipart/form-data with
        every form field the artifact was given, as given (else 403), then the bytes as the
        part named "file" (fields after it are ignored, as an object store does); 204 once
        stored. The same form again, while it is valid, replaces the bytes (an object store
        overwrites a key), so an upload whose answer was lost can be sent again."""
        length = handler.headers.get("Content-Length", "")
        if not length.strip().isdigit():
            handler.close_connection = True
            return _send_error(handler, entry, 411, b"<Error><Code>MissingContentLength</Code></Error>")
        if int(length) > UPLOAD_MAX_BYTES:
            handler.close_connection = True
            return _send_error(handler, entry, 400, b"<Error><Code>EntityTooLarge</Code></Error>")
        raw = handler.read_body()
        if entry["auth"]:
            return _send_error(handler, entry, 400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth "
                                                    b"mechanism allowed</Message></Error>")
        form = _multipart_form(handler.headers.get("Content-Type", ""), raw)
        if form is None:
            return _send_error(handler, entry, 400, b"<Error><Code>MalformedPOSTRequest</Code><Message>The body "
                                                    b"of your POST request is not well-formed multipart/form-data."
                                                    b"</Message></Error>")
        fields, file_part = form
        if file_part is None:
            return _send_error(handler, entry, 400, b"<Error><Code>InvalidArgument</Code><Message>POST requires "
                                                    b"exactly one file upload per request.</Message></Error>")
        with self.state.lock:
            status = self.state.store_upload(number, fields, file_part[0], file_part[1])
            if status == 204:
                entry["applied"] = True
                self._persist()
        if status == 404:
            return _send_error(handler, entry, 404, b"<Error><Code>NoSuchUpload</Code></Error>")
        if status == 403:
            return _send_error(handler, entry, 403, b"<Error><Code>AccessDenied</Code><Message>Invalid according "
                                                    b"to Policy</Message></Error>")
        entry["status"] = 204
        handler.send_empty(204)


def _multipart_form(content_type: str, raw: bytes) -> tuple[dict[str, str], tuple[bytes, str | None] | None] | None:
    """A multipart/form-data body as (the text fields before the part named "file", (that
    part's bytes, its content type) or None); None when the body is not such a form."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    if not message.is_multipart() or message.defects:
        return None
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if not isinstance(name, str):
            return None
        if name == "file":
            return fields, (data, part.get_content_type() if part.get("Content-Type") else None)
        fields[name] = data.decode("utf-8", "replace")
    return fields, None


def _mode_attribute(name: str) -> property:
    """DevRevSandbox.<mode>: read modes.<mode>; setting it replaces the (frozen) modes."""
    return property(lambda sandbox: getattr(sandbox.modes, name),
                    lambda sandbox, value: setattr(sandbox, "modes", replace(sandbox.modes, **{name: value})),
                    doc=f"modes.{name}, settable")


for _name in MODE_NAMES:
    setattr(DevRevSandbox, _name, _mode_attribute(_name))


def _named_objects(state: SandboxState, body: Any) -> list[str]:
    """The DONs a write names as its target (`id`, a timeline entry's `object`, a merge's contacts)."""
    if not isinstance(body, dict):
        return []
    return [state.ref(v) for v in (body.get(k) for k in ("id", "object", "secondary_user", "primary_user"))
            if isinstance(v, str)]


def _version_refusal(handler: "_Handler") -> ApiError | None:
    """The 400 for an API version DevRev does not serve, or None."""
    version = handler.headers.get(facts.API_VERSION_HEADER)
    if version is not None and version not in facts.ACCEPTED_API_VERSIONS:
        return ApiError(400, "invalid_api_version", f"unsupported API version {version!r}", value=version)
    return None


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _send_error(handler: "_Handler", entry: dict, status: int, data: bytes) -> None:
    """The file host's error answers: plain text, or XML like an object store's."""
    entry["status"] = status
    handler.send(status, data, {"Content-Type": "application/xml" if data.startswith(b"<") else "text/plain"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
    # client's delayed ACK add ~40 ms to every answer
    disable_nagle_algorithm = True

    serve: Callable[["_Handler", str], None]   # set per server: the API's or the file host's
    now: Callable[[], float]                   # the emulator's clock, for the Date header

    def date_time_string(self, timestamp=None):
        return super().date_time_string(self.now() if timestamp is None else timestamp)

    def do_POST(self):
        self.serve(self, "POST")

    def do_GET(self):
        self.serve(self, "GET")

    def log_message(self, *args):  # keep test output clean
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _head(self, status: int, length: int, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def send_empty(self, status: int) -> None:
        """An answer without a body (204): no Content-Length, as RFC 9110 asks."""
        self.send_response(status)
        self.end_headers()

    def send(self, status: int, data: bytes, headers: dict) -> None:
        self._head(status, len(data), headers)
        self.wfile.write(data)

    def send_stream(self, status, size, read, headers, bytes_per_second=None, cut_at=None) -> None:
        """Send `size` bytes from read(start, n), throttled to bytes_per_second if given;
        cut_at: announce `size` but close the connection after that many bytes."""
        self._head(status, size, headers)
        chunk = 256 * 1024 if not bytes_per_second else max(1024, int(bytes_per_second / 20))
        sent = 0
        end = size if cut_at is None else cut_at
        try:
            while sent < end:
                n = min(chunk, end - sent)
                self.wfile.write(read(sent, n))
                sent += n
                if bytes_per_second:
                    time.sleep(n / bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if cut_at is not None:
            self.drop()

    def send_endless(self, head: bytes, filler: bytes, content_type: str) -> None:
        """A 200 whose body never ends (Faults.endless_body): `head`, then `filler` again and again,
        no Content-Length (the body ends when the connection closes), until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = filler * max(1, (64 * 1024) // len(filler))
        sent = 0
        try:
            self.wfile.write(head)
            while sent < ENDLESS_BODY_CAP:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
