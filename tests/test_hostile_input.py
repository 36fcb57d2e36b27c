"""Hostile input: a corpus of broken and malicious contacts CSVs (tests/hostile_csv/).

Every file must be refused before any call to DevRev, in preview and in real-run mode:
exit code 2, exactly one `error:` line on stderr that names the problem, no traceback,
nothing on stdout, and an emulator that received no call at all.
"""
from __future__ import annotations

import os

import pytest

import merge_contacts
from contacts.csv_reader import email_key, group_contacts, read_contacts
from helpers import TEST_TOKEN, MergeRun

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_csv")

# file -> words the one error line must contain (what is wrong, in the user's terms)
EXPECTED = {
    "semicolon_delimiter.csv": "separated by ';'",
    "tab_separated.csv": "separated by '\\t'",
    "missing_external_ref_column.csv": "no EXTERNAL_REF column",
    "missing_rev_user_id_header.csv": "no REV_USER_ID column",
    "no_header_data_first.csv": "first line holds a contact, not the header",
    "excel_sep_line_names_semicolon.csv": "says sep=;: the contacts CSV must be comma-separated",
    "duplicate_column_name.csv": "column EMAIL appears twice",
    "duplicate_rev_user_id.csv": "REVU-7QmXa2Lp already appears on line 2",
    "duplicate_user_as_don_and_display_id.csv": "revu/Hq2ZzP0k already appears on line 3",
    "utf16le_with_bom.csv": "is UTF-16 text",
    "utf16be_with_bom.csv": "is UTF-16 text",
    "utf16le_without_bom.csv": "NUL bytes",
    "utf32le_with_bom.csv": "is UTF-32 text",
    "enormous_field_300kb.csv": "field larger than field limit",
    "formula_email_hyperlink.csv": "EMAIL '=HYPERLINK(",
    "formula_email_tab_prefixed.csv": "looks like a spreadsheet formula",
    "formula_external_ref_plus_cmd.csv": "EXTERNAL_REF \"+cmd",
    "formula_external_ref_minus.csv": "looks like a spreadsheet formula",
    "formula_rev_user_id_at_sum.csv": "REV_USER_ID \"@SUM(",
    "path_traversal_email.csv": "'../../etc/passwd' is not an email address",
    "path_traversal_email_with_at.csv": "is not an email address",
    "binary_png_header.csv": "binary file",
    "nul_bytes_in_row.csv": "NUL bytes",
    "latin1_e_acute.csv": "not UTF-8 text",
    "header_only.csv": "header but no contacts",
    "empty.csv": "is empty",
    "blank_lines_only.csv": "is empty",
    "ragged_row_extra_field.csv": "line 3: 9 fields where the header has 8",
    "ragged_row_missing_field.csv": "line 3: 3 fields where the header has 8",
    "unterminated_quote.csv": "quoted field is never closed",
    "unterminated_quote_mid_file.csv": "line 3: malformed CSV (unexpected end of data; a quoted field is never",
    "stray_quote_after_field.csv": "line 3: malformed CSV",
    "escape_sequence_in_display_name.csv": "control characters (e.g. '\\x1b')",
    "c1_csi_control_in_display_name.csv": "control characters (e.g. '\\x9b')",
    "del_control_in_full_name.csv": "control characters (e.g. '\\x7f')",
    "bidi_override_in_email.csv": "contains spaces or control characters",
    "zero_width_space_in_external_ref.csv": "contains spaces or control characters",
    "malformed_don_empty_suffix.csv": "is neither a contact DON",
    "malformed_don_ticket_not_contact.csv": "is neither a contact DON",
    "malformed_don_path_segments.csv": "is neither a contact DON",
    "malformed_display_id_lowercase_prefix.csv": "is neither a contact DON",
    "empty_required_email.csv": "line 3: EMAIL is empty",
    "overlong_external_ref.csv": "EXTERNAL_REF is 405 characters long",
}
MODES = {"preview": ["--preview"], "real run": [], "real run, preview check skipped": ["--skip-preview-check"]}


def test_corpus_is_complete():
    files = sorted(os.listdir(CORPUS))
    assert files == sorted(EXPECTED), "every corpus file needs its expected message (and vice versa)"
    assert len(files) >= 15
    with open(os.path.join(CORPUS, "enormous_field_300kb.csv"), "rb") as fh:
        assert max(len(cell) for cell in fh.read().split(b",")) > 200_000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_csv_is_refused_before_any_call(name, tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox({})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("DEVREV_RATE_LIMIT", "1000000")
    path = os.path.join(CORPUS, name)
    for mode, extra in MODES.items():
        capsys.readouterr()
        code = merge_contacts.main(["--csv", path, "--report-dir", str(tmp_path / "reports"),
                                    "--log-dir", str(tmp_path / "logs"), "--backup-dir", str(tmp_path / "backups"),
                                    "--savepoint", str(tmp_path / "savepoints" / "j.sqlite3"), *extra])
        out, err = capsys.readouterr()
        assert code == 2, (mode, code, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (mode, err)
        assert lines[0].startswith("error: "), (mode, err)
        assert EXPECTED[name] in lines[0], (mode, lines[0])
        assert "Traceback" not in err and out == "", (mode, out, err)
        assert len(lines[0]) < 400, (mode, lines[0])          # one readable line, not a dump of the cell
    assert sandbox.request_log == []
    assert not (tmp_path / "backups").exists() and not (tmp_path / "savepoints").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_csv_that_is_a_fifo_or_a_device_ends_in_one_line_at_once(kind, tmp_path, monkeypatch, capsys):
    """--csv naming a FIFO (which waits for a writer for ever) or /dev/zero (which never ends):
    one line, exit 2, before anything is read; the same for the sample tool's --input."""
    import create_test_sample
    path = str(tmp_path / "contacts.csv")
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path = "/dev/zero"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    capsys.readouterr()
    assert merge_contacts.main(["--csv", path, "--preview"]) == 2
    assert create_test_sample.main(["--input", path, "--output", str(tmp_path / "s.csv"), "--size", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {path} is not a regular file (a FIFO, a device or a socket): give the contacts CSV "
                   f"file itself"] * 2


def test_look_alike_emails_are_never_grouped_together(tmp_path, monkeypatch, make_sandbox):
    """Unicode case folding turns different mailboxes into one: 'straße' and 'STRASSE', a
    Kelvin sign and 'K', the 'ﬁ' ligature and 'fi'. A look-alike duplicate must never be
    merged into someone else's contact (it would take over their external reference)."""
    rows = [("REVU-kim1", "kim@acme.example", "REVU-kim1"),
            ("REVU-kim2", "\u212aim@acme.example", "user_" + "K" * 22),
            ("REVU-str1", "strasse@acme.example", "REVU-str1"),
            ("REVU-str2", "STRAßE@acme.example", "user_" + "S" * 22),
            ("REVU-fil1", "file@acme.example", "REVU-fil1"),
            ("REVU-fil2", "\ufb01le@acme.example", "user_" + "F" * 22),
            ("REVU-ann1", "Ann@Acme.Example", "REVU-ann1"),
            ("REVU-ann2", "ann@acme.example", "user_" + "A" * 22)]
    text = "REV_USER_ID,EMAIL,EXTERNAL_REF\r\n" + "".join(f"{a},{b},{c}\r\n" for a, b, c in rows)
    path = tmp_path / "lookalikes.csv"
    path.write_text(text, encoding="utf-8")
    merge_sets, skipped = group_contacts(read_contacts(str(path)).rows)
    assert [ms.email for ms in merge_sets] == ["Ann@Acme.Example"]   # plain ASCII case still groups
    assert {g.reason for g in skipped} == {"single_contact"} and len(skipped) == 6
    assert email_key("  KIM@ACME.example ") == "kim@acme.example"
    assert email_key("\u212aim@acme.example") != email_key("kim@acme.example")

    # end to end, the preview plans no merge for the look-alikes
    sandbox = make_sandbox({})
    run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=text)
    assert run.preview() == 0
    preview = run.latest_report("preview")
    assert [s["email"] for s in preview["sets"]] == ["Ann@Acme.Example"]
    assert sandbox.write_attempts() == []
