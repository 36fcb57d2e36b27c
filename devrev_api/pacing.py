"""How fast the client sends: its own cap, and DevRev's announced window.

`ClientPace` is the client-side cap (N calls per minute, shared by every thread). It
keeps the `ratelimit` library's bookkeeping but waits through a stop-aware `wait`, so
Ctrl-C cuts a long pacing wait short (the library's own sleep_and_retry sleeps with
time.sleep and cannot be interrupted). `ServerPacer` reads DevRev's X-Ratelimit-*
headers so calls wait for a nearly spent window to reset instead of meeting a 429.
`AnswerTimes` keeps the recent answers' times (a moving median), so the run can size its
workers from the rate and the latency (runs.workers: Little's law).
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from typing import Any, Callable

from ratelimit import RateLimitException, limits

from devrev_api import assumptions as facts
from devrev_api.retry_policy import answer_time

log = logging.getLogger(__name__)

# our clock agrees with an answer's Date (whole seconds) when it reads within this long after it
DATE_AGREES_SECONDS = 2.0


class ClientPace:
    """One call per 60/N seconds across all threads; `take()` waits for the next slot.

    calls_per_minute: N (> 0). wait(seconds): how to wait for a slot; the client passes
    its stop-aware wait, which raises RunInterrupted once the run is stopped, so that
    exception ends take() too.
    """

    def __init__(self, calls_per_minute: float, wait: Callable[[float], None]):
        self.calls_per_minute = calls_per_minute
        self._wait = wait
        self._slot = limits(calls=1, period=60.0 / calls_per_minute, raise_on_limit=True)(lambda: None)

    def take(self) -> None:
        """Return once this call may go (the library counts it then)."""
        while True:
            try:
                self._slot()
                return
            except RateLimitException as exc:
                self._wait(max(exc.period_remaining, 0.001))


class ServerPacer:
    """Holds calls back when DevRev's own window is nearly spent.

    Reads X-Ratelimit-Remaining / X-Ratelimit-Reset from every response. While more
    than `margin` calls are left (after subtracting calls still in flight), calls go at
    once; when the budget is down to the margin, callers wait for the window's reset
    instead of meeting a 429. The client reserves a call only once its own cap let it go
    (a call waiting for its slot is not in flight). The reset is an epoch time on DevRev's
    clock, read against the answer's own Date; Date has whole seconds only, so where our
    clock falls within that second (the clocks agree) ours places the reset to the
    fraction, and a fractional X-Ratelimit-Reset is kept as sent: on a short window (10
    calls a second) a reset rounded to whole seconds cost half the window. Within one
    window the lowest Remaining wins (answers can arrive out of order). A reset further off
    than one window cannot be right (DevRev's clocks disagree) and is not waited for: the
    429's Retry-After, in seconds, says how long instead. A wait over LONG_WAIT_SECONDS is
    said on screen (WARNING), once per window.

    margin: calls kept spare in each window, for calls of the token's other clients between
    two of our answers; None (the default) is DEFAULT_MARGIN, or none on a window announced
    under SMALL_WINDOW_CALLS calls, where 2 spare calls are a fiftieth of it or more (a fifth
    of a 10-call window). Our own calls never need one: every call counts as in flight
    until its answer is read, so a margin of 0 is an exact fit of ours.
    """

    DEFAULT_MARGIN = 2
    SMALL_WINDOW_CALLS = 100
    RESET_GRACE_SECONDS = 0.05   # after the reset (a twentieth of a shorter wait), so the call lands in the new window

    def __init__(self, *, margin: int | None = None, clock: Callable[[], float] = time.time):
        self.margin = margin
        self.clock = clock
        self._lock = threading.Lock()
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._reset_sent: float | None = None     # the window's X-Ratelimit-Reset as DevRev sent it
        self._trusted: float | None = None        # the last reset read as plausible (kept past its window)
        self._in_flight = 0
        self._announced: float | None = None      # the reset whose long wait was said
        self._doubted = False                     # an implausible reset was said once
        self.announced_limit: int | None = None   # X-Ratelimit-Limit: calls per DevRev's window

    def _margin(self) -> int:
        if self.margin is not None:
            return self.margin
        limit = self.announced_limit
        return 0 if limit is not None and limit < self.SMALL_WINDOW_CALLS else self.DEFAULT_MARGIN

    def reserve(self) -> float:
        """Count a call as in flight; return how long it must wait first (0 = go)."""
        with self._lock:
            self._in_flight += 1
            if self._remaining is None or self._reset_at is None:
                return 0.0
            now = self.clock()
            if now >= self._reset_at:
                self._remaining = self._reset_sent = None  # a new window: the next answer tells us more
                return 0.0
            if self._remaining - (self._in_flight - 1) > self._margin():
                return 0.0
            until = max(0.0, min(self._reset_at - now, facts.RATE_LIMIT_WINDOW_SECONDS))
            wait = until + min(self.RESET_GRACE_SECONDS, until / 20)
            if wait > facts.LONG_WAIT_SECONDS and self._announced != self._reset_at:
                self._announced = self._reset_at
                log.warning("DevRev's rate limit: waiting %.0f s (X-Ratelimit-Reset: %d calls left in its window)",
                            wait, self._remaining)
            return wait

    def release(self, headers: Any = None) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if headers is None:
                return
            remaining = headers.get("X-Ratelimit-Remaining")
            reset = headers.get("X-Ratelimit-Reset")
            limit = _finite_number(headers.get(facts.RATE_LIMIT_HEADER))
            if limit and limit >= 1:
                self.announced_limit = int(limit)
            try:
                remaining_calls, reset_at = int(remaining), float(reset)
            except (TypeError, ValueError):
                return
            if reset_at != reset_at:   # nan
                return
            now = self.clock()
            left = reset_at - server_now(headers, now)   # both on DevRev's clock
            if left < 0 and reset_at == self._trusted:   # a late answer of a window read before: it is over
                return
            if not -facts.CLOCK_SLACK_SECONDS <= left <= facts.RATE_LIMIT_WINDOW_SECONDS + facts.CLOCK_SLACK_SECONDS:
                if not self._doubted:
                    self._doubted = True
                    log.warning("DevRev's X-Ratelimit-Reset is %.0f s from its answer's time, beyond its %d s "
                                "window (its clocks disagree): pacing by Retry-After instead", left,
                                facts.RATE_LIMIT_WINDOW_SECONDS)
                self._remaining = self._reset_at = self._reset_sent = None
                return
            if reset_at == self._reset_sent and self._remaining is not None:
                remaining_calls = min(remaining_calls, self._remaining)   # an older answer of the same window
            self._remaining, self._reset_at, self._reset_sent = remaining_calls, now + max(0.0, left), reset_at
            self._trusted = reset_at


def server_now(headers: Any, now: float) -> float:
    """DevRev's time when it answered, to the fraction of a second where possible: its Date
    (whole seconds) when our clock `now` disagrees with it, else `now` (our clock within
    Date's second, or the next one, which an answer stamped late in its second reaches
    us in: the clocks agree, and ours has the fraction). No Date: `now`."""
    stamped = answer_time(headers, lambda: now)
    return now if stamped <= now < stamped + DATE_AGREES_SECONDS else stamped


class AnswerTimes:
    """How long DevRev takes to answer: the median of the last `keep` answers' times (send
    to last byte), thread-safe. The run sizes its workers from it (runs.workers)."""

    def __init__(self, keep: int = 25):
        self._times: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            with self._lock:
                self._times.append(seconds)

    def median(self) -> float | None:
        """The median answer time in seconds, None before any answer."""
        with self._lock:
            return statistics.median(self._times) if self._times else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)


def _finite_number(value: Any) -> float | None:
    """A header's non-negative finite number, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < float("inf") else None
