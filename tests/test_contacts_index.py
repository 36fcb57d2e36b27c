"""contacts.index: a large CSV grouped in flat memory, exactly as group_contacts groups it."""
from __future__ import annotations

import csv
import io
import os

import pytest

import contacts.index
from contacts import read_progress
from contacts.csv_reader import CsvInputError, group_contacts, read_contacts
from contacts.index import EXAMPLES_PER_REASON, index_contacts
from contacts.read_progress import ReadProgress
from devrev_sandbox.dataset import CSV_COLUMNS, DEMO_CSV, build_dataset
from helpers import MergeRun
from plumbing.cli import ExitCode

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


def _skipped_groups(path: str) -> dict[str, tuple[int, int]]:
    """reason -> (groups, rows) of the groups that are not merge sets, as group_contacts finds them."""
    found: dict[str, tuple[int, int]] = {}
    for g in group_contacts(read_contacts(path).rows)[1]:
        groups, rows = found.get(g.reason, (0, 0))
        found[g.reason] = (groups + 1, rows + len(g.rows))
    return found


def test_preview_counts_skipped_groups_and_rows_and_lists_them_only_on_request(tmp_path, monkeypatch, make_sandbox,
                                                                                capsys):
    dataset = build_dataset(2, seed=4, tickets=(0, 1), conversations=(0, 1), skipped=True)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    _padded_dataset_csv(run.csv, dataset, 25)
    expected = _skipped_groups(run.csv)
    assert expected["single_contact"][0] >= 25 and len(expected) > 1
    rows_total = sum(rows for _, rows in expected.values())

    assert run.preview() == 0
    preview = run.latest_report("preview")
    assert {k: v for k, v in preview["skipped_counts"].items() if v} == {k: g for k, (g, _) in expected.items()}
    assert {k: v for k, v in preview["skipped_row_counts"].items() if v} == {k: r for k, (_, r) in expected.items()}
    assert preview["totals"]["not_merge_sets"] == sum(g for g, _ in expected.values())
    per_reason = [g["reason"] for g in preview["skipped"]]
    assert all(per_reason.count(r) <= EXAMPLES_PER_REASON for r in per_reason)
    assert "skipped_file" not in preview                      # not asked for: counted, not listed
    assert not [f for f in os.listdir(run.dir / "reports") if f.endswith("_skipped.csv")]
    out = " ".join(capsys.readouterr().out.split())             # (the screen wraps lines)
    assert out.count("@pad.example") <= EXAMPLES_PER_REASON
    assert f"{expected['single_contact'][0] - EXAMPLES_PER_REASON} more groups for single_contact" in out
    assert f"{rows_total} rows of the CSV are in no merge set (single_contact {expected['single_contact'][1]}" in out
    assert "to list them in a file, preview again with --list-skipped (preview_<run>_skipped.csv)" in out

    assert run.preview("--list-skipped") == 0
    listed = run.latest_report("preview")
    assert os.path.basename(listed["skipped_file"]) == f"preview_{listed['run_id']}_skipped.csv"
    with open(listed["skipped_file"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["line"]) for r in rows) == \
        sorted(r.line for g in group_contacts(read_contacts(run.csv).rows)[1] for r in g.rows)
    assert {r["reason"]: sum(1 for x in rows if x["reason"] == r["reason"]) for r in rows} == \
        {k: r for k, (_, r) in expected.items()}
    assert {r["EMAIL"] for r in rows} >= {f"pad{n}@pad.example" for n in range(25)}
    assert oct(os.stat(listed["skipped_file"]).st_mode & 0o777) == "0o600"
    out = "".join(capsys.readouterr().out.split())
    assert out.count(listed["skipped_file"]) == 2                # the "… N more" row and the line under the table


def test_list_skipped_goes_only_with_preview(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(1, seed=4)
    run = MergeRun(tmp_path, make_sandbox(dataset.seed), dataset, monkeypatch)
    assert run.run("--list-skipped") == ExitCode.USAGE
    assert "--list-skipped only goes with --preview" in capsys.readouterr().err


def test_row_counts_per_reason_and_narrowed(tmp_path):
    dataset = build_dataset(3, seed=5, skipped=True)
    path = str(tmp_path / "c.csv")
    _padded_dataset_csv(path, dataset, 7)
    expected = _skipped_groups(path)
    index = index_contacts(path, progress=_quiet(path))
    assert {k: v for k, v in index.skipped_row_counts.items() if v} == {k: r for k, (_, r) in expected.items()}
    assert index.skipped_rows_total == sum(1 for _ in index.skipped_rows())
    one = index.narrowed("pad3@pad.example")
    assert one.skipped_row_counts["single_contact"] == 1 and one.skipped_rows_total == 1
    assert [r.email for _, r in one.skipped_rows()] == ["pad3@pad.example"]


class _FakeClock:
    def __init__(self, step: float):
        self.now, self.step = 100.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _quiet(path: str) -> ReadProgress:
    return ReadProgress(path, stream=_Stream(False), clock=_FakeClock(0.0))


def _progress_csv(tmp_path, monkeypatch) -> str:
    """A CSV of 2,000 rows and more, the progress updated every 100 rows (contacts.index._TICK)."""
    monkeypatch.setattr(contacts.index, "_TICK", 100)
    path = str(tmp_path / "c.csv")
    _padded_dataset_csv(path, build_dataset(2, seed=2), 2_000)
    return path


def test_a_small_quick_read_prints_nothing(tmp_path, monkeypatch):
    path = _progress_csv(tmp_path, monkeypatch)
    stream = _Stream(False)
    index_contacts(path, progress=ReadProgress(path, stream=stream, clock=_FakeClock(0.0001)))
    assert stream.getvalue() == ""


def test_a_big_file_says_so_at_once_then_rows_and_mib_every_few_seconds_in_a_pipe(tmp_path, monkeypatch):
    path = _progress_csv(tmp_path, monkeypatch)
    size = os.path.getsize(path)
    stream = _Stream(False)
    progress = ReadProgress(path, stream=stream, clock=_FakeClock(1.0), announce_bytes=size)   # a second a tick
    index = index_contacts(path, progress=progress)
    lines = stream.getvalue().splitlines()
    mib = f"{size / (1 << 20):.1f}"
    assert lines[0] == f"reading c.csv ({mib} MiB) ..."
    assert lines[1].startswith("reading c.csv: 100 rows, ") and lines[1].endswith(f" of {mib} MiB")
    ticks = [line for line in lines if line.startswith("reading c.csv: ")]
    # one update each 100 rows and the last, a second apart: a line every PIPE_INTERVAL seconds at most
    updates = index.file.row_count // 100 + 1
    assert len(ticks) == len(range(0, updates, int(read_progress.PIPE_INTERVAL)))
    assert lines[-1].startswith(f"read c.csv: {index.file.row_count:,} rows ({mib} MiB) in ")
    stream = _Stream(False)    # PIPE_INTERVAL seconds a tick: every update is a line, the last at the file's end
    index_contacts(path, progress=ReadProgress(path, stream=stream, clock=_FakeClock(read_progress.PIPE_INTERVAL),
                                               announce_bytes=size))
    ticks = [line for line in stream.getvalue().splitlines() if line.startswith("reading c.csv: ")]
    assert len(ticks) == updates and ticks[-1].endswith(f"{mib} of {mib} MiB")
    assert ticks[-1].startswith(f"reading c.csv: {index.file.row_count:,} rows, ")
    # a file under the size: nothing until reading has taken a second, then the same lines
    stream = _Stream(False)
    index_contacts(path, progress=ReadProgress(path, stream=stream, clock=_FakeClock(0.3)))
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"reading c.csv ({mib} MiB) ..." and lines[1].startswith("reading c.csv: 400 rows, ")


def test_on_a_terminal_the_progress_is_one_updating_line(tmp_path, monkeypatch):
    path = _progress_csv(tmp_path, monkeypatch)
    stream = _Stream(True)
    index = index_contacts(path, progress=ReadProgress(path, stream=stream, clock=_FakeClock(1.0), announce_bytes=0))
    text = stream.getvalue()
    assert text.startswith("reading c.csv (")
    assert "\r" in text and " rows, " in text and " MiB |" in text      # tqdm's line, redrawn in place
    assert text.rstrip("\n").splitlines()[-1].startswith(f"read c.csv: {index.file.row_count:,} rows")


def test_the_default_progress_goes_to_stderr_for_a_big_file(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "c.csv")
    _padded_dataset_csv(path, build_dataset(1, seed=2), 10)
    monkeypatch.setattr(read_progress, "ANNOUNCE_BYTES", 1)
    index_contacts(path)
    err = capsys.readouterr().err
    assert err.startswith("reading c.csv (0.0 MiB) ...\n") and "read c.csv: " in err
    monkeypatch.setattr(read_progress, "ANNOUNCE_BYTES", 1 << 40)
    index_contacts(path)
    assert capsys.readouterr().err == ""


def test_a_preview_of_a_big_csv_says_it_is_reading_it_first(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(1, seed=4)
    run = MergeRun(tmp_path, make_sandbox(dataset.seed), dataset, monkeypatch)
    _padded_dataset_csv(run.csv, dataset, 30)
    monkeypatch.setattr(read_progress, "ANNOUNCE_BYTES", 1)
    assert run.preview() == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"reading {os.path.basename(run.csv)} (")
    assert f"read {os.path.basename(run.csv)}: " in captured.err
