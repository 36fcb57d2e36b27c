"""What merging costs in DevRev calls and in time: one duplicate, one set, the whole job.

Shared by the full preview's estimate, the benches' "least a careful merge can make", the
tests that hold the engine to it, the preview's estimate of the whole job and the budget of
--max-calls / --until (the one formula of time lives here: `job_seconds`); apart from the
engine because none of it calls DevRev.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from backup import Snapshot
from devrev_api import assumptions as facts
from runs.over_sets import Budget, SetCost, until_instant, wall_clock

# Calls a real run makes besides its sets' own: the preflight's reads (the token, the
# announced limit, the list filters on the first set: measured 13 on the demo data,
# bench/estimate_accuracy.py), and the canary's re-read of the first set (its primary and the
# listing pages that hold the objects it moved, counted from that set's preview line).
PREFLIGHT_CALLS = 13
log = logging.getLogger(__name__)
NIGHT_HOURS = 8      # the preview says how many nights of this many hours the job takes


def _pages(n: int, page_limit: int) -> int:
    return max(1, math.ceil(n / page_limit))


def backup_read_calls(snapshot: Snapshot, page_limit: int) -> int:
    """Reads that list and back up what one duplicate owns (as `backup.collect` makes them)."""
    calls = _pages(len(snapshot.tickets), page_limit) + _pages(len(snapshot.conversations), page_limit)
    calls += sum(_pages(len(es), page_limit) for es in snapshot.entries.values())
    return calls + len(snapshot.attachments)                 # one artifacts.locate each


def minimum_calls(snapshot: Snapshot, page_limit: int = facts.PAGE_LIMIT, *, merge: bool = True) -> int:
    """The least any careful merge of one duplicate costs: the backup's reads, one update per
    moved item, the two listings that show it owns nothing; then rev-users.merge, one poll,
    and the two listings that show nothing was filed under it while DevRev merged."""
    return backup_read_calls(snapshot, page_limit) + len(snapshot.objects) + 2 + (4 if merge else 0)


def estimate_calls(snapshot: Snapshot, page_limit: int = facts.PAGE_LIMIT, *, merge: bool = True) -> int:
    """What this tool spends on one duplicate: the minimum plus the fresh paged re-read of the
    tickets and conversations taken right before they are moved."""
    fresh = (_pages(len(snapshot.tickets), page_limit) if snapshot.tickets else 0) + \
        (_pages(len(snapshot.conversations), page_limit) if snapshot.conversations else 0)
    return minimum_calls(snapshot, page_limit, merge=merge) + fresh


def set_overhead_calls(duplicates: int, *, merge: bool = True, keeps_refs: bool = False) -> int:
    """Calls per set besides its duplicates: the live reads of each contact; when merging,
    the external_ref update of the primary and a read of its reference list, and, where
    DevRev keeps a list (`keeps_refs`), the update that keeps every duplicate's reference."""
    return 1 + duplicates + ((2 + (1 if keeps_refs else 0)) if merge else 0)


def job_seconds(calls: int, calls_per_minute: float, *, workers: int = 1, latency_s: float | None = None) -> float:
    """Wall time of `calls` made by `workers` at once at the run's rate: calls / rate, or when
    `workers` calls in flight of `latency_s` each cannot reach the rate, calls x latency / workers
    (throughput = min(rate, workers / latency))."""
    rate_bound = calls * 60.0 / calls_per_minute if calls_per_minute > 0 else 0.0
    return max(rate_bound, calls * (latency_s or 0.0) / max(1, workers))


def set_seconds(calls: int, calls_per_minute: float, in_flight: int, latency_s: float | None) -> float:
    """One set's wall time while `in_flight` sets share the rate (its own calls one after another)."""
    return job_seconds(calls, calls_per_minute / max(1, in_flight), latency_s=latency_s)


def primary_rechecks(record: dict) -> int:
    """The fresh reads of the primary a merging set makes besides its preview line's calls: one
    right before each rev-users.merge and one before the primary takes the reference (the
    engine's _recheck_primary); none when the duplicates are kept (--keep-duplicate)."""
    if record.get("status") != "would_merge":
        return 0
    return len(record.get("duplicates") or []) + 1


def set_calls(record: dict) -> int:
    """A set's calls in a real run, from its preview line: its estimate and the primary's re-reads."""
    return int(record.get("estimated_calls") or 0) + primary_rechecks(record)


def canary_calls(record: dict, page_limit: int = facts.PAGE_LIMIT) -> int:
    """The canary's re-read of a set, from its preview line (merging.canary): the primary's get
    and the pages of its listings that hold the moved tickets and conversations (the gets of
    objects a listing does not return usable are not foreseen: a lagging listing's)."""
    tickets = sum(len(d.get("ticket_ids") or []) for d in record.get("duplicates") or [])
    conversations = sum(len(d.get("conversation_ids") or []) for d in record.get("duplicates") or [])
    return 1 + sum(math.ceil(n / page_limit) for n in (tickets, conversations))


@dataclass(frozen=True)
class JobEstimate:
    """The preview's estimate of the whole job: calls, and time at the rate the run will use."""
    sets: int
    calls: int
    seconds: float
    calls_per_minute: float
    workers: int
    latency_s: float | None

    @property
    def nights(self) -> int:
        return max(1, math.ceil(self.seconds / (NIGHT_HOURS * 3600))) if self.calls else 0

    def line(self) -> str:
        """`About 1,234 API calls, about 6.2 hours at 200 calls a minute (4 workers, 150 ms per
        answer): 1 night of 8 hours.`"""
        if not self.sets:
            return "Nothing to merge: the job makes no API call."
        latency = f", {self.latency_s * 1000:.0f} ms per answer" if self.latency_s else ""
        nights = (f"{self.nights} nights of {NIGHT_HOURS} hours (--until, --max-calls: docs/scheduling.md)"
                  if self.nights > 1 else f"fits in one night of {NIGHT_HOURS} hours")
        return (f"The whole job ({self.sets} merge set{'s' if self.sets != 1 else ''}): about {self.calls:,} API "
                f"calls, about {duration(self.seconds)} at {self.calls_per_minute:,.0f} calls a minute "
                f"({self.workers} worker{'s' if self.workers != 1 else ''}{latency}); {nights}.")

    def to_json(self) -> dict[str, Any]:
        return {"sets": self.sets, "calls": self.calls, "seconds": round(self.seconds, 1),
                "calls_per_minute": self.calls_per_minute, "workers": self.workers,
                "latency_s": round(self.latency_s, 4) if self.latency_s is not None else None,
                "nights": self.nights, "night_hours": NIGHT_HOURS}


def job_estimate(records: list[dict], calls_per_minute: float, workers: int, latency_s: float | None) -> JobEstimate:
    """The whole job of a preview's set lines (those it would merge or move): their calls (with
    the primary's re-reads, set_calls), the run's preflight and canary (none when no set follows); the first set and the
    canary run alone, the rest on `workers`."""
    todo = [r for r in records if r.get("status") in ("would_merge", "would_move")
            and isinstance(r.get("estimated_calls"), int)]
    if not todo:
        return JobEstimate(0, 0, 0.0, calls_per_minute, workers, latency_s)
    alone = PREFLIGHT_CALLS + set_calls(todo[0]) + (canary_calls(todo[0]) if len(todo) > 1 else 0)
    rest = sum(set_calls(r) for r in todo[1:])
    seconds = job_seconds(alone, calls_per_minute, latency_s=latency_s) + \
        job_seconds(rest, calls_per_minute, workers=workers, latency_s=latency_s)
    return JobEstimate(len(todo), alone + rest, seconds, calls_per_minute, workers, latency_s)


def runs_within(records: list[dict], max_calls: int) -> tuple[int, dict | None]:
    """How many runs of --max-calls `max_calls` the preview's sets take (each run pays the
    preflight; the job's first set its canary; sets in the CSV's order, as the budget takes them),
    and the first set no run of that budget can take (None: every set fits)."""
    todo = [r for r in records if r.get("status") in ("would_merge", "would_move")
            and isinstance(r.get("estimated_calls"), int)]
    runs, used = 0, None
    for index, record in enumerate(todo):
        cost = set_calls(record) + (canary_calls(record) if index == 0 and len(todo) > 1 else 0)
        if PREFLIGHT_CALLS + cost > max_calls:
            return runs + (used is not None), record
        if used is None or used + cost > max_calls:
            runs, used = runs + 1, PREFLIGHT_CALLS
        used += cost
    return runs, None


def budget_line(max_calls: int, runs: int, stuck: dict | None) -> str:
    """The preview's line for --max-calls, from runs_within: how many runs the job takes, or the
    set none can take."""
    if stuck is not None:
        need = PREFLIGHT_CALLS + set_calls(stuck)
        return (f"--max-calls {max_calls} is too small for {stuck.get('email')} (about {need} calls with the "
                f"preflight): no run would start it; preview again with --max-calls {need} or more.")
    return f"With --max-calls {max_calls}: about {runs} run{'s' if runs != 1 else ''} (each exits 75 but the last)."


def duration(seconds: float) -> str:
    """`45 s`, `12 minutes`, `6.2 hours`, `8.2 days`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def set_costs(previews: dict[str, dict], calls_per_minute: Callable[[], float],
              latency_s: Callable[[], float | None], *, canary: bool = True) -> Callable[[Any, int], SetCost]:
    """The budget's cost of a set (runs.over_sets.Budget): its preview line's calls (the first
    set asked about: with the canary's re-read unless `canary` is False), and its time beside
    `in_flight` sets at the run's rate and answer time (read when asked: the pace may follow
    DevRev's announced limit); unknown without a preview line; nothing for a set the preview
    showed skipped (the run skips it without a call)."""
    asked = [False]

    def cost(merge_set: Any, in_flight: int) -> SetCost:
        record = previews.get(merge_set.key) or {}
        if record.get("status") == "skipped":
            return SetCost(0, 0.0)
        if not isinstance(record.get("estimated_calls"), int):
            return SetCost(None, None)
        calls = set_calls(record)
        if canary and not asked[0]:
            calls += canary_calls(record)
        asked[0] = True
        return SetCost(calls, set_seconds(calls, calls_per_minute(), in_flight, latency_s()))
    return cost


def answer_time(client: Any) -> float | None:
    """The median time DevRev took to answer lately (the client's tracker), None before any."""
    times = getattr(client, "answer_times", None)
    return times.median() if times is not None else None


def budget_for(max_calls: int | None, until: str | None, client: Any, previews: dict[str, dict], *,
               canary: bool = True) -> Budget | None:
    """The run's --max-calls / --until budget (None without either): the client's call count
    (preflight included), each set's cost from its preview line at the client's pace and answer
    time; --until read against the clock as the run starts."""
    if max_calls is None and until is None:
        return None
    deadline = until_instant(until, wall_clock()) if until is not None else None
    if deadline is not None:
        log.info("--until %s: no merge set is started that would not finish by %s", until,
                 datetime.fromtimestamp(deadline).astimezone().isoformat(timespec="minutes"))
    if max_calls is not None:
        log.info("--max-calls %d: no merge set is started that would take this run past %d calls", max_calls,
                 max_calls)
    budget: Budget = Budget(max_calls=max_calls, until=deadline, calls=lambda: int(client.stats["calls"]),
                            cost=set_costs(previews, lambda: float(client.calls_per_minute),
                                           lambda: answer_time(client), canary=canary))
    budget.start()
    return budget
