"""contacts.csv_reader.py: reading the admins' CSV, BOMs, grouping into merge sets, skip reasons, errors.

The corpus of broken and malicious files is refused end to end in test_hostile_input.py;
these are the reader's and the grouping's own outcomes.
"""
from __future__ import annotations

import codecs
import hashlib

import pytest

import contacts.csv_reader
from contacts.csv_reader import CsvInputError, email_key, group_contacts, read_contacts, user_id_key

DON = "don:identity:dvrv-us-1:devo/0Acme:revu/Hq2ZzP0k"


def write(tmp_path, text: str, name: str = "contacts.csv", bom: bool = False) -> str:
    path = tmp_path / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return str(path)


def rows_csv(*rows: tuple[str, str, str], header: str = "REV_USER_ID,EMAIL,EXTERNAL_REF", nl: str = "\r\n") -> str:
    return header + nl + "".join(",".join(r) + nl for r in rows)


# --------------------------------------------------------------------------- reading
def test_reads_every_field_with_its_line_and_raw_text(tmp_path):
    text = ("Ticket_Count , rev_user_id,Email,EXTERNAL_REF,NOTES,DISPLAY_NAME,FULL_NAME,CREATED_AT,UPDATED_AT\n"
            "\n"
            "3,REVU-7QmXa2Lp, Jane@Acme.example ,REVU-7QmXa2Lp,ignored,Jane,Jane Doe,2024-01-01,2024-02-01\n"
            f'n/a,{DON},jane@acme.example,user_Zy9xW8vU,"two\nlines",Jane (import),,,\n')
    path = write(tmp_path, text)
    contacts = read_contacts(path)
    assert contacts.path == path and not contacts.bom and contacts.newline == "\n"
    assert contacts.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert contacts.columns == ["TICKET_COUNT", "REV_USER_ID", "EMAIL", "EXTERNAL_REF", "NOTES", "DISPLAY_NAME",
                                "FULL_NAME", "CREATED_AT", "UPDATED_AT"]
    assert contacts.header_raw == text.split("\n")[0] + "\n"
    first, second = contacts.rows
    assert first.as_dict() == {"line": 3, "REV_USER_ID": "REVU-7QmXa2Lp", "EMAIL": "Jane@Acme.example",
                               "EXTERNAL_REF": "REVU-7QmXa2Lp", "DISPLAY_NAME": "Jane", "FULL_NAME": "Jane Doe",
                               "TICKET_COUNT": 3, "CREATED_AT": "2024-01-01", "UPDATED_AT": "2024-02-01"}
    assert first.is_primary and not first.is_duplicate and first.email_key == "jane@acme.example"
    assert (second.line, second.rev_user_id, second.ticket_count) == (4, DON, None)   # TICKET_COUNT never trusted
    assert second.is_duplicate and second.raw == f'n/a,{DON},jane@acme.example,user_Zy9xW8vU,"two\nlines",' \
                                                 f'Jane (import),,,\n'
    assert "".join([contacts.header_raw, "\n", first.raw, second.raw]) == text       # byte for byte


def test_crlf_line_ends_are_kept(tmp_path):
    contacts = read_contacts(write(tmp_path, rows_csv(("REVU-a1", "a@acme.example", "REVU-a1"))))
    assert contacts.newline == "\r\n" and contacts.rows[0].raw == "REVU-a1,a@acme.example,REVU-a1\r\n"


def test_a_utf8_bom_is_noted_and_not_part_of_the_header(tmp_path):
    text = rows_csv(("REVU-a1", "a@acme.example", "REVU-a1"))
    plain, with_bom = read_contacts(write(tmp_path, text)), read_contacts(write(tmp_path, text, "bom.csv", bom=True))
    assert with_bom.bom and not plain.bom
    assert with_bom.columns == plain.columns == ["REV_USER_ID", "EMAIL", "EXTERNAL_REF"]
    assert [r.as_dict() for r in with_bom.rows] == [r.as_dict() for r in plain.rows]
    assert with_bom.sha256 != plain.sha256                       # the preview is bound to the exact bytes


def test_double_utf8_bom_is_read_as_the_same_contacts(tmp_path):
    """A BOM twice (a file saved as UTF-8 with BOM by two tools in turn) holds the same data:
    it is read, not refused, and yields exactly the rows of the clean file."""
    good = (b"REV_USER_ID,EMAIL,EXTERNAL_REF\r\nREVU-7QmXa2Lp,jane@acme.example,REVU-7QmXa2Lp\r\n"
            b"REVU-Hq2ZzP0k,jane@acme.example,user_Zy9xW8vU7tS6rQ5pO4nM3l\r\n")
    plain, doubled = tmp_path / "plain.csv", tmp_path / "double_bom.csv"
    plain.write_bytes(good)
    doubled.write_bytes(codecs.BOM_UTF8 * 2 + good)
    a, b = read_contacts(str(plain)), read_contacts(str(doubled))
    assert [r.as_dict() for r in a.rows] == [r.as_dict() for r in b.rows]
    assert b.columns == a.columns


def test_the_same_contact_as_don_and_as_display_id_is_one_key():
    assert user_id_key(DON) == user_id_key("REVU-Hq2ZzP0k") == "Hq2ZzP0k"
    assert contacts.csv_reader.is_valid_rev_user_id(DON) and contacts.csv_reader.is_valid_rev_user_id("REVU-Hq2ZzP0k")
    assert not contacts.csv_reader.is_valid_rev_user_id("revu-Hq2ZzP0k")
    assert not contacts.csv_reader.is_valid_rev_user_id("don:core:dvrv-us-1:devo/0Acme:ticket/1")


# --------------------------------------------------------------------------- grouping
def test_grouping_makes_merge_sets_and_gives_every_other_group_its_reason(tmp_path):
    path = write(tmp_path, rows_csv(
        ("REVU-d1", "Ann@Acme.example", "user_ann1"),        # duplicate listed before its primary
        ("REVU-p1", "ann@acme.example ", "REVU-p1"),
        ("REVU-d2", "ann@ACME.example", "user_ann2"),
        ("REVU-s1", "solo@acme.example", "REVU-s1"),
        ("REVU-n1", "nop@acme.example", "user_nop1"),
        ("REVU-n2", "nop@acme.example", "user_nop2"),
        ("REVU-t1", "two@acme.example", "REVU-t1"),
        ("REVU-t2", "two@acme.example", "REVU-t2"),
        ("REVU-t3", "two@acme.example", "user_two"),
        ("REVU-u1", "odd@acme.example", "REVU-u1"),
        ("REVU-u2", "odd@acme.example", "sf_0031234"),
        ("REVU-p9", "kim@acme.example", "REVU-p9"),
        ("REVU-d9", "kim@acme.example", "user_kim")))
    merge_sets, skipped = group_contacts(read_contacts(path).rows)
    assert [(ms.email, ms.primary.rev_user_id, [d.rev_user_id for d in ms.duplicates]) for ms in merge_sets] == [
        ("Ann@Acme.example", "REVU-p1", ["REVU-d1", "REVU-d2"]), ("kim@acme.example", "REVU-p9", ["REVU-d9"])]
    assert merge_sets[0].key == "ann@acme.example"
    assert [r.rev_user_id for r in merge_sets[0].rows] == ["REVU-p1", "REVU-d1", "REVU-d2"]
    assert [(g.email, g.reason, len(g.rows)) for g in skipped] == [
        ("solo@acme.example", contacts.csv_reader.SKIP_SINGLE_CONTACT, 1),
        ("nop@acme.example", contacts.csv_reader.SKIP_NO_PRIMARY, 2),
        ("two@acme.example", contacts.csv_reader.SKIP_SEVERAL_PRIMARIES, 3),
        ("odd@acme.example", contacts.csv_reader.SKIP_UNKNOWN_REFERENCE, 2)]
    assert [g.detail for g in skipped] == [contacts.csv_reader.CSV_SKIP_REASONS[g.reason] for g in skipped]
    assert all(g.detail for g in skipped)


def test_email_key_folds_ascii_case_and_trims_only():
    assert email_key("  Jane.DOE@Acme.Example\t") == "jane.doe@acme.example"
    assert email_key("ÉLISE@acme.example") == "Élise@acme.example"     # only ASCII letters are folded


# --------------------------------------------------------------------------- errors
def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(CsvInputError, match="contacts CSV not found: .*nope.csv"):
        read_contacts(str(tmp_path / "nope.csv"))
    with pytest.raises(CsvInputError, match="is a folder, not a contacts CSV file"):
        read_contacts(str(tmp_path))


@pytest.mark.parametrize("row, message", [
    (("REVU-a1", "a" * 250 + "@acme.example", "REVU-a1"), "line 2: EMAIL is 263 characters long (at most 254)"),
    (("REVU-a1", "a@acme.example", "user_" + "x" * 252), "line 2: EXTERNAL_REF is 257 characters long (at most 256)"),
    (("REVU-a1", "a@acme", "REVU-a1"), "line 2: EMAIL 'a@acme' is not an email address"),
    (("REVU-a1", "a@acme.example", " "), "line 2: EXTERNAL_REF is empty"),
    (("REVU-a 1", "a@acme.example", "REVU-a1"), "line 2: REV_USER_ID 'REVU-a 1' contains spaces or control"),
])
def test_a_bad_cell_names_its_line_and_column(tmp_path, row, message):
    path = write(tmp_path, rows_csv(row))
    with pytest.raises(CsvInputError) as caught:
        read_contacts(path)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)

