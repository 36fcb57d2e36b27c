"""DevRev's objects in the emulator: contacts, work items, conversations, timeline entries, artifacts.

References are stored as ids and rendered into DevRev's summaries on output, so a
contact moved or retired reads the same everywhere at once. Fields whose names start
with "_" (sequence numbers, merge bookkeeping, stored content) are never rendered.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from .modes import BehaviourModes

REGION = "dvrv-us-1"
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def iso(ts: float) -> str:
    """DevRev timestamps: ISO-8601 UTC with milliseconds and Z."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def stable_suffix(key: str, length: int = 9) -> str:
    """A deterministic case-sensitive alphanumeric id suffix (like REVU-16BD3ZzTw)."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        out.append(_ALNUM[digit])
    return "".join(out)


def generated_bytes(seed: int, start: int, length: int) -> bytes:
    """Deterministic attachment content, produced in slices so huge files need no memory."""
    block = hashlib.sha256(f"artifact-content-{seed}".encode()).digest() * 128  # 4 KiB
    out = bytearray()
    pos = start
    while len(out) < length:
        offset = pos % len(block)
        take = min(len(block) - offset, length - len(out))
        out += block[offset:offset + take]
        pos += take
    return bytes(out)



class SandboxState:
    """DevRev's objects, references stored as ids and rendered into summaries on output."""

    def __init__(self, devo: str = "DEVO1x", clock: Callable[[], float] = time.time):
        self.devo = devo
        self.clock = clock
        self.lock = threading.RLock()
        self.orgs: dict[str, dict] = {}
        self.users: dict[str, dict] = {}       # dev, sys and rev users by DON
        self.works: dict[str, dict] = {}
        self.conversations: dict[str, dict] = {}
        self.entries: dict[str, list[dict]] = {}   # parent DON -> entries (oldest first)
        self.artifacts: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}          # merge jobs by DON
        self.tags: dict[str, dict] = {}          # tags by DON: {"id", "display_id", "name"} (contacts carry ids)
        self.ticks = 0                           # answers given with ticking fields (mode fields_change_by_themselves)
        self.by_display: dict[str, str] = {}
        self.keys: dict[str, str] = {}           # seed key -> DON
        self.seq = 0
        self.artifact_counter = 10000   # the last artifact number given (see new_artifact_number)
        self.changed = False   # set when a read retired a contact: the server persists then
        self.admin_id = self._add_user("dev_user", "devu/1", "DEVU-1", display_name="sandbox-admin",
                                       email="admin@sandbox.invalid", full_name="Sandbox Admin")
        self.bot_id = self._add_user("sys_user", "sysu/1", "SYSU-1", display_name="devrev-bot",
                                     full_name="DevRev Bot")

    # ids ------------------------------------------------------------------
    def don(self, kind: str, suffix: str) -> str:
        space = "identity" if kind.split("/")[0] in ("revu", "devu", "sysu", "revo", "svcacc", "account") else "core"
        return f"don:{space}:{REGION}:devo/{self.devo}:{kind}/{suffix}"

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def now(self) -> str:
        return iso(self.clock())

    def _add_user(self, user_type: str, kind_suffix: str, display_id: str, **fields) -> str:
        kind, suffix = kind_suffix.split("/")
        don = self.don(kind, suffix)
        now = self.now()
        user = {"type": user_type, "id": don, "display_id": display_id, "state": "active",
                "created_date": now, "modified_date": now, "_seq": self.next_seq()}
        user.update({k: v for k, v in fields.items() if v is not None})
        self.users[don] = user
        self.by_display[display_id] = don
        return don

    def rev_users_newest_first(self) -> list[dict]:
        """Every rev user (retired ones included), newest first (descending `_seq`): the
        order keyset paging walks. Cached until a user is added or the state reloaded, so
        a page of a 100,000-contact tenant costs a bisect, not a sort."""
        key = (id(self.users), len(self.users))
        if getattr(self, "_rev_order_key", None) != key:
            self._rev_order = sorted((u for u in self.users.values() if u["type"] == "rev_user"),
                                     key=lambda u: u["_seq"], reverse=True)
            self._rev_order_key = key
        return self._rev_order

    # seeding --------------------------------------------------------------
    def load_seed(self, seed: dict) -> None:
        """Build objects from a seed (see devrev_sandbox/dataset.py for the format).

        A rev user may carry `comments` (its contact page's timeline, tickets' comment format)
        and `artifacts` (files on the contact record); both are built after every ticket and
        conversation, so adding them to a seed shifts no other object's numbers."""
        pages: list[tuple[str, dict]] = []   # (contact DON, its seed entry) with a contact page
        with self.lock:
            self.devo = seed.get("devo", self.devo)
            for org in seed.get("workspaces", []):
                suffix = org.get("suffix") or stable_suffix("org:" + org["key"], 8)
                don = self.don("revo", suffix)
                self.orgs[don] = {"type": "rev_org", "id": don, "display_id": f"REV-{suffix}",
                                  "display_name": org.get("display_name", org["key"]),
                                  "account": self.don("account", suffix)}   # [I] an account per workspace
                self.by_display[f"REV-{suffix}"] = don
                self.by_display[f"ACC-{suffix}"] = self.orgs[don]["account"]
                self.keys[org["key"]] = don
            for number, tag in enumerate(seed.get("tags", []), start=1):
                don = self.don("tag", str(number))
                self.tags[don] = {"id": don, "display_id": f"TAG-{number}", "name": tag["name"]}
                self.by_display[f"TAG-{number}"] = don
                self.keys["tag:" + tag["name"]] = don
            for n, dev in enumerate(seed.get("dev_users", []), start=2):
                number = dev.get("number", n)
                self.keys[dev["key"]] = self._add_user(
                    "dev_user", f"devu/{number}", f"DEVU-{number}", display_name=dev.get("display_name", dev["key"]),
                    email=dev.get("email"), full_name=dev.get("full_name"))
            for rev in seed.get("rev_users", []):
                suffix = rev.get("suffix") or stable_suffix("revu:" + rev["key"])
                display_id = f"REVU-{suffix}"
                created_by = self.keys.get(rev.get("created_by", ""), self.bot_id if
                                           str(rev.get("external_ref", "")).startswith("user_") else self.admin_id)
                don = self._add_user("rev_user", f"revu/{suffix}", display_id,
                                     display_name=rev.get("display_name", rev.get("email")),
                                     email=rev.get("email"), full_name=rev.get("full_name"),
                                     external_ref=rev.get("external_ref") or display_id,
                                     rev_org=self.keys[rev["workspace"]], created_by=created_by,
                                     modified_by=created_by, is_verified=rev.get("is_verified", True),
                                     custom_fields=rev.get("custom_fields"),
                                     phone_numbers=rev.get("phone_numbers"), description=rev.get("description"),
                                     tags=[self.keys["tag:" + t] for t in rev.get("tags") or []] or None)
                user = self.users[don]
                user["state"] = rev.get("state", "active")
                for stamp in ("created_date", "modified_date"):
                    if rev.get(stamp):
                        user[stamp] = rev[stamp]
                self.keys[rev["key"]] = don
                if rev.get("comments") or rev.get("artifacts"):
                    pages.append((don, rev))
            for number, ticket in enumerate(seed.get("tickets", []), start=1):
                self._seed_work(ticket, ticket.get("number", number))
            for number, conv in enumerate(seed.get("conversations", []), start=1):
                self._seed_conversation(conv, conv.get("number", number))
            for don, rev in pages:
                user = self.users[don]
                files = [self._seed_artifact(a, user["created_by"], user["created_date"])
                         for a in rev.get("artifacts", [])]
                if files:
                    user["artifacts"] = files
                self._seed_comments(don, rev.get("comments", []))

    def create_rev_user(self, org_id: str, external_ref: str | None, **fields) -> dict:
        """A contact created now by the token's user (rev-users.create); its external_ref
        defaults to its display id, as DevRev assigns one when none is given."""
        suffix = stable_suffix(f"revu-created:{self.devo}:{self.seq + 1}:{self.clock()}")
        display_id = f"REVU-{suffix}"
        don = self._add_user("rev_user", f"revu/{suffix}", display_id, rev_org=org_id,
                             external_ref=external_ref or display_id, created_by=self.admin_id,
                             modified_by=self.admin_id, is_verified=False, **fields)
        if "display_name" not in fields:
            self.users[don]["display_name"] = fields.get("email") or display_id
        return self.users[don]

    def ref(self, key: str) -> str:
        """The DON of a seed key or display id (the value itself when neither is known)."""
        return self.keys.get(key) or self.by_display.get(key) or key

    def _seed_work(self, spec: dict, number: int) -> None:
        kind = spec.get("type", "ticket")  # "ticket", "issue", or (2026 beta work types) "opportunity", "task"
        don = self.don(kind, str(number))
        created = spec.get("created_date") or self.now()
        prefix = {"ticket": "TKT", "issue": "ISS", "opportunity": "OPP", "task": "TASK"}[kind]
        work = {"type": kind, "id": don, "display_id": f"{prefix}-{number}",
                "title": spec.get("title", f"Work {number}"),
                "reported_by": [self.ref(k) for k in spec.get("reported_by", [])],
                "owned_by": [self.ref(k) for k in spec.get("owned_by", [])] or [self.admin_id],
                "created_by": self.ref(spec.get("created_by", spec.get("reported_by", ["SYSU-1"])[0]
                                                if spec.get("reported_by") else "SYSU-1")),
                "created_date": created, "modified_date": spec.get("modified_date", created),
                "stage": {"name": spec.get("stage", "queued")}, "severity": spec.get("severity", "medium"),
                "source_channel": spec.get("source_channel", "email"), "_seq": self.next_seq()}
        work["modified_by"] = work["created_by"]
        if spec.get("body"):
            work["body"] = spec["body"]
        if spec.get("is_frozen") is not None:
            work["is_frozen"] = bool(spec["is_frozen"])
        if spec.get("subtype"):
            work["subtype"] = spec["subtype"]
        if spec.get("custom_fields"):
            work["custom_fields"] = self._seed_custom_fields(spec["custom_fields"])
        if spec.get("custom_schema_fragments"):
            work["custom_schema_fragments"] = list(spec["custom_schema_fragments"])
        if spec.get("workspace") and kind == "ticket":
            work["rev_org"] = self.ref(spec["workspace"])
        if kind != "ticket":  # ticket-only fields
            for name in ("severity", "source_channel"):
                del work[name]
        work["artifacts"] = [self._seed_artifact(a, work["created_by"], created) for a in spec.get("artifacts", [])]
        self.works[don] = work
        self.by_display[work["display_id"]] = don
        if spec.get("key"):
            self.keys[spec["key"]] = don
        self._seed_comments(don, spec.get("comments", []))

    def _seed_custom_fields(self, fields: dict) -> dict:
        """Seed custom fields, with contact references in lists given as seed keys stored as DONs."""
        return {k: [self.ref(v) for v in vs] if isinstance(vs, list) else vs for k, vs in fields.items()}

    def add_work(self, spec: dict) -> str:
        """Create a ticket (or, with "type": "issue", an issue) now from a seed-format spec;
        returns its DON."""
        with self.lock:
            number = 1 + max((int(w["display_id"].split("-")[1]) for w in self.works.values()), default=0)
            self._seed_work(spec, number)
            return self.don(spec.get("type", "ticket"), str(number))

    def _seed_conversation(self, spec: dict, number: int) -> None:
        don = self.don("conversation", str(number))
        created = spec.get("created_date") or self.now()
        members = [self.ref(k) for k in spec.get("members", [])]
        conv = {"id": don, "display_id": f"CONV-{number}", "title": spec.get("title", f"Conversation {number}"),
                "members": members, "owned_by": [self.ref(k) for k in spec.get("owned_by", [])],
                "created_by": self.ref(spec.get("created_by", members[0] if members else "SYSU-1")),
                "created_date": created, "modified_date": spec.get("modified_date", created),
                "stage": {"name": spec.get("stage", "waiting_on_user")},
                "source_channel": spec.get("source_channel", "chat"), "_seq": self.next_seq()}
        conv["modified_by"] = conv["created_by"]
        if spec.get("is_frozen") is not None:
            conv["is_frozen"] = bool(spec["is_frozen"])
        if spec.get("custom_fields"):
            conv["custom_fields"] = self._seed_custom_fields(spec["custom_fields"])
        # its workspace: the seed's, else its first contact's (the answer shows that workspace's account)
        orgs = [self.users[m]["rev_org"] for m in members if m in self.users and self.users[m].get("rev_org")]
        if spec.get("workspace") or orgs:
            conv["_rev_org"] = self.ref(spec["workspace"]) if spec.get("workspace") else orgs[0]
        self.conversations[don] = conv
        self.by_display[conv["display_id"]] = don
        if spec.get("key"):
            self.keys[spec["key"]] = don
        self._seed_comments(don, spec.get("comments", []))

    def _seed_comments(self, parent: str, comments: list[dict]) -> None:
        entries = self.entries.setdefault(parent, [])
        for spec in comments:
            author = self.ref(spec.get("by", "DEVU-1"))
            number = self.next_seq()
            created = spec.get("created_date") or self.now()
            entries.append({"type": "timeline_comment", "id": f"{parent}:comment/{number}", "object": parent,
                            "body": spec.get("body", ""), "body_type": "text",
                            "visibility": spec.get("visibility", "external"), "created_by": author,
                            "created_date": created, "modified_date": created, "modified_by": author,
                            "artifacts": [self._seed_artifact(a, author, created) for a in spec.get("artifacts", [])],
                            "_seq": number})

    def _seed_artifact(self, spec: dict, author: str, created: str) -> str:
        number = spec.get("number") or self.new_artifact_number()
        don = self.don("artifact", str(number))
        content_b64 = spec.get("content_b64")
        size = len(base64.b64decode(content_b64)) if content_b64 is not None else int(spec.get("size", 0))
        self.artifacts[don] = {"id": don, "display_id": f"artifact-{number}", "created_by": author,
                               "created_date": created, "modified_date": created,
                               "file": {"name": spec.get("name", f"file-{number}.bin"),
                                        "type": spec.get("type", "application/octet-stream"),
                                        "size": int(spec.get("declared_size", size))},
                               "_size": size, "_content_b64": content_b64,
                               "_content_seed": spec.get("content_seed", number)}
        self.by_display[f"artifact-{number}"] = don
        return don

    def new_artifact_number(self) -> int:
        """The next free artifact number (10001 and up): numbers are never reused, even after a
        deletion, so an old display id never names a new file."""
        self.artifact_counter = max(self.artifact_counter, 10000 + len(self.artifacts)) + 1
        while f"artifact-{self.artifact_counter}" in self.by_display:
            self.artifact_counter += 1
        return self.artifact_counter

    def prepare_artifact(self, file_name: str, file_type: str | None) -> dict:
        """A new artifact created now by the token's user (artifacts.prepare), without content
        until its upload: `_pending`, its file without a size (and without a type when none
        was named)."""
        number = self.new_artifact_number()
        don = self.don("artifact", str(number))
        now = self.now()
        file = {"name": file_name, **({"type": file_type} if file_type else {})}
        art = {"id": don, "display_id": f"artifact-{number}", "created_by": self.admin_id, "created_date": now,
               "modified_date": now, "file": file, "_size": 0, "_content_b64": None, "_content_seed": number,
               "_pending": True}
        self.artifacts[don] = art
        self.by_display[art["display_id"]] = don
        return art

    def store_upload(self, number: str, fields: dict[str, str], data: bytes, content_type: str | None) -> int:
        """Take an upload of artifact `artifact-<number>` to the file host: 404 when no such
        artifact, 403 unless the form carries every field its prepare gave as given and is
        not expired, else 204 with the bytes stored (size, and the type when prepare named none)."""
        art = self.artifacts.get(self.by_display.get(f"artifact-{number}", ""))
        if art is None:
            return 404
        upload = art.get("_upload")
        if upload is None or self.clock() > upload["expires"] \
                or any(fields.get(f["key"]) != f["value"] for f in upload["form"]):
            return 403
        art["_content_b64"] = base64.b64encode(data).decode("ascii")
        art["_size"] = len(data)
        art["file"]["size"] = len(data)
        art["file"].setdefault("type", content_type or "application/octet-stream")
        art.pop("_pending", None)
        art["modified_date"] = self.now()
        return 204

    def artifact_bytes(self, art: dict, start: int, length: int) -> bytes:
        """`length` bytes of the artifact from `start`; stored content is decoded only around
        that slice (4 base64 characters per 3 bytes), so streaming a big upload stays linear."""
        if art.get("_content_b64") is not None:
            first, end = start // 3, -(-(start + length) // 3)
            chunk = base64.b64decode(art["_content_b64"][first * 4:end * 4])
            return chunk[start - first * 3:start - first * 3 + length]
        return generated_bytes(art["_content_seed"], start, length)

    # merging --------------------------------------------------------------
    def begin_merge(self, secondary: dict, primary_id: str, *, after_gets: int | None,
                    delay: float | None, job: str = "completed", by: str | None = None) -> None:
        """Mark `secondary` as merged into `primary_id`; it retires after `after_gets`
        reads or `delay` seconds, whichever comes first (None: never by that rule). `job` is
        modes.merge_job: how the merge_revuser job made for it (created by `by`) ends."""
        secondary["_merge_asks"] = asks = secondary.get("_merge_asks", 0) + 1
        if job == "lost_first" and asks == 1:
            return   # acknowledged, and nothing made of it
        secondary["_merge"] = {"primary": primary_id, "gets_left": after_gets,
                               "at": None if delay is None else self.clock() + delay,
                               "job": self._new_merge_job(secondary, primary_id, by or self.admin_id),
                               "fails": job == "failed_first" and asks == 1}

    def _new_merge_job(self, secondary: dict, primary_id: str, by: str) -> str:
        """A merge_revuser job in progress, naming both contacts in its metadata ([I] the link,
        devrev_api.assumptions.MERGE_JOB_CATEGORY)."""
        number = len(self.jobs) + 1
        don = self.don("job", str(number))
        now = self.now()
        self.jobs[don] = {"id": don, "display_id": f"JOB-{number}", "job_category": "merge_revuser",
                          "job_id": f"merge_revuser-{number}", "state": "in_progress", "progress": 40,
                          "retry_count": 0, "title": f"Merge {secondary.get('display_id')} into "
                          f"{self.users[primary_id].get('display_id')}",
                          "metadata_list": [{"key": "primary_user", "type": "don", "value": primary_id},
                                            {"key": "secondary_user", "type": "don", "value": secondary["id"]}],
                          "created_by": by, "created_date": now, "modified_date": now, "_seq": self.next_seq()}
        return don

    def _end_job(self, job_id: str | None, state: str) -> None:
        job = self.jobs.get(job_id or "")
        if job:
            job.update(state=state, progress=100 if state == "completed" else job["progress"],
                       modified_date=self.now())

    def render_job(self, job: dict) -> dict:
        return self._render(job, users=("created_by",))

    def count_get(self, user: dict) -> None:
        """A rev-users.get of a merged secondary: one read closer to retirement."""
        pending = user.get("_merge")
        if pending and pending.get("gets_left") is not None:
            pending["gets_left"] -= 1

    def retire_if_due(self, user: dict, modes: BehaviourModes) -> bool:
        """True if `user` is retired, retiring a merged secondary once its delay or read
        count is reached, as modes.merge_outcome and modes.merge_moves_references say."""
        pending = user.get("_merge")
        if pending and not user.get("_retired"):
            due = pending.get("gets_left") is not None and pending["gets_left"] <= 0
            due = due or (pending.get("at") is not None and self.clock() >= pending["at"])
            due = due and modes.merge_job != "in_progress"   # a job that never ends, while the mode says so
            if due and pending.get("fails"):   # DevRev's job failed: the secondary stays as it was
                self._end_job(pending.get("job"), "failed")
                del user["_merge"]
                self.changed = True
                return False
            if due:
                self._end_job(pending.get("job"), "completed")
                user["_retired"] = True
                if modes.merge_outcome in ("404", "deleted"):
                    user["_gone"] = modes.merge_outcome == "404"
                    user["state"] = "deleted"
                elif modes.merge_outcome == "deactivated":
                    user["state"] = "deactivated"
                else:
                    user["primary_identity"] = pending["primary"]
                if modes.merge_moves_references:
                    self.move_references(user["id"], pending["primary"])
                self._retire_contact_page(user, pending["primary"], modes.contact_timeline_on_merge)
                self.changed = True
        return bool(user.get("_retired"))

    def _retire_contact_page(self, user: dict, primary_id: str, how: str) -> None:
        """A retiring secondary's own timeline and files, as modes.contact_timeline_on_merge says:
        "moved" appends them to the primary's (entries keep their ids and dates; their `object`
        becomes the primary); "deleted" removes the entries and empties its files, deleting
        every artifact they held that no other object still holds."""
        entries = self.entries.pop(user["id"], [])
        files = user.pop("artifacts", [])
        if how == "moved":
            for entry in entries:
                entry["object"] = primary_id
            if entries:
                self.entries.setdefault(primary_id, []).extend(entries)
            if files:
                primary = self.users[primary_id]
                primary["artifacts"] = list(dict.fromkeys(primary.get("artifacts", []) + files))
            return
        dropped = files + [a for e in entries for a in e.get("artifacts", [])]
        held = self._held_artifacts() if dropped else set()
        for art_id in dropped:
            if art_id not in held:
                self.artifacts.pop(art_id, None)   # its display id stays taken: numbers are never reused

    def _held_artifacts(self) -> set[str]:
        """Every artifact some work item, timeline entry or contact still holds."""
        held = {a for w in self.works.values() for a in w.get("artifacts", [])}
        held |= {a for es in self.entries.values() for e in es for a in e.get("artifacts", [])}
        held |= {a for u in self.users.values() for a in u.get("artifacts", [])}
        return held

    def move_references(self, old: str, new: str) -> None:
        """Replace contact `old` by `new` in every ticket's reporters and conversation's
        members, and in every contact id list or id of a work item's or conversation's
        custom_fields."""
        for obj, key in [(w, "reported_by") for w in self.works.values()] + \
                        [(c, "members") for c in self.conversations.values()]:
            if old in obj[key]:
                swapped = [new if u == old else u for u in obj[key]]
                obj[key] = list(dict.fromkeys(swapped))
        for obj in list(self.works.values()) + list(self.conversations.values()):
            for name, value in (obj.get("custom_fields") or {}).items():
                if value == old:
                    obj["custom_fields"][name] = new
                elif isinstance(value, list) and old in value:
                    obj["custom_fields"][name] = list(dict.fromkeys(new if v == old else v for v in value))

    def touch(self, obj: dict) -> None:
        """Stamp a write by the token's user (the sandbox admin)."""
        obj["modified_date"] = self.now()
        obj["modified_by"] = self.admin_id

    def artifact_copy(self, number: str) -> dict | None:
        """A snapshot of artifact `artifact-<number>` for the file host, or None."""
        with self.lock:
            art = self.artifacts.get(self.by_display.get(f"artifact-{number}", ""))
            return copy.deepcopy(art) if art else None

    # rendering ------------------------------------------------------------
    def org_summary(self, org_id: str) -> dict:
        org = self.orgs[org_id]
        return {"type": "rev_org", "id": org["id"], "display_id": org["display_id"],
                "display_name": org["display_name"]}

    def user_summary(self, user_id: str) -> dict:
        user = self.users.get(user_id)
        if user is None:  # a reference to something this sandbox does not know
            return {"type": "rev_user", "id": user_id}
        out = {"type": user["type"], "id": user["id"], "display_id": user["display_id"]}
        for key in ("display_name", "email", "full_name", "state"):
            if user.get(key) is not None:
                out[key] = user[key]
        if user["type"] == "rev_user":
            out["external_ref"] = user["external_ref"]
            out["rev_org"] = self.org_summary(user["rev_org"])
        return out

    def artifact_summary(self, art_id: str) -> dict:
        art = self.artifacts[art_id]
        return {"id": art["id"], "display_id": art["display_id"], "file": dict(art["file"])}

    def render_user(self, user: dict) -> dict:
        """A rev user as DevRev answers it; its files (`artifacts`, S17's RevUser and the beta
        rev-user; the public 2026 rev-user does not declare them) as summaries, when it has any."""
        out = self.user_summary(user["id"])
        out.pop("type", None)
        for key in ("created_date", "modified_date", "is_verified", "custom_fields", "phone_numbers", "description"):
            if user.get(key) is not None:
                out[key] = copy.deepcopy(user[key])
        if user.get("tags"):   # answers carry tag objects; updates send their ids (S18)
            out["tags"] = [{"tag": dict(self.tags[t])} for t in user["tags"] if t in self.tags]
        if user.get("artifacts"):
            out["artifacts"] = [self.artifact_summary(a) for a in user["artifacts"]]
        for key in ("created_by", "modified_by"):
            if user.get(key):
                out[key] = self.user_summary(user[key])
        if user.get("primary_identity"):
            out["primary_identity"] = self.user_summary(user["primary_identity"])
        return out

    def render_dev_user(self, user: dict) -> dict:
        """A dev user (dev-users.self): its summary, state and stamps."""
        out = self.user_summary(user["id"])
        for key in ("created_date", "modified_date"):
            if user.get(key):
                out[key] = user[key]
        return out

    def _render(self, obj: dict, *, users: tuple = ("created_by", "modified_by"), user_lists: tuple = (),
                omit_empty: tuple = ("artifacts",)) -> dict:
        """obj's public fields (deep copies) with its user references and artifacts rendered
        as summaries; the lists named in omit_empty are left out when empty, as DevRev does."""
        out = {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}
        for key in users:
            out[key] = self.user_summary(obj[key])
        for key in user_lists:
            out[key] = [self.user_summary(u) for u in obj[key]]
        if "artifacts" in obj:
            out["artifacts"] = [self.artifact_summary(a) for a in obj["artifacts"]]
        for key in omit_empty:
            if key in out and not out[key]:
                del out[key]
        return out

    def render_work(self, work: dict, *, ticking: bool = False) -> dict:
        """A work as DevRev answers it; `ticking` (mode fields_change_by_themselves): with a timer
        and sync bookkeeping that change on every answer."""
        out = self._render(work, user_lists=("reported_by", "owned_by"))
        if work.get("rev_org"):
            out["rev_org"] = self.org_summary(work["rev_org"])
        if ticking:
            self.ticks += 1
            out["custom_fields"] = dict(out.get("custom_fields") or {}, tnt__work_duration_counter=self.ticks)
            out["sync_metadata"] = {"origin_system": "sandbox-sync", "last_sync_in": {"sync_date": self.now()}}
        return out

    def conversation_account(self, conv: dict) -> str | None:
        """The account of the conversation's workspace (states saved before accounts have none)."""
        return self.orgs.get(conv.get("_rev_org", ""), {}).get("account")

    def render_conversation(self, conv: dict, *, ticking: bool = False) -> dict:
        out = self._render(conv, user_lists=("members", "owned_by"), omit_empty=("owned_by",))
        if ticking:
            self.ticks += 1
            out["sentiment_modified_date"] = iso(self.clock() + self.ticks / 1000)
        account = self.conversation_account(conv)
        if account:
            org = self.orgs[conv["_rev_org"]]
            out["account"] = {"id": account, "display_id": "ACC-" + account.rsplit("/", 1)[1],
                              "display_name": org["display_name"]}
        return out

    def render_entry(self, entry: dict) -> dict:
        parent = self.works.get(entry["object"]) or self.conversations.get(entry["object"]) \
            or self.users[entry["object"]]
        out = self._render(entry)
        out["object_display_id"] = parent["display_id"]
        out["object_type"] = ("ticket" if entry["object"] in self.works else
                              "conversation" if entry["object"] in self.conversations else "rev_user")
        return out

    def add_comment(self, parent: str, body: str, *, visibility: str, external_ref: str | None,
                    artifacts: list[str] | None = None) -> dict:
        """A comment written now by the token's user on a ticket's, conversation's or contact's
        timeline (timeline-entries.create), with these (uploaded) artifacts attached."""
        number = self.next_seq()
        created = self.now()
        entry = {"type": "timeline_comment", "id": f"{parent}:comment/{number}", "object": parent, "body": body,
                 "body_type": "text", "visibility": visibility, "created_by": self.admin_id,
                 "created_date": created, "modified_date": created, "modified_by": self.admin_id, "_seq": number}
        if external_ref is not None:
            entry["external_ref"] = external_ref
        if artifacts:
            entry["artifacts"] = list(artifacts)
        self.entries.setdefault(parent, []).append(entry)
        return entry

    def render_artifact(self, art: dict) -> dict:
        return self._render(art, users=("created_by",))

    # persistence and inspection ---------------------------------------------
    def to_json(self) -> dict:
        with self.lock:
            return copy.deepcopy({"devo": self.devo, "seq": self.seq, "orgs": self.orgs, "users": self.users,
                                  "works": self.works, "conversations": self.conversations,
                                  "entries": self.entries, "artifacts": self.artifacts,
                                  "by_display": self.by_display, "keys": self.keys, "jobs": self.jobs,
                                  "tags": self.tags})

    def load_json(self, data: dict) -> None:
        with self.lock:
            for key in ("devo", "seq", "orgs", "users", "works", "conversations", "entries", "artifacts",
                        "by_display", "keys"):
                setattr(self, key, copy.deepcopy(data[key]))
            self.jobs = copy.deepcopy(data.get("jobs", {}))   # a state saved before jobs had none
            self.tags = copy.deepcopy(data.get("tags", {}))   # ... or before contacts had tags

    def dump(self) -> dict:
        """The state as a client would see it (rendered), for tests to diff."""
        with self.lock:
            return {
                "rev_users": {u["id"]: dict(self.render_user(u), _retired=bool(u.get("_retired")),
                                            _state=u["state"],
                                            **({"_external_refs_extra": u["external_refs_extra"]}
                                               if u.get("external_refs_extra") else {}))
                              for u in self.users.values() if u["type"] == "rev_user"},
                "works": {w["id"]: self.render_work(w) for w in self.works.values()},
                "conversations": {c["id"]: self.render_conversation(c) for c in self.conversations.values()},
                "timeline_entries": {p: [self.render_entry(e) for e in es] for p, es in self.entries.items()},
                "artifacts": {a["id"]: self.render_artifact(a) for a in self.artifacts.values()},
            }


