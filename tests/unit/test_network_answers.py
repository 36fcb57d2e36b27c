"""The pieces behind issue 22 §4, without the emulator: DevRev's rate-limit reset read on its own
clock, the waits before a refused download URL is fetched again, what a 401 and a 403 say."""
from __future__ import annotations

import email.utils
import logging

import pytest

from devrev_api import assumptions as facts
from devrev_api.downloads import _refusal_waits
from devrev_api.errors import AuthError, PermissionDeniedError
from devrev_api.pacing import ServerPacer
from merging.engine import _stops_the_run


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _headers(remaining: int, reset: float, date: float | None = None) -> dict:
    headers = {"X-Ratelimit-Remaining": str(remaining), "X-Ratelimit-Reset": str(int(reset))}
    if date is not None:
        headers["Date"] = email.utils.formatdate(date, usegmt=True)
    return headers


def test_a_local_clock_an_hour_off_changes_no_wait_when_the_answer_has_its_date():
    devrev_now = 1_800_000_000.0
    pacer = ServerPacer(margin=2, clock=FakeClock(devrev_now + 3600))   # our clock an hour ahead
    pacer.reserve()
    pacer.release(_headers(2, devrev_now + 42, date=devrev_now))
    assert 42.0 <= pacer.reserve() <= 42.1


def test_a_reset_beyond_one_window_is_not_waited_for_and_said_once(caplog):
    now = 1_800_000_000.0
    pacer = ServerPacer(margin=2, clock=FakeClock(now))
    with caplog.at_level(logging.WARNING, logger="devrev_api.pacing"):
        for _ in range(3):
            pacer.reserve()
            pacer.release(_headers(0, now + 3600 + 120, date=now))   # DevRev's limiter an hour ahead of Date
        assert pacer.reserve() == 0.0   # goes; a 429's Retry-After will say how long
    doubts = [r for r in caplog.records if "clocks disagree" in r.getMessage()]
    assert len(doubts) == 1


def test_a_long_wait_for_the_reset_is_said_once_per_window(caplog):
    now = 1_800_000_000.0
    pacer = ServerPacer(margin=2, clock=FakeClock(now))
    pacer.reserve()
    pacer.release(_headers(1, now + 42, date=now))
    with caplog.at_level(logging.WARNING, logger="devrev_api.pacing"):
        waits = [pacer.reserve() for _ in range(4)]
    assert all(w > facts.LONG_WAIT_SECONDS for w in waits)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["DevRev's rate limit: waiting 42 s (X-Ratelimit-Reset: 1 calls left in its window)"]


def test_refused_urls_are_fetched_again_at_once_then_over_a_few_seconds():
    for jitter in (False, True):
        waits = list(_refusal_waits(jitter))
        assert waits[0] == 0.0 and max(waits) <= 8.0
        assert sum(waits) == pytest.approx(facts.PRESIGNED_URL_REFUSAL_SECONDS)
    # each wait starts from a fresh URL: one of them must outlast a refusal of a few seconds (5 s here)
    assert list(_refusal_waits(False)) == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 0.5]


@pytest.mark.parametrize("cause, says", [("token_expired", "make a new personal access token"),
                                         ("token_revoked", "make a new personal access token"),
                                         ("dev_org_deactivated", "a new token will not help"),
                                         ("unauthenticated", "check DEVREV_API_TOKEN"),
                                         (None, "check DEVREV_API_TOKEN")])
def test_a_401_says_its_cause(cause, says):
    exc = AuthError("DevRev rejected the token (x)", status=401, error_type=cause, endpoint="dev-users.self")
    assert says in str(exc) and "\n" not in str(exc)
    assert _stops_the_run(exc)


def test_a_403_naming_its_object_fails_the_set_only():
    named = PermissionDeniedError("not allowed", status=403, error_type="forbidden", endpoint="works.update",
                                  object_ids=("don:core:dvrv-us-1:devo/1:ticket/7",))
    assert "the token may not write don:core:dvrv-us-1:devo/1:ticket/7" in str(named)
    assert not _stops_the_run(named)
    plain = PermissionDeniedError("not allowed", status=403, error_type="forbidden", endpoint="works.update")
    assert plain.object_ids == () and "lacks permission" in str(plain)
    assert _stops_the_run(plain)
