"""Production's bad days, injected per call: latency, 5xx, dropped connections, 429 bursts,
HTML proxy pages, canned (scripted) answers, and a server-side rate limit.

Everything here decides *what* goes wrong and builds the answer's bytes; the server
sends them. The random source is seeded per Faults, so a failing test replays.
"""
from __future__ import annotations

import email.utils
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ApiError, json_bytes

JSON = "application/json"
ENDLESS_BODY_CAP = 1 << 30   # where an endless body (Faults.endless_body) stops if no client hangs up
# a 401's `type` ([C] S15 error-unauthorized) and the emulator's message for it
TOKEN_REFUSALS = {"token_expired": "the token has expired", "token_revoked": "the token was revoked",
                  "dev_org_deactivated": "the dev org is deactivated",
                  "unauthenticated": "missing or invalid authorization token"}


@dataclass
class Scripted:
    """One canned answer for the next call of an endpoint (hostile-API tests)."""
    status: int = 200
    body: Any = None            # dict/list -> JSON; str/bytes -> sent as is
    headers: dict = field(default_factory=dict)
    drop: bool = False          # close the connection without answering
    content_type: str = JSON


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
    # The file host's bad days: this share of attachment fetches fails transiently, each
    # with a kind drawn from download_fault_kinds: "503", "drop" (connection closed before
    # the answer), "cut" (the body stops half-way) or "stall" (download_stall seconds of
    # silence before the answer: a client's read timeout).
    download_error_rate: float = 0.0
    download_fault_kinds: tuple = ("503", "drop", "cut")
    download_stall: float = 2.0
    # One endpoint throttled for a while: from its first call, every call of it is answered
    # 429 until throttle_seconds have passed (by the emulator's clock), each 429 carrying
    # the same Retry-After (the window's end: seconds or a date, per modes.retry_after_form).
    throttle_endpoint: str | None = None
    throttle_seconds: float = 45.0
    # The token refused mid-run: after token_refusal_after calls are served, every call is
    # answered 401 with this `type` (one of TOKEN_REFUSALS, the spec's error-unauthorized).
    token_refusal: str | None = None
    token_refusal_after: int = 0
    # Objects the token may not write (DONs): a write naming one (`id`, or a timeline entry's
    # `object`) is answered 403 forbidden with `object_ids` naming it ([C] S6), nothing changed.
    forbidden_objects: tuple = ()
    # An answer that never ends: every call of this endpoint (or, with "download", every fetch
    # from the file host) is answered 200 with a body that goes on without end (a JSON list
    # opened and never closed; no Content-Length) until the client hangs up (ENDLESS_BODY_CAP).
    endless_body: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.token_refusal is not None and self.token_refusal not in TOKEN_REFUSALS:
            raise ValueError(f"token_refusal must be one of {', '.join(TOKEN_REFUSALS)}")


@dataclass(frozen=True)
class FaultAnswer:
    """What an injected fault sends: status None means the connection is dropped."""
    kind: str                 # "scripted", "drop", "429", "502", "500" or "503"
    status: int | None
    data: bytes = b""
    headers: dict = field(default_factory=dict)


class FaultInjector:
    """Picks the fault (if any) for each call. `scripted` maps endpoint -> queue of
    Scripted answers, served before any random fault."""

    def __init__(self, faults: Faults):
        self.scripted: dict[str, deque] = {}
        self._lock = threading.Lock()
        self.set_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)
            self._burst_left = 0
            self._throttle_end: float | None = None
            self._served = 0

    def token_refused(self) -> ApiError | None:
        """The 401 for this (authorized) call once the token is refused (Faults.token_refusal), else None."""
        f = self.faults
        if f.token_refusal is None:
            return None
        with self._lock:
            self._served += 1
            if self._served <= f.token_refusal_after:
                return None
        return ApiError(401, f.token_refusal, TOKEN_REFUSALS[f.token_refusal])

    def forbidden(self, object_ids: list[str]) -> ApiError | None:
        """The 403 for a write naming an object of Faults.forbidden_objects, else None."""
        named = [i for i in object_ids if i in self.faults.forbidden_objects]
        if not named:
            return None
        return ApiError(403, "forbidden", f"not allowed to write {named[0]}", object_ids=named)

    def throttled_until(self, endpoint: str, now: float) -> float | None:
        """The end of `endpoint`'s throttle window (epoch s) while it lasts, else None."""
        f = self.faults
        if f.throttle_endpoint != endpoint:
            return None
        with self._lock:
            if self._throttle_end is None:
                self._throttle_end = now + f.throttle_seconds
            return self._throttle_end if now < self._throttle_end else None

    def pick_download(self) -> str | None:
        """The file host's fault for this fetch: "503", "drop", "cut", "stall", or None."""
        f = self.faults
        if not f.download_error_rate:
            return None
        with self._lock:
            if self._rng.random() >= f.download_error_rate:
                return None
            return self._rng.choice(list(f.download_fault_kinds))

    def script(self, endpoint: str, answers) -> None:
        self.scripted.setdefault(endpoint, deque()).extend(answers)

    def chance(self, share: float) -> bool:
        with self._lock:
            return self._rng.random() < share

    def pick(self, endpoint: str, seq: int) -> FaultAnswer | None:
        """The injected answer for this call (seq: the request log number), or None."""
        queue = self.scripted.get(endpoint)
        if queue:
            try:
                return _scripted_answer(queue.popleft())
            except IndexError:
                pass
        kind = self._random_kind()
        return None if kind is None else _fault_answer(kind, seq, self.faults.burst_retry_after)

    def _random_kind(self) -> str | None:
        f = self.faults
        with self._lock:
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

    def sleep_latency(self) -> None:
        f = self.faults
        delay = f.latency + (random.uniform(0, f.latency_jitter) if f.latency_jitter else 0.0)
        if delay > 0:
            time.sleep(delay)


def _scripted_answer(answer: Scripted) -> FaultAnswer:
    if answer.drop:
        return FaultAnswer("scripted", None)
    if isinstance(answer.body, (dict, list)):
        data = json.dumps(answer.body).encode()
    elif isinstance(answer.body, str):
        data = answer.body.encode()
    else:
        data = answer.body or b""
    return FaultAnswer("scripted", answer.status, data, dict({"Content-Type": answer.content_type}, **answer.headers))


def _fault_answer(kind: str, seq: int, retry_after: int) -> FaultAnswer:
    if kind == "drop":
        return FaultAnswer(kind, None)
    if kind == "429":
        return FaultAnswer(kind, 429, json_bytes({"type": "too_many_requests", "message": "too many requests",
                                                  "retry_after": retry_after}),
                           {"Content-Type": JSON, "Retry-After": str(retry_after)})
    if kind == "502":
        return FaultAnswer(kind, 502, b"<html><head><title>502 Bad Gateway</title></head>"
                                      b"<body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"})
    if kind == "500":
        return FaultAnswer(kind, 500, json_bytes({"type": "internal_error", "message": "internal error",
                                                  "reference_id": f"ref-{seq}"}), {"Content-Type": JSON})
    return FaultAnswer(kind, 503, json_bytes({"type": "service_unavailable", "message": "service unavailable"}),
                       {"Content-Type": JSON})


class RateLimiter:
    """A fixed-window server-side limit of `calls` per `window` seconds (DevRev resets its
    window as a whole), with DevRev's X-Ratelimit-* headers."""

    def __init__(self, limit: tuple[int, float] | None, clock: Callable[[], float], shared: int = 0):
        self.limit, self.clock = limit, clock
        self.shared = shared   # calls other integrations of the same token spend at each window's start
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._window_used = 0

    def check(self) -> ApiError | None:
        """Count one call; the 429 to answer if the window's quota is spent, else None."""
        if not self.limit:
            return None
        calls, window = self.limit
        with self._lock:
            now = self.clock()
            if self._window_start is None or now >= self._window_start + window:
                self._window_start, self._window_used = now, self.shared
            if self._window_used >= calls:
                retry = max(1, math.ceil(self._window_start + window - now))
                return ApiError(429, "too_many_requests", "rate limit exceeded", retry_after=retry)
            self._window_used += 1
        return None

    def headers(self, skew: float = 0.0, fractional: bool = False) -> dict:
        """X-Ratelimit-* for an answer; `skew` seconds added to the reset (a clock off from Date's);
        the reset in whole epoch seconds rounded up, or to the millisecond (`fractional`)."""
        if not self.limit:
            return {}
        calls, window = self.limit
        with self._lock:
            if self._window_start is None:
                return {}
            return {"X-Ratelimit-Limit": str(calls),
                    "X-Ratelimit-Remaining": str(max(0, calls - self._window_used)),
                    "X-Ratelimit-Reset": f"{self._window_start + window + skew:.3f}" if fractional
                    else str(math.ceil(self._window_start + window + skew))}


def retry_after_value(seconds: float, form: str, now: float) -> str:
    """A Retry-After header value in one of RFC 9110's two forms: "seconds" (`45`) or
    "date" (the HTTP-date `seconds` after `now`, e.g. `Mon, 30 Nov 2026 09:00:45 GMT`)."""
    if form == "date":
        return email.utils.formatdate(now + seconds, usegmt=True)
    return str(max(0, math.ceil(seconds)))
