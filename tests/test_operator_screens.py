"""What the operator sees: the 100-column preview, one vocabulary of counts everywhere, log lines
that name their set, the log's last lines, resumes said, the sandbox's lock and --status hint."""
from __future__ import annotations

import fcntl
import os
import re

import pytest

import merge_contacts
from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun, capture_stop_event, sigterm_mid_merge
from merging.progress import resume_point
from operator_view import screens, summary
from runs.journal import Journal, step_name

# a log file line: time [run] LEVEL thread logger: message
LOG_LINE = re.compile(r"^\S+ \S+ \[(?P<run>\S+)\] (?P<level>[A-Z]+) (?P<thread>\S+) (?P<logger>\S+): (?P<msg>.*)$")


@pytest.fixture
def dataset():
    """3 merge sets (one with two duplicates), 5 the live checks skip, 4 groups that are not merge sets."""
    return build_dataset(3, seed=5, tickets=(1, 3), conversations=(1, 2), two_duplicate_sets=1)


def log_messages(run: MergeRun, index: int = -1) -> list[str]:
    logs = sorted((run.dir / "logs").glob("merge_*.log"), key=os.path.getmtime)
    lines = logs[index].read_text(encoding="utf-8").splitlines()
    return [m.group("msg") for m in map(LOG_LINE.match, lines) if m]


# --------------------------------------------------------------------------- words
def test_plural_is_one_helper_for_every_noun():
    assert summary.plural(1, "ticket") == "1 ticket" and summary.plural(0, "ticket") == "0 tickets"
    assert summary.plural(2, "merge set") == "2 merge sets" and summary.plural(1, "merge set") == "1 merge set"
    assert summary.plural(3, "entry") == "3 entries" and summary.plural(2, "day") == "2 days"
    assert summary.plural(2, "API call") == "2 API calls"
    counts = summary.count_merge_sets(["merged", "skipped", "in_progress", "interrupted", "failed"], 1)
    assert summary.describe_counts(counts) == ("5 merge sets from the CSV: 1 merged, 1 skipped by live checks, "
                                               "1 failed, 2 not finished; 1 group is not a merge set")


# --------------------------------------------------------------------------- the preview on screen
def test_preview_table_fits_100_columns_with_refs_reasons_and_details(tmp_path, monkeypatch, make_sandbox, dataset,
                                                                        capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    reports_dir = str(run.dir / "reports")
    screen = [line for line in lines if not line.startswith("  " + reports_dir)]
    assert max(len(line) for line in screen) <= 100, max(screen, key=len)
    assert lines[0].split() == ["email", "would", "tickets", "convs", "calls", "duplicate", "refs", "/", "why", "not"]
    preview = run.latest_report("preview")
    for record in preview["sets"]:
        row = next(line for line in lines if line.startswith(record["email"] + " "))
        if record["status"] == "would_merge":
            first_ref = record["duplicates"][0]["external_ref"]
            assert first_ref.startswith("user_") and first_ref in out
            tickets = sum(len(d["tickets"]) for d in record["duplicates"])
            assert row.split()[1:5] == ["merge", str(tickets), str(sum(len(d["conversations"])
                                                                        for d in record["duplicates"])),
                                        str(record["estimated_calls"])]
        else:  # a live check's reason on the row, its detail on the next line
            assert record["status"] == "skipped" and row.split()[-1] == record["reason"]
            assert lines[lines.index(row) + 1].strip() == record["detail"]
    for group in preview["skipped"]:
        assert any(line.startswith(group["email"]) and line.endswith(group["reason"]) for line in lines)
    assert ("8 merge sets from the CSV: 3 would be merged, 5 skipped by live checks; 4 groups are not merge "
            "sets.") in " ".join(lines)
    assert "\n  " + reports_dir in out  # the report paths, one a line


def test_preview_table_cuts_long_values_and_shows_a_few_groups_per_reason():
    long_email = "a" * 60 + "@example.com"
    record = {"email": long_email, "status": "would_merge", "estimated_calls": 12345,
              "duplicates": [{"external_ref": f"user_{i:022d}", "tickets": ["TKT-1"] * 1234,
                              "conversations": [], "messages": 0, "attachments": 0, "attachment_bytes": 0}
                             for i in range(5)]}
    groups = [{"email": f"solo{i}@x.example", "reason": "single_contact", "detail": "only one contact",
               "rows": [{"EXTERNAL_REF": f"REVU-{i}"}]} for i in range(7)]
    preview = {"sets": [record], "skipped": groups}
    from operator_view import reports
    preview["totals"] = reports.preview_totals(preview)
    text = screens.format_preview(preview, more_in="reports/preview_x.csv")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[2].startswith("a" * 29 + "…") and "6170" in lines[2]  # email cut to 30, 5 x 1234 tickets
    assert sum(1 for line in lines if line.startswith("solo")) == 3
    assert any(line.startswith("… 4 more") for line in lines)
    assert "4 more groups for single_contact: see reports/preview_x.csv" in text
    assert "\x1b" not in screens.cell("red \x1b[31m alert")  # a value cannot drive the terminal


# --------------------------------------------------------------------------- one vocabulary
def test_counts_agree_on_screen_in_the_log_the_report_and_status(tmp_path, monkeypatch, make_sandbox, dataset,
                                                                 capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.run("--max-merges", "2") == 0
    capsys.readouterr()
    assert run.run() == 0
    screen = " ".join(capsys.readouterr().out.split())
    report = run.latest_report()
    so_far = summary.describe_counts(report["totals"])
    assert so_far == ("8 merge sets from the CSV: 3 merged, 5 skipped by live checks, 0 failed; 4 groups are not "
                      "merge sets")
    this_run = report["totals"]["this_run"]
    assert (this_run["merge_sets"], this_run["merged"], this_run["skipped"]) == (6, 1, 5)  # 2 merged earlier
    assert f"So far: {so_far};" in screen
    assert "This run: 6 merge sets worked on: 1 merged, 5 skipped by live checks, 0 failed;" in screen
    assert any(m.startswith(f"So far: {so_far};") for m in log_messages(run)[-8:])
    assert merge_contacts.main(["--status", "--savepoint", str(tmp_path / "savepoints" / "j.sqlite3"),
                                "--csv", run.csv]) == 0
    status = capsys.readouterr().out
    assert f": {so_far}." in status.splitlines()[0]
    html = (tmp_path / "reports").glob("merge_report_*.html")
    assert all("skipped by live checks" in p.read_text(encoding="utf-8") for p in html)


# --------------------------------------------------------------------------- the log
def test_with_several_workers_every_set_line_names_its_set(tmp_path, monkeypatch, make_sandbox, dataset):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.run("--skip-preview-check", "--workers", "4") == 0
    (log,) = (tmp_path / "logs").glob("merge_*.log")
    emails = {m["email"] for m in dataset.merge_sets} | set(dataset.skipped)
    worker_lines = [m for m in map(LOG_LINE.match, log.read_text(encoding="utf-8").splitlines())
                    if m and m.group("thread").startswith("set_")]
    assert len(worker_lines) > 50
    for m in worker_lines:  # the client's, the backup's and the engine's lines alike
        assert m.group("msg").split(": ", 1)[0] in emails, m.group(0)
    retired = [m.group("msg") for m in worker_lines if m.group("msg").endswith(" is retired")]
    assert len(retired) == 4 and all(msg.split(": ")[0] in emails for msg in retired)


def test_a_merge_log_ends_with_the_summary_the_report_paths_and_the_exit_code(tmp_path, monkeypatch, make_sandbox,
                                                                               dataset, capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    preview_tail = log_messages(run)[-10:]
    assert preview_tail[0].startswith("8 merge sets from the CSV: 3 would be merged")
    assert preview_tail[1].startswith("The 3 merge sets would move")
    # the emulator's default tenant: tickets naming a duplicate only in a custom field cannot be found
    assert preview_tail[2].startswith("This DevRev refuses works.list's custom_fields filter")
    # the duplicates' display names are their emails (issue 27: the differences, counted)
    assert preview_tail[3].startswith("3 merge sets differ in contact fields between the primary and its duplicates")
    # the dataset's set with two duplicates: this DevRev keeps one reference per contact
    assert preview_tail[4].startswith("1 user_ reference of merged duplicates would belong to no contact")
    assert preview_tail[5] == "Preview written (nothing was changed in DevRev):"
    assert [os.path.splitext(line.strip())[1] for line in preview_tail[6:9]] == [".html", ".json", ".csv"]
    assert preview_tail[9] == "exit code 0: every set done or skipped by the live checks"
    assert run.run() == 0
    tail = log_messages(run)[-8:]
    assert tail[0].startswith("This run: 8 merge sets worked on: 3 merged") and tail[1].startswith("So far: ")
    assert tail[2].startswith("1 user_ reference of merged duplicates belongs to no contact")
    assert tail[3] == "Reports:" and all(os.path.exists(p.strip()) for p in tail[4:7])
    assert tail[7].startswith("exit code 0")


def test_ctrl_c_during_a_preview_says_nothing_of_resuming_and_the_log_still_ends_properly(
        tmp_path, monkeypatch, make_sandbox, dataset, capsys):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    stopper = capture_stop_event(monkeypatch)
    # stopped in the preview's own reads (the preflight before them lists no timeline)
    sandbox.on_request = lambda sb, entry: entry["endpoint"] == "timeline-entries.list" and stopper["event"].set()
    assert run.preview("--workers", "1") == 130
    out, err = capsys.readouterr()
    assert "resume" not in (out + err).lower()
    assert "Preview interrupted by a stop request" in err and "Nothing was changed in DevRev" in err
    preview = run.latest_report("preview")
    assert preview["complete"] is False and preview["exit_code"] == 130
    tail = log_messages(run)[-6:]
    assert tail[0].startswith("Preview interrupted") and tail[-1].startswith("exit code 130")
    assert [os.path.splitext(line.strip())[1] for line in tail[2:5]] == [".html", ".json", ".csv"]


@pytest.mark.slow  # a real subprocess stopped by a signal
def test_sigterm_log_ends_with_the_summary_the_report_paths_and_exit_code_130(tmp_path, make_sandbox):
    run, code, out, err = sigterm_mid_merge(tmp_path, make_sandbox)
    assert code == 130, err.decode()
    tail = log_messages(run)[-7:]
    assert tail[0].startswith("This run: ") and "not finished" in tail[1]
    assert tail[2] == "Reports:"
    assert tail[-1] == "exit code 130: stopped by Ctrl-C or SIGTERM; re-run the same command to resume"
    assert b"So far: 6 merge sets from the CSV" in out


# --------------------------------------------------------------------------- resume, status, sandbox
def test_a_resumed_run_names_each_set_and_where_it_stood(tmp_path, monkeypatch, make_sandbox, dataset):
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    stopper = capture_stop_event(monkeypatch)
    sandbox.on_request = lambda sb, entry: entry["endpoint"] == "works.update" and stopper["event"].set()
    assert run.run("--skip-preview-check", "--workers", "1") == 130
    sandbox.on_request = None
    first = dataset.merge_sets[0]["email"]
    assert run.run("--skip-preview-check", "--workers", "1") == 0
    messages = log_messages(run)
    at = messages.index("resuming 1 merge set from the savepoint:")
    assert messages[at + 1].startswith(f"  {first}: REVU-") and "backed up" in messages[at + 1]


def test_resume_point_says_where_each_duplicate_stood(tmp_path):
    journal = Journal(str(tmp_path / "j.sqlite3"), "r1")
    ctx = {"primary": {"id": "p", "display_id": "REVU-p"},
           "duplicates": [{"id": "d1", "display_id": "REVU-d1"}, {"id": "d2", "display_id": "REVU-d2"}]}
    journal.set_status("k", "a@x", "in_progress", context=ctx)
    assert resume_point(journal, "k") == "REVU-d1: not started; REVU-d2: not started"
    journal.done("k", step_name("backup", "d1", 1), {"folder": "f"})
    journal.done("k", step_name("ticket", "d1", 1, "t1"))
    journal.intent("k", step_name("ticket", "d1", 1, "t2"))
    assert resume_point(journal, "k") == ("REVU-d1: backed up, 1 item moved, 1 write to re-check; "
                                          "REVU-d2: not started")
    journal.done("k", step_name("merge", "d1"))
    journal.done("k", step_name("retired", "d1"))
    journal.set_status("k", "a@x", "failed", error="boom")
    assert resume_point(journal, "k") == "was failed; REVU-d1: retired; REVU-d2: not started"
    assert resume_point(journal, "unknown") is None
    journal.close()


@pytest.mark.slow  # the whole demo rehearsal, preview and merge
def test_status_after_a_sandbox_rehearsal_points_to_the_sandbox(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert merge_contacts.main(["--sandbox", "--preview"]) == 0
    assert merge_contacts.main(["--sandbox"]) == 0
    capsys.readouterr()
    assert merge_contacts.main(["--status"]) == 0
    out = capsys.readouterr().out
    assert "add --sandbox" in out and os.path.join(".sandbox", "savepoints.sqlite3") in out
    assert merge_contacts.main(["--sandbox", "--status"]) == 0
    out = capsys.readouterr().out
    assert "17 merge sets from the CSV: 12 merged, 5 skipped by live checks, 0 failed; 4 groups are not merge sets" \
        in out


def test_sandbox_reset_is_refused_while_another_run_holds_the_sandbox(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.makedirs(".sandbox")
    (tmp_path / ".sandbox" / "state.json").write_text("{}")
    with open(tmp_path / ".sandbox" / "run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run
        assert merge_contacts.main(["--sandbox", "--sandbox-reset", "--preview"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: another run is using the sandbox") and "cannot reset it" in err
        assert (tmp_path / ".sandbox" / "state.json").read_text() == "{}"
    assert merge_contacts.main(["--sandbox", "--sandbox-reset", "--preview"]) == 0
    assert (tmp_path / ".sandbox" / "run.lock").exists()
