"""The restore's notes written again: their text, their mark, what it counts, how files are read back."""
import os

import pytest

from backup import SavedContactPage, SavedFile
from restoring.backup_sets import DuplicateBackup
from restoring.contact_page import ContactPageError, note_back_ref, note_back_text, page_counts, read_saved_file


def _entry(n, *, kind="timeline_comment", artifacts=()):
    return {"id": f"don:core:x:revu/dup:comment/{n}", "type": kind, "body": f"note {n}",
            "created_date": "2024-01-02T03:04:05.000Z", "visibility": "internal",
            "created_by": {"id": "don:identity:x:devu/7", "display_id": "DEVU-7", "full_name": "Ann Agent",
                           "email": "ann@vendor.example"},
            "artifacts": [{"id": a} for a in artifacts]}


def test_note_text_says_who_when_and_how_visible_then_the_body():
    text = note_back_text(_entry(1), "REVU-dup")
    head, body = text.split("\n\n")
    assert "REVU-dup" in head and "Ann Agent (ann@vendor.example)" in head
    assert "2024-01-02T03:04:05.000Z" in head and "visibility internal" in head
    assert body == "note 1"
    assert note_back_text({"id": "e"}, "REVU-d").count("unknown") == 3


def test_note_ref_is_short_stable_and_distinct():
    a, b = note_back_ref("dup:entry/1"), note_back_ref("dup:entry/2")
    assert a == note_back_ref("dup:entry/1") and a != b and len(a) < 100 and "entry" not in a


def test_page_counts_notes_files_and_the_rest_each_once():
    files = {"art/1": SavedFile("art/1", "a.txt", "text/plain", "contact/attachments/a_a.txt", 3),
             "art/2": SavedFile("art/2", "b.txt", None, "contact/attachments/b_b.txt", 4)}
    page = SavedContactPage([_entry(1, artifacts=["art/1"]), _entry(2), _entry(3, kind="timeline_change_event")],
                            files, ["art/1", "art/2"])
    again = SavedContactPage([_entry(1, artifacts=["art/1"])], files, [])   # a later round repeats entry 1
    dup = DuplicateBackup("dup", "REVU-dup", None, None, None, None, None,
                          contact_pages=[("f1", page), ("f2", again)])
    assert page_counts(dup) == {"notes": 2, "files": 2, "entries_not_writable": 1, "record_note": 1}


def test_a_saved_file_is_read_only_if_regular_and_of_its_recorded_size(tmp_path):
    folder = tmp_path / "backup"
    (folder / "contact" / "attachments").mkdir(parents=True)
    (folder / "contact" / "attachments" / "a_a.txt").write_bytes(b"abc")
    saved = SavedFile("art/1", "a.txt", None, "contact/attachments/a_a.txt", 3)
    assert read_saved_file(str(folder), saved) == b"abc"
    with pytest.raises(ContactPageError, match="not the 2 bytes"):
        read_saved_file(str(folder), SavedFile("art/1", "a.txt", None, saved.path, 2))
    os.symlink("/etc/hostname", folder / "contact" / "attachments" / "l_l.txt")
    with pytest.raises(ContactPageError):
        read_saved_file(str(folder), SavedFile("art/2", "l.txt", None, "contact/attachments/l_l.txt", 3))


def test_the_restore_preview_says_what_else_it_gives_back():
    from operator_view.restore_reports import preview_also
    preview = {"sets": [{"status": "would_restore", "duplicates": [
        {"custom_fields": ["TKT-1", "TKT-2"], "notes": 1, "files": 2, "entries_not_writable": 1, "record_note": 1}]},
        {"status": "failed", "duplicates": [{"custom_fields": ["TKT-9"], "notes": 5}]}]}
    text = preview_also(preview)
    assert "custom fields of 2 tickets and conversations" in text
    assert "write 1 note of the duplicates' own contact pages" in text and "re-attach 2 files" in text
    assert "1 entry of other types cannot be written" in text and "1 note for the files that were on" in text
    assert preview_also({"sets": [{"status": "would_restore", "duplicates": [{}]}]}) == ""
