"""Issue 24 §4: `--json` on every script's summary, checked against docs/summary.schema.json.

Each script runs in-process on the emulator with --json: stdout holds exactly one JSON object
(the human text went to stderr), valid against the documented schema, whose totals agree with
the report it names and whose exit code is the process's.
"""
from __future__ import annotations

import json
import os

import pytest
from jsonschema import Draft202012Validator

import create_test_sample
import find_duplicates
import restore_contacts
import verify_backups
from devrev_sandbox.dataset import build_dataset
from helpers import ROOT, MergeRun
from plumbing import json_summary

with open(os.path.join(ROOT, "docs", "summary.schema.json"), encoding="utf-8") as _fh:
    SCHEMA = json.load(_fh)
VALIDATOR = Draft202012Validator(SCHEMA)


def _one_object(capsys) -> tuple[dict, str]:
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out            # one JSON object, nothing else on stdout
    summary = json.loads(lines[0])
    errors = sorted(VALIDATOR.iter_errors(summary), key=str)
    assert not errors, [e.message for e in errors]
    return summary, err


@pytest.fixture
def merged(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(3, seed=5, tickets=(1, 2), conversations=(0, 1), two_duplicate_sets=0, skipped=False)
    run = MergeRun(tmp_path, make_sandbox(dataset.seed), dataset, monkeypatch)
    return run


def test_the_merge_scripts_modes_each_print_one_valid_summary(merged, capsys):
    run = merged
    capsys.readouterr()
    assert run.preview("--json") == 0
    preview, err = _one_object(capsys)
    assert preview["kind"] == "preview" and preview["exit_code"] == 0 and "Preview written" in err
    with open(preview["reports"]["json"], encoding="utf-8") as fh:
        assert json.load(fh)["totals"] == preview["totals"]

    assert run.run("--json") == 0
    merge, err = _one_object(capsys)
    assert merge["kind"] == "merge" and merge["run_id"] != preview["run_id"]
    assert merge["totals"]["merged"] == 3 and merge["totals"]["this_run"]["merged"] == 3
    assert merge["details"]["preview"] == preview["reports"]["json"] and "This run:" in err

    assert run.run("--status", "--json") == 0
    status, _ = _one_object(capsys)
    assert status["kind"] == "status" and status["totals"]["merged"] == 3
    assert {s["status"] for s in status["details"]["sets"]} == {"merged"}

    assert run.run("--check", "--json") == 0
    check, _ = _one_object(capsys)
    assert check["kind"] == "check" and check["totals"]["failed"] == 0 and check["details"]["checks"]


def test_a_usage_error_is_a_summary_too(merged, capsys):
    capsys.readouterr()
    assert merged.run("--workers", "0", "--json") == 2
    summary, err = _one_object(capsys)
    assert summary["exit_code"] == 2 and summary["error"] in err and summary["kind"] == "merge"
    assert summary["exit_meaning"].startswith("bad usage")


def test_a_temporary_failure_is_75_in_the_summary(tmp_path, monkeypatch, capsys):
    from devrev_sandbox.dataset import build_dataset as build
    dataset = build(1, seed=5, skipped=False)
    (tmp_path / "c.csv").write_text(dataset.csv_text(), newline="")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", "t" * 40)
    monkeypatch.setenv("DEVREV_BASE_URL", "http://127.0.0.1:9")   # nothing listens: DevRev unreachable
    import merge_contacts
    assert merge_contacts.main(["--csv", "c.csv", "--preview", "--json"]) == 75
    summary, _ = _one_object(capsys)
    assert summary["kind"] == "preview" and summary["exit_code"] == 75 and "cannot reach DevRev" in summary["error"]
    assert "later run" in summary["exit_meaning"]


def test_the_restore_find_sample_and_verify_scripts_print_one_valid_summary(merged, tmp_path, capsys):
    run = merged
    assert run.preview() == 0 and run.run() == 0
    paths = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
             "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "savepoints" / "r.sqlite3"),
             "--merge-savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]
    capsys.readouterr()
    assert restore_contacts.main(paths + ["--preview", "--json"]) == 0
    preview, _ = _one_object(capsys)
    assert preview["kind"] == "restore_preview" and preview["totals"]["would_restore"] == 3
    assert restore_contacts.main(paths + ["--json"]) == 0
    restore, _ = _one_object(capsys)
    assert restore["kind"] == "restore" and restore["totals"]["restored"] == 3
    assert restore["details"]["preview"] == preview["reports"]["json"]

    assert verify_backups.main(["--backup-dir", str(tmp_path / "backups"), "--report-dir",
                                str(tmp_path / "reports"), "--json"]) == 0
    verified, _ = _one_object(capsys)
    assert verified["totals"]["failed"] == 0 and verified["totals"]["ok"] == len(run.backups())

    found = str(tmp_path / "found.csv")
    assert find_duplicates.main(["--output", found, "--report-dir", str(tmp_path / "reports"),
                                 "--log-dir", str(tmp_path / "logs"), "--json"]) == 0
    finding, _ = _one_object(capsys)
    assert finding["kind"] == "find_duplicates" and finding["reports"]["contacts_csv"] == found
    assert os.path.isfile(finding["reports"]["review_csv"])

    sample = str(tmp_path / "sample.csv")
    assert create_test_sample.main(["--input", run.csv, "--size", "4", "--output", sample, "--seed", "1",
                                    "--json"]) == 0
    picked, _ = _one_object(capsys)
    assert picked["kind"] == "sample" and picked["reports"]["sample_csv"] == sample
    assert picked["details"]["seed"] == 1 and picked["totals"]["contacts"] <= 4


def test_the_summary_record_refuses_an_unknown_kind():
    with pytest.raises(ValueError):
        json_summary.record("nonsense")


def test_every_report_records_who_ran_it(merged, tmp_path):
    """The actor block: the token's DevRev user (dev-users.self, asked once per run, shared with
    the preflight), the OS user and host, the tool version; on the HTML page as "run by"."""
    import getpass
    import socket

    from plumbing.version import TOOL_VERSION
    run = merged
    assert run.preview() == 0
    run.sandbox.clear_log()
    assert run.run() == 0
    assert [e["endpoint"] for e in run.sandbox.api_calls()].count("dev-users.self") == 1
    for kind in ("preview", "merge_report"):
        actor = run.latest_report(kind)["actor"]
        assert actor["devrev_user"]["display_id"] == "DEVU-1" and actor["devrev_user"]["email"]
        assert actor["os_user"] == getpass.getuser() and actor["host"] == socket.gethostname()
        assert actor["tool_version"] == TOOL_VERSION
    html = open(run.latest_report()["run_id"].join([str(tmp_path / "reports" / "merge_report_"), ".html"]),
                encoding="utf-8").read()
    assert "run by" in html and "DEVU-1" in html
    paths = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
             "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "savepoints" / "r.sqlite3"),
             "--merge-savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]
    assert restore_contacts.main(paths + ["--preview"]) == 0
    with open(max((tmp_path / "reports").glob("restore_preview_*.json"), key=os.path.getmtime),
              encoding="utf-8") as fh:
        assert json.load(fh)["actor"]["devrev_user"]["display_id"] == "DEVU-1"


@pytest.mark.slow
def test_every_script_says_75_for_an_unreachable_devrev_and_version_is_a_valid_summary(tmp_path, monkeypatch,
                                                                                      capsys, fast_backoff):
    import merge_contacts
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", "t" * 40)
    monkeypatch.setenv("DEVREV_BASE_URL", "http://127.0.0.1:9")   # nothing listens there
    capsys.readouterr()
    assert find_duplicates.main(["--output", str(tmp_path / "f.csv"), "--json"]) == 75
    found, _ = _one_object(capsys)
    assert found["exit_code"] == 75 and "cannot reach DevRev" in found["error"]
    assert merge_contacts.main(["--check", "--json"]) == 75
    check, _ = _one_object(capsys)
    assert check["kind"] == "check" and "cannot reach DevRev" in check["error"]
    assert merge_contacts.main(["--version", "--json"]) == 0
    version, err = _one_object(capsys)      # the version line went to stderr with the human text
    assert version["exit_code"] == 0 and "devrev-contact-merge" in err
