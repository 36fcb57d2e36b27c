"""A cheap preview of one duplicate: what moves exactly, what the backup holds estimated.

What moves (the tickets and conversations the duplicate is on) is listed in full: that
is what an admin checks. What the backup will hold (timeline entries, messages,
attachments and their size) is estimated from the first timeline page of a few of those
objects, spread over the list, instead of reading every entry of every object (the
full count, `--preview --full`, costs about as many reads as the backup itself).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from backup import _referenced_artifacts, custom_field_refs, display_of, read_contact_page, tickets_naming
from devrev_api import assumptions as facts
from devrev_api.errors import ResponseError
from devrev_client import DevRevClient
from merging.live_checks import frozen_items, other_works
from plumbing.fanout import Fanout, fan_map

JSON_OVERHEAD = 4096   # as backup.estimate_size counts each file's framing


def sample_size(objects: int) -> int:
    """How many objects get their first timeline page read: 1, and one more per 20."""
    return min(objects, 1 + objects // 20)


def _pages(n: float, page_limit: int) -> int:
    return max(1, math.ceil(n / page_limit))


def calls_from_counts(tickets: int, conversations: int, timeline_pages: int, attachments: int, page_limit: int,
                      *, merge: bool) -> int:
    """merging.call_estimates.estimate_calls from counts alone: listing pages, timeline pages, one
    artifacts.locate per attachment, one update per item, the fresh re-read before the
    moves, the two listings that show the duplicate owns nothing; merge, poll, two listings."""
    listing = _pages(tickets, page_limit) + _pages(conversations, page_limit)
    fresh = (_pages(tickets, page_limit) if tickets else 0) + \
        (_pages(conversations, page_limit) if conversations else 0)
    return listing + timeline_pages + attachments + tickets + conversations + 2 + (4 if merge else 0) + fresh


@dataclass
class _Sample:
    entries: int = 0
    pages: int = 0
    messages: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    json_bytes: int = 0
    more: int = 0           # sampled objects with more than one page of entries
    unsized: int = 0        # attachments whose summary gives no size


def _first_page(client: DevRevClient, obj: dict) -> tuple[list[dict], bool]:
    """The first page of an object's timeline, and whether more pages follow."""
    data = client.call("timeline-entries.list", {"object": obj["id"], "limit": client.page_limit},
                       retry_transient=True)
    entries = data.get("timeline_entries")
    if not isinstance(entries, list):
        raise ResponseError("the answer has no 'timeline_entries' list", endpoint="timeline-entries.list")
    return entries, bool(data.get("next_cursor")) and bool(entries)


def _sample(client: DevRevClient, objects: list[dict], pool: Fanout | None) -> tuple[_Sample, int]:
    k = sample_size(len(objects))
    picked = [objects[(i * len(objects)) // k] for i in range(k)] if k else []
    s = _Sample()
    for obj, (entries, more) in zip(picked, fan_map(pool, lambda o: _first_page(client, o), picked)):
        s.entries += len(entries)
        s.pages += 2 if more else 1      # at least one more page; counted as one
        s.more += more
        s.messages += sum(1 for e in entries if isinstance(e, dict) and e.get("type") == facts.MESSAGE_ENTRY_TYPE)
        arts = _referenced_artifacts(obj, [e for e in entries if isinstance(e, dict)])
        s.attachments += len(arts)
        sizes = [(a.get("file") or {}).get("size") for a in arts]
        s.attachment_bytes += sum(int(n) for n in sizes if isinstance(n, int))
        s.unsized += sum(1 for n in sizes if not isinstance(n, int))
        s.json_bytes += len(json.dumps(entries))
    return s, k


def sampled_duplicate(client: DevRevClient, duplicate_id: str, *, merge: bool,
                      pool: Fanout | None = None) -> tuple[dict, int, int]:
    """Preview one duplicate cheaply. Returns (its preview fields, estimated calls, estimated
    backup bytes). The fields are those of the full preview (tickets, ticket_ids,
    conversations, conversation_ids, timeline_entries, messages, attachments,
    attachment_bytes), the last four extrapolated from the sample, plus `estimated`
    (False only when every object was read whole and every
    attachment's size was given) and `sampled_objects` ("k of n")."""
    works = list(client.list_reported_works(duplicate_id))       # every type: the others stop the merge
    tickets = [w for w in works if w.get("type") == "ticket"]
    conversations = list(client.list_conversations(duplicate_id))
    objects = tickets + conversations
    s, k = _sample(client, objects, pool)
    scale = len(objects) / k if k else 0.0
    pages = round(s.pages * scale)
    attachments = round(s.attachments * scale)
    calls = calls_from_counts(len(tickets), len(conversations), pages, attachments, client.page_limit, merge=merge)
    size = round(2 * (sum(len(json.dumps(o)) for o in objects) + s.json_bytes * scale) + s.attachment_bytes * scale
                 + JSON_OVERHEAD * (1 + len(objects)))
    fields = {"tickets": [display_of(t) for t in tickets], "ticket_ids": [t["id"] for t in tickets],
              "conversations": [display_of(c) for c in conversations],
              "conversation_ids": [c["id"] for c in conversations],
              "timeline_entries": round(s.entries * scale), "messages": round(s.messages * scale),
              "attachments": attachments, "attachment_bytes": round(s.attachment_bytes * scale),
              "estimated": k < len(objects) or s.more > 0 or s.unsized > 0, "sampled_objects": f"{k} of {len(objects)}",
              "custom_field_refs": [r["object"] for r in custom_field_refs(objects, duplicate_id)],
              "other_works": other_works(works), "frozen": frozen_items(objects)}
    return fields, calls, size


def contact_page_and_field_refs(client: DevRevClient, duplicate: dict, objects_naming: list[str], *,
                                filter_accepted: bool, page_limit: int) -> tuple[dict, int, int]:
    """What else the preview shows of one duplicate, read whole (both are small): its own
    page (timeline entries, notes, files and their bytes: backup.read_contact_page), and the
    tickets naming it only in a custom field (where works.list takes that filter). Returns
    (preview fields, estimated calls, estimated backup bytes); `objects_naming` are the display
    ids of its own tickets and conversations that name it in a custom field."""
    page = read_contact_page(client, duplicate)
    only: list[str] = []
    if filter_accepted:
        only = [shown for t in tickets_naming(client, duplicate["id"])
                for shown in [display_of(t)] if shown not in objects_naming]
    moves = len(objects_naming) + len(only)
    calls = _pages(len(page.entries), page_limit) + len(page.attachments) + 2 * moves \
        + (len(facts.CONTACT_CUSTOM_FIELDS) if filter_accepted else 0)
    size = 2 * len(json.dumps(page.entries)) + page.file_bytes + JSON_OVERHEAD
    fields = {"contact_entries": len(page.entries), "contact_notes": page.notes,
              "contact_files": len(page.attachments), "contact_file_bytes": page.file_bytes,
              "custom_field_only": only, "custom_fields_to_move": moves}
    return fields, calls, size
