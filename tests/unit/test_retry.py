"""Backoff, the one retry policy of the client and the engine, on a fake clock (no real sleeping)."""
from __future__ import annotations

import itertools

import pytest

from devrev_api.retry_policy import Backoff
from devrev_client import DevRevClient
from helpers import TEST_TOKEN


class FakeClock:
    """time.monotonic and time.sleep in one: sleeping only moves the clock."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_delays_double_from_base_up_to_the_cap():
    policy = Backoff(attempts=7, base=0.5, cap=8.0, jitter=False)
    assert list(policy.delays()) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert list(Backoff(attempts=0).delays()) == []


def test_jitter_draws_between_half_and_all_of_each_ceiling():
    policy = Backoff(attempts=6, base=0.5, cap=8.0)
    draws = [list(policy.delays()) for _ in range(50)]
    for delays in draws:
        assert len(delays) == 6
        for attempt, delay in enumerate(delays):
            ceiling = min(8.0, 0.5 * 2 ** attempt)
            assert ceiling / 2 <= delay <= ceiling
    assert len({tuple(d) for d in draws}) > 1            # jittered, not the bare ceilings


def test_retries_count_down_and_a_retry_after_wins():
    retries = Backoff(attempts=3, base=1.0, cap=10.0, jitter=False).start()
    assert retries.next_delay() == 1.0
    assert retries.next_delay(retry_after=7) == 7        # the server's hint, in seconds
    assert retries.next_delay(retry_after=0) == 0        # "retry now" is honoured too
    assert retries.used == 3
    assert retries.next_delay() is None and retries.next_delay(retry_after=1) is None
    assert Backoff(attempts=1, jitter=False).start().next_delay(retry_after=-5) == 0.0


def test_unbounded_attempts_never_run_out():
    retries = Backoff(attempts=None, base=0.1, cap=0.4, jitter=False).start()
    assert [retries.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert list(itertools.islice(Backoff(attempts=None, jitter=False).delays(), 100))[-1] == 8.0


def test_waits_back_off_until_the_deadline_and_cut_the_last_wait():
    clock = FakeClock()
    policy = Backoff(attempts=None, base=0.2, cap=4.0, jitter=False, sleep=clock.sleep, clock=clock)
    yielded = list(policy.waits(20))
    assert clock.slept == yielded
    assert clock.slept[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 4.0]
    assert clock.slept[:-1] == sorted(clock.slept[:-1]) and clock.slept[-1] < 4.0
    assert sum(clock.slept) == pytest.approx(20) and clock.now == pytest.approx(120)


def test_waits_stop_early_when_the_attempts_run_out_and_sleep_lazily():
    clock = FakeClock()
    policy = Backoff(attempts=3, base=1, cap=1, jitter=False, sleep=clock.sleep, clock=clock)
    waits = policy.waits(1000)
    assert clock.slept == []                             # nothing sleeps until asked
    assert next(waits) == 1 and clock.slept == [1]
    assert list(waits) == [1, 1] and sum(clock.slept) == 3
    assert list(policy.waits(0)) == [] and sum(clock.slept) == 3


def test_with_changes_fields_and_keeps_the_injected_sleep_and_clock():
    clock = FakeClock()
    base = Backoff(attempts=5, base=0.5, cap=8, sleep=clock.sleep, clock=clock)
    poll = base.with_(attempts=None, base=0.2, cap=4, jitter=False)
    assert (poll.attempts, poll.base, poll.cap, poll.jitter) == (None, 0.2, 4, False)
    assert poll.sleep == clock.sleep and poll.clock is clock
    assert (base.attempts, base.jitter) == (5, True)     # the original is unchanged (frozen)


def test_the_client_builds_its_policies_from_its_options_and_sleeps_through_wait():
    slept: list[float] = []
    client = DevRevClient(TEST_TOKEN, "https://api.example.test", max_retries=3, max_throttle_retries=6,
                          backoff_base=0.25, backoff_cap=2.0, sleep=slept.append)
    try:
        assert (client.retry.attempts, client.retry.base, client.retry.cap) == (3, 0.25, 2.0)
        assert (client.throttle_retry.attempts, client.throttle_retry.base) == (6, 0.25)
        client.retry.sleep(1.5)                          # the client's wait: the injected sleep here
        assert slept == [1.5]
    finally:
        client.close()
