"""What merging one duplicate costs in DevRev calls, from a snapshot of what it owns.

Shared by the full preview's estimate, the benches' "least a careful merge can make", and
the tests that hold the engine to it; apart from the engine because none of it calls DevRev.
"""
from __future__ import annotations

import math

from backup import Snapshot
from devrev_api import assumptions as facts


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
