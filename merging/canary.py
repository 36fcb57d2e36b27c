"""The canary: after the first set of a real run is merged, every object it touched is
read again and compared with its backup, before any other set starts.

The tool writes one field per object (a ticket's reported_by, a conversation's members),
and the primary's references (external_ref, and external_refs where DevRev keeps a list),
and with --fill-blanks the primary's fields it filled.
If DevRev changed anything else when the tool wrote, or when it merged the contacts (a
workflow, an automation, a merge that does more than the 2023 internal spec says), the
first set shows it, and the run stops while only one set is affected. Expected changes
are not differences: modification stamps, the written field, user summaries' embedded
state, DevRev's own merge replacing the duplicate by the primary anywhere (custom fields the
tool moved included), and the primary gaining the duplicates' own files (a merge that moves
the contact page, [I] devrev_api.assumptions). Fields a server process changes by itself
(timers, sync bookkeeping, sentiment: FIELDS_THAT_CHANGE_BY_THEMSELVES) are reported apart and
do not stop the run; any other change does.

How it reads (issue 25: one get per object, one at a time, took a huge duplicate's run from
92 % to 51 % of the rate limit): the backups are listing copies (works.list, conversations.list),
so the tickets and conversations are compared with the copies the primary's own listings return
now, one call per page of 100. What the listings do not return, or return unusable (a summary, or
a copy lagging behind the write: `_usable`), is read with one get each, fanned out over the run's
workers; the primary is read with its own get. More than GET_SAMPLE such reads in one set are a
sample: first, last and a seeded random choice (a side effect that spares every sampled object
can go unseen; docs/how-a-merge-works.md). A run whose first set is also its last skips the
canary: there is no set left to protect (SKIPPED).
"""
from __future__ import annotations

import fnmatch
import random

from backup import CONVERSATIONS, TICKETS, Move, display_of, file_path, ids_of, load_json, load_metadata
from devrev_api import assumptions as facts
from devrev_api.errors import NotFoundError
from devrev_client import DevRevClient
from merging.engine import SetMerger
from operator_view.summary import plural
from plumbing.fanout import fan_map
from runs.outcomes import SetOutcome

STAMPS = facts.MODIFICATION_STAMPS
WRITTEN = {"ticket": {"reported_by"}, "conversation": {"members"}, "contact": {"external_ref", "external_refs"}}
_USER_TYPES = {"rev_user", "dev_user", "sys_user", "service_account"}
# A listing walk goes on while it has read fewer than SPARE_PAGES pages plus one per FOUND_PER_PAGE
# of the set's objects found: its calls never pass the gets they save by more than SPARE_PAGES, and
# a short or empty page or two ([C] S15 allows them in listings) do not end it.
FOUND_PER_PAGE = 10
SPARE_PAGES = 2
# At most this many objects of one set are read one by one (those the listings did not return
# usable); beyond, a sample of this size (`sample`). With whole listings, no set reaches it.
GET_SAMPLE = 200
# The report's `canary` when the first merged set was the run's last: nothing left to protect.
SKIPPED = "skipped: no set followed"


def _as_ids(value, renames: dict[str, str]):
    """User summaries become their ids, duplicates' ids the primary's, lists lose repeats."""
    if isinstance(value, dict):
        if value.get("type") in _USER_TYPES and "id" in value:
            return renames.get(value["id"], value["id"])
        return {k: _as_ids(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        items = [_as_ids(v, renames) for v in value]
        if all(isinstance(i, str) for i in items):
            items = list(dict.fromkeys(items))
        return items
    if isinstance(value, str):
        return renames.get(value, value)
    return value


def _fields(obj: dict) -> dict:
    """The object's fields as the canary compares them: each custom field on its own
    (`custom_fields.<name>`), so a timer there is told from a contact id the tool moved."""
    out = {k: v for k, v in obj.items() if k != "custom_fields"}
    custom = obj.get("custom_fields")
    if isinstance(custom, dict):
        out.update({f"custom_fields.{name}": value for name, value in custom.items()})
    elif custom is not None:
        out["custom_fields"] = custom
    return out


def changes_by_itself(name: str) -> str | None:
    """Why field `name` changes with no one writing it (devrev_api.assumptions
    FIELDS_THAT_CHANGE_BY_THEMSELVES), or None: a change there is a side effect."""
    return next((why for pattern, why in facts.FIELDS_THAT_CHANGE_BY_THEMSELVES.items()
                 if fnmatch.fnmatchcase(name, pattern)), None)


def all_changes(kind: str, before: dict, after: dict, renames: dict[str, str],
                also_written: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """Every field of one object that changed beyond what the merge is expected to change:
    [{"object", "field", "before", "after"}] (values with users as ids), each with "why" when
    a server process explains it (changes_by_itself). also_written: fields the tool wrote too
    (the primary's fields --fill-blanks filled, `custom_fields.<name>` for a custom field)."""
    skip = set(STAMPS) | WRITTEN[kind] | set(also_written)
    old, new = _fields(_as_ids(before, renames)), _fields(_as_ids(after, renames))
    found = []
    for name in sorted(set(old) | set(new)):
        if name not in skip and old.get(name) != new.get(name):
            change = {"object": display_of(before), "field": name, "before": old.get(name), "after": new.get(name)}
            why = changes_by_itself(name)
            found.append(dict(change, why=why) if why else change)
    return found


def differences(kind: str, before: dict, after: dict, renames: dict[str, str]) -> list[dict]:
    """The changes no server process explains (all_changes without a "why"): the ones that stop a run."""
    return [c for c in all_changes(kind, before, after, renames) if "why" not in c]


def _artifact_ids(contact: dict) -> list[str]:
    return [a["id"] for a in contact.get("artifacts") or [] if isinstance(a, dict) and "id" in a]


def _with_files_moved(before: dict, after: dict, moved: set[str]) -> dict:
    """The primary's record as a merge that moves the duplicates' files leaves it: `before`
    with after's artifacts when those are before's plus some of `moved` (else `before`)."""
    old, new = _artifact_ids(before), _artifact_ids(after)
    if new != old and set(old) <= set(new) and set(new) - set(old) <= moved:
        return dict(before, artifacts=after.get("artifacts"))
    return before


def _backed_up(folders: list[str]) -> tuple[list[tuple[str, dict]], dict[str, str], set[str]]:
    """Each object the backups hold, first copy wins: [(kind, object)] (the primary's
    record as kind "contact"), the renames (every duplicate's id -> the primary's id), and
    the ids of the files on the duplicates' records."""
    seen: dict[str, tuple[str, dict]] = {}
    renames: dict[str, str] = {}
    files: set[str] = set()
    for folder in folders:
        meta = load_metadata(folder)
        renames[meta["duplicate"]["id"]] = meta["primary"]["id"]
        files.update(_artifact_ids(meta["duplicate"]))
        seen.setdefault(meta["primary"]["id"], ("contact", meta["primary"]))
        for kind, name in (("ticket", TICKETS), ("conversation", CONVERSATIONS)):
            for obj in load_json(file_path(folder, name)):   # regular files only, bounded (issue 23)
                seen.setdefault(obj["id"], (kind, obj))
    return list(seen.values()), renames, files


def _listing_pages(client: DevRevClient, kind: str, user_id: str, wanted: dict[str, dict]) -> tuple[dict, int]:
    """The copies of `wanted` (id -> backed-up copy) that the primary's listing of `kind` returns,
    and the pages it took. The walk stops once every wanted object is found, or once it has read
    SPARE_PAGES pages more than one per FOUND_PER_PAGE found (a primary with many objects of its
    own, or a listing that misses them: the rest are cheaper read one by one)."""
    found: dict[str, dict] = {}
    pages = 0
    if not wanted:
        return found, pages
    for items in (client.ticket_pages if kind == "ticket" else client.conversation_pages)(user_id):
        pages += 1
        for item in items:
            if item.get("id") in wanted:
                found.setdefault(item["id"], item)   # a repeat across pages: the first copy
        if len(found) == len(wanted) or pages >= len(found) / FOUND_PER_PAGE + SPARE_PAGES:
            break
    return found, pages


def _usable(kind: str, before: dict, listed: dict | None, duplicates: set[str]) -> bool:
    """A listing copy the comparison can take instead of a get: it holds every field its backup
    holds (not a summary), and its written field names no duplicate (a listing lagging behind
    the write, [I] issue 22, would show the object as it was before)."""
    if listed is None or not set(before) <= set(listed):
        return False
    return not duplicates & set(ids_of(listed.get(Move.FIELDS[kind])))


def sample(items: list, size: int, seed: str) -> list:
    """`items` itself when it holds `size` or fewer; else the first, the last and a random
    choice of the others (random.Random(seed): the same set picks the same sample), `size`
    in all, in their order."""
    if len(items) <= size:
        return list(items)
    if size < 2:
        raise ValueError("a sample holds at least the first and the last")
    chosen = set(random.Random(seed).sample(range(1, len(items) - 1), size - 2)) | {0, len(items) - 1}
    return [items[i] for i in sorted(chosen)]


def check_set(merger: SetMerger, outcome: SetOutcome) -> dict:
    """Re-read every ticket and conversation the set's backups hold, and the primary, and
    compare each with its backed-up copy: the tickets and conversations from the primary's
    paged listings (side by side; one call per page of 100: the backups are listing copies too), those the
    listings do not return or return unusable (_usable) with one get each, fanned out over the
    run's workers (merger.options.fanout), and the primary with its own get. When more than
    GET_SAMPLE objects need a get, a sample of them (`sample`, seeded by the set's email) is read.
    Returns {"set", "checked", "differences": [{"object", "field", "before", "after"}],
    "moved_by_themselves", "listed", "listing_pages", "read_one_by_one", "not_checked"}; an
    object DevRev no longer serves is a difference too. Raises DevRevError if a read fails."""
    client = merger.client
    folders = [b for d in outcome.duplicates for b in d.backups]
    objects, renames, files = _backed_up(folders)
    duplicates = set(renames)
    primaries = [("contact", obj) for kind, obj in objects if kind == "contact"]   # one: the set's primary
    compared: list[tuple[str, dict, dict | None]] = []   # (kind, backed-up copy, DevRev's now; None: gone)
    to_read: list[tuple[str, dict]] = []
    wanted = {kind: {obj["id"]: obj for k, obj in objects if k == kind} for kind in ("ticket", "conversation")}

    def walk(kind: str) -> tuple[dict, int]:
        if not primaries or not facts.LISTINGS_CARRY_WHOLE_OBJECTS:
            return {}, 0
        return _listing_pages(client, kind, primaries[0][1]["id"], wanted[kind])

    walks = fan_map(merger.options.fanout, walk, list(wanted))   # the two listings side by side
    pages = sum(used for _, used in walks)
    for kind, (listed, _) in zip(wanted, walks):
        for object_id, before in wanted[kind].items():
            copy = listed.get(object_id)
            if _usable(kind, before, copy, duplicates):
                compared.append((kind, before, copy))
            else:
                to_read.append((kind, before))
    from_listings = len(compared)
    chosen = sample(to_read, GET_SAMPLE, outcome.email)

    def read(item: tuple[str, dict]) -> tuple[str, dict, dict | None]:
        kind, before = item
        get = {"ticket": client.get_work, "conversation": client.get_conversation,
               "contact": client.get_rev_user}[kind]
        try:
            return kind, before, get(before["id"])
        except NotFoundError:
            return kind, before, None

    compared += fan_map(merger.options.fanout, read, primaries + chosen)
    found: list[dict] = []
    by_themselves: list[dict] = []
    for kind, before, after in compared:
        if after is None:
            found.append({"object": display_of(before), "field": "(object)", "before": "present", "after": "gone"})
            continue
        if kind == "contact":
            before = _with_files_moved(before, after, files)
        filled = set(outcome.fields_filled or {}) if kind == "contact" else set()
        for change in all_changes(kind, before, after, renames, filled):
            (by_themselves if "why" in change else found).append(change)
    return {"set": outcome.email, "checked": len(compared), "differences": found,
            "moved_by_themselves": by_themselves, "listed": from_listings, "listing_pages": pages,
            "read_one_by_one": len(compared) - from_listings, "not_checked": len(to_read) - len(chosen)}


def summary(result: dict) -> str:
    """One line for the screen."""
    diffs = result["differences"]
    moved = result.get("moved_by_themselves") or []
    if not diffs:
        names = sorted({c["field"] for c in moved})
        also = (f"; {plural(len(names), 'field')} that DevRev changes by itself also changed ({', '.join(names)}), "
                f"as expected" if names else "")
        return (f"canary {result['set']}: {result['checked']} objects re-read{_how_read(result)}, nothing changed "
                f"but what the tool wrote and the merge is expected to change{also}")
    first = diffs[0]
    return (f"canary {result['set']}: {len(diffs)} change(s) in fields the tool did not write (e.g. "
            f"{first['object']}: {first['field']}); the run stopped before the next set, see the report")


def _how_read(result: dict) -> str:
    """How the objects were read, for the summary line: listings, gets, what a sample left out."""
    if "listed" not in result:
        return ""
    how = (f" ({result['listed']} from {plural(result.get('listing_pages') or 0, 'listing page')}, "
           f"{result.get('read_one_by_one') or 0} one by one)")
    left = result.get("not_checked") or 0
    return how + (f"; {plural(left, 'object')} past the sample of {GET_SAMPLE} reads not compared" if left else "")
