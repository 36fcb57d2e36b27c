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
"""
from __future__ import annotations

import fnmatch

from backup import CONVERSATIONS, TICKETS, display_of, file_path, load_json, load_metadata
from devrev_api import assumptions as facts
from devrev_api.errors import NotFoundError
from devrev_client import DevRevClient
from operator_view.summary import plural
from runs.outcomes import SetOutcome

STAMPS = facts.MODIFICATION_STAMPS
WRITTEN = {"ticket": {"reported_by"}, "conversation": {"members"}, "contact": {"external_ref", "external_refs"}}
_USER_TYPES = {"rev_user", "dev_user", "sys_user", "service_account"}


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


def check_set(client: DevRevClient, outcome: SetOutcome) -> dict:
    """Re-read every ticket and conversation the set's backups hold, and the primary, and
    compare each with its backed-up copy. Returns
    {"set", "checked", "differences": [{"object", "field", "before", "after"}]}; an object
    DevRev no longer serves is a difference too. Raises DevRevError if a read fails."""
    folders = [b for d in outcome.duplicates for b in d.backups]
    objects, renames, files = _backed_up(folders)
    found: list[dict] = []
    by_themselves: list[dict] = []
    for kind, before in objects:
        read = {"ticket": client.get_work, "conversation": client.get_conversation,
                "contact": client.get_rev_user}[kind]
        try:
            after = read(before["id"])
        except NotFoundError:
            found.append({"object": display_of(before), "field": "(object)", "before": "present", "after": "gone"})
            continue
        if kind == "contact":
            before = _with_files_moved(before, after, files)
        filled = set(outcome.fields_filled or {}) if kind == "contact" else set()
        for change in all_changes(kind, before, after, renames, filled):
            (by_themselves if "why" in change else found).append(change)
    return {"set": outcome.email, "checked": len(objects), "differences": found,
            "moved_by_themselves": by_themselves}


def summary(result: dict) -> str:
    """One line for the screen."""
    diffs = result["differences"]
    moved = result.get("moved_by_themselves") or []
    if not diffs:
        names = sorted({c["field"] for c in moved})
        also = (f"; {plural(len(names), 'field')} that DevRev changes by itself also changed ({', '.join(names)}), "
                f"as expected" if names else "")
        return (f"canary {result['set']}: {result['checked']} objects re-read, nothing changed but what the tool "
                f"wrote and the merge is expected to change{also}")
    first = diffs[0]
    return (f"canary {result['set']}: {len(diffs)} change(s) in fields the tool did not write (e.g. "
            f"{first['object']}: {first['field']}); the run stopped before the next set, see the report")
