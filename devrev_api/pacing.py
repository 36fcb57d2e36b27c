"""How fast the client sends: its own cap, and DevRev's announced window.

`ClientPace` is the client-side cap (N calls per minute, shared by every thread). It
keeps the `ratelimit` library's bookkeeping but waits through a stop-aware `wait`, so
Ctrl-C cuts a long pacing wait short (the library's own sleep_and_retry sleeps with
time.sleep and cannot be interrupted). `ServerPacer` reads DevRev's X-Ratelimit-*
headers so calls wait for a nearly spent window to reset instead of meeting a 429.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ratelimit import RateLimitException, limits

from devrev_api import assumptions as facts
from devrev_api.retry_policy import answer_time

log = logging.getLogger(__name__)


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
    instead of meeting a 429. The reset is an epoch time on DevRev's clock, so it is read
    against the answer's own Date (no clock of ours involved); a reset further off than one
    window cannot be right (DevRev's clocks disagree) and is not waited for: the 429's
    Retry-After, in seconds, says how long instead. A wait over LONG_WAIT_SECONDS is
    said on screen (WARNING), once per window.
    """

    def __init__(self, *, margin: int = 2, clock: Callable[[], float] = time.time):
        self.margin = margin
        self.clock = clock
        self._lock = threading.Lock()
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._in_flight = 0
        self._announced: float | None = None      # the reset whose long wait was said
        self._doubted = False                     # an implausible reset was said once
        self.announced_limit: int | None = None   # X-Ratelimit-Limit: calls per DevRev's window

    def reserve(self) -> float:
        """Count a call as in flight; return how long it must wait first (0 = go)."""
        with self._lock:
            self._in_flight += 1
            if self._remaining is None or self._reset_at is None:
                return 0.0
            now = self.clock()
            if now >= self._reset_at:
                self._remaining = None  # a new window: the next answer tells us more
                return 0.0
            if self._remaining - (self._in_flight - 1) > self.margin:
                return 0.0
            wait = max(0.0, min(self._reset_at - now, facts.RATE_LIMIT_WINDOW_SECONDS)) + 0.05
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
            left = reset_at - answer_time(headers, self.clock)   # both on DevRev's clock
            if not -facts.CLOCK_SLACK_SECONDS <= left <= facts.RATE_LIMIT_WINDOW_SECONDS + facts.CLOCK_SLACK_SECONDS:
                if not self._doubted:
                    self._doubted = True
                    log.warning("DevRev's X-Ratelimit-Reset is %.0f s from its answer's time, beyond its %d s "
                                "window (its clocks disagree): pacing by Retry-After instead", left,
                                facts.RATE_LIMIT_WINDOW_SECONDS)
                self._remaining = self._reset_at = None
                return
            self._remaining, self._reset_at = remaining_calls, self.clock() + max(0.0, left)


def _finite_number(value: Any) -> float | None:
    """A header's non-negative finite number, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < float("inf") else None
