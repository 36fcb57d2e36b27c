"""contacts.index: a large CSV grouped in flat memory, exactly as group_contacts groups it."""
from __future__ import annotations

import csv
import os

import pytest

import contacts.index
from contacts.csv_reader import CsvInputError, group_contacts, read_contacts
from contacts.index import EXAMPLES_PER_REASON, index_contacts
from devrev_sandbox.dataset import CSV_COLUMNS, DEMO_CSV, build_dataset
from helpers import MergeRun

CORPUS = os.path.join(os.path.dirname(__file__), "hostile_csv")


def _padded_dataset_csv(path, dataset, singles: int) -> None:
    """The dataset's rows, then `singles` contacts alone with their email."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for row in dataset.rows:
            writer.writerow([row[c] for c in CSV_COLUMNS])
        for n in range(singles):
            writer.writerow([f"REVU-pad{n}", f"pad{n}@pad.example", f"REVU-pad{n}", "", "", "", "", ""])


def _same_grouping(path: str) -> None:
    merge_sets, skipped = group_contacts(read_contacts(path, keep_raw=False).rows)
    index = index_contacts(path)
    assert [(m.email, m.primary, m.duplicates) for m in index.merge_sets] == \
        [(m.email, m.primary, m.duplicates) for m in merge_sets]
    counts = {reason: sum(1 for g in skipped if g.reason == reason) for reason in index.skipped_counts}
    assert index.skipped_counts == counts and index.skipped_total == len(skipped)
    expected_examples = [g for g in skipped
                         if sum(1 for h in skipped[: skipped.index(g)] if h.reason == g.reason) < EXAMPLES_PER_REASON]
    assert [(g.email, g.reason, g.rows) for g in index.skipped_examples] == \
        [(g.email, g.reason, g.rows) for g in expected_examples]
    assert index.file.row_count == len(merge_sets and [r for m in merge_sets for r in m.rows]) + \
        sum(len(g.rows) for g in skipped)
    assert sorted(r.line for _, r in index.skipped_rows()) == sorted(r.line for g in skipped for r in g.rows)


def test_index_groups_like_group_contacts(tmp_path):
    dataset = build_dataset(6, seed=3)
    path = str(tmp_path / "c.csv")
    _padded_dataset_csv(path, dataset, 40)
    _same_grouping(path)
    _same_grouping(DEMO_CSV)


@pytest.mark.parametrize("name", sorted(os.listdir(CORPUS)))
def test_index_refuses_what_read_contacts_refuses_with_the_same_line(name):
    path = os.path.join(CORPUS, name)
    with pytest.raises(CsvInputError) as full:
        read_contacts(path)
    with pytest.raises(CsvInputError) as flat:
        index_contacts(path)
    assert str(flat.value) == str(full.value)


def test_same_contact_twice_is_found_even_when_every_id_hashes_alike(tmp_path, monkeypatch):
    monkeypatch.setattr(contacts.index, "hash", lambda _: 7, raising=False)
    good = tmp_path / "good.csv"
    good.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,a@x.example,REVU-a1\nREVU-b2,a@x.example,user_b2\n"
                    "REVU-c3,c@x.example,REVU-c3\n", encoding="utf-8")
    assert len(index_contacts(str(good)).merge_sets) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,a@x.example,REVU-a1\nREVU-b2,b@x.example,user_b2\n"
                   "don:identity:dvrv-us-1:devo/1x:revu/b2,c@x.example,user_c3\n", encoding="utf-8")
    with pytest.raises(CsvInputError, match="line 4: REV_USER_ID .* already appears on line 3"):
        index_contacts(str(bad))


def test_a_file_changed_between_passes_is_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,a@x.example,REVU-a1\nREVU-b2,a@x.example,user_b2\n",
                    encoding="utf-8")
    index = index_contacts(str(path))
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,a@x.example,REVU-a1\n", encoding="utf-8")
    with pytest.raises(CsvInputError, match="changed while it was being read"):
        list(index.skipped_rows())


def test_preview_counts_skipped_groups_and_streams_their_rows(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(2, seed=4, tickets=(0, 1), conversations=(0, 1), skipped=True)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    _padded_dataset_csv(run.csv, dataset, 25)
    assert run.preview() == 0
    preview = run.latest_report("preview")
    expected = {}
    for g in group_contacts(read_contacts(run.csv).rows)[1]:
        expected[g.reason] = expected.get(g.reason, 0) + 1
    assert {k: v for k, v in preview["skipped_counts"].items() if v} == expected
    assert expected["single_contact"] >= 25
    assert preview["totals"]["not_merge_sets"] == sum(expected.values())
    per_reason = [g["reason"] for g in preview["skipped"]]
    assert all(per_reason.count(r) <= EXAMPLES_PER_REASON for r in per_reason)
    with open(preview["skipped_file"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert os.path.basename(preview["skipped_file"]) == f"preview_{preview['run_id']}_skipped.csv"
    assert len(rows) == sum(len(g.rows) for g in group_contacts(read_contacts(run.csv).rows)[1])
    assert {r["EMAIL"] for r in rows} >= {f"pad{n}@pad.example" for n in range(25)}
    assert oct(os.stat(preview["skipped_file"]).st_mode & 0o777) == "0o600"
    out = capsys.readouterr().out
    assert out.count("@pad.example") <= EXAMPLES_PER_REASON
    assert f"{expected['single_contact'] - EXAMPLES_PER_REASON} more groups for single_contact" in out
    assert preview["skipped_file"] in "".join(out.split())      # the screen points to the file (wrapped)
