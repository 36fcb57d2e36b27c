"""restore_contacts.py: merged sets put back from their backups, on the emulator.

The yardstick is the emulator's state before the merge: after a merge and a restore it
must be the same, except what DevRev cannot give back (a re-created contact is a new
object, the retired one stays retired) and every reference to a duplicate naming its
re-created contact instead (`expected_after_restore` computes exactly that).
"""
from __future__ import annotations

import copy
import glob
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest

import backup
import restore_contacts
import restoring.run
from devrev_sandbox.dataset import DEMO_CSV, DEMO_SEED, build_dataset
from devrev_sandbox.faults import Faults
from devrev_sandbox.modes import BehaviourModes
from helpers import TEST_TOKEN, MergeRun, capture_stop_event, normalized
from operator_view import restore_reports
from plumbing.clock import iso_utc, utc_now
from restoring import backup_sets, engine
from runs.journal import Journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_dataset():
    """Three sets, one with two duplicates (the first)."""
    return build_dataset(3, seed=5, tickets=(1, 3), conversations=(1, 2), two_duplicate_sets=1, skipped=False)


class RestoreRun:
    """restore_contacts.main in-process, on the folders of a MergeRun."""

    def __init__(self, run: MergeRun):
        self.dir = run.dir

    def paths(self) -> list[str]:
        return ["--backup-dir", str(self.dir / "backups"), "--report-dir", str(self.dir / "reports"),
                "--log-dir", str(self.dir / "logs"), "--savepoint", str(self.dir / "savepoints" / "restore.sqlite3"),
                "--merge-savepoint", str(self.dir / "savepoints" / "j.sqlite3")]

    def run(self, *args: str) -> int:
        return restore_contacts.main(self.paths() + list(args))

    def report(self, kind: str = "restore_report") -> dict:
        paths = sorted(glob.glob(str(self.dir / "reports" / f"{kind}_*.json")), key=os.path.getmtime)
        with open(paths[-1], encoding="utf-8") as fh:
            return json.load(fh)


def recreated(report: dict) -> dict[str, str]:
    """Old duplicate id -> the contact that stands for it now (itself when it was kept)."""
    return {d["id"]: d["new_id"] for s in report["sets"] for d in s["duplicates"] if d.get("new_id")}


def expected_after_restore(before: dict, after: dict, mapping: dict[str, str]) -> dict:
    """`before` (normalized) as a restore must leave it: every old duplicate that was
    re-created stays retired and has a new twin (same email, display name and external_ref,
    active); every reporter and member that named an old duplicate names its twin."""
    state = copy.deepcopy(before)
    for old, new in mapping.items():
        if old == new:
            continue
        # full_name is not in rev-users.create: a contact created again has none (NOT_GIVEN_BACK)
        state["rev_users"][new] = dict(before["rev_users"][old], retired=False, state="active", full_name=None)
        state["rev_users"][old] = dict(after["rev_users"][old])
        assert after["rev_users"][old]["retired"] is True   # a retired contact never comes back by itself
    for kind, field in (("works", "reported_by"), ("conversations", "members")):
        for obj in state[kind].values():
            if not set(obj[field]) & set(mapping):
                continue    # the merge never listed it (a ticket naming a duplicate only in a custom field,
                # on a tenant refusing works.list's custom_fields filter): it still names the retired contact
            obj[field] = [mapping.get(u, u) for u in obj[field]]
            for name, value in (obj.get("custom_fields") or {}).items():   # custom fields naming it too
                obj["custom_fields"][name] = [mapping.get(v, v) for v in value] if isinstance(value, list) \
                    else mapping.get(value, value)
    # a re-created contact's own page is written again as the tool's notes (new ids, compared in
    # test_contact_page_and_fields.py); the retired one's is gone with it, and so are its files
    for old, new in mapping.items():
        if old != new:
            state["timeline_entries"].pop(old, None)
    # every file still referenced by a ticket, a conversation or an entry stays; the others (the retired
    # contact's own) may be gone; the restore's uploads are new
    held = json.dumps([state["works"], state["conversations"], state["timeline_entries"]])
    state["artifacts"] = {a: v for a, v in state["artifacts"].items() if a in held or a in after["artifacts"]}
    state["artifacts"].update({a: v for a, v in after["artifacts"].items() if a not in before["artifacts"]})
    return state


def _merge(tmp_path, monkeypatch, sandbox, dataset=None, *args) -> MergeRun:
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch,
                   csv_text=None if dataset else open(DEMO_CSV,
                                                      encoding="utf-8", newline="").read())
    assert run.preview(*args) == 0
    assert run.run(*args) == 0
    return run


@pytest.mark.slow
def test_merge_everything_then_restore_everything_gives_back_the_state_before_the_merge(
        tmp_path, monkeypatch, make_sandbox):
    sandbox = make_sandbox(DEMO_SEED)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox)
    merged = normalized(sandbox.dump())
    restore = RestoreRun(run)

    assert restore.run() == 2                       # a real restore needs a preview first
    sandbox.clear_log()
    assert restore.run("--preview") == 0
    assert sandbox.write_attempts() == [] and normalized(sandbox.dump()) == merged
    preview = restore.report("restore_preview")
    assert {s["status"] for s in preview["sets"]} == {"would_restore"}
    assert os.path.exists(str(tmp_path / "reports" / f"restore_preview_{preview['run_id']}.csv"))

    assert restore.run() == 0
    report = restore.report()
    mapping = recreated(report)
    after = normalized(sandbox.dump())
    assert len(mapping) == 13 and all(old != new for old, new in mapping.items())
    assert after == expected_after_restore(before, after, mapping)
    assert report["totals"]["restored"] == 12 and report["totals"]["contacts_recreated"] == 13
    assert report["journal_problems"] == []
    csv_lines = open(str(tmp_path / "reports" / f"restore_report_{report['run_id']}.csv"), encoding="utf-8").read()
    assert csv_lines.startswith("email,status,primary,duplicate,new_contact")

    sandbox.clear_log()                             # a completed restore re-run makes no write call
    assert restore.run() == 0
    assert sandbox.write_attempts() == [] and normalized(sandbox.dump()) == after
    assert restore.report()["totals"]["contacts_recreated"] == 0


def test_restore_after_a_keep_duplicate_run_uses_the_duplicates_as_they_are(tmp_path, monkeypatch, make_sandbox,
                                                                            small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset, "--keep-duplicate")
    assert normalized(sandbox.dump()) != before
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    assert {d["state"] for s in restore.report("restore_preview")["sets"] for d in s["duplicates"]} == {"kept"}
    sandbox.clear_log()
    assert restore.run() == 0
    assert [e for e in sandbox.writes() if e["endpoint"].startswith("rev-users.")] == []
    assert normalized(sandbox.dump()) == before
    assert all(old == new for old, new in recreated(restore.report()).items())


def test_only_restores_one_set_and_leaves_the_others_merged(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    merged = normalized(sandbox.dump())
    chosen = small_dataset.merge_sets[0]
    restore = RestoreRun(run)
    assert restore.run("--only", chosen["email"].upper(), "--preview") == 0
    assert restore.run("--only", chosen["email"]) == 0
    report = restore.report()
    assert [s["email"] for s in report["sets"]] == [chosen["email"]]
    mapping = recreated(report)
    assert set(mapping) == {sandbox.key_id(k) for k in chosen["duplicates"]}
    after = normalized(sandbox.dump())
    # the chosen set is as before the merge; everything else as the merge left it
    mine = {sandbox.key_id(k) for k in [chosen["primary"], *chosen["duplicates"]]} | set(mapping.values())
    expected = expected_after_restore(before, after, mapping)
    for uid in after["rev_users"]:
        assert after["rev_users"][uid] == (expected if uid in mine else merged)["rev_users"][uid]
    for kind, field in (("works", "reported_by"), ("conversations", "members")):
        for oid, obj in after[kind].items():
            touched = set(before[kind][oid][field]) & mine
            assert obj == (expected if touched else merged)[kind][oid], oid
    assert restore.run("--only", "nobody@nowhere.example") == 2


def test_a_tampered_backup_is_refused_and_its_set_left_alone(tmp_path, monkeypatch, make_sandbox, small_dataset,
                                                             capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    merged = normalized(sandbox.dump())
    victim, pair = small_dataset.merge_sets[1], small_dataset.merge_sets[0]   # pair: two duplicates
    assert len(pair["duplicates"]) == 2
    folder, pair_folder = (next(f for f in run.backups() if os.path.basename(f).startswith(
        backup.folder_prefix(ms["email"]))) for ms in (victim, pair))
    for path in (os.path.join(folder, backup.TICKETS), os.path.join(pair_folder, backup.METADATA)):
        data = open(path, "rb").read()
        with open(path, "wb") as fh:
            fh.write(data.replace(b"reported_by", b"reported_bx", 1))
    restore = RestoreRun(run)
    capsys.readouterr()
    assert restore.run("--preview") == 1
    err = capsys.readouterr().err
    assert f"FAILED {folder}: tickets.json: content changed" in err
    assert restore.run() == 1
    report = restore.report()
    assert victim["email"] not in [s["email"] for s in report["sets"]]   # its only backup is not used
    assert sorted((f["folder"], f["email"]) for f in report["failed_folders"]) == \
        sorted([(folder, victim["email"]), (pair_folder, pair["email"])])
    # a set with one good and one bad backup is held back whole
    (held,) = [s for s in report["sets"] if s["email"] == pair["email"]]
    assert held["status"] == "failed" and "does not verify" in held["error"]
    assert report["totals"]["folders_failed"] == 2 and report["totals"]["restored"] == 1
    after = normalized(sandbox.dump())
    victims = {sandbox.key_id(k) for k in victim["duplicates"]}
    assert all(after["rev_users"][d] == merged["rev_users"][d] for d in victims)
    primary = sandbox.key_id(victim["primary"])
    assert after["rev_users"][primary] == merged["rev_users"][primary]   # still carries the duplicate's ref
    for ms in (victim, pair):
        for key in [ms["primary"], *ms["duplicates"]]:
            assert after["rev_users"][sandbox.key_id(key)] == merged["rev_users"][sandbox.key_id(key)]
    created = [e for e in sandbox.writes() if e["endpoint"] == "rev-users.create"]
    assert {e["body"]["email"] for e in created} == {small_dataset.merge_sets[2]["email"]}


def test_a_ticket_changed_since_the_merge_keeps_that_change(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    chosen = small_dataset.merge_sets[0]
    primary, dup = sandbox.key_id(chosen["primary"]), sandbox.key_id(chosen["duplicates"][0])
    moves = [m for f in run.backups() for m in backup.load_moves(f)
             if m.kind == "ticket" and dup in m.users and primary not in m.users]
    assert moves
    ticket = moves[0]
    other = next(u for u, user in sandbox.dump()["rev_users"].items()
                 if not user["_retired"] and u not in (primary, dup))
    with sandbox.state.lock:                           # someone adds a reporter after the merge
        sandbox.state.works[ticket.id]["reported_by"].append(other)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    items = [i for s in restore.report("restore_preview")["sets"] for d in s["duplicates"] for i in d["items"]
             if i["id"] == ticket.id]
    assert items[0]["changed_since"] == {"added": [other], "removed": []} and items[0]["action"] == "move_back"
    assert restore.run() == 0
    new = recreated(restore.report())[dup]
    now = [u["id"] for u in sandbox.dump()["works"][ticket.id]["reported_by"]]
    assert now == [new if u == dup else u for u in ticket.users] + [other]


def test_the_preview_lists_every_write_and_the_run_refuses_one_it_did_not_list(tmp_path, monkeypatch, make_sandbox,
                                                                              small_dataset, capsys):
    """A ticket the preview left alone (the primary was taken off it since the merge) that
    carries the primary again by run time would need a write the admin never saw: the run
    refuses it, names it, and writes nothing more of that set; the other sets restore."""
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    chosen = small_dataset.merge_sets[0]
    primary, dup = sandbox.key_id(chosen["primary"]), sandbox.key_id(chosen["duplicates"][0])
    ticket = next(m for f in run.backups() for m in backup.load_moves(f)
                  if m.kind == "ticket" and dup in m.users and primary not in m.users)
    other = next(u for u, user in sandbox.dump()["rev_users"].items()
                 if not user["_retired"] and u not in (primary, dup))
    with sandbox.state.lock:                           # the primary is taken off the ticket after the merge
        sandbox.state.works[ticket.id]["reported_by"] = [other]
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    preview = restore.report("restore_preview")
    shown = next(s for s in preview["sets"] if s["email"] == chosen["email"])
    writes = {(w["write"], w["id"]) for w in shown["writes"]}
    assert ("item_back", ticket.id) not in writes and ("restore_note", primary) in writes
    assert {("item_back", i["id"]) for d in shown["duplicates"] for i in d["items"]
            if i["action"] == "move_back"} <= writes
    assert {("recreate", d["id"]) for d in shown["duplicates"]} <= writes
    with sandbox.state.lock:                           # ... and put back on it before the run
        sandbox.state.works[ticket.id]["reported_by"] = [primary]
    sandbox.clear_log()
    assert restore.run() == 1
    line = next(s for s in restore.report()["sets"] if s["email"] == chosen["email"])
    assert line["status"] == "failed" and ticket.display_id in line["error"] and "did not list" in line["error"]
    assert [u["id"] for u in sandbox.dump()["works"][ticket.id]["reported_by"]] == [primary]
    assert {s["status"] for s in restore.report()["sets"] if s["email"] != chosen["email"]} == {"restored"}


@pytest.mark.slow
def test_a_network_cut_after_writes_resumes_without_doing_anything_twice(tmp_path, monkeypatch, make_sandbox,
                                                                        small_dataset):
    """DevRev applies writes (a create included) but their answers are lost; re-runs finish
    the restore, and each contact is created once."""
    sandbox = make_sandbox(small_dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    sandbox.set_faults(Faults(drop_after_write_rate=0.3, seed=3))
    codes = [restore.run() for _ in range(6)]
    sandbox.set_faults(Faults())
    codes.append(restore.run())
    assert codes[-1] == 0 and set(codes) <= {0, 1}
    assert any(e.get("fault") == "drop_after_write" for e in sandbox.request_log)
    mapping = recreated(restore.report())
    after = normalized(sandbox.dump())
    assert after == expected_after_restore(before, after, mapping)
    assert len([e for e in sandbox.writes() if e["endpoint"] == "rev-users.create"]) == len(mapping) == 4


def test_ctrl_c_stops_after_the_call_in_flight_and_a_rerun_finishes(tmp_path, monkeypatch, make_sandbox,
                                                                    small_dataset):
    pressed = {"on": True}

    def press_after_third_write(sandbox, entry):
        if entry.get("applied") and len(sandbox.writes()) == 3 and pressed["on"]:
            pressed["client"]["event"].set()      # as the Ctrl-C handler does

    sandbox = make_sandbox(small_dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    sandbox.clear_log()
    sandbox.on_request = press_after_third_write
    pressed["client"] = capture_stop_event(monkeypatch)
    assert restore.run("--workers", "1") == 130
    report = restore.report()
    assert report["interrupted"] is True and report["interrupted_by"] == "a stop request"
    assert {s["status"] for s in report["sets"]} >= {"pending"}
    assert len(sandbox.writes()) == 3
    # the report says what DevRev holds: the re-created contact and each item already given back
    writes = [e["endpoint"] for e in sandbox.writes()]
    assert report["totals"]["contacts_recreated"] == writes.count("rev-users.create")
    assert report["totals"]["items_moved_back"] == writes.count("works.update") + writes.count("conversations.update")
    pressed["on"] = False
    first_run = report["totals"]["items_moved_back"]
    sandbox.clear_log()
    assert restore.run() == 0
    after = normalized(sandbox.dump())
    assert after == expected_after_restore(before, after, recreated(restore.report()))
    totals = restore.report()["totals"]   # "this run" counts this run's writes; the earlier run's apart
    writes = [e["endpoint"] for e in sandbox.writes()]
    assert totals["items_moved_back"] == writes.count("works.update") + writes.count("conversations.update")
    assert totals["items_moved_back_in_all"] == totals["items_moved_back"] + first_run and first_run > 0
    assert totals["contacts_recreated"] == writes.count("rev-users.create")   # this run's creates only
    assert totals["contacts_recreated_in_all"] == len(recreated(restore.report()))


@pytest.mark.parametrize("lag, status", [(2, "restored"), (1000, "failed")])
def test_a_listing_that_lags_is_looked_at_again_for_a_while(tmp_path, monkeypatch, make_sandbox, make_client,
                                                             small_dataset, lag, status):
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    client = make_client(sandbox, sleep=sleep)
    real_list, calls = client.list_tickets, []

    def lagging(reporter):
        calls.append(reporter)
        return iter([]) if len(calls) <= lag else real_list(reporter)

    client.list_tickets = lagging
    sets, _ = backup_sets.load_backup_sets(str(run.dir / "backups"))
    (bset,) = [s for s in sets if s.email == small_dataset.merge_sets[2]["email"]]
    journal = Journal(str(tmp_path / "r.sqlite3"), "run", exclusive=True)
    try:
        out = engine.SetRestorer(client, journal, clock=lambda: now[0]).restore(bset)
    finally:
        journal.close()
    assert out.status == status
    if status == "restored":
        assert slept == [0.2, 0.4]
    else:
        assert "does not return" in out.error and sum(slept) == pytest.approx(10.0) and max(slept) == 2.0


def test_help_states_what_a_restore_cannot_give_back(capsys):
    assert restore_contacts.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("a re-created contact is a new DevRev object (new id and display id, its own creation date)",
                  "comments the duplicate wrote stay attributed as DevRev's merge left them",
                  "tickets the integration filed under the primary after the merge stay with the primary"):
        assert words in text


def test_a_contact_merged_again_after_a_restore_is_restored_from_both_merges(tmp_path, monkeypatch, make_sandbox,
                                                                            small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0 and restore.run() == 0
    first = recreated(restore.report())
    chosen = small_dataset.merge_sets[2]
    primary, (dup,) = chosen["primary"], chosen["duplicates"]
    users = sandbox.dump()["rev_users"]
    again = users[first[sandbox.key_id(dup)]]
    rows = [r for r in small_dataset.csv_text().splitlines()[1:] if chosen["email"] in r and "REVU-" in r.split(",")[2]]
    header = small_dataset.csv_text().splitlines()[0]
    columns = header.split(",")
    extra = dict.fromkeys(columns, "")
    extra.update(REV_USER_ID=again["display_id"], EMAIL=chosen["email"], EXTERNAL_REF=again["external_ref"])
    csv_text = "\r\n".join([header, *rows, ",".join(extra[c] for c in columns)]) + "\r\n"
    second = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=csv_text)
    assert second.preview() == 0 and second.run() == 0                    # the re-created contact merged again
    assert [s["status"] for s in second.latest_report()["sets"]] == ["merged"]
    assert restore.run("--only", chosen["email"], "--preview") == 0
    preview = restore.report("restore_preview")
    (dups,) = [s["duplicates"] for s in preview["sets"]]
    assert [d["id"] for d in dups] == [again["id"]]                       # one contact, two merges
    assert restore.run("--only", chosen["email"]) == 0
    final = recreated(restore.report())[again["id"]]
    mapping = dict(first, **{sandbox.key_id(dup): final})
    after = normalized(sandbox.dump())
    expected = expected_after_restore(before, after, mapping)
    expected["rev_users"][again["id"]] = after["rev_users"][again["id"]]
    assert after["rev_users"][again["id"]]["retired"] is True
    assert after == expected, sandbox.key_id(primary)


def test_restored_users_keeps_order_and_the_primary_where_it_was():
    f = engine.restored_users
    assert f(["a", "P", "b"], ["a", "D", "b"], "D", "N", "P") == ["a", "N", "b"]
    assert f(["P", "x"], ["P", "D"], "D", "N", "P") == ["P", "N", "x"]          # the primary was there before
    assert f(["P"], ["D", "P"], "D", "N", "P") == ["N", "P"]
    assert f(["P", "s"], ["D", "s", "P"], "D", "N", "P") == ["N", "s", "P"]          # the backup's order
    assert f(["s", "P"], ["D", "s", "P"], "D", "N", "P") == ["N", "s", "P"]          # whatever order now
    assert f(["a", "b"], ["a", "D"], "D", "N", "P") is None                      # the primary was taken off since
    assert engine.after_merge(["A", "B", "x"], {"A", "B"}, "P") == ["P", "x"]


# --------------------------------------------------------------------------- crashes
_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import devrev_client, restore_contacts
from runs import journal
mode = os.environ["KILL_AT"]
real_step, real_call = journal.Journal._step, devrev_client.DevRevClient.call
def step(self, *a, **kw):
    real_step(self, *a, **kw)
    if mode == "step":
        os.kill(os.getpid(), signal.SIGKILL)
def call(self, endpoint, *a, **kw):
    answer = real_call(self, endpoint, *a, **kw)
    if mode == "write" and endpoint.endswith((".update", ".create")):
        os.kill(os.getpid(), signal.SIGKILL)   # DevRev applied it; the journal never hears
    return answer
journal.Journal._step, devrev_client.DevRevClient.call = step, call
sys.exit(restore_contacts.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_at_every_step_boundary_then_rerun_ends_restored(tmp_path, monkeypatch, make_sandbox):
    """Each run is killed right after its first journal line (intent or done) or right after
    DevRev applied its first write; the next run resumes. Nothing is done twice."""
    dataset = build_dataset(3, seed=21, tickets=(1, 2), conversations=(0, 1), comments=(0, 1),
                            attachment_rate=0.3, two_duplicate_sets=1, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, dataset)
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    sandbox.clear_log()
    env = dict(os.environ, DEVREV_API_TOKEN=TEST_TOKEN, DEVREV_BASE_URL=sandbox.base_url,
               DEVREV_RATE_LIMIT="1000000")
    command = [sys.executable, "-c", _KILLER.format(root=ROOT), *restore.paths(), "--workers", "2"]
    codes = []
    for n in range(200):
        env["KILL_AT"] = ("step", "write")[n % 2]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60)
        codes.append(proc.returncode)
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()[-2000:]
        if proc.returncode == 0:
            break
    assert codes[-1] == 0 and codes.count(-signal.SIGKILL) >= 20, codes
    env["KILL_AT"] = "none"
    assert subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60).returncode == 0
    mapping = recreated(restore.report())
    after = normalized(sandbox.dump())
    assert after == expected_after_restore(before, after, mapping)
    creates = [e for e in sandbox.writes() if e["endpoint"] == "rev-users.create"]
    assert len(creates) == len(mapping) == 4                      # each contact created once
    logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "already created again" in logs                         # a kill fell between a create and its done
    db = Journal(str(tmp_path / "savepoints" / "restore.sqlite3"), "check")
    try:
        assert db.check() == [] and not any(c["intent"] for c in db.step_counts().values())
    finally:
        db.close()
    sandbox.clear_log()
    assert restore.run() == 0 and sandbox.write_attempts() == []


# --------------------------------------------------------------------------- the sandbox
def test_sandbox_merge_then_sandbox_restore(tmp_path, monkeypatch):
    import merge_contacts
    monkeypatch.chdir(tmp_path)
    assert merge_contacts.main(["--sandbox", "--preview", "--only", "ben@customer1.example"]) == 0
    assert merge_contacts.main(["--sandbox", "--only", "ben@customer1.example"]) == 0
    assert restore_contacts.main(["--sandbox", "--preview"]) == 0
    assert restore_contacts.main(["--sandbox"]) == 0
    assert os.path.exists(tmp_path / ".sandbox" / "restore_savepoints.sqlite3")
    (report,) = glob.glob(str(tmp_path / "reports" / "restore_report_*.json"))
    with open(report, encoding="utf-8") as fh:
        assert [s["status"] for s in json.load(fh)["sets"]] == ["restored"]


def test_backups_of_an_emulator_reset_since_or_of_another_devrev_are_never_restored(tmp_path, monkeypatch,
                                                                                     make_sandbox, capsys):
    """Issue 24 §3: after --sandbox-reset, `restore_contacts.py --sandbox` read the backups of the
    earlier emulator (the same demo ids, this installation's key) and restored them onto the new
    one. Each backup records the DevRev it was read from; a restore uses only this one's, and
    goes on with them when the same set was merged again in the new life."""
    import merge_contacts
    monkeypatch.chdir(tmp_path)
    one = "ben@customer1.example"
    assert merge_contacts.main(["--sandbox", "--preview", "--only", one]) == 0
    assert merge_contacts.main(["--sandbox", "--only", one]) == 0
    (old,) = glob.glob(str(tmp_path / "backups" / "*"))
    assert backup.load_metadata(old)["target"].startswith("sandbox:")
    assert merge_contacts.main(["--sandbox", "--sandbox-reset", "--preview"]) == 0   # a new emulator life
    capsys.readouterr()
    assert restore_contacts.main(["--sandbox", "--preview"]) == 2                  # only the earlier life's
    err = capsys.readouterr().err
    assert "no backups of this DevRev in backups (1 folder of another DevRev or an earlier sandbox" in err
    assert merge_contacts.main(["--sandbox", "--preview", "--only", one]) == 0    # merged again in this life
    assert merge_contacts.main(["--sandbox", "--only", one]) == 0
    capsys.readouterr()
    assert restore_contacts.main(["--sandbox", "--preview"]) == 0 and restore_contacts.main(["--sandbox"]) == 0
    assert "1 backup folder in backups was made against an earlier sandbox emulator" in capsys.readouterr().err
    (report,) = glob.glob(str(tmp_path / "reports" / "restore_report_*.json"))
    with open(report, encoding="utf-8") as fh:
        line, = json.load(fh)["sets"]
    assert line["status"] == "restored" and old not in line["backups"]
    # and a production restore never takes a rehearsal's backups
    sandbox = make_sandbox(DEMO_SEED)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    sandbox.clear_log()
    assert restore_contacts.main(["--skip-preview-check", "--savepoint", str(tmp_path / "r2.sqlite3")]) == 2
    assert sandbox.api_calls() == []


def test_a_set_whose_merged_duplicate_has_no_backup_here_is_held_back_whole(tmp_path, monkeypatch, make_sandbox,
                                                                           small_dataset, capsys):
    """A partial copy of backups/ (one duplicate's folder moved away): the restore must not
    give back half a set and report it restored, leaving the primary with the missing
    duplicate's reference and tickets."""
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    pair = small_dataset.merge_sets[0]
    assert len(pair["duplicates"]) == 2
    folders = [f for f in run.backups() if os.path.basename(f).startswith(backup.folder_prefix(pair["email"]))]
    assert len(folders) >= 2
    aside = tmp_path / "aside"
    aside.mkdir()
    os.rename(folders[-1], aside / os.path.basename(folders[-1]))
    restore = RestoreRun(run)
    assert restore.run("--preview") == 1
    (shown,) = [s for s in restore.report("restore_preview")["sets"] if s["email"] == pair["email"]]
    assert shown["status"] == "failed" and shown["reason"] == "backup_missing"
    assert "put the missing folders back" in shown["error"]
    capsys.readouterr()
    assert restore.run() == 2                            # the preview does not show this set restored
    err = capsys.readouterr().err
    assert f"it shows {pair['email']} as failed" in err and "--only EMAIL" in err
    others = [ms["email"] for ms in small_dataset.merge_sets if ms["email"] != pair["email"]]
    assert restore.run("--only", others[0]) == 0         # the sets it shows can go on
    merged = normalized(sandbox.dump())
    assert restore.run("--skip-preview-check", "--only", pair["email"]) == 1
    (held,) = restore.report()["sets"]
    assert held["status"] == "failed" and "backup folder" in held["error"]
    assert normalized(sandbox.dump()) == merged          # nothing of the set was touched
    os.rename(aside / os.path.basename(folders[-1]), folders[-1])
    assert restore.run("--preview") == 0                 # every backup back: the whole set restores
    assert restore.run() == 0


def test_backup_dir_may_name_one_backup_folder(tmp_path, monkeypatch, make_sandbox, small_dataset):
    """`--backup-dir backups/<one backup>` restores from that folder (its subfolders are not backups)."""
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    single = small_dataset.merge_sets[1]
    (folder,) = [f for f in run.backups() if os.path.basename(f).startswith(backup.folder_prefix(single["email"]))]
    sets, failed = backup_sets.load_backup_sets(folder)
    assert failed == [] and [s.email for s in sets] == [single["email"]]


def test_the_restore_preview_and_report_have_the_html_page_with_every_value_escaped(tmp_path, monkeypatch,
                                                                                      make_sandbox, small_dataset):
    from test_html_report import assert_self_contained_and_inert, parse, table, text_of
    hostile = "<img src=x onerror=alert(1)>"
    run = _merge(tmp_path, monkeypatch, make_sandbox(small_dataset.seed), small_dataset)
    os.rename(str(tmp_path / "backups"), str(tmp_path / hostile))   # the header shows --backup-dir
    restore = RestoreRun(run)
    args = ["--backup-dir", str(tmp_path / hostile)] + restore.paths()[2:]
    assert restore_contacts.main(args + ["--preview"]) == 0
    assert restore_contacts.main(args) == 0
    for kind in ("restore_preview", "restore_report"):
        report = restore.report(kind)
        page = tmp_path / "reports" / f"{kind}_{report['run_id']}.html"
        raw = page.read_text(encoding="utf-8")
        assert hostile not in raw and "&lt;img src=x onerror=alert(1)&gt;" in raw
        doc = parse(str(page))
        assert_self_contained_and_inert(doc)
        assert hostile in text_of(doc.find(".//body"))
        _, shown = table(doc, "sets")
        rows = restore_reports.report_rows(report) if kind == "restore_report" else \
            restore_reports.preview_rows(report)
        assert [r["email"] for r in shown] == [r["email"] for r in rows] and len(rows) == 4
        assert {r["_class"] for r in shown} == {"ok"}


def test_only_the_newest_restore_preview_unlocks_a_restore_as_for_the_merge(tmp_path, monkeypatch, make_sandbox,
                                                                          small_dataset):
    """An older preview of every set must not unlock what the admin's latest preview (one set,
    --only) did not show: the restore follows the merge's rule (runs.preview_gate)."""
    sandbox = make_sandbox(small_dataset.seed)
    restore = RestoreRun(_merge(tmp_path, monkeypatch, sandbox, small_dataset))
    merged = normalized(sandbox.dump())
    base = utc_now() - timedelta(minutes=5)
    clock = iter(iso_utc(base + timedelta(seconds=s)) for s in range(60))   # each report a second newer
    monkeypatch.setattr(restoring.run, "iso_utc", lambda: next(clock))
    assert restore.run("--preview") == 0                                # every set
    one = small_dataset.merge_sets[0]["email"]
    assert restore.run("--preview", "--only", one) == 0
    sandbox.clear_log()
    assert restore.run() == 2                                          # the newest shows one set only
    assert sandbox.write_attempts() == [] and normalized(sandbox.dump()) == merged
    assert restore.run("--only", one) == 0                             # what it shows, it unlocks
    assert {s["status"] for s in restore.report()["sets"]} == {"restored"}


def test_a_restore_preview_older_than_a_day_unlocks_nothing(tmp_path, monkeypatch, make_sandbox, small_dataset):
    from runs import preview_gate
    sandbox = make_sandbox(small_dataset.seed)
    restore = RestoreRun(_merge(tmp_path, monkeypatch, sandbox, small_dataset))
    assert restore.run("--preview") == 0
    later = utc_now() + timedelta(hours=25)
    monkeypatch.setattr(preview_gate, "utc_now", lambda: later)
    sandbox.clear_log()
    assert restore.run() == 2 and sandbox.write_attempts() == []
    assert restore.run("--preview-max-age", "30") == 0


def test_where_contacts_keep_several_references_a_restore_takes_the_duplicates_back_off_the_primary(
        tmp_path, monkeypatch, make_sandbox):
    """With external_refs (multi-association contacts), the merge leaves every duplicate's
    reference on the primary; the restore must take them off it before re-creating the
    duplicates (DevRev would refuse a reference the primary holds), and the primary ends with
    its own reference alone, as before the merge."""
    dataset = build_dataset(3, seed=5, tickets=(1, 2), conversations=(0, 1), comments=(0, 1), attachment_rate=0,
                            two_duplicate_sets=2, skipped=False)
    sandbox = make_sandbox(dataset.seed, modes=BehaviourModes(merge_retire_after_gets=1, contact_external_refs=True))
    before = normalized(sandbox.dump())
    run = _merge(tmp_path, monkeypatch, sandbox, dataset)
    merged = normalized(sandbox.dump())
    kept = [u["external_refs_extra"] for u in merged["rev_users"].values() if u.get("external_refs_extra")]
    assert sorted(len(k) for k in kept) == [1, 2, 2]         # each primary keeps its own; two keep another dup's
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0
    assert {s["status"] for s in restore.report("restore_preview")["sets"]} == {"would_restore"}
    assert restore.run() == 0
    report = restore.report()
    after = normalized(sandbox.dump())
    assert after == expected_after_restore(before, after, recreated(report))
    assert not [u for u in after["rev_users"].values() if u.get("external_refs_extra")]
    assert all(s["primary"].get("external_refs_back") for s in report["sets"])


def test_the_merge_knows_what_the_restore_put_back_and_the_restore_has_a_status(tmp_path, monkeypatch, make_sandbox,
                                                                                small_dataset, capsys):
    """Issue 24 §2: after a restore, the merge's --status, preview and re-run say "restored" (a set
    to find again), not "merged"; the restore's own --status says where it stands."""
    import merge_contacts
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    restore = RestoreRun(run)
    one = small_dataset.merge_sets[0]["email"]
    assert restore.run("--preview", "--only", one) == 0 and restore.run("--only", one) == 0
    assert restore.report()["merge_sets_marked_restored"] == 1
    capsys.readouterr()
    assert merge_contacts.main(["--status", "--csv", run.csv, "--savepoint",
                                str(tmp_path / "savepoints" / "j.sqlite3")]) == 0
    out = capsys.readouterr().out
    assert "2 merged" in out and "1 restored since" in out
    assert next(line for line in out.splitlines() if line.startswith(one)).split()[1] == "restored"
    sandbox.clear_log()
    assert run.preview() == 0
    shown = {s["email"]: s for s in run.latest_report("preview")["sets"]}
    assert shown[one]["status"] == "restored" and "find_duplicates.py" in shown[one]["detail"]
    assert run.latest_report("preview")["totals"]["restored"] == 1
    assert run.run() == 0                     # nothing merged twice, no write
    assert sandbox.write_attempts() == []
    line = next(s for s in run.latest_report()["sets"] if s["email"] == one)
    assert line["status"] == "restored" and run.latest_report()["totals"]["restored"] == 1
    from runs.journal import earlier_primaries
    assert one not in {p.email for p in earlier_primaries(str(tmp_path / "savepoints" / "j.sqlite3"))}
    capsys.readouterr()
    assert restore.run("--status") == 0
    out = capsys.readouterr().out
    assert "1 merge set worked on: 1 restored, 0 failed, 0 not finished" in out and one in out


def test_the_id_map_records_every_retired_contact_and_each_restore_across_runs(tmp_path, monkeypatch,
                                                                              make_sandbox, small_dataset):
    """Issue 24 §4: reports/id_map.csv, append-only: one row per duplicate a run retired (id,
    display id, reference, the primary it went into, the primary's reference now, the run), and
    one per duplicate a restore gave back (its new contact)."""
    import csv
    sandbox = make_sandbox(small_dataset.seed)
    run = _merge(tmp_path, monkeypatch, sandbox, small_dataset)
    path = tmp_path / "reports" / "id_map.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    state = sandbox.dump()
    dups = {sandbox.key_id(d): ms for ms in small_dataset.merge_sets for d in ms["duplicates"]}
    assert {r["duplicate_id"] for r in rows} == set(dups) and {r["event"] for r in rows} == {"merged"}
    for r in rows:
        primary = sandbox.key_id(dups[r["duplicate_id"]]["primary"])
        assert r["primary_id"] == primary and r["run_id"] == run.latest_report()["run_id"]
        assert state["rev_users"][r["duplicate_id"]]["_retired"]
        assert r["duplicate_external_ref"].startswith("user_")
        assert r["primary_external_ref"] == state["rev_users"][primary]["external_ref"]
        assert r["target"] == sandbox.base_url
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    before = path.read_bytes()
    assert run.run() == 0                                    # a run with nothing to do adds nothing
    assert path.read_bytes() == before
    restore = RestoreRun(run)
    assert restore.run("--preview") == 0 and restore.run() == 0
    assert path.read_bytes().startswith(before)              # appended, never rewritten
    restored = [r for r in csv.DictReader(path.open(encoding="utf-8")) if r["event"] == "restored"]
    mapping = recreated(restore.report())
    assert {r["duplicate_id"]: r["new_contact_id"] for r in restored} == mapping
    assert len(rows) + len(restored) == len(list(csv.DictReader(path.open(encoding="utf-8"))))


def test_an_id_map_whose_last_row_was_cut_gets_its_next_rows_on_lines_of_their_own(tmp_path):
    import csv

    from runs import id_map
    row = id_map.IdMapRow("t", "merged", "r1", "don:1", "REVU-1", "user_1", "don:p", "REVU-p", "user_1")
    assert id_map.append(str(tmp_path), [row]) == 1
    path = tmp_path / id_map.FILE_NAME
    with path.open("ab") as fh:
        fh.write(b"t,merged,r2,don:2,REV")                   # a crash mid-row
    assert id_map.append(str(tmp_path), [row]) == 1
    lines = list(csv.reader(path.open(encoding="utf-8")))
    assert lines[0] == id_map.COLUMNS and lines[1][3] == lines[3][3] == "don:1" and len(lines) == 4


def test_an_id_map_planted_as_a_fifo_is_refused_at_once(tmp_path):
    from runs import id_map
    os.mkfifo(tmp_path / id_map.FILE_NAME, 0o600)
    row = id_map.IdMapRow("t", "merged", "r1", "don:1", "REVU-1", "user_1", "don:p", "REVU-p", "user_1")
    with pytest.raises(OSError):          # at once (no reader: ENXIO; else "not a regular file"), never a hang
        id_map.append(str(tmp_path), [row])
