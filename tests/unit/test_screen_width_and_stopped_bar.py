"""Screens fit the terminal (COLUMNS as shutil reads it, 60..160; 100 when stdout is not a terminal), and a
progress bar left before its total says "stopped" instead of looking finished."""
from __future__ import annotations

import io
import sys

import pytest

from operator_view import reports, screens
from plumbing import cli
from runs import support


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def long_preview() -> dict:
    """test_operator_screens' long-values preview: a 72-character email, 5 user_ refs, 7 groups."""
    record = {"email": "a" * 60 + "@example.com", "status": "would_merge", "estimated_calls": 12345,
              "duplicates": [{"external_ref": f"user_{i:022d}", "tickets": ["TKT-1"] * 1234,
                              "conversations": [], "messages": 0, "attachments": 0, "attachment_bytes": 0}
                             for i in range(5)]}
    skipped = {"email": "gone@acme.example", "status": "skipped", "reason": "contact_not_found",
               "detail": "REVU-x was not found in DevRev when the preview looked it up again", "primary": "REVU-x"}
    groups = [{"email": f"solo{i}@x.example", "reason": "single_contact", "detail": "only one contact",
               "rows": [{"EXTERNAL_REF": f"REVU-{i}"}]} for i in range(7)]
    preview = {"sets": [record, skipped], "skipped": groups}
    preview["totals"] = reports.preview_totals(preview)
    return preview


def status_rows() -> list[dict]:
    return [{"email": "someone.with.a.long.name@example.com", "status": "in_progress", "done": 12, "intents": 1,
             "updated_at": "2025-01-02T03:04:05.678Z",
             "note": "REVU-d1: backed up, 3 items moved, 1 write to re-check"},
            {"email": "b@x.example", "status": "merged", "done": 30, "intents": 0, "updated_at": None, "note": None}]


def restore_table(width: int | None = None) -> str:
    """restoring/run.py's preview table, full-width values."""
    rows = [["someone.with.a.long.name@example.com", "would_restore", "REVU-1234567890123", "re-create", 12, 3,
             "the primary was taken off 2 tickets since the merge; they are left alone"],
            [None, "backup_failed", None, None, 0, 0, "backups/x/manifest.json: not valid JSON"]]
    return screens.format_table(["email", "status", "duplicate", "action", "tickets", "convs", "note"], rows,
                                width=width, right=(4, 5), caps={0: 30, 2: 16})


@pytest.fixture
def terminal(monkeypatch):
    """stdout is a terminal COLUMNS wide."""
    def at(columns: int) -> None:
        monkeypatch.setattr(sys, "stdout", FakeTTY())
        monkeypatch.setenv("COLUMNS", str(columns))
    return at


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


# --------------------------------------------------------------------------- the width
def test_the_width_is_the_terminals_within_60_to_160(terminal):
    for columns, width in ((80, 80), (120, 120), (40, 60), (500, 160), (100, 100)):
        terminal(columns)
        assert screens.screen_width() == width


def test_piped_output_keeps_100_columns_whatever_columns_says(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal
    assert screens.screen_width() == 100
    preview = long_preview()
    assert screens.format_preview(preview) == screens.format_preview(preview, width=100)
    assert screens.format_status(status_rows()) == screens.format_status(status_rows(), width=100)
    text = "word " * 60
    assert screens.wrap_text(text) == screens.wrap_text(text, 100)
    monkeypatch.setattr(sys, "stdout", None)  # no stdout at all
    assert screens.screen_width() == 100


def test_at_80_columns_every_line_fits_and_capped_columns_give_way(terminal):
    terminal(80)
    preview = long_preview()
    text = screens.format_preview(preview, more_in="reports/preview_x.csv")
    assert widest(text) <= 80, max(text.splitlines(), key=len)
    lines = text.splitlines()
    header = lines[0]
    assert header.split()[:7] == ["email", "would", "tickets", "convs", "calls", "duplicate", "refs"]
    # the email (capped at 30) is cut to make room; the numbers are whole
    assert lines[2].startswith("a" * 21 + "…") and "6170" in lines[2] and "12345" in lines[2]
    assert header.index("duplicate") >= 80 - 24  # the last column keeps a fifth of the width at least
    assert "4 more groups for single_contact: see reports/preview_x.csv" in " ".join(text.split())
    empty = {"sets": [], "skipped": []}
    assert widest(screens.format_preview(dict(empty, totals=reports.preview_totals(empty)))) <= 80
    assert widest(screens.format_status(status_rows())) <= 80
    assert widest(restore_table()) <= 80
    assert widest(screens.wrap_text("word " * 60)) <= 80


def test_at_120_columns_a_table_may_use_more(terminal):
    terminal(120)
    text = screens.format_preview(long_preview())
    assert 100 < widest(text) <= 120
    assert text.splitlines()[2].startswith("a" * 29 + "…")  # the email keeps its cap of 30
    assert 100 < widest(screens.wrap_text("word " * 60)) <= 120


def test_at_60_columns_the_preview_still_fits(terminal):
    terminal(60)
    assert widest(screens.format_preview(long_preview())) <= 60
    # --status's number columns are never cut nor any column below its header: at 60 it is a best effort
    rows = [line.split() for line in screens.format_status(status_rows()).splitlines()[2:] if not line.startswith(" ")]
    assert [row[2:4] for row in rows] == [["12", "1"], ["30", "0"]]


def test_a_table_that_fitted_100_columns_is_unchanged():
    table = screens.format_table(["a", "b"], [["x" * 100, None]], caps={0: 48}, width=100)
    assert table.splitlines()[1] == "-" * 48 + "  " + "-" * 8
    # numbers are never cut, even when nothing else can give way
    table = screens.format_table(["n", "m", "note"], [[10 ** 40, 10 ** 40, "why"]], right=(0, 1), width=60)
    assert str(10 ** 40) in table.splitlines()[2]


# --------------------------------------------------------------------------- the progress bar
def final_bar(stream: io.StringIO) -> str:
    """What the terminal shows last: the text after the last carriage return."""
    return stream.getvalue().rstrip("\n").split("\r")[-1]


@pytest.fixture
def bar_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # tqdm's dynamic_ncols on a stream without a terminal size


def test_a_bar_left_before_its_total_says_stopped_not_100_percent(bar_columns):
    stream = FakeTTY()
    with support.progress(5, "merge", file=stream) as bar:
        bar.update(2)
    last = final_bar(stream)
    assert "merge stopped" in last and "2/5" in last and "100%" not in last, last


def test_a_bar_interrupted_by_ctrl_c_says_stopped(bar_columns):
    stream = FakeTTY()
    with pytest.raises(KeyboardInterrupt):
        with support.progress(4, "preview", file=stream) as bar:
            bar.update(3)
            raise KeyboardInterrupt
    last = final_bar(stream)
    assert "preview stopped" in last and "3/4" in last and "100%" not in last, last


def test_a_finished_bar_says_100_percent_and_not_stopped(bar_columns):
    stream = FakeTTY()
    with support.progress(3, "merge", file=stream) as bar:
        bar.update(3)
    last = final_bar(stream)
    assert "100%" in last and "3/3" in last and "stopped" not in last, last


def test_a_bar_without_a_total_and_a_bar_off_a_terminal(bar_columns):
    stream = FakeTTY()
    with support.progress(None, "contacts", unit=" contacts", file=stream) as bar:
        bar.update(7)
    assert "stopped" not in final_bar(stream) and "7" in final_bar(stream)  # no total: nothing to fall short of
    piped = io.StringIO()
    with support.progress(5, "merge", file=piped) as bar:
        bar.update(2)
    assert piped.getvalue() == ""


def test_run_sets_stopped_midway_leaves_the_bar_stopped(bar_columns, monkeypatch):
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    stop = cli.StopSignal()

    def work(item: int) -> int:
        if item == 1:
            stop.set()  # Ctrl-C or SIGTERM while the second set runs
        return item

    done = [item for item, _ in support.run_sets(range(5), work, 1, stop, "merge")]
    assert done == [0, 1]
    last = final_bar(stream)
    assert "merge stopped" in last and "2/5" in last and "100%" not in last, last
