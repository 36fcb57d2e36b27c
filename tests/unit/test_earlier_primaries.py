"""A contact an earlier merge made primary (issue 21 §3): its external_ref is a `user_...`
reference now, yet its email group is a merge set again with it as the primary.

The grouping (contacts.csv_reader.group_contacts and contacts.index, which must agree), the
savepoint reader (runs.journal.earlier_primaries: read only, never creating the file), and
the finder's CSV read back by the merge grouped the same way (no emulator: the finder's index
is fed contacts as DevRev lists them).
"""
from __future__ import annotations

import codecs
import os
import sqlite3
import stat

import pytest

from contacts import duplicate_finder
from contacts.csv_reader import (
    SKIP_NO_PRIMARY,
    SKIP_SEVERAL_PRIMARIES,
    SKIP_UNKNOWN_REFERENCE,
    ContactRow,
    EarlierPrimaries,
    EarlierPrimary,
    group_contacts,
    read_contacts,
    user_id_key,
)
from contacts.index import index_contacts
from runs.journal import Journal, JournalError, earlier_primaries

DEVO = "don:identity:dvrv-us-1:devo/0Acme"
EMAIL_ANN = "ann@acme.example"


def don(suffix: str) -> str:
    return f"{DEVO}:revu/{suffix}"


def earlier(suffix: str, run_id: str = "run-1", email: str = "ann@acme.example") -> EarlierPrimary:
    return EarlierPrimary(id=don(suffix), display_id=f"REVU-{suffix}", external_ref_set="user_ann1", email=email,
                          run_id=run_id)


def row(line: int, rev_user_id: str, external_ref: str, email: str = "ann@acme.example",
        refs: tuple[str, ...] = ()) -> ContactRow:
    return ContactRow(line, rev_user_id, email, external_ref, external_refs=refs)


def write(tmp_path, lines: list[str], name: str = "contacts.csv", header: str = "REV_USER_ID,EMAIL,EXTERNAL_REF"
          ) -> str:
    path = tmp_path / name
    path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode("utf-8"))
    return str(path)


def shape(merge_sets) -> list[tuple]:
    return [(m.email, m.primary.rev_user_id, [d.rev_user_id for d in m.duplicates],
             m.earlier_primary and m.earlier_primary.run_id) for m in merge_sets]


# --------------------------------------------------------------------------- grouping
def test_a_user_row_an_earlier_merge_made_primary_is_the_groups_primary():
    rows = [row(2, "REVU-new1", "user_ann2"), row(3, don("P1"), "user_ann1")]
    assert [g.reason for g in group_contacts(rows)[1]] == [SKIP_NO_PRIMARY]      # as before, without the record
    merge_sets, skipped = group_contacts(rows, [earlier("P1", "run-7")])
    assert not skipped
    (ms,) = merge_sets
    assert (ms.primary.line, [d.line for d in ms.duplicates]) == (3, [2])
    assert ms.earlier_primary == earlier("P1", "run-7")
    assert ms.primary_note == "primary from an earlier merge (run run-7)"


def test_the_row_matches_as_a_don_or_as_a_display_id_alike():
    by_display = [row(2, "REVU-P1", "user_ann1"), row(3, don("d2"), "user_ann2")]
    merge_sets, _ = group_contacts(by_display, [earlier("P1")])
    assert [m.primary.rev_user_id for m in merge_sets] == ["REVU-P1"]
    record = EarlierPrimary(id="REVU-P1", display_id="", external_ref_set=None, email="x@y.example", run_id="r")
    merge_sets, _ = group_contacts([row(2, don("P1"), "user_ann1"), row(3, don("d2"), "user_ann2")], [record])
    assert [user_id_key(m.primary.rev_user_id) for m in merge_sets] == ["P1"]


def test_a_revu_row_stays_the_primary_and_is_not_noted_as_an_earlier_merges():
    rows = [row(2, "REVU-P1", "REVU-P1"), row(3, "REVU-d1", "user_ann1")]
    (ms,), _ = group_contacts(rows, [earlier("P1")])                    # once merged, since given back
    assert ms.primary.rev_user_id == "REVU-P1" and ms.earlier_primary is None and ms.primary_note is None


@pytest.mark.parametrize("rows, reason", [
    ([row(2, "REVU-P1", "user_ann1"), row(3, "REVU-P2", "user_ann9"), row(4, "REVU-d1", "user_ann2")],
     SKIP_SEVERAL_PRIMARIES),                                           # two earlier primaries
    ([row(2, "REVU-P1", "user_ann1"), row(3, "REVU-R1", "REVU-R1"), row(4, "REVU-d1", "user_ann2")],
     SKIP_SEVERAL_PRIMARIES),                                           # one beside a REVU- row
    ([row(2, "REVU-x1", "user_ann1"), row(3, "REVU-d1", "user_ann2")], SKIP_NO_PRIMARY),   # no record of either
    ([row(2, "REVU-P1", "user_ann1"), row(3, "REVU-d1", "sf_00123")], SKIP_UNKNOWN_REFERENCE),
])
def test_groups_that_stay_skipped_keep_their_reason_codes(rows, reason):
    merge_sets, skipped = group_contacts(rows, [earlier("P1"), earlier("P2", "run-2")])
    assert not merge_sets and [g.reason for g in skipped] == [reason]


def test_an_earlier_primary_alone_with_its_email_is_a_single_contact():
    _, skipped = group_contacts([row(2, "REVU-P1", "user_ann1")], [earlier("P1")])
    assert [g.reason for g in skipped] == ["single_contact"]


def test_the_newest_record_of_a_contact_merged_twice_wins():
    lookup = EarlierPrimaries([earlier("P1", "run-1"), earlier("P1", "run-2")])
    assert len(lookup) == 1
    assert lookup.of(row(2, don("P1"), "user_ann2")).run_id == "run-2"
    assert lookup.of(row(2, "REVU-P1", "user_ann2")).run_id == "run-2"
    assert lookup.of(row(2, "REVU-other", "user_ann2")) is None
    # an id of neither shape is not cut into a key that could name someone else
    odd = EarlierPrimaries([EarlierPrimary("abcdeP1", "", None, EMAIL_ANN, "run-1")])
    assert len(odd) == 0 and odd.of(row(2, "REVU-P1", "user_ann2")) is None


def test_its_own_display_id_among_its_references_makes_a_user_row_the_primary_without_a_savepoint():
    own = row(2, don("P1"), "user_ann1", refs=("user_ann1", "REVU-P1"))
    other = row(3, don("d2"), "user_ann2", refs=("user_ann2",))
    (ms,), skipped = group_contacts([other, own])
    assert not skipped and ms.primary is own and ms.duplicates == [other]
    assert ms.earlier_primary == EarlierPrimary(don("P1"), "REVU-P1", "user_ann1", "ann@acme.example", None)
    assert "REVU-P1" in ms.primary_note
    # another contact's display id in the list proves nothing
    stranger = row(2, don("P9"), "user_ann1", refs=("user_ann1", "REVU-P1"))
    assert [g.reason for g in group_contacts([stranger, other])[1]] == [SKIP_NO_PRIMARY]


def test_the_external_refs_column_is_read_and_recorded(tmp_path):
    path = write(tmp_path, [f"{don('P1')},ann@acme.example,user_ann1,\"user_ann1 REVU-P1\"",
                            f"{don('d2')},ann@acme.example,user_ann2,",
                            "REVU-b1,bob@acme.example,REVU-b1,\"[\"\"REVU-b1\"\", \"\"x;y\"\"]\""],
                 header="REV_USER_ID,EMAIL,EXTERNAL_REF,EXTERNAL_REFS")
    rows = read_contacts(path).rows
    assert [r.external_refs for r in rows] == [("user_ann1", "REVU-P1"), (), ("REVU-b1", "x", "y")]
    assert rows[0].keeps_own_reference and not rows[1].keeps_own_reference
    assert rows[0].as_dict()["EXTERNAL_REFS"] == "user_ann1 REVU-P1" and "EXTERNAL_REFS" not in rows[1].as_dict()
    (ms,), _ = group_contacts(rows)
    assert ms.primary.line == 2 and ms.earlier_primary.run_id is None


# --------------------------------------------------------------------------- the large-CSV index agrees
def test_the_index_groups_with_earlier_primaries_as_group_contacts_does(tmp_path):
    lines = [f"{don('d2')},ann@acme.example,user_ann2,",                   # the copy before its primary
             f"{don('P1')},Ann@acme.example,user_ann1,",                   # merged before (savepoint)
             "REVU-k1,kim@acme.example,user_kim1,user_kim1 REVU-k1",       # merged before (its references)
             "REVU-k2,kim@acme.example,user_kim2,",
             "REVU-t1,two@acme.example,user_two1,",                        # two earlier primaries
             "REVU-t2,two@acme.example,user_two2,",
             "REVU-t3,two@acme.example,user_two3,",
             "REVU-n1,nop@acme.example,user_nop1,",                        # still no primary
             "REVU-n2,nop@acme.example,user_nop2,",
             "REVU-r1,rev@acme.example,REVU-r1,",                          # a REVU- row beside an earlier primary
             "REVU-r2,rev@acme.example,user_rev2,",
             "REVU-r3,rev@acme.example,user_rev3,"]
    path = write(tmp_path, lines, header="REV_USER_ID,EMAIL,EXTERNAL_REF,EXTERNAL_REFS")
    records = [earlier("P1", "run-1"), earlier("t1", "run-2"), earlier("t2", "run-2"), earlier("r2", "run-3")]
    merge_sets, skipped = group_contacts(read_contacts(path).rows, records)
    index = index_contacts(path, records)
    assert shape(index.merge_sets) == shape(merge_sets) == [
        ("ann@acme.example", don("P1"), [don("d2")], "run-1"), ("kim@acme.example", "REVU-k1", ["REVU-k2"], None)]
    assert {g.email: g.reason for g in skipped} == {"two@acme.example": SKIP_SEVERAL_PRIMARIES,
                                                    "nop@acme.example": SKIP_NO_PRIMARY,
                                                    "rev@acme.example": SKIP_SEVERAL_PRIMARIES}
    assert index.skipped_counts[SKIP_SEVERAL_PRIMARIES] == 2 and index.skipped_counts[SKIP_NO_PRIMARY] == 1
    assert [m.key for m in index.narrowed("ANN@acme.example").merge_sets] == ["ann@acme.example"]
    plain = index_contacts(path)                                           # without the savepoint's records
    assert shape(plain.merge_sets) == [("kim@acme.example", "REVU-k1", ["REVU-k2"], None),
                                       ("rev@acme.example", "REVU-r1", ["REVU-r2", "REVU-r3"], None)]


# --------------------------------------------------------------------------- the savepoint
def merged_savepoint(path: str, sets: list[tuple[str, str, dict]]) -> None:
    """A savepoint as the merge leaves it: (run id, status, context) per set."""
    for n, (run_id, status, context) in enumerate(sets):
        journal = Journal(path, run_id)
        journal.set_status(f"k{n}", context.get("email", "ann@acme.example"), status, context=context)
        journal.close()


def context(suffix: str, ref_set: str | None = "user_ann1") -> dict:
    return {"primary": {"id": don(suffix), "display_id": f"REVU-{suffix}", "external_ref": f"REVU-{suffix}"},
            "duplicates": [{"id": don("d1"), "external_ref": "user_ann1"}], "external_ref_set": ref_set}


def test_earlier_primaries_reads_the_merged_sets_of_a_savepoint(tmp_path):
    path = str(tmp_path / "savepoints" / "j.sqlite3")
    merged_savepoint(path, [("run-1", "merged", context("P1")),
                            ("run-1", "in_progress", context("P2")),           # not merged: not a primary yet
                            ("run-2", "moved_only", context("P3")),            # --keep-duplicate: kept its ref
                            ("run-3", "merged", {"odd": True}),                # no primary recorded: ignored
                            ("run-4", "merged", context("P1", "user_ann7"))])  # merged again
    found = earlier_primaries(path)
    assert found == [EarlierPrimary(don("P1"), "REVU-P1", "user_ann1", "ann@acme.example", "run-1"),
                     EarlierPrimary(don("P1"), "REVU-P1", "user_ann7", "ann@acme.example", "run-4")]
    assert EarlierPrimaries(found).of(row(2, "REVU-P1", "user_ann7")).run_id == "run-4"


def test_earlier_primaries_never_creates_a_savepoint_and_reads_one_in_use(tmp_path):
    missing = tmp_path / "none" / "j.sqlite3"
    assert earlier_primaries(str(missing)) == [] and not missing.parent.exists()
    path = str(tmp_path / "j.sqlite3")
    merged_savepoint(path, [("run-1", "merged", context("P1"))])
    held = Journal(path, "run-2", exclusive=True)                # a run holds it, mid-write
    try:
        held.intent("k0", "external_ref", {"before": "x"})
        assert [p.id for p in earlier_primaries(path)] == [don("P1")]
    finally:
        held.close()
    with open(path, "rb") as fh:
        before = fh.read()
    earlier_primaries(path)
    with open(path, "rb") as fh:
        assert fh.read() == before                                 # not a byte written
    # sqlite's side files of a WAL database, if it leaves them, are as private as the file
    assert all(stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600 for name in os.listdir(tmp_path))
    Journal(path, "run-3").close()


def test_a_savepoint_sqlite_cannot_read_is_one_line(tmp_path):
    bad = tmp_path / "j.sqlite3"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match="cannot be read"):
        earlier_primaries(str(bad))
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")                                       # a run stopped before it wrote the schema
    assert earlier_primaries(str(empty)) == []
    tables = tmp_path / "other.sqlite3"
    with sqlite3.connect(str(tables)) as db:
        db.execute("CREATE TABLE sets (x)")                       # not the journal's table
    with pytest.raises(JournalError, match="cannot be read"):
        earlier_primaries(str(tables))


# --------------------------------------------------------------------------- the finder's CSV, read by the merge
def devrev_contact(suffix: str, email: str, ref: str, refs: list[str] | None = None, **extra) -> dict:
    user = {"id": don(suffix), "display_id": f"REVU-{suffix}", "email": email, "external_ref": ref, "state": "active"}
    if refs is not None:
        user["external_refs"] = refs
    return dict(user, **extra)


def test_what_the_finder_writes_the_merge_groups_the_same_way(tmp_path):
    """Earlier primaries from the savepoint and from DevRev's external_refs: the finder's
    grouping, and the CSV it writes grouped as merge_contacts.py groups it, are one."""
    contacts = [
        devrev_contact("P1", "ann@acme.example", "user_ann1"),                     # the savepoint knows it
        devrev_contact("a2", "ann@acme.example", "user_ann2"),
        devrev_contact("K1", "kim@acme.example", "user_kim1", ["user_kim1", "REVU-K1", "bad ref", "x\x1b"]),
        devrev_contact("k2", "kim@acme.example", "user_kim2", ["user_kim2"]),
        devrev_contact("n1", "nop@acme.example", "user_nop1", ["user_nop1", "REVU-k2"]),   # not its own id
        devrev_contact("n2", "nop@acme.example", "user_nop2"),
        devrev_contact("b1", "bob@acme.example", "REVU-b1", ["REVU-b1"]),          # an ordinary set
        devrev_contact("b2", "bob@acme.example", "user_bob2", ["user_bob2"]),
    ]
    # DevRev's DON and display id disagree for this one: written as its display id, which its list holds
    contacts.append(dict(devrev_contact("Z9", "zoe@acme.example", "user_zoe1", ["user_zoe1", "REVU-zoe"]),
                         display_id="REVU-zoe"))
    contacts.append(devrev_contact("z2", "zoe@acme.example", "user_zoe2"))
    records = [earlier("P1", "run-1")]
    index = duplicate_finder.ContactIndex(str(tmp_path))
    counts = duplicate_finder.ScanCounts()
    try:
        for user in contacts:
            index.add(user, counts)
        index.finish()
        merge_sets, skipped, _ = duplicate_finder.find_groups(index, records)
    finally:
        index.close()
    findings = duplicate_finder.Findings(counts, merge_sets, skipped, [])
    assert findings.earlier_primaries == 3
    assert shape(merge_sets) == [
        ("ann@acme.example", don("P1"), [don("a2")], "run-1"), ("bob@acme.example", don("b1"), [don("b2")], None),
        ("kim@acme.example", don("K1"), [don("k2")], None), ("zoe@acme.example", "REVU-zoe", [don("z2")], None)]
    assert {g.email: g.reason for g in skipped} == {"nop@acme.example": SKIP_NO_PRIMARY}
    path = tmp_path / "found.csv"
    path.write_bytes(duplicate_finder.contacts_csv_bytes(findings))
    text = path.read_bytes().decode("utf-8")
    assert "user_kim1 REVU-K1\r\n" in text and "bad ref" not in text and "\x1b" not in text
    again, again_skipped = group_contacts(read_contacts(str(path)).rows, records)
    assert shape(again) == shape(merge_sets)
    assert {g.email: g.reason for g in again_skipped} == {"nop@acme.example": SKIP_NO_PRIMARY}
    assert shape(index_contacts(str(path), records).merge_sets) == shape(merge_sets)
    assert "merge sets whose primary an earlier merge made: 3" in duplicate_finder.summary_lines(findings, "x")


def test_a_bom_and_crlf_file_with_the_column_groups_alike(tmp_path):
    text = (f"REV_USER_ID,EMAIL,EXTERNAL_REF,EXTERNAL_REFS\r\n{don('K1')},kim@acme.example,user_kim1,"
            f"REVU-K1;user_kim1\r\nREVU-k2,kim@acme.example,user_kim2,\r\n")
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    assert shape(index_contacts(str(path)).merge_sets) == shape(group_contacts(read_contacts(str(path)).rows)[0]) \
        == [("kim@acme.example", don("K1"), ["REVU-k2"], None)]
