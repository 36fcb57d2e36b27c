"""Issue 23 §4: the chart grows with the calls made, never with the clock; a log file that
cannot be written at the end does not turn a finished run into "bad usage"."""
from __future__ import annotations

import errno
import io
import logging

import pytest

import devrev_client
from operator_view import html_page
from plumbing import cli

YEAR = 365 * 24 * 60


@pytest.mark.parametrize("jump", [10 * YEAR, -10 * YEAR])
def test_a_clock_jump_of_years_adds_one_entry_to_the_series_and_the_page_stays_small(monkeypatch, jump):
    now = [1_767_225_600.0]                          # a fake clock: 2026-01-01, then years away
    monkeypatch.setattr(devrev_client.time, "time", lambda: now[0])
    client = devrev_client.DevRevClient("tok-" + "x" * 30, "https://api.devrev.ai")
    try:
        for minute in range(3):
            now[0] = 1_767_225_600.0 + minute * 60
            client.calls_by_minute[int(devrev_client.time.time() // 60)] += 50   # as _request counts a call
        now[0] += jump * 60
        client.calls_by_minute[int(devrev_client.time.time() // 60)] += 7
        series = client.calls_per_minute_series()
    finally:
        client.close()
    assert len(series) == 5 and sum(s["calls"] for s in series) == 157
    gap = [s for s in series if "gap_minutes" in s]
    assert len(gap) == 1 and gap[0]["calls"] == 0
    page = html_page.render({"kind": "merge_report", "calls_per_minute": series, "rate_limit": 200, "sets": []})
    assert len(page) < 200_000 and "157 calls over" in page


def test_short_gaps_still_show_as_empty_minutes():
    client = devrev_client.DevRevClient("tok-" + "x" * 30, "https://api.devrev.ai")
    try:
        client.calls_by_minute.update({100: 3, 103: 4})
        assert [s["calls"] for s in client.calls_per_minute_series()] == [3, 0, 0, 4]
    finally:
        client.close()


def test_an_old_report_with_a_huge_series_draws_a_bounded_chart():
    series = [{"minute": f"m{i}", "calls": i % 7} for i in range(200_000)]
    page = html_page.render({"kind": "merge_report", "calls_per_minute": series, "rate_limit": 200, "sets": []})
    assert page.count("<rect") <= html_page.CHART_BARS + 2 and len(page) < 500_000
    assert "200,000 minutes" in page or "200000 minutes" in page


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_log_file_that_cannot_be_flushed_at_the_end_keeps_the_runs_exit_code(tmp_path, monkeypatch, capsys):
    def body(_argv) -> int:
        with cli.run_logging(str(tmp_path / "logs"), "merge", "r1") as log_path:
            assert log_path
            handler = next(h for h in logging.getLogger().handlers if isinstance(h, cli._LogFileHandler))
            handler.stream = io.TextIOWrapper(io.BufferedWriter(_FullDisk(), 1 << 16), encoding="utf-8")
            logging.getLogger("merging.run").info("all sets merged")   # buffered: the disk fills on flush
            return 0

    assert cli.run_main(body) == 0
    err = capsys.readouterr().err
    assert "error:" not in err and err.count("can no longer be written") == 1 and "disk full" in err
