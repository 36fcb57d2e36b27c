"""How many workers a run uses: `--workers N` when given, else sized from the rate and the latency.

One worker is one call in flight. By Little's law the calls in flight a run needs to spend
its rate are rate x latency: 5,000 calls a minute (83 a second) at 150 ms need 12.5 in flight,
so the old fixed default of 4 spent 28 % of such a quota (scale probe 2026-12-04, section 3),
and 16 workers reached 97 %. The rate is the client's own cap (--rate-limit, DEVREV_RATE_LIMIT,
else the X-Ratelimit-Limit DevRev announced spread over its window, else the default cap): the
cap bounds the run whatever the workers; above CLIENT_CALLS_PER_MINUTE the client itself is the
bound (the probe's section 3: about 3 ms of CPU per call, one core under the GIL, about 320 calls
a second whatever the workers), so a higher cap is sized as that. The latency is the median answer time the client
measured on the run's first calls (the preflight's). HEADROOM covers what a worker does
between two calls (the journal, the backup files, its other phases); FLOOR keeps the old
default where the sizing asks for fewer; CEILING bounds the threads, connections and sets held
in memory at once when the measure is off (a slow first answer must not start a hundred
threads): 32 keeps 5,000 calls a minute going up to 320 ms of latency (5000 / 60 x 0.32 x 1.2
= 32), and the probe's 2-core machine got no more from 32 workers than from 16 at 150 ms. A
larger count stays available with --workers (up to 64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devrev_client import DevRevClient

FLOOR = 4          # the fixed default before the sizing, and the least it chooses
CEILING = 32       # the most it chooses (see the module docstring)
HEADROOM = 1.2     # calls in flight over rate x latency
CLIENT_CALLS_PER_MINUTE = 18_000   # about 300 a second: what the client itself can send (see above)


@dataclass(frozen=True)
class WorkerCount:
    """The workers a run uses and why, in words for the run's header and its report."""
    count: int
    why: str
    given: bool = False

    def line(self) -> str:
        return f"{self.count} workers: {self.why}"

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "why": self.why, "given": self.given}


def size_workers(calls_per_minute: float, latency: float | None, *, source: str = "the pace") -> WorkerCount:
    """Workers for `calls_per_minute` (at most CLIENT_CALLS_PER_MINUTE) at `latency` seconds per
    answer: rate x latency x HEADROOM, rounded up, within [FLOOR, CEILING]; FLOOR when no
    latency was measured."""
    if latency is None or not latency >= 0 or not calls_per_minute > 0:
        return WorkerCount(FLOOR, "the default (no answer time measured yet to size them by)")
    if calls_per_minute > CLIENT_CALLS_PER_MINUTE:
        source = f"the client's own most; {source}: {calls_per_minute:.0f}"
        calls_per_minute = CLIENT_CALLS_PER_MINUTE
    wanted = math.ceil(calls_per_minute / 60.0 * latency * HEADROOM)
    count = min(CEILING, max(FLOOR, wanted))
    reason = f"{calls_per_minute:.0f} calls/min ({source}) / 60 x {latency:.3g} s latency x {HEADROOM}"
    if count == CEILING and wanted > CEILING:
        reason += f" = {wanted}, at most {CEILING} (--workers N for more)"
    elif count == FLOOR and wanted < FLOOR:
        reason += f" = {wanted}, at least {FLOOR}"
    return WorkerCount(count, reason)


def pace_source(client: "DevRevClient") -> str:
    """Where the client's cap comes from, in a few words."""
    if not client.pace_from_server:
        return "the cap set"
    if client.pacer.announced_limit:
        return "DevRev's X-Ratelimit-Limit"
    return "the default cap"


def choose_workers(client: "DevRevClient", given: int | None) -> WorkerCount:
    """`given` (--workers) as is, else sized from `client`'s cap and its measured answer time."""
    if given is not None:
        return WorkerCount(given, f"--workers {given}", given=True)
    return size_workers(client.calls_per_minute, client.answer_times.median(), source=pace_source(client))
