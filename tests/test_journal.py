"""journal.py: step names (the strings on disk a resume reads back), intents and done steps, what survives
a crash, check(), the run lock, unusable files."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT
from runs import journal
from runs.journal import Journal, JournalError, Step, parse_step, step_name


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "savepoints" / "j.sqlite3")


@pytest.fixture
def db(path):
    opened = Journal(path, "run1")
    yield opened
    opened.close()


def test_intent_then_done_with_its_data_and_an_audit_trail(db, path):
    db.set_status("jane", "jane@acme.example", "in_progress", context={"primary": "REVU-p"})
    assert db.step("jane", "move:TKT-1") is None and not db.is_done("jane", "move:TKT-1")
    db.intent("jane", "move:TKT-1", {"set": ["don:p", "Zoë"]})
    assert db.step("jane", "move:TKT-1") == {"status": "intent", "data": {"set": ["don:p", "Zoë"]}, "run_id": "run1"}
    assert not db.is_done("jane", "move:TKT-1")
    db.done("jane", "move:TKT-1", {"confirmed": True})
    assert db.is_done("jane", "move:TKT-1")
    assert db.steps("jane") == {"move:TKT-1": {"status": "done", "data": {"confirmed": True}, "run_id": "run1"}}
    assert db.step_counts() == {"jane": {"intent": 0, "done": 1}}
    db.set_status("jane", "jane@acme.example", "merged")           # no context given: the old one is kept
    record = db.set_record("jane")
    assert (record["status"], record["context"], record["run_id"]) == ("merged", {"primary": "REVU-p"}, "run1")
    con = sqlite3.connect(path)
    try:
        events = con.execute("SELECT set_key, step, status FROM events ORDER BY id").fetchall()
    finally:
        con.close()
    assert events == [("jane", None, "in_progress"), ("jane", "move:TKT-1", "intent"),
                      ("jane", "move:TKT-1", "done"), ("jane", None, "merged")]


def test_sets_are_listed_in_the_order_first_recorded(db):
    for key in ("b", "a", "c"):
        db.set_status(key, f"{key}@acme.example", "pending")
    db.set_status("b", "b@acme.example", "failed", error="boom")
    assert [(s["set_key"], s["status"], s["error"]) for s in db.all_sets()] == [
        ("b", "failed", "boom"), ("a", "pending", None), ("c", "pending", None)]
    assert db.set_record("nobody") is None


def test_what_was_committed_survives_a_crash_and_a_new_run_takes_over(path):
    """A process killed without closing the journal (os._exit: no cleanup, no flush): a new
    run reads every committed intent and done step, and goes on from there."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from runs.journal import Journal
        db = Journal({path!r}, "crashed", exclusive=True)
        db.set_status("jane", "jane@acme.example", "in_progress")
        db.done("jane", "backup:REVU-d", {{"folder": "/b/1"}})
        db.intent("jane", "move:TKT-1", {{"set": ["don:p"]}})
        os._exit(9)
    """)
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 9, crashed.stderr
    resumed = Journal(path, "resumed", exclusive=True)          # the dead run's lock went with it
    try:
        assert resumed.steps("jane") == {
            "backup:REVU-d": {"status": "done", "data": {"folder": "/b/1"}, "run_id": "crashed"},
            "move:TKT-1": {"status": "intent", "data": {"set": ["don:p"]}, "run_id": "crashed"}}
        assert resumed.set_record("jane")["run_id"] == "crashed"
        assert resumed.check() == []                               # an open intent of an unfinished set is fine
        resumed.done("jane", "move:TKT-1")
        resumed.set_status("jane", "jane@acme.example", "merged")
        assert resumed.step_counts() == {"jane": {"intent": 0, "done": 2}}
        assert resumed.set_record("jane")["run_id"] == "resumed"
    finally:
        resumed.close()


def test_check_reports_orphan_steps_and_intents_left_in_finished_sets(db, path):
    db.set_status("jane", "jane@acme.example", "merged")
    db.set_status("kim", "kim@acme.example", "moved_only")
    db.set_status("lee", "lee@acme.example", "failed")
    db.done("jane", "merge:REVU-d")
    db.intent("lee", "move:TKT-3")                                 # unfinished set: resumable, not a problem
    assert db.check() == []
    db.intent("jane", "move:TKT-1")
    db.intent("kim", "move:TKT-2")
    db.done("ghost", "move:TKT-9")                                 # a step whose set was never recorded
    assert db.check() == ["1 step belongs to no set", "2 intents left open in finished sets"]


@pytest.mark.parametrize("status, keep_duplicate, finished", [
    ("merged", False, True), ("merged", True, True), ("moved_only", True, True), ("moved_only", False, False),
    ("failed", True, False), (None, False, False)])
def test_is_finished(status, keep_duplicate, finished):
    assert journal.is_finished(status, keep_duplicate) is finished


def test_the_run_lock_admits_one_run_and_is_released_on_close(path):
    first = Journal(path, "first", exclusive=True)
    try:
        with pytest.raises(JournalError, match="another run is using the savepoint .*j.sqlite3"):
            Journal(path, "second", exclusive=True)
        reader = Journal(path, "status")                           # --status reads without the lock
        try:
            reader.set_status("jane", "jane@acme.example", "pending")
        finally:
            reader.close()
    finally:
        first.close()
    second = Journal(path, "second", exclusive=True)
    try:
        assert second.set_record("jane")["status"] == "pending"
    finally:
        second.close()


@pytest.mark.parametrize("content", [b"this is not a database, just some text\n" * 200,
                                     b"SQLite format 3\x00" + b"\xff" * 4000])
def test_an_unusable_file_is_a_journal_error_and_frees_the_lock(path, content):
    os.makedirs(os.path.dirname(path), mode=0o700)
    with open(path, "wb") as fh:
        fh.write(content)
    with pytest.raises(JournalError, match="cannot be used .*move it aside only if you know no merge is half done"):
        Journal(path, "r", exclusive=True)
    with open(path, "rb") as fh:
        assert fh.read() == content                                # nothing overwritten
    os.remove(path)
    fresh = Journal(path, "r", exclusive=True)                    # the failed open did not keep the lock
    fresh.close()

DUP = "don:identity:dvrv-us-1:devo/0:revu/7"
TKT = "don:core:dvrv-us-1:devo/0:ticket/12"

# The exact strings earlier versions wrote: existing savepoints resume by them.
GOLDEN = [
    (("external_ref",), "external_ref"),
    (("merge", DUP), f"{DUP}|merge"),
    (("retired", DUP), f"{DUP}|retired"),
    (("swept", DUP), f"{DUP}|swept"),
    (("backup", DUP, 1), f"{DUP}|backup|1"),
    (("verify", DUP, 12), f"{DUP}|verify|12"),
    (("ticket", DUP, 2, TKT), f"{DUP}|ticket|2|{TKT}"),
    (("conversation", DUP, 1, "don:core:c/3"), f"{DUP}|conversation|1|don:core:c/3"),
    # restore_contacts.py
    (("primary_ref", DUP), f"{DUP}|primary_ref"),
    (("recreate", DUP), f"{DUP}|recreate"),
    (("verify_back", DUP), f"{DUP}|verify_back"),
    (("ticket_back", DUP, None, TKT), f"{DUP}|ticket_back|{TKT}"),
    (("conversation_back", DUP, None, "don:core:c/3"), f"{DUP}|conversation_back|don:core:c/3"),
]


@pytest.mark.parametrize("parts,name", GOLDEN)
def test_step_names_are_the_strings_on_disk_and_parse_back(parts, name):
    assert step_name(*parts) == name
    step = parse_step(name)
    assert step == Step(*parts)
    assert step_name(*step) == name


@pytest.mark.parametrize("parts", [("nonsense", DUP), ("merge",), ("merge", DUP, 1), ("backup", DUP),
                                   ("backup", DUP, 0), ("ticket", DUP, 1), ("ticket", "a|b", 1, TKT),
                                   ("ticket", DUP, 1, "x|y"), ("external_ref", DUP), ("retired", ""),
                                   ("ticket_back", DUP, 1, TKT), ("ticket_back", DUP), ("recreate", DUP, 1)])
def test_step_name_refuses_what_the_grammar_does_not_allow(parts):
    with pytest.raises(ValueError):
        step_name(*parts)


@pytest.mark.parametrize("name", ["", "merge", f"{DUP}|nonsense", f"{DUP}|backup", f"{DUP}|backup|x",
                                  f"{DUP}|backup|01", f"{DUP}|merge|1", "|merge", f"{DUP}|ticket|1",
                                  f"{DUP}|ticket|1|{TKT}|more", f"{DUP}|ticket_back", f"{DUP}|ticket_back|a|b",
                                  f"{DUP}|recreate|1"])
def test_parse_step_refuses_a_name_outside_the_grammar(name):
    with pytest.raises(ValueError, match="not a valid journal step name"):
        parse_step(name)
