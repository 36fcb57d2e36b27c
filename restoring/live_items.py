"""The current users of a restore's items, read a page at a time instead of one item at a time.

After a merge, the tickets and conversations it moved carry the primary, so a listing by the
primary (works.list reported_by, conversations.list members) returns them a hundred to a page:
one call where a get per item took a hundred. An item the listings do not return (someone took
the primary off it or deleted it since; a tenant whose members filter answers nothing) is read
with a get, fanned out on the --workers slots, and the get's answer tells which (404: deleted).
So is an item the caller does not trust a listing with (`trust`: one written moments ago, since
a listing may lag behind a write, devrev_api.assumptions.ROUND_PAUSE_SECONDS).

The pages never cost more calls than the gets they save: the walk stops once it has every item
asked for, or once it has read as many pages as items are still missing (a primary with
thousands of tickets of its own and three moved to it costs at most three pages and three gets).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from backup import Move, ids_of
from devrev_api.errors import NotFoundError
from devrev_client import DevRevClient, JsonObject
from plumbing.fanout import Fanout, fan_map

log = logging.getLogger(__name__)

# an item's current users (its reported_by or members), or None: DevRev says it is gone (404)
Users = list[str] | None


def _pages(client: DevRevClient, kind: str, primary_id: str) -> Iterator[list[JsonObject]]:
    return client.ticket_pages(primary_id) if kind == "ticket" else client.conversation_pages(primary_id)


def _get(client: DevRevClient, move: Move) -> Users:
    read = client.get_work if move.kind == "ticket" else client.get_conversation
    try:
        return ids_of(read(move.id).get(move.field_name))
    except NotFoundError:
        return None


def _listed(client: DevRevClient, kind: str, primary_id: str, items: dict[str, Move],
            trust: Callable[[Move, list[str]], bool]) -> tuple[dict[str, list[str]], int]:
    """The `items` (of one kind) the listing by the primary returns and `trust` accepts, with
    their users; and how many were listed without the field."""
    found: dict[str, list[str]] = {}
    lacking: set[str] = set()
    pages = 0
    for page in _pages(client, kind, primary_id):
        pages += 1
        for obj in page:
            asked = items.get(str(obj.get("id")))
            if asked is None or asked.id in found:
                continue
            if not isinstance(obj.get(asked.field_name), list):
                lacking.add(asked.id)
            elif trust(asked, users := ids_of(obj.get(asked.field_name))):
                found[asked.id] = users
        missing = len(items) - len(found)
        if not missing or pages >= missing:   # a page more would cost more than the gets it saves
            break
    return found, len(lacking - set(found))


def read_items(client: DevRevClient, primary_id: str, moves: Iterable[Move], pool: Fanout | None,
               trust: Callable[[Move, list[str]], bool] = lambda move, users: True) -> dict[str, Users]:
    """Item id -> its users now (reported_by or members; None: deleted), for every item of
    `moves`: from the listings by `primary_id` (tickets and conversations at once, on the pool's
    free slots) where they return it and `trust(move, users)` holds, else from a get. A listed
    copy without the field (a summary, not the whole item, devrev_api.assumptions.LISTED_USERS_WHOLE)
    is read with a get too, and the log says so. Raises DevRevError on a failed call."""
    wanted: dict[str, dict[str, Move]] = {"ticket": {}, "conversation": {}}
    for move in moves:
        wanted[move.kind].setdefault(move.id, move)
    kinds = [kind for kind, items in wanted.items() if items]
    found: dict[str, Users] = {}
    lacking = 0
    for listed, without in fan_map(pool, lambda kind: _listed(client, kind, primary_id, wanted[kind], trust), kinds):
        found.update(listed)
        lacking += without
    if lacking:
        log.warning("%d listed tickets or conversations came without their reporters or members: read with a get "
                    "each", lacking)
    rest = [move for items in wanted.values() for move in items.values() if move.id not in found]
    found.update(zip([m.id for m in rest], fan_map(pool, lambda move: _get(client, move), rest)))
    return found
