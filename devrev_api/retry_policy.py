"""How the client meets faults: when to retry, how long to wait, and when to stop the run.

The one retry policy (`Backoff`, counted per operation by `Retries`) for every call and
download and the engine's polls; Retry-After in both of RFC 9110's forms; what a 429
storm says about its cause (`Throttled`); and `FaultBreaker`, which tells a fault every
set would meet (DevRev unreachable, or 5xx to everything) from one set's bad luck.
Kept apart from devrev_client so the policy reads in one place.
"""
from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import timezone
from typing import Any, Callable, Iterator

import requests
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError, ReadTimeoutError


def parse_seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 and seconds == seconds else None


def parse_retry_after(value: Any, now: float) -> float | None:
    """Seconds to wait from a Retry-After value, in either form RFC 9110 (10.2.3) allows:
    delay-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`), the latter
    counted from `now` (epoch seconds: the answer's own Date header, else the local
    clock). A date in the past is 0; anything else unreadable is None."""
    seconds = parse_seconds(value)
    if seconds is not None or not isinstance(value, str):
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as GMT too
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now)


def answer_time(headers: Any, fallback: Callable[[], float] = time.time) -> float:
    """When the server answered (its Date header, epoch seconds), else `fallback()`: a
    Retry-After date is measured against the server's clock, so a skewed local clock
    does not stretch or cut the wait."""
    value = headers.get("Date") if headers is not None else None
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return fallback()


def transport_failure(exc: Exception) -> str:
    """A transport failure in words: connection_cause's, `a read timeout`, or the error's name."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ReadTimeout) or isinstance(reason, ReadTimeoutError):
        return "a read timeout"
    return connection_cause(exc) or type(exc).__name__


def connection_cause(exc: Exception) -> str | None:
    """What kind of connection failure `exc` is, in words, when the request cannot have
    reached the server (refused, name not resolved, TLS failed, connect timed out); None
    for a failure after the request left (a dropped answer, a read timeout)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (a proxy or a certificate problem?)"
    if isinstance(exc, requests.ConnectTimeout):
        return "the connection timed out"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # (urllib3 2 derives NameResolutionError from NewConnectionError from ConnectTimeoutError)
    if isinstance(reason, NameResolutionError):
        return "the host name does not resolve (DNS)"
    if isinstance(reason, NewConnectionError):
        text = str(reason).lower()
        if "timed out" in text:
            return "the connection timed out"
        return "the connection was refused" if "refused" in text else "no connection could be opened"
    if isinstance(reason, ConnectTimeoutError):
        return "the connection timed out"
    return None


def never_sent(exc: Exception) -> bool:
    """True when the request cannot have reached DevRev (connection never opened)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


# --------------------------------------------------------------------------- retrying
@dataclass(frozen=True)
class Backoff:
    """The one retry policy: how long to wait before each retry, and how many there are.

    Modelled on python-gitlab's `Retry` (gitlab/utils.py). Retry n (from 0) waits
    min(cap, base * 2**n) seconds, drawn from [half of that, all of it] when `jitter` is
    on, so parallel workers do not retry in step; a server's Retry-After (seconds) wins
    over the formula. attempts: the retries allowed (None: unbounded, for waits that a
    deadline ends instead). sleep and clock are injectable: tests never really sleep.
    """
    attempts: int | None = 5
    base: float = 0.5
    cap: float = 8.0
    jitter: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0-based); `retry_after` (a server's hint, >= 0) wins."""
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 64)))   # no float overflow in an endless wait
        return random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling

    def delays(self) -> Iterator[float]:
        """The delay before each allowed retry, in order (endless when attempts is None)."""
        attempt = 0
        while self.attempts is None or attempt < self.attempts:
            yield self.delay(attempt)
            attempt += 1

    def start(self) -> "Retries":
        """A counter for the retries of one operation."""
        return Retries(self)

    def waits(self, timeout: float) -> Iterator[float]:
        """Backing-off sleeps until `timeout` seconds (by `clock`) have passed: each next()
        sleeps once (the last sleep is cut at the deadline) and yields what it slept;
        the generator ends when the time is up, or when the attempts run out."""
        deadline = self.clock() + timeout
        for delay in self.delays():
            left = deadline - self.clock()
            if left <= 0:
                return
            self.sleep(min(delay, left))
            yield min(delay, left)

    def with_(self, **changes: Any) -> "Backoff":
        """A copy with some fields changed (e.g. another sleep, or no jitter)."""
        return replace(self, **changes)


class Retries:
    """One operation's retries under a Backoff: `next_delay()` until they run out."""

    def __init__(self, policy: Backoff):
        self.policy = policy
        self.used = 0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """The wait before the next retry, counting it; None when no retry is left."""
        if self.policy.attempts is not None and self.used >= self.policy.attempts:
            return None
        delay = self.policy.delay(self.used, retry_after)
        self.used += 1
        return delay


@dataclass
class Throttled:
    """One call's 429s: the retries left, the time waited, and what the answers said."""
    retries: Retries
    waited: float = 0.0
    hinted: bool = True      # every 429 said how long to wait (Retry-After)
    paced: bool = False      # DevRev announced its window (X-Ratelimit-*), so pacing was on

    def advice(self) -> str:
        """What to do, by what the 429s showed: lowering the tool's own rate helps only
        when DevRev neither said how long to wait nor announced its window."""
        if self.hinted or self.paced:
            return ("the tool waited as DevRev asked, so its own pace is not the cause: DevRev counts "
                    "calls per user across all of that user's clients, so another tool or integration "
                    "using the same user is likely spending the quota; pause it, or re-run later to resume")
        return ("DevRev gave no Retry-After and no X-Ratelimit headers to pace by: lower --rate-limit "
                "(or DEVREV_RATE_LIMIT) and re-run to resume")


# --------------------------------------------------------------------------- run-wide faults
class FaultBreaker:
    """Tells a run-wide fault from a set's bad luck, across every call of every worker.

    DevRev unreachable (connection refused, a name that does not resolve, a TLS
    failure, connect timeouts) or answering 5xx to everything hits every set alike:
    retrying set after set only multiplies waits and error lines. Each failed attempt
    of a call is counted; any answer that is not a 5xx resets the count. The breaker
    trips after `connection_threshold` connection failures in a row, or
    `server_threshold` 5xx in a row spread over at least `min_targets` different calls
    (one call failing again and again is that call's trouble, not the run's). Before
    DevRev has answered anything at all, `first_contact_threshold` connection failures
    suffice: the run's first call (the preflight's) is alone, and waiting out six
    backed-off attempts there took 20 s for a DevRev that was never reachable. Once
    tripped it stays tripped for the client's life; `cause` says why. Thread-safe.
    """

    def __init__(self, *, connection_threshold: int = 6, server_threshold: int = 12, min_targets: int = 2,
                 first_contact_threshold: int = 3):
        self.connection_threshold = connection_threshold
        self.first_contact_threshold = first_contact_threshold
        self._answered = False
        self.server_threshold = server_threshold
        self.min_targets = min_targets
        self._lock = threading.Lock()
        self._streak = 0
        self._connection_only = True
        self._targets: set[str] = set()
        self.cause: str | None = None

    @property
    def tripped(self) -> bool:
        return self.cause is not None

    def success(self) -> None:
        """An answer came back (not a 5xx): DevRev is reachable and working."""
        with self._lock:
            self._streak, self._connection_only, self._answered = 0, True, True
            self._targets.clear()

    def failure(self, cause: str, target: str, *, connection: bool) -> bool:
        """Count one failed attempt (`connection`: it never reached the server); True once tripped."""
        with self._lock:
            if self.cause is not None:
                return True
            self._streak += 1
            self._connection_only = self._connection_only and connection
            self._targets.add(target)
            threshold = self.connection_threshold if self._answered else self.first_contact_threshold
            if (self._connection_only and self._streak >= threshold) or \
                    (self._streak >= self.server_threshold and len(self._targets) >= self.min_targets):
                self.cause = cause
            return self.cause is not None
