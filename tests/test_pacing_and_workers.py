"""Issue 25 rows 3-5: workers sized from the quota (runs.workers), header pacing on short
windows (pacing.ServerPacer: reserved after the client's cap, the reset to the fraction of a
second), and the preflight's reads at once. Fake clocks, never sleeps; speed is bench/throughput.py's."""
from __future__ import annotations

import email.utils
import os
import threading
import time

import pytest

from contacts.index import index_contacts
from devrev_api.pacing import AnswerTimes, ServerPacer, server_now
from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun, normalized
from merging import preflight
from runs import workers as sizing
from runs.workers import WorkerCount, choose_workers, size_workers


def small_seed() -> dict:
    """One workspace and one contact to read again and again."""
    return {"workspaces": [{"key": "acme", "display_name": "Acme Inc"}],
            "rev_users": [{"key": "jane", "email": "jane@acme.example", "workspace": "acme"}]}


class FakeClock:
    """One clock for the emulator and the pacer; the client's waits move it on."""

    def __init__(self, start: float = 1_700_000_000.25):
        self.now, self.waits = start, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _headers(remaining, reset, date=None, limit=None) -> dict:
    headers = {"X-Ratelimit-Remaining": str(remaining), "X-Ratelimit-Reset": str(reset)}
    if date is not None:
        headers["Date"] = email.utils.formatdate(date, usegmt=True)
    if limit is not None:
        headers["X-Ratelimit-Limit"] = str(limit)
    return headers


# ----------------------------------------------------------------------------- the sizing, with numbers
def test_workers_are_rate_times_latency_times_headroom_within_the_floor_and_ceiling():
    assert size_workers(5000, 0.15).count == 15       # 83.3/s x 0.15 s x 1.2 = 15 in flight
    assert size_workers(5000, 0.16).count == 16
    assert size_workers(600, 0.15).count == sizing.FLOOR       # 1.8: the old default, at least
    assert size_workers(200, 0.4).count == sizing.FLOOR
    big = size_workers(5000, 0.4)                      # 40 wanted
    assert big.count == sizing.CEILING == 32 and "= 40, at most 32" in big.why
    assert size_workers(5000, 0.32).count == 32        # the ceiling keeps 5,000/min up to 320 ms


def test_the_reason_reads_as_the_sum_it_made():
    chosen = size_workers(5000, 0.15, source="DevRev's X-Ratelimit-Limit")
    assert chosen.line() == "15 workers: 5000 calls/min (DevRev's X-Ratelimit-Limit) / 60 x 0.15 s latency x 1.2"
    assert chosen.to_json() == {"count": 15, "why": chosen.why, "given": False}


def test_no_latency_measured_keeps_the_old_default_and_says_so():
    for latency in (None, float("nan"), -1.0):
        chosen = size_workers(5000, latency)
        assert chosen.count == 4 and "no answer time" in chosen.why


def test_a_cap_above_what_the_client_can_send_is_sized_as_the_client():
    chosen = size_workers(1_000_000, 0.005)   # the tests' DEVREV_RATE_LIMIT against the emulator
    assert chosen.count == sizing.FLOOR and "the client's own most" in chosen.why
    assert size_workers(1_000_000, 0.02).count == 8   # 300/s x 0.02 s x 1.2 = 7.2


class _Client:
    """What choose_workers reads of a DevRevClient."""

    def __init__(self, calls_per_minute, from_server, announced, times):
        self.calls_per_minute, self.pace_from_server = calls_per_minute, from_server
        self.pacer = ServerPacer()
        self.pacer.announced_limit = announced
        self.answer_times = AnswerTimes()
        for t in times:
            self.answer_times.add(t)


def test_choose_workers_takes_the_given_count_else_the_cap_and_the_median_answer_time():
    measured = [0.14, 0.15, 0.9, 0.16, 0.15]    # one slow first answer does not move the median
    assert choose_workers(_Client(5000, False, None, measured), 8) == WorkerCount(8, "--workers 8", given=True)
    given = choose_workers(_Client(5000, False, None, measured), None)
    assert given.count == 15 and "(the cap set)" in given.why
    announced = choose_workers(_Client(200 * 5000 / 1000, True, 25000, measured), None)
    assert "X-Ratelimit-Limit" in announced.why
    assert "default cap" in choose_workers(_Client(200, True, None, measured), None).why
    assert choose_workers(_Client(5000, False, None, []), None).count == 4


def test_answer_times_keep_a_moving_median():
    times = AnswerTimes(keep=3)
    assert times.median() is None
    for t in (5.0, 0.1, 0.2, 0.3):
        times.add(t)
    assert len(times) == 3 and times.median() == pytest.approx(0.2)   # the 5 s answer has left the window


# ----------------------------------------------------------------------------- the pacer, with a fake clock
def test_a_fractional_reset_is_waited_for_to_the_fraction():
    clock = FakeClock(1000.1)
    pacer = ServerPacer(margin=2, clock=clock)
    pacer.reserve()
    pacer.release(_headers(2, "1000.400", date=1000))
    assert pacer.reserve() == pytest.approx(0.3 + 0.3 / 20)     # 0.3 s and a twentieth of it, not 1.35 s


def test_date_has_whole_seconds_so_a_clock_within_them_gives_the_fraction():
    assert server_now(_headers(1, 1001, date=1000), 1000.7) == 1000.7     # agrees: ours has the fraction
    assert server_now(_headers(1, 1001, date=1000), 1001.02) == 1001.02   # stamped late in its second
    assert server_now(_headers(1, 1001, date=1000), 4600.0) == 1000.0     # an hour off: DevRev's Date
    assert server_now(_headers(1, 1001, date=1000), 999.5) == 1000.0      # behind Date: DevRev's Date
    assert server_now({}, 1234.5) == 1234.5


def test_a_whole_second_reset_is_waited_for_from_the_precise_time():
    clock = FakeClock(1000.6)
    pacer = ServerPacer(margin=2, clock=clock)
    pacer.reserve()
    pacer.release(_headers(2, 1001, date=1000))
    assert pacer.reserve() == pytest.approx(0.4 + 0.02)   # was 1.05: Date's whole second taken as now


def test_an_older_answer_of_the_same_window_does_not_raise_what_is_left():
    clock = FakeClock(1000.0)
    pacer = ServerPacer(margin=0, clock=clock)
    for _ in range(2):
        pacer.reserve()
    pacer.release(_headers(1, "1000.5"))     # the later call's answer, first
    pacer.release(_headers(4, "1000.5"))     # the earlier call's, late
    assert pacer.reserve() == 0.0            # one left, none in flight
    assert pacer.reserve() > 0               # not four
    pacer.release()
    pacer.release()
    pacer.release(_headers(9, "1001.5"))     # a new window: its own count
    assert pacer.reserve() == 0.0


def test_the_default_margin_is_two_calls_and_none_on_a_small_window():
    clock = FakeClock(1000.0)
    small, large = ServerPacer(clock=clock), ServerPacer(clock=clock)
    small.reserve()
    small.release(_headers(1, "1000.5", limit=10))
    assert small.reserve() == 0.0             # the last call of a 10-call window goes
    small.release(_headers(0, "1000.5", limit=10))
    assert small.reserve() > 0
    large.reserve()
    large.release(_headers(2, "1000.5", limit=1000))
    assert large.reserve() > 0                # two kept spare for the token's other clients


def test_a_call_waiting_for_the_clients_cap_is_not_in_flight(make_sandbox, make_client):
    sb = make_sandbox(small_seed(), rate_limit=(10, 1.0))
    client = make_client(sb)
    seen = []

    class Cap:
        def take(self):
            seen.append(client.pacer._in_flight)

    client._throttle = Cap()
    jane = sb.key_id("jane")
    for _ in range(3):
        client.get_rev_user(jane)
    assert seen == [0, 0, 0]
    assert len(client.answer_times) == 3 and client.answer_times.median() > 0


@pytest.mark.parametrize("reset, longest", [("fractional", 1.05), ("whole", 2.05)])
def test_a_ten_a_second_window_meets_no_429(make_sandbox, make_client, reset, longest):
    clock = FakeClock()
    sb = make_sandbox(small_seed(), rate_limit=(10, 1.0), clock=clock, rate_limit_reset=reset)
    client = make_client(sb, sleep=clock.sleep, pacer=ServerPacer(clock=clock))
    jane = sb.key_id("jane")
    for _ in range(40):
        client.get_rev_user(jane)
    got = [e["status"] for e in sb.api_calls() if e["endpoint"] == "rev-users.get"]
    assert got == [200] * 40
    # ten calls in each window (none kept spare on a 10-call window): 4 windows, 3 waits
    assert len(clock.waits) == 3 and all(0 < w <= longest for w in clock.waits)
    if reset == "fractional":      # each window ends one second after it began: no whole-second rounding
        assert all(w == pytest.approx(1.0, abs=0.06) for w in clock.waits)


def test_the_emulator_sends_the_reset_in_either_form(make_sandbox, make_client):
    for reset in ("whole", "fractional"):
        sb = make_sandbox(small_seed(), rate_limit=(10, 1.0), rate_limit_reset=reset)
        client = make_client(sb)
        client.get_rev_user(sb.key_id("jane"))
        sent = client.pacer._reset_sent
        assert sent is not None and (sent == int(sent)) == (reset == "whole")


# ----------------------------------------------------------------------------- the preflight, at once
def test_the_preflight_reads_go_at_once_and_say_what_they_said_one_by_one(tmp_path, make_sandbox, make_client):
    dataset = build_dataset(2, seed=3, tickets=(1, 3), conversations=(1, 2), skipped=False)
    sb = make_sandbox(dataset.seed)
    client = make_client(sb)
    path = os.path.join(tmp_path, "contacts.csv")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(dataset.csv_text())
    merge_set = index_contacts(path, []).merge_sets[0]
    running, peak, lock = [0], [0], threading.Lock()
    original = client._attempt

    def gauged(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.02)   # an answer takes a while: reads started together overlap
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    client._attempt = gauged
    together = preflight.run_checks(client, merge_set)
    serial = preflight.run_checks(make_client(sb), merge_set)
    assert peak[0] > 1
    assert [c.line() for c in together] == [c.line() for c in serial]
    assert [c.name for c in together][:2] == ["token", "rate limit"]
    assert all(c.ok for c in together)


# ----------------------------------------------------------------------------- the run's header
def test_a_run_says_how_many_workers_and_why_and_ends_as_with_a_given_count(tmp_path, monkeypatch, make_sandbox,
                                                                             caplog):
    dataset = build_dataset(4, seed=5, tickets=(0, 2), conversations=(0, 1), skipped=False)
    ends = {}
    for name, extra in (("auto", ()), ("given", ("--workers", "2"))):
        sandbox = make_sandbox(dataset.seed)
        (tmp_path / name).mkdir()
        run = MergeRun(tmp_path / name, sandbox, dataset, monkeypatch)
        caplog.clear()
        with caplog.at_level("INFO"):
            assert run.run("--skip-preview-check", *extra) == 0
        said = [r.getMessage() for r in caplog.records if " workers: " in r.getMessage()]
        block = run.latest_report()["workers"]
        if name == "auto":
            assert said and "calls/min" in said[0] and "latency x 1.2" in said[0]
            assert block["given"] is False and 4 <= block["count"] <= 32
            assert run.latest_report()["options"]["workers"] is None   # the command line's, as given
        else:
            assert said == ["2 workers: --workers 2"] and block == {"count": 2, "why": "--workers 2", "given": True}
        ends[name] = normalized(sandbox.dump())
    assert ends["auto"] == ends["given"]


def test_a_late_answer_of_a_window_already_read_is_not_a_clock_in_doubt(caplog):
    clock = FakeClock(1000.2)
    pacer = ServerPacer(clock=clock)
    pacer.reserve()
    pacer.reserve()
    pacer.release(_headers(50, 1300, date=1000))     # read as plausible
    clock.now = 2000.0                                # long after (another waiter moved a fake clock on)
    with caplog.at_level("WARNING", logger="devrev_api.pacing"):
        pacer.release(_headers(49, 1300, date=2000))  # the same window's reset, 700 s before its Date
    assert not [r for r in caplog.records if "clocks disagree" in r.getMessage()]
    assert pacer.reserve() == 0.0
