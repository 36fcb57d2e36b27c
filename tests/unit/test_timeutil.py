"""The UTC timestamp formats the journal, reports, backups and run ids are written in."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from plumbing.clock import compact_utc, iso_utc, new_run_id, utc_now

MOMENT = datetime(2024, 5, 1, 12, 3, 4, 567891, tzinfo=timezone.utc)


def test_iso_utc_formats_keep_their_exact_shape():
    assert iso_utc(MOMENT) == "2024-05-01T12:03:04.567Z"            # reports, backups (milliseconds)
    assert iso_utc(MOMENT, digits=6) == "2024-05-01T12:03:04.567891Z"  # journal
    assert iso_utc(MOMENT, digits=0) == "2024-05-01T12:03:04Z"        # integrity reports
    assert iso_utc(MOMENT.replace(microsecond=999)) == "2024-05-01T12:03:04.000Z"  # truncated, never rounded up


def test_other_zones_and_naive_times_are_written_as_utc():
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert iso_utc(plus_two) == "2024-05-01T12:03:04.567Z"
    assert compact_utc(plus_two) == "20240501T120304Z"
    assert iso_utc(MOMENT.replace(tzinfo=None), digits=0) == "2024-05-01T12:03:04Z"


def test_run_ids_are_compact_utc_plus_six_hex_digits_and_differ():
    ids = {new_run_id(MOMENT) for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"20240501T120304Z-[0-9a-f]{6}", i) for i in ids)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_run_id())


def test_now_is_aware_utc_and_bad_precision_is_refused():
    assert utc_now().tzinfo is not None and utc_now().utcoffset() == timedelta(0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso_utc())
    with pytest.raises(ValueError):
        iso_utc(MOMENT, digits=2)
