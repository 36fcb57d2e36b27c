"""The same person merged again (issue 21 §3): after a merge the primary carries the newest
duplicate's `user_...` reference (its display id stays REVU-...), so when the integration makes
another copy of that person, the email's group holds no REVU- row. The savepoint (or, where
DevRev keeps several references per contact, the primary's own display id among them) still
tells which contact is the primary, so the group is a merge set again, end to end on the
emulator: from a CSV written by hand, and from find_duplicates.py's CSV.
"""
from __future__ import annotations

import csv
import glob
import io

import create_test_sample
import find_duplicates
import merge_contacts
from contacts.csv_reader import group_contacts, read_contacts, user_id_key
from devrev_sandbox.modes import BehaviourModes
from helpers import MergeRun
from runs.journal import earlier_primaries

EMAIL = "ann@acme.example"


def seed() -> dict:
    def contact(key, ref=None, modified="2024-01-01T00:00:00Z", email=EMAIL):
        return {"key": key, "email": email, "workspace": "acme", "external_ref": ref, "full_name": "Ann Lee",
                "modified_date": modified}
    return {"workspaces": [{"key": "acme"}],
            "dev_users": [{"key": "agent1", "email": "agent1@example.com", "display_name": "agent1"}],
            "rev_users": [contact("ann"), contact("ann-dup1", "user_ann1", "2024-02-01T00:00:00Z"),
                          contact("bob", email="bob@acme.example"),
                          contact("bob-dup1", "user_bob1", email="bob@acme.example")],
            "tickets": [{"title": "Ann's own", "reported_by": ["ann"], "owned_by": ["agent1"]},
                        {"title": "Ann's first copy", "reported_by": ["ann-dup1"], "owned_by": ["agent1"]},
                        {"title": "Bob's copy", "reported_by": ["bob-dup1"], "owned_by": ["agent1"]}]}


def csv_text(*rows: tuple[str, str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["REV_USER_ID", "EMAIL", "EXTERNAL_REF"])
    writer.writerows(rows)
    return out.getvalue()


def user(sandbox, key_or_id: str) -> dict:
    return sandbox.dump()["rev_users"][sandbox.key_id(key_or_id)]


def references(sandbox, key_or_id: str) -> list[str]:
    """The contact's `external_refs` as DevRev answers them (mode contact_external_refs)."""
    u = user(sandbox, key_or_id)
    return [u["external_ref"], *u.get("_external_refs_extra", [])]


def row_of(sandbox, key_or_id: str) -> tuple[str, str, str]:
    """The contact's CSV row as DevRev holds it now (its display id, email, external_ref)."""
    u = user(sandbox, key_or_id)
    return u["display_id"], u["email"], u["external_ref"]


def merge_first(tmp_path, monkeypatch, sandbox) -> MergeRun:
    """The first merge of Ann's and Bob's sets (their primaries REVU- rows, as usual)."""
    run = MergeRun(tmp_path, sandbox, monkeypatch=monkeypatch, csv_text=csv_text(
        *(row_of(sandbox, k) for k in ("ann", "ann-dup1", "bob", "bob-dup1"))))
    assert run.preview() == 0 and run.run() == 0
    assert {s["email"]: s["status"] for s in run.latest_report()["sets"]} == {EMAIL: "merged",
                                                                             "bob@acme.example": "merged"}
    assert user(sandbox, "ann")["external_ref"] == "user_ann1"           # its display id stays REVU-
    return run


def new_copy(sandbox, ref: str) -> tuple[str, str]:
    """The integration makes another copy of Ann, and files a ticket under it: (its DON, the ticket's)."""
    with sandbox.state.lock:
        copy = sandbox.state.create_rev_user(sandbox.key_id("acme"), ref, email=EMAIL, full_name="Ann Lee",
                                             display_name=EMAIL)["id"]
    ticket = sandbox.add_ticket({"title": "Ann's second copy", "reported_by": [copy], "owned_by": ["agent1"]})
    return copy, ticket


def reporters(sandbox, ticket: str) -> list[str]:
    return [u["id"] for u in sandbox.dump()["works"][ticket]["reported_by"]]


def assert_merged_again(sandbox, copy: str, ticket: str, ref: str) -> None:
    """The new copy retired, its ticket on the primary, the primary carrying its reference."""
    ann = sandbox.key_id("ann")
    assert user(sandbox, copy)["_retired"] is True
    assert reporters(sandbox, ticket) == [ann]
    assert user(sandbox, "ann")["external_ref"] == ref
    assert user(sandbox, "ann")["_retired"] is False and user(sandbox, "ann")["_state"] == "active"
    owned = {w["title"] for w in sandbox.dump()["works"].values() if ann in [u["id"] for u in w["reported_by"]]}
    assert owned == {"Ann's own", "Ann's first copy", "Ann's second copy"}


def merge_args(run: MergeRun, csv_path: str, savepoint: str | None = None) -> list[str]:
    args = run.paths()
    args[args.index("--csv") + 1] = csv_path
    if savepoint is not None:
        args[args.index("--savepoint") + 1] = savepoint
    return args


def logged(tmp_path) -> str:
    return "".join(open(p, encoding="utf-8").read() for p in glob.glob(str(tmp_path / "logs" / "*.log")))


# --------------------------------------------------------------------------- a CSV written by hand
def test_a_new_copy_of_a_merged_person_is_merged_into_the_same_primary(tmp_path, monkeypatch, make_sandbox):
    sandbox = make_sandbox(seed())
    run = merge_first(tmp_path, monkeypatch, sandbox)
    first_run = run.latest_report()["run_id"]
    copy, ticket = new_copy(sandbox, "user_ann2")
    again = tmp_path / "again.csv"
    again.write_text(csv_text(row_of(sandbox, "ann"), row_of(sandbox, copy)), encoding="utf-8")
    assert row_of(sandbox, "ann")[2] == "user_ann1"                     # no REVU- row in the group

    # without the savepoint that merged it, the group has no primary, as before
    assert merge_contacts.main(merge_args(run, str(again), str(tmp_path / "other.sqlite3")) + ["--preview"]) == 0
    assert [(g["email"], g["reason"]) for g in run.latest_report("preview")["skipped"]] == [(EMAIL, "no_primary")]

    # with it: a merge set whose primary is the earlier merge's
    sandbox.clear_log()
    assert merge_contacts.main(merge_args(run, str(again)) + ["--preview"]) == 0
    assert sandbox.write_attempts() == []
    preview = run.latest_report("preview")
    (shown,) = preview["sets"]
    assert (shown["status"], shown["primary"]["id"], [d["id"] for d in shown["duplicates"]]) == \
        ("would_merge", sandbox.key_id("ann"), [copy])
    assert shown["new_external_ref"] == "user_ann2" and not preview["skipped"]
    assert f"is the primary from an earlier merge (run {first_run})" in logged(tmp_path)

    assert merge_contacts.main(merge_args(run, str(again))) == 0
    (line,) = run.latest_report()["sets"]
    assert (line["status"], line["external_ref_set"]) == ("merged", "user_ann2")
    assert_merged_again(sandbox, copy, ticket, "user_ann2")
    assert user(sandbox, "bob-dup1")["_retired"] is True                  # the other set stays merged

    # the savepoint now knows the primary from both runs; the later one is named
    found = [p for p in earlier_primaries(str(tmp_path / "savepoints" / "j.sqlite3"))
             if p.id == sandbox.key_id("ann")]
    assert [(p.run_id, p.external_ref_set) for p in found] == [(first_run, "user_ann1"),
                                                               (run.latest_report()["run_id"], "user_ann2")]
    # re-running the same command: finished, nothing written
    sandbox.clear_log()
    assert merge_contacts.main(merge_args(run, str(again))) == 0
    assert sandbox.write_attempts() == []


def test_status_counts_such_a_set_against_the_csv(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox(seed())
    merge_first(tmp_path, monkeypatch, sandbox)
    copy, _ = new_copy(sandbox, "user_ann2")
    again = tmp_path / "again.csv"
    again.write_text(csv_text(row_of(sandbox, "ann"), row_of(sandbox, copy)), encoding="utf-8")
    capsys.readouterr()
    assert merge_contacts.main(["--status", "--csv", str(again), "--savepoint",
                                str(tmp_path / "savepoints" / "j.sqlite3")]) == 0
    out = capsys.readouterr().out
    assert EMAIL in out and "not started" in out


def test_the_sampler_and_the_check_group_such_a_set_with_the_savepoint(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox(seed())
    run = merge_first(tmp_path, monkeypatch, sandbox)
    first_run = run.latest_report()["run_id"]
    savepoint = str(tmp_path / "savepoints" / "j.sqlite3")
    copy, _ = new_copy(sandbox, "user_ann2")
    again = tmp_path / "again.csv"
    again.write_text(csv_text(row_of(sandbox, "ann"), row_of(sandbox, copy)), encoding="utf-8")
    capsys.readouterr()
    # no savepoint at the merge's default path here: the group has no primary
    assert create_test_sample.main(["--input", str(again), "--output", "sample.csv", "--size", "2"]) == 2
    assert "no merge set in the CSV" in capsys.readouterr().err
    assert create_test_sample.main(["--input", str(again), "--output", "sample.csv", "--size", "2",
                                    "--savepoint", savepoint]) == 0
    out = capsys.readouterr().out
    assert f"{EMAIL} (2 contacts, ticket count unknown; primary from an earlier merge (run {first_run}))" in out
    assert open("sample.csv", encoding="utf-8").read() == again.read_text(encoding="utf-8")
    assert create_test_sample.main(["--input", str(again), "--output", "other.csv", "--size", "2",
                                    "--savepoint", str(tmp_path / "none.sqlite3")]) == 2
    assert "note: no savepoint at" in capsys.readouterr().err

    assert merge_contacts.main(["--check", "--csv", str(again), "--savepoint", savepoint,
                                "--log-dir", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "filters: not checked" not in out                         # checked on this set's two contacts
    assert f"returned for {row_of(sandbox, 'ann')[0]}" in out and f"returned for {row_of(sandbox, copy)[0]}" in out


# --------------------------------------------------------------------------- find_duplicates.py, then the merge
def test_find_duplicates_then_merge_contacts_merge_the_new_copy(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox(seed())
    run = merge_first(tmp_path, monkeypatch, sandbox)
    first_run = run.latest_report()["run_id"]
    savepoint = str(tmp_path / "savepoints" / "j.sqlite3")
    copy, ticket = new_copy(sandbox, "user_ann2")
    finder = ["--report-dir", str(tmp_path / "reports"), "--log-dir", str(tmp_path / "logs")]

    # the finder without the merge's savepoint (none at its default path here): no primary
    assert find_duplicates.main(["--output", "blind.csv"] + finder) == 0
    assert [(g.email, g.reason) for g in group_contacts(read_contacts("blind.csv").rows)[1]] == [(EMAIL, "no_primary")]

    capsys.readouterr()
    assert find_duplicates.main(["--output", "found.csv", "--savepoint", savepoint] + finder) == 0
    out = capsys.readouterr().out
    assert "merge sets: 1 (1 duplicates)" in out and "merge sets whose primary an earlier merge made: 1" in out
    report = run.latest_report("find")
    assert [(s["email"], s["status"], s["detail"]) for s in report["sets"]] == \
        [(EMAIL, "merge_set", f"primary from an earlier merge (run {first_run})")]
    assert report["totals"]["earlier_primaries"] == 1 and report["options"]["savepoint"] == savepoint

    # what the finder wrote, merge_contacts.py groups the same way
    (found,), skipped = group_contacts(read_contacts("found.csv").rows, earlier_primaries(savepoint))
    assert not skipped
    assert (user_id_key(found.primary.rev_user_id), [user_id_key(d.rev_user_id) for d in found.duplicates]) == \
        (user_id_key(sandbox.key_id("ann")), [user_id_key(copy)])
    assert merge_contacts.main(merge_args(run, "found.csv") + ["--preview"]) == 0
    assert [(s["email"], s["status"]) for s in run.latest_report("preview")["sets"]] == [(EMAIL, "would_merge")]
    assert merge_contacts.main(merge_args(run, "found.csv")) == 0
    assert [(s["email"], s["status"]) for s in run.latest_report()["sets"]] == [(EMAIL, "merged")]
    assert_merged_again(sandbox, copy, ticket, "user_ann2")

    # found again: nothing left to merge
    assert find_duplicates.main(["--output", "after.csv", "--savepoint", savepoint] + finder) == 0
    assert open("after.csv", encoding="utf-8").read().count("\n") == 1           # the header alone


def test_where_contacts_keep_several_references_the_csv_alone_tells_the_primary(tmp_path, monkeypatch,
                                                                                  make_sandbox):
    """With external_refs (multi-association contacts) the merge keeps the primary's own REVU-
    reference in its list: find_duplicates.py recognises it live, writes it in EXTERNAL_REFS,
    and a merge with another savepoint (one that never saw the first merge) groups the file
    the same way."""
    sandbox = make_sandbox(seed(), modes=BehaviourModes(merge_retire_after_gets=1, contact_external_refs=True))
    run = merge_first(tmp_path, monkeypatch, sandbox)
    display_id = user(sandbox, "ann")["display_id"]
    assert references(sandbox, "ann") == ["user_ann1", display_id]
    copy, ticket = new_copy(sandbox, "user_ann2")
    finder = ["--report-dir", str(tmp_path / "reports"), "--log-dir", str(tmp_path / "logs")]
    assert find_duplicates.main(["--output", "found.csv"] + finder) == 0     # no savepoint at its default path
    assert f"user_ann1 {display_id}\r\n" in open("found.csv", encoding="utf-8", newline="").read()
    (found,), skipped = group_contacts(read_contacts("found.csv").rows)
    assert not skipped and user_id_key(found.primary.rev_user_id) == user_id_key(sandbox.key_id("ann"))
    assert found.earlier_primary.run_id is None

    fresh = str(tmp_path / "fresh" / "j.sqlite3")
    assert merge_contacts.main(merge_args(run, "found.csv", fresh) + ["--preview"]) == 0
    assert [(s["email"], s["status"]) for s in run.latest_report("preview")["sets"]] == [(EMAIL, "would_merge")]
    assert merge_contacts.main(merge_args(run, "found.csv", fresh)) == 0
    assert [(s["email"], s["status"]) for s in run.latest_report()["sets"]] == [(EMAIL, "merged")]
    assert_merged_again(sandbox, copy, ticket, "user_ann2")
    assert references(sandbox, "ann") == ["user_ann2", "user_ann1", display_id]
