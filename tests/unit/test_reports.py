"""reports.py: report rows, spreadsheet-formula escaping on disk, and finding the preview a run may use."""
from __future__ import annotations

import csv
import json
import os
import stat

import pytest

from operator_view import reports, screens
from plumbing import csv_files

DUP_A = {"display_id": "REVU-a", "tickets": ["TKT-1", "TKT-2"], "conversations": ["CONV-1"], "messages": 5,
         "attachments": 2, "attachment_bytes": 3000}
DUP_B = {"display_id": "REVU-b", "tickets": ["TKT-3"], "conversations": [], "messages": 1,
         "attachments": 0, "attachment_bytes": 0}
PREVIEW = {
    "sets": [{"email": "jane@acme.example", "status": "would_merge", "primary": {"id": "don:p", "display_id": "REVU-p"},
              "duplicates": [DUP_A, DUP_B], "estimated_calls": 40, "estimated_backup_bytes": 9000,
              "new_external_ref": "user_b"},
             {"email": "gone@acme.example", "status": "skipped", "reason": "contact_not_found",
              "detail": "REVU-x was not found", "primary": "REVU-x"}],
    "skipped": [{"email": "solo@acme.example", "reason": "single_contact", "detail": "only one contact has this email",
                 "rows": [{"REV_USER_ID": "REVU-solo"}]}],
    "totals": {"merge_sets": 1, "tickets": 3, "conversations": 1, "messages": 6, "attachments": 2,
               "attachment_bytes": 3000, "skipped": 2, "estimated_calls": 40, "estimated_backup_bytes": 9000},
}


def _outcome_dup(display_id, tickets, backups, verified, appeared=()):
    return {"display_id": display_id, "tickets_moved": tickets, "conversations_moved": 1, "messages": 2,
            "attachments": 1, "backups": backups, "backups_verified": verified, "drift_appeared": list(appeared),
            "drift_vanished": []}


def read_csv(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


# --------------------------------------------------------------------------- cells
@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx",
                                   "\nx"])
def test_formula_like_cells_are_prefixed_with_a_quote(value):
    assert csv_files.csv_cell(value) == "'" + value


@pytest.mark.parametrize("value, shown", [(None, ""), (True, "yes"), (False, "no"), (-5, "-5"), ("+3.5", "+3.5"),
                                          ("-1e3", "-1e3"), (["TKT-1", "TKT-2"], "TKT-1 TKT-2"),
                                          (("=a", "b"), "'=a b"), ("jane@acme.example", "jane@acme.example"),
                                          ("a=b", "a=b")])
def test_other_cells_are_shown_as_they_are(value, shown):
    assert csv_files.csv_cell(value) == shown


# --------------------------------------------------------------------------- rows
def test_preview_rows_sum_the_duplicates_and_list_skipped_groups():
    rows = reports.preview_rows(PREVIEW)
    assert [r["email"] for r in rows] == ["jane@acme.example", "gone@acme.example", "solo@acme.example"]
    merge, live_skip, csv_skip = rows
    assert merge["primary"] == "REVU-p" and merge["duplicates"] == ["REVU-a", "REVU-b"]
    assert (merge["tickets"], merge["conversations"], merge["messages"], merge["attachments"],
            merge["attachment_bytes"]) == (3, 1, 6, 2, 3000)
    assert merge["ticket_ids"] == ["TKT-1", "TKT-2", "TKT-3"] and merge["conversation_ids"] == ["CONV-1"]
    assert (merge["estimated_calls"], merge["new_external_ref"]) == (40, "user_b")
    # a set skipped by the live checks has no counts (not zeros: nothing was listed)
    assert live_skip["primary"] == "REVU-x" and live_skip["tickets"] is None and live_skip["reason"] == \
        "contact_not_found"
    assert csv_skip == {"email": "solo@acme.example", "status": "not_a_merge_set", "reason": "single_contact",
                        "detail": "only one contact has this email", "duplicates": ["REVU-solo"],
                        "duplicate_refs": [None]}
    assert set(merge) <= set(reports.PREVIEW_COLUMNS)


def test_merge_rows_sum_the_duplicates_and_flag_an_unverified_backup():
    report = {"sets": [
        {"email": "jane@acme.example", "status": "merged", "primary": "REVU-p", "external_ref_set": "user_b",
         "other_duplicate_refs": ["user_a"], "resumed": True, "duration_s": 1.5,
         "duplicates": [_outcome_dup("REVU-a", 2, ["/b/1"], True, ["TKT-9"]),
                        _outcome_dup("REVU-b", 1, ["/b/2"], False)]},
        {"email": "kim@acme.example", "status": "failed", "error": "boom", "duplicates": []},
        {"email": "lee@acme.example", "status": "moved_only", "note": "kept", "duplicates": []}],
        "skipped": [{"email": "solo@acme.example", "reason": "single_contact", "detail": "only one contact"}]}
    jane, kim, lee, solo = reports.merge_rows(report)
    assert (jane["tickets_moved"], jane["conversations_moved"], jane["messages"], jane["attachments"]) == (3, 2, 4, 2)
    assert jane["backups"] == ["/b/1", "/b/2"] and jane["backups_verified"] is False
    assert jane["drift_appeared"] == ["TKT-9"] and jane["other_duplicate_refs"] == ["user_a"]
    assert kim["error"] == "boom" and kim["backups_verified"] is None and kim["tickets_moved"] == 0
    assert lee["error"] is None and lee["note"] == "kept"          # a note is not an error (issue 24)
    assert solo == {"email": "solo@acme.example", "status": "not_a_merge_set", "reason": "single_contact",
                    "note": "only one contact", "duplicate_refs": []}
    assert set(jane) == set(reports.MERGE_COLUMNS)


# --------------------------------------------------------------------------- files
def test_write_report_writes_private_json_and_an_escaped_csv(tmp_path):
    report_dir = tmp_path / "reports"
    rows = reports.preview_rows(PREVIEW)
    rows[0]["detail"] = "=cmd()"                           # a hostile value from the API
    json_path, csv_path = reports.write_report(str(report_dir), "preview_r1", PREVIEW, reports.PREVIEW_COLUMNS, rows)
    assert (json_path, csv_path) == (str(report_dir / "preview_r1.json"), str(report_dir / "preview_r1.csv"))
    with open(json_path, encoding="utf-8") as fh:
        assert json.load(fh) == PREVIEW
    table = read_csv(csv_path)
    assert table[0] == reports.PREVIEW_COLUMNS and len(table) == 4
    first = dict(zip(table[0], table[1]))
    assert first["detail"] == "'=cmd()" and first["duplicates"] == "REVU-a REVU-b" and first["tickets"] == "3"
    assert dict(zip(table[0], table[3]))["tickets"] == ""
    with open(csv_path, "rb") as fh:
        assert fh.read().count(b"\r\n") == 4
    assert stat.S_IMODE(os.stat(report_dir).st_mode) == 0o700
    html_path = reports.html_path(json_path)
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in (json_path, csv_path, html_path)} == {0o600}
    assert sorted(os.listdir(report_dir)) == ["preview_r1.csv", "preview_r1.html", "preview_r1.json"]  # no temp file


def test_format_preview_prints_a_row_per_group_and_the_totals():
    preview = dict(PREVIEW, totals=reports.preview_totals(PREVIEW))
    lines = screens.format_preview(preview).splitlines()
    assert lines[0].split() == ["email", "would", "tickets", "convs", "calls", "duplicate", "refs", "/", "why", "not"]
    assert lines[2].split() == ["jane@acme.example", "merge", "3", "1", "40", "REVU-a", "REVU-b"]  # no user_ refs here
    assert lines[3].split() == ["gone@acme.example", "skip", "contact_not_found"]
    assert lines[4].strip() == "REVU-x was not found"
    assert lines[5].split() == ["solo@acme.example", "not", "a", "merge", "set", "single_contact"]
    assert lines[-2:] == ["The 1 merge set would move 3 tickets and 1 conversation (6 messages, 2 attachments, "
                          "2.9 KB): about", "40 API calls and 8.8 KB of backups."]
    assert lines[-3] == ("2 merge sets from the CSV: 1 would be merged, 1 skipped by live checks; 1 group is not a "
                         "merge set.")


def test_format_table_caps_wide_columns():
    table = screens.format_table(["a", "b"], [["x" * 100, None]], caps={0: 48})
    header, rule, row = table.splitlines()
    assert rule == "-" * 48 + "  " + "-" * 8
    assert row == "x" * 47 + "…"


# --------------------------------------------------------------------------- load_previews
def _preview_file(report_dir, name, *, sha="abc", target="https://api.devrev.ai", complete=True, created="2025-01-01"):
    report_dir.mkdir(exist_ok=True)
    path = report_dir / f"preview_{name}.json"
    path.write_text(json.dumps({"csv": {"sha256": sha}, "target": target, "complete": complete,
                                "created_at": created}), encoding="utf-8")
    return str(path)


def test_load_previews_lists_the_previews_of_the_same_csv_and_target_newest_first(tmp_path):
    """Which preview of them unlocks a run is preview_scope's choice (tests/test_preview_scope.py)."""
    report_dir = tmp_path / "reports"
    older = _preview_file(report_dir, "1", created="2025-01-01T10:00:00Z")
    newest = _preview_file(report_dir, "2", created="2025-01-02T10:00:00Z")
    _preview_file(report_dir, "3", created="2025-01-03T10:00:00Z", complete=False)
    _preview_file(report_dir, "4", created="2025-01-04T10:00:00Z", sha="other")
    _preview_file(report_dir, "5", created="2025-01-05T10:00:00Z", target="sandbox")
    (report_dir / "preview_6.json").write_text("{ cut off", encoding="utf-8")
    (report_dir / "preview_7.json").write_text("[1, 2]", encoding="utf-8")
    (report_dir / "merge_report_8.json").write_text(json.dumps({"csv": {"sha256": "abc"}, "target":
                                                                "https://api.devrev.ai", "complete": True,
                                                                "created_at": "2026-01-01"}), encoding="utf-8")
    cut = str(report_dir / "preview_3.json")
    found = reports.load_previews(str(report_dir), "abc", "https://api.devrev.ai")
    assert [path for path, _ in found] == [cut, newest, older]
    assert [data["complete"] for _, data in found] == [False, True, True]
    os.remove(newest)
    assert [path for path, _ in reports.load_previews(str(report_dir), "abc", "https://api.devrev.ai")] == [cut, older]


def test_load_previews_finds_nothing_in_a_missing_folder_or_for_another_target(tmp_path):
    assert reports.load_previews(str(tmp_path / "nowhere"), "abc", "https://api.devrev.ai") == []
    _preview_file(tmp_path / "reports", "1", target="sandbox")
    assert reports.load_previews(str(tmp_path / "reports"), "abc", "https://api.devrev.ai") == []
    assert len(reports.load_previews(str(tmp_path / "reports"), "abc", "sandbox")) == 1
