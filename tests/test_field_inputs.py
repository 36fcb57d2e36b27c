"""Issue 12, local kinds: faults met trying the tool as users would, each fixed as a kind.

3. Every local problem is one line, before the first call where it can be; a folder (or
   the savepoint) that stops being writable mid-run leaves the journal consistent, says
   one line, and a re-run writes the report.
5. Inputs as real tools export them: Excel's `sep=,` line; email domains compared in
   their IDNA form (one rule in contacts.csv_reader.email_key for every script); one backup
   folder given to verify_backups.py is verified.
6. Numbers that tell the truth: every report row and total comes from the journal, for
   every outcome, and an item moved for two duplicates of one set counts once.
"""
from __future__ import annotations

import csv
import errno
import os
import shutil

import pytest

import backup
import create_test_sample
import merge_contacts
import runs.journal
import verify_backups
from contacts.csv_reader import (
    SKIP_INVALID_DOMAIN,
    CsvInputError,
    email_domain_problem,
    email_key,
    group_contacts,
    read_contacts,
)
from devrev_sandbox.dataset import build_dataset
from helpers import TEST_TOKEN, MergeRun, expected_after_merge, normalized
from plumbing import cli
from plumbing.cli import ExitCode

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "field_cases")


def _journal_problems(tmp_path) -> list[str]:
    db = runs.journal.Journal(str(tmp_path / "savepoints" / "j.sqlite3"), "check")
    try:
        return db.check()
    finally:
        db.close()


# --------------------------------------------------------------------------- 3. local problems
def test_an_unusable_savepoint_folder_is_one_line_before_any_call(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox({})
    run = MergeRun(tmp_path, sandbox, csv_text="REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-a1,a@x.example,REVU-a1\r\n"
                                                "REVU-b2,a@x.example,user_b2\r\n", monkeypatch=monkeypatch)
    (tmp_path / "a-file").write_text("")
    code = merge_contacts.main(["--csv", run.csv, "--log-dir", str(tmp_path / "logs"), "--skip-preview-check",
                                "--savepoint", str(tmp_path / "a-file" / "j.sqlite3")])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and err.count("\n") == 1 and err.startswith("error: --savepoint ")
    assert sandbox.request_log == []


def _merge_ready(tmp_path, monkeypatch, make_sandbox, sets=4, **dataset_kw):
    options = dict(seed=31, tickets=(1, 2), conversations=(1, 1), two_duplicate_sets=0, skipped=False)
    options.update(dataset_kw)
    dataset = build_dataset(sets, **options)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    return dataset, sandbox, run, before


def test_a_backup_folder_unwritable_mid_run_stops_once_and_a_rerun_finishes(tmp_path, monkeypatch, make_sandbox,
                                                                             capsys):
    dataset, sandbox, run, before = _merge_ready(tmp_path, monkeypatch, make_sandbox)
    real_mkdir = os.mkdir
    made = []

    def mkdir_until_read_only(path, mode=0o777):
        if str(path).endswith(backup.PARTIAL_SUFFIX):
            made.append(path)
            if len(made) > 1:  # after the first set, the folder became read-only
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir_until_read_only)
    capsys.readouterr()
    assert run.run("--workers", "1") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("not writable") + err.count("Permission denied") >= 1
    report = run.latest_report()
    assert [s["status"] for s in report["sets"]] == ["merged", "failed", "pending", "pending"]
    assert _journal_problems(tmp_path) == []
    monkeypatch.setattr(os, "mkdir", real_mkdir)
    assert run.run("--workers", "1") == 0
    assert [s["status"] for s in run.latest_report()["sets"]] == ["merged"] * 4
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, dataset, merged)


def test_a_report_folder_unwritable_at_the_end_is_one_line_and_a_rerun_writes_it(tmp_path, monkeypatch,
                                                                                  make_sandbox, capsys):
    dataset, sandbox, run, _ = _merge_ready(tmp_path, monkeypatch, make_sandbox, sets=2)
    from operator_view import reports
    real = reports.atomic_write_json

    def full_disk(path, data):
        if "merge_report_" in os.path.basename(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, data)

    monkeypatch.setattr(reports, "atomic_write_json", full_disk)
    capsys.readouterr()
    assert run.run() == ExitCode.FAILED
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: could not write the report in {tmp_path / 'reports'}: disk full (No space left on "
                     f"device); the savepoint keeps every result: fix the folder and re-run the same command to "
                     f"write it"] and "Traceback" not in err
    assert _journal_problems(tmp_path) == []
    monkeypatch.setattr(reports, "atomic_write_json", real)
    assert run.run() == 0
    report = run.latest_report()
    assert [s["status"] for s in report["sets"]] == ["merged", "merged"]
    assert report["totals"]["tickets_moved"] == sum(len(s["moved_ticket_ids"]) for s in report["sets"]) > 0


def test_a_savepoint_unwritable_mid_run_stops_once_and_a_rerun_finishes(tmp_path, monkeypatch, make_sandbox,
                                                                         capsys):
    import sqlite3
    dataset, sandbox, run, before = _merge_ready(tmp_path, monkeypatch, make_sandbox, sets=3)
    real_step = runs.journal.Journal._step
    calls = {"n": 0}

    def failing_step(self, *args):
        calls["n"] += 1
        if calls["n"] == 15:
            with self._writing():
                raise sqlite3.OperationalError("disk I/O error")
        return real_step(self, *args)

    monkeypatch.setattr(runs.journal.Journal, "_step", failing_step)
    capsys.readouterr()
    assert run.run("--workers", "1") == ExitCode.FAILED
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "can no longer be written (disk I/O error)" in line and "Traceback" not in err
    assert _journal_problems(tmp_path) == [] or all("open intent" in p for p in _journal_problems(tmp_path))
    monkeypatch.setattr(runs.journal.Journal, "_step", real_step)
    assert run.run("--workers", "1") == 0
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, dataset, merged)


def test_a_log_file_that_can_no_longer_be_written_is_one_warning_not_tracebacks(tmp_path, capsys):
    import logging
    with cli.run_logging(str(tmp_path / "logs"), "merge", "run1") as path:
        handler = next(h for h in logging.getLogger().handlers if getattr(h, "baseFilename", None) == path)

        class Broken:
            def write(self, text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def flush(self):
                pass

        handler.stream = Broken()
        for n in range(3):
            logging.getLogger("merge").info("line %d", n)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: the log file {path} can no longer be written (disk full (No space left on "
                        f"device)); going on without it"]
    assert "Traceback" not in err and "Logging error" not in err and "line 2" in err


@pytest.mark.parametrize("script, argv", [
    (merge_contacts.main, ["--sandbox", "--preview", "--rate-limit"]),
    (merge_contacts.main, ["--sandbox", "--preview", "--merge-timeout"]),
    (merge_contacts.main, ["--sandbox", "--preview", "--workers"]),
    (merge_contacts.main, ["--sandbox", "--preview", "--max-merges"]),
    (create_test_sample.main, ["--input", "in.csv", "--output", "out.csv", "--size"]),
    (create_test_sample.main, ["--input", "in.csv", "--output", "out.csv", "--size", "2", "--seed"]),
])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_inf_are_refused_for_every_numeric_option(script, argv, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert script([*argv[:-1], f"{argv[-1]}={value}"]) == ExitCode.USAGE  # `=`: argparse reads -inf as a value
    err = capsys.readouterr().err
    assert err.startswith("error: argument --") and err.count("\n") == 1 and value in err
    assert not (tmp_path / ".sandbox").exists()


# --------------------------------------------------------------------------- 5. inputs
def test_excels_sep_line_is_skipped_and_line_numbers_stay_the_files(tmp_path):
    contacts = read_contacts(os.path.join(CASES, "excel-sep-line.csv"))
    assert contacts.preamble == "sep=,\r\n" and [r.line for r in contacts.rows] == [3, 4]
    merge_sets, skipped = group_contacts(contacts.rows)
    assert [m.email for m in merge_sets] == ["ray@mac.example"] and skipped == []
    out = tmp_path / "sample.csv"
    assert create_test_sample.main(["--input", os.path.join(CASES, "excel-sep-line.csv"), "--output", str(out),
                                    "--size", "2"]) == 0
    assert out.read_bytes() == open(os.path.join(CASES, "excel-sep-line.csv"), "rb").read()


def test_a_sep_line_naming_another_separator_is_named(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("sep=;\nREV_USER_ID;EMAIL;EXTERNAL_REF\nREVU-a1;a@x.example;REVU-a1\n")
    with pytest.raises(CsvInputError, match=r"^line 1 of .* says sep=;: the contacts CSV must be comma-separated"):
        read_contacts(str(path))


def test_idna_domains_are_one_mailbox_in_either_spelling():
    """Issue 12's right value: each pair is one merge set, no single_contact skip."""
    contacts = read_contacts(os.path.join(CASES, "idn-domains.csv"))
    merge_sets, skipped = group_contacts(contacts.rows)
    assert skipped == [] and [len(m.duplicates) for m in merge_sets] == [1, 1]
    assert email_key("li.wen@bücher.example") == email_key("li.wen@xn--bcher-kva.example") \
        == "li.wen@xn--bcher-kva.example"
    assert email_key("ida@MÜNCHEN-shop.example") == email_key("ida@münchen-shop.example")
    assert email_key(" Li.Wen@XN--BCHER-KVA.example ") == "li.wen@xn--bcher-kva.example"


@pytest.mark.parametrize("a, b", [
    ("straße@x.example", "strasse@x.example"),     # local parts: ASCII case only, never Unicode folding
    ("\u212aim@x.example", "kim@x.example"),       # Kelvin sign
    ("ÜLI@x.example", "üli@x.example"),            # non-ASCII case in the local part is not folded
    ("a@straße.example", "a@strasse.example"),     # nontransitional IDNA: ß stays ß in a domain
])
def test_look_alikes_still_never_group(a, b):
    assert email_key(a) != email_key(b)


def test_an_invalid_idna_domain_is_reported_not_guessed(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-a1,a@xn--zz.example,REVU-a1\r\n"
                    "REVU-b2,a@xn--zz.example,user_b2\r\nREVU-c3,c@x.example,REVU-c3\r\n"
                    "REVU-d4,c@x.example,user_d4\r\n", encoding="utf-8")
    merge_sets, skipped = group_contacts(read_contacts(str(path)).rows)
    assert [m.email for m in merge_sets] == ["c@x.example"]
    (group,) = skipped
    assert group.reason == SKIP_INVALID_DOMAIN and "'xn--zz.example' is not a valid" in group.detail
    assert email_domain_problem("a@xn--zz.example") and email_domain_problem("a@exa_mple.com") is None


def test_the_run_s_flat_index_groups_by_the_same_rule(tmp_path):
    """merge_contacts reads the CSV through contacts.index: the same sep= and IDNA rules."""
    from contacts.index import index_contacts
    assert [len(m.duplicates) for m in index_contacts(os.path.join(CASES, "idn-domains.csv")).merge_sets] == [1, 1]
    excel = index_contacts(os.path.join(CASES, "excel-sep-line.csv"))
    assert [[r.line for r in m.rows] for m in excel.merge_sets] == [[3, 4]]
    path = tmp_path / "c.csv"
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-a1,a@xn--zz.example,REVU-a1\r\n"
                    "REVU-b2,a@xn--zz.example,user_b2\r\n", encoding="utf-8")
    index = index_contacts(str(path))
    assert index.merge_sets == [] and index.skipped_counts[SKIP_INVALID_DOMAIN] == 1
    assert [reason for reason, _ in index.skipped_rows()] == [SKIP_INVALID_DOMAIN] * 2


def test_verify_backups_given_one_backup_folder_verifies_that_folder(tmp_path, monkeypatch, make_sandbox, capsys):
    _, _, run, _ = _merge_ready(tmp_path, monkeypatch, make_sandbox, sets=1)
    assert run.run() == 0
    (folder,) = run.backups()
    capsys.readouterr()
    assert verify_backups.main(["--backup-dir", folder, "--report-dir", str(tmp_path / "audit")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"OK {folder} (authentic: made by this installation)",
                         "1 backups checked: 1 OK (1 authentic, made by this installation), 0 FAILED"]
    shutil.copy(os.path.join(folder, backup.TICKETS), os.path.join(folder, "extra.json"))
    assert verify_backups.main(["--backup-dir", folder + "/", "--report-dir", str(tmp_path / "audit")]) == 1
    assert "extra.json: not listed in the manifest" in capsys.readouterr().out


# --------------------------------------------------------------------------- 6. numbers
def test_a_set_failing_after_its_moves_reports_what_devrev_holds(tmp_path, monkeypatch, make_sandbox):
    """Issue 12's right value: --merge-timeout 1 while DevRev takes 6 s to retire: the set
    fails, and its line says tickets_moved 2, conversations_moved 1, the backup folder,
    backups_verified yes."""
    dataset = build_dataset(1, seed=8, tickets=(2, 2), conversations=(1, 1), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=None, merge_retire_delay=6)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    primary = sandbox.key_id(dataset.merge_sets[0]["primary"])
    dup_id = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    owned = {oid for kind, field in (("works", "reported_by"), ("conversations", "members"))
             for oid, o in sandbox.dump()[kind].items() if dup_id in {u["id"] for u in o[field]}}
    assert len(owned) == 3
    assert run.preview() == 0
    assert run.run("--merge-timeout", "1") == ExitCode.TEMPORARY   # DevRev still merging: a later run finishes it
    report = run.latest_report()
    (line,) = report["sets"]
    assert line["status"] == "failed" and "not retired 1 s after rev-users.merge" in line["error"]
    assert "in_progress" in line["error"] and line["retry_later"] is True
    (dup,) = line["duplicates"]
    assert (dup["tickets_moved"], dup["conversations_moved"], dup["backups_verified"]) == (2, 1, True)
    assert dup["backups"] == run.backups() and len(dup["backups"]) == 1
    assert report["totals"]["tickets_moved"] == 2 and report["totals"]["conversations_moved"] == 1
    (row,) = list(csv.DictReader(open(str(tmp_path / "reports" / f"merge_report_{report['run_id']}.csv"),
                                      encoding="utf-8")))
    assert (row["tickets_moved"], row["conversations_moved"], row["backups_verified"], row["backups"]) == \
        ("2", "1", "yes", run.backups()[0])
    # ... which is what DevRev holds: the duplicate's 2 tickets and 1 conversation are the primary's
    dump = sandbox.dump()
    for oid in owned:
        obj = dump["works"].get(oid) or dump["conversations"][oid]
        users = {u["id"] for u in obj.get("reported_by", obj.get("members", []))}
        assert primary in users and dup_id not in users


def test_a_ticket_moved_for_two_duplicates_of_a_set_counts_once(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=12, tickets=(2, 2), conversations=(0, 0), two_duplicate_sets=1, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    two = dataset.merge_sets[0]
    assert len(two["duplicates"]) == 2
    shared = sandbox.add_ticket({"title": "both copies reported it", "reported_by": two["duplicates"],
                                 "owned_by": ["agent1"]})
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    dups = {sandbox.key_id(d) for ms in dataset.merge_sets for d in ms["duplicates"]}
    distinct = {oid for oid, w in sandbox.dump()["works"].items() if dups & {u["id"] for u in w["reported_by"]}}
    assert shared in distinct
    assert run.preview() == 0
    assert run.latest_report("preview")["totals"]["tickets"] == len(distinct)   # the preview counts it once too
    assert run.run() == 0
    report = run.latest_report()
    line = next(s for s in report["sets"] if s["email"] == two["email"])
    per_duplicate = sum(d["tickets_moved"] for d in line["duplicates"])
    assert len(line["moved_ticket_ids"]) == per_duplicate - 1      # the shared ticket once, not twice
    assert report["totals"]["tickets_moved"] == len(distinct)
    assert sorted(t for s in report["sets"] for t in s["moved_ticket_ids"]) == sorted(distinct)


def test_a_rerun_of_a_finished_run_reports_the_journals_numbers(tmp_path, monkeypatch, make_sandbox):
    _, _, run, _ = _merge_ready(tmp_path, monkeypatch, make_sandbox, sets=2)
    assert run.run() == 0
    first = run.latest_report()
    assert run.run() == 0
    again = run.latest_report()
    assert again["totals"]["tickets_moved"] == first["totals"]["tickets_moved"] > 0
    for a, b in zip(first["sets"], again["sets"]):
        assert b["note"] == "already finished in an earlier run"
        assert [d["backups"] for d in b["duplicates"]] == [d["backups"] for d in a["duplicates"]]


def test_the_test_token_constant_is_long_enough_for_the_token_check():
    assert len(TEST_TOKEN) >= 20


def test_rows_in_no_merge_set_are_counted_per_reason_with_an_invalid_domain(tmp_path):
    """contacts.index counts the rows of every group that is not a merge set, by its reason (the
    preview's skipped_row_counts), the same rows --list-skipped lists."""
    from contacts.index import index_contacts
    path = tmp_path / "c.csv"
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-a1,a@xn--zz.example,REVU-a1\r\n"
                    "REVU-b2,a@xn--zz.example,user_b2\r\nREVU-c3,c@x.example,REVU-c3\r\n"
                    "REVU-d4,c@x.example,user_d4\r\nREVU-e5,e@x.example,REVU-e5\r\n"
                    "REVU-f6,f@xn--zz.example,REVU-f6\r\n", encoding="utf-8")
    index = index_contacts(str(path))
    assert index.skipped_counts[SKIP_INVALID_DOMAIN] == 2 and index.skipped_row_counts[SKIP_INVALID_DOMAIN] == 3
    assert index.skipped_row_counts["single_contact"] == 1 and index.skipped_rows_total == 4
    assert sorted((reason, row.line) for reason, row in index.skipped_rows()) == \
        [(SKIP_INVALID_DOMAIN, 2), (SKIP_INVALID_DOMAIN, 3), (SKIP_INVALID_DOMAIN, 7), ("single_contact", 6)]
