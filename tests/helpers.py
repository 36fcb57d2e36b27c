"""Helpers shared by the test files (fixtures and hooks live in conftest.py).

Import them as `from helpers import ...`: the token the emulators accept, a tmp working
directory wired to one emulator (`MergeRun`), emulator states made comparable
(`normalized`, `expected_after_merge`), and the invariants the merge tests check
(`owners_of`, `ownership_violations`, `MergeGuard`, `journal_problems`, `assert_private_tree`).
"""
from __future__ import annotations

import copy
import glob
import json
import os
import sqlite3
import stat
import time

import requests

import devrev_client
import merge_contacts
from devrev_sandbox.dataset import Dataset
from runs import journal
from runs.notes import NOTE_REF_PREFIX

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_TOKEN = "tok-SECRET-7f3a9c-do-not-log"  # what every test emulator accepts; must never be written


class MergeRun:
    """A tmp working directory wired to one emulator and one contacts CSV."""

    def __init__(self, tmp_path, sandbox, dataset: Dataset | None = None, monkeypatch=None,
                 csv_text: str | None = None):
        self.dir = tmp_path
        self.sandbox = sandbox
        self.csv = str(tmp_path / "contacts.csv")
        with open(self.csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(csv_text if csv_text is not None else dataset.csv_text())
        if monkeypatch is not None:
            monkeypatch.chdir(tmp_path)
            monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
            monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
            monkeypatch.setenv("DEVREV_RATE_LIMIT", "1000000")

    def paths(self) -> list[str]:
        return ["--csv", self.csv, "--report-dir", str(self.dir / "reports"), "--log-dir", str(self.dir / "logs"),
                "--backup-dir", str(self.dir / "backups"), "--savepoint", str(self.dir / "savepoints" / "j.sqlite3")]

    def run(self, *args: str) -> int:
        return merge_contacts.main(self.paths() + list(args))

    def preview(self, *args: str) -> int:
        return self.run("--preview", *args)

    def latest_report(self, kind: str = "merge_report") -> dict:
        paths = sorted(glob.glob(str(self.dir / "reports" / f"{kind}_*.json")), key=os.path.getmtime)
        with open(paths[-1], encoding="utf-8") as fh:
            return json.load(fh)

    def backups(self) -> list[str]:
        root = self.dir / "backups"
        return sorted(str(root / n) for n in os.listdir(root)) if root.exists() else []


class FakeClock:
    """The emulator's time, moved on by the client's waits instead of sleeping: pass it as the
    emulator's `clock` and patch DevRevClient.wait to `wait`; `waits` lists what was waited."""

    def __init__(self):
        self.offset = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.offset += seconds


def ids(users) -> list[str]:
    """The ids of a list of user summaries (None -> [])."""
    return [u["id"] for u in users or []]


_USER_TYPES = {"rev_user", "dev_user", "sys_user", "service_account"}


def _summaries_to_ids(value):
    """User summaries embed the user's current external_ref and state: compare ids only."""
    if isinstance(value, dict):
        if value.get("type") in _USER_TYPES and "id" in value:
            return value["id"]
        return {k: _summaries_to_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_summaries_to_ids(v) for v in value]
    return value


def is_tool_note(entry: dict) -> bool:
    """A note the tool left on a contact's timeline (runs.notes): compared apart, see tool_notes."""
    return str(entry.get("external_ref") or "").startswith(NOTE_REF_PREFIX + ":")


def tool_notes(dump: dict) -> dict[str, list[dict]]:
    """The tool's notes in an emulator state, by the contact they are on."""
    return {parent: notes for parent, listed in dump["timeline_entries"].items()
            for notes in [[e for e in listed if is_tool_note(e)]] if notes}


def normalized(dump: dict) -> dict:
    """An emulator state with references as ids, edit stamps and the tool's notes dropped
    (tool_notes has those), for comparing runs."""
    entries = {parent: kept for parent, listed in dump["timeline_entries"].items()
               for kept in [[e for e in listed if not is_tool_note(e)]] if kept}
    out = {"rev_users": {}, "works": {}, "conversations": {},
           "timeline_entries": _summaries_to_ids(entries),
           "artifacts": _summaries_to_ids(dump["artifacts"])}
    for uid, user in dump["rev_users"].items():
        out["rev_users"][uid] = {"email": user.get("email"), "external_ref": user.get("external_ref"),
                                 "retired": user["_retired"], "state": user["_state"],
                                 "display_name": user.get("display_name"), "full_name": user.get("full_name"),
                                 # the fields --fill-blanks may write (issue 27): a merge without it writes none
                                 "description": user.get("description"), "phone_numbers": user.get("phone_numbers"),
                                 "tags": sorted(t["tag"]["id"] for t in user.get("tags") or []),
                                 "custom_fields": user.get("custom_fields")}
        if user.get("_external_refs_extra"):   # the rest of its external_refs (mode contact_external_refs)
            out["rev_users"][uid]["external_refs_extra"] = user["_external_refs_extra"]
    for kind, field in (("works", "reported_by"), ("conversations", "members")):
        for oid, obj in dump[kind].items():
            item = _summaries_to_ids({k: v for k, v in obj.items() if k not in (
                "modified_date", "modified_by", "reported_by", "owned_by", "members", "created_by")})
            item[field] = ids(obj.get(field))
            item["owned_by"] = ids(obj.get("owned_by"))
            item["created_by"] = obj["created_by"]["id"]
            out[kind][oid] = item
    return json.loads(json.dumps(out, sort_keys=True))


def expected_after_merge(before: dict, sandbox, dataset: Dataset, merged_emails: set[str]) -> dict:
    """What a correct run does to `before`: nothing but the moves, retirements and refs."""
    state = copy.deepcopy(before)
    for ms in dataset.merge_sets:
        if ms["email"] not in merged_emails:
            continue
        primary = sandbox.key_id(ms["primary"])
        dups = [sandbox.key_id(k) for k in ms["duplicates"]]
        for kind, field in (("works", "reported_by"), ("conversations", "members")):
            for obj in state[kind].values():
                for dup in dups:
                    if dup in obj[field]:
                        obj[field] = list(dict.fromkeys(primary if u == dup else u for u in obj[field]))
        for dup in dups:
            state["rev_users"][dup]["retired"] = True
            state["rev_users"][dup]["state"] = "deleted"
        newest = max(dups, key=lambda d: [u for u in dataset.seed["rev_users"]
                                          if sandbox.key_id(u["key"]) == d][0]["modified_date"])
        state["rev_users"][primary]["external_ref"] = before["rev_users"][newest]["external_ref"]
    return state


def capture_stop_event(monkeypatch) -> dict:
    """Patch the client so a test can press "Ctrl-C": returns {"event": the run's stop event}
    (as the signal handler sets it), filled in when the run builds its client."""
    holder: dict = {}
    real_init = devrev_client.DevRevClient.__init__

    def capture(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        holder["event"] = self.stop_event

    monkeypatch.setattr(devrev_client.DevRevClient, "__init__", capture)
    return holder


def files_a_ticket(dup_key: str, after_endpoint: str, title: str):
    """An emulator hook: the integration files one ticket under `dup_key` right after the first
    applied `after_endpoint` call. Returns (hook, filed); filed["id"] is the new ticket's DON."""
    filed: dict = {}

    def hook(sandbox, entry):
        if entry["endpoint"] == after_endpoint and entry.get("applied") and not filed:
            filed["id"] = sandbox.add_ticket({"title": title, "reported_by": [dup_key], "owned_by": ["agent1"]})

    return hook, filed


# --------------------------------------------------------------------------- merge invariants
def owners_of(sandbox, dataset) -> dict[str, set[str]]:
    """Each ticket / conversation a duplicate is on -> the contacts of its merge set."""
    dump = sandbox.dump()
    owners: dict[str, set[str]] = {}
    for ms in dataset.merge_sets:
        contacts = {sandbox.key_id(ms["primary"])} | {sandbox.key_id(d) for d in ms["duplicates"]}
        dups = contacts - {sandbox.key_id(ms["primary"])}
        for kind, field in (("works", "reported_by"), ("conversations", "members")):
            for oid, obj in dump[kind].items():
                if dups & {u["id"] for u in obj[field]}:
                    owners.setdefault(oid, set()).update(contacts)
    return owners


def ownership_violations(sandbox, owners: dict[str, set[str]]) -> list[str]:
    """Every works.update / conversations.update the emulator received (applied or not) must
    target an object a merge set owns, and its `set` must be non-empty and still name one
    of that set's contacts: at no moment may a ticket lose its reporter or a conversation
    its customer."""
    problems = []
    for entry in list(sandbox.request_log):
        field = {"works.update": "reported_by", "conversations.update": "members"}.get(entry.get("endpoint"))
        if field is None:
            continue
        body = entry.get("body")
        if not isinstance(body, dict):
            # a request cut off by a kill mid-send: refused as unparseable, nothing applied
            if entry.get("applied"):
                problems.append(f"call {entry['seq']}: {entry['endpoint']} applied an unreadable body {body!r:.80}")
            continue
        oid = body.get("id")
        if oid not in owners:
            problems.append(f"call {entry['seq']}: {entry['endpoint']} on {oid}, which no merge set owns")
            continue
        new = (body.get(field) or {}).get("set") if isinstance(body.get(field), dict) else None
        if not new:
            problems.append(f"call {entry['seq']}: {oid} {field} set to {new!r}")
        elif not set(new) & owners[oid]:
            problems.append(f"call {entry['seq']}: {oid} {field} set to {new} (none of its merge set)")
    return problems


class MergeGuard:
    """An emulator hook: each rev-users.merge DevRev applies must find the duplicate owning
    nothing (else a ticket or conversation would keep a retired contact as its customer)."""

    def __init__(self):
        self.merges = 0
        self.violations: list[tuple[str, list[str]]] = []

    def __call__(self, sandbox, entry):
        if entry.get("endpoint") != "rev-users.merge" or not entry.get("applied"):
            return
        dup = entry["body"]["secondary_user"]
        with sandbox.state.lock:
            owned = [w["display_id"] for w in sandbox.state.works.values() if dup in w["reported_by"]]
            owned += [c["display_id"] for c in sandbox.state.conversations.values() if dup in c["members"]]
        self.merges += 1
        if owned:
            self.violations.append((dup, owned))


def journal_problems(path) -> list[str]:
    """journal.check() plus: no intent left open anywhere."""
    db = journal.Journal(str(path), "check")
    try:
        problems = db.check()
    finally:
        db.close()
    con = sqlite3.connect(str(path))
    try:
        open_intents = con.execute("SELECT set_key, step FROM steps WHERE status = 'intent'").fetchall()
    finally:
        con.close()
    return problems + [f"open intent {s} of {k}" for k, s in open_intents]


def assert_private_tree(root) -> None:
    """Every folder under `root` (itself included) is 0700 and every file 0600."""
    bad = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if stat.S_IMODE(os.stat(dirpath).st_mode) != 0o700:
            bad.append(f"{dirpath}: {oct(stat.S_IMODE(os.stat(dirpath).st_mode))}")
        for name in filenames:
            mode = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
            if mode != 0o600:
                bad.append(f"{os.path.join(dirpath, name)}: {oct(mode)}")
    assert not bad, "not private: " + ", ".join(bad[:10])


# --------------------------------------------------------------------------- a small emulator seed
DUP_REF = "user_" + "Zy9xW8vU7tS6rQ5pO4nM3l"


def seed() -> dict:
    return {
        "workspaces": [{"key": "acme", "display_name": "Acme Inc"}],
        "dev_users": [{"key": "agent1", "email": "agent1@support.example"}],
        "rev_users": [
            {"key": "jane", "email": "jane@acme.example", "workspace": "acme", "full_name": "Jane Roe"},
            {"key": "jane-dup", "email": "jane@acme.example", "workspace": "acme", "external_ref": DUP_REF},
            {"key": "bob", "email": "bob@acme.example", "workspace": "acme"},
        ],
        "tickets": [
            {"key": "t1", "reported_by": ["jane-dup"], "owned_by": ["agent1"], "workspace": "acme",
             "comments": [{"by": "jane-dup", "body": "help",
                           "artifacts": [{"number": 9001, "name": "a.txt", "type": "text/plain", "size": 64}]}]},
            {"key": "t2", "reported_by": ["jane-dup", "jane"], "owned_by": ["agent1"], "workspace": "acme"},
            {"key": "t3", "reported_by": ["bob"], "owned_by": ["agent1"], "workspace": "acme"},
        ],
        "conversations": [{"key": "c1", "members": ["jane-dup", "agent1"], "owned_by": ["agent1"]}],
    }


def call(sb, endpoint: str, body=None, *, token: str | None = TEST_TOKEN, bearer: bool = True,
         method: str = "POST", params: dict | None = None, headers: dict | None = None) -> requests.Response:
    hdrs = {"Content-Type": "application/json"}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}" if bearer else token
    hdrs.update(headers or {})
    if method == "GET":
        return requests.get(f"{sb.base_url}/{endpoint}", params=params, headers=hdrs, timeout=10,
                            allow_redirects=False)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body if body is not None else {})
    return requests.post(f"{sb.base_url}/{endpoint}", data=data, headers=hdrs, timeout=10, allow_redirects=False)


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def references(sb) -> dict:
    """Who each ticket and conversation names (ids only: summaries also show each user's state)."""
    dump = sb.dump()
    out = {w: [u["id"] for u in work["reported_by"]] for w, work in dump["works"].items()}
    out.update({c: [u["id"] for u in conv["members"]] for c, conv in dump["conversations"].items()})
    return out


def sigterm_mid_merge(tmp_path, make_sandbox) -> tuple["MergeRun", int, bytes, bytes]:
    """A real merge_contacts.py subprocess (6 sets, 1 worker) sent SIGTERM after about 30
    calls: (the MergeRun, its exit code, stdout, stderr)."""
    import signal
    import subprocess
    import sys
    import time

    from devrev_sandbox.dataset import build_dataset
    from devrev_sandbox.faults import Faults
    dataset = build_dataset(6, seed=13, tickets=(1, 3), conversations=(1, 2), skipped=False)
    sandbox = make_sandbox(dataset.seed, faults=Faults(latency=0.02))
    run = MergeRun(tmp_path, sandbox, dataset)
    env = dict(os.environ, DEVREV_API_TOKEN=TEST_TOKEN, DEVREV_BASE_URL=sandbox.base_url, DEVREV_RATE_LIMIT="1000000")
    command = [sys.executable, os.path.join(ROOT, "merge_contacts.py"), *run.paths(), "--skip-preview-check",
               "--workers", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(sandbox.api_calls()) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return run, proc.returncode, out, err
