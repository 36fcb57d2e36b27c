"""UTC timestamps in the formats the tool writes (journal, reports, backups, run ids).

Every stored time is UTC with a `Z`, so files from different machines sort and compare
as text. One place spells each format, so a journal line, a report and a backup made
in the same run agree.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

COMPACT_FORMAT = "%Y%m%dT%H%M%SZ"


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime | None = None, *, digits: int = 3) -> str:
    """ISO 8601 in UTC with a Z: `2024-05-01T12:00:00.123Z` (digits=3, the default),
    `...:00.123456Z` (6) or `...:00Z` (0). `moment` defaults to now; a naive one is taken as UTC.
    Raises ValueError for other digit counts."""
    if digits not in (0, 3, 6):
        raise ValueError(f"digits must be 0, 3 or 6, not {digits!r}")
    moment = utc_now() if moment is None else _as_utc(moment)
    fraction = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def compact_utc(moment: datetime | None = None) -> str:
    """`20240501T120000Z`: a time fit for file names and ids (second precision)."""
    return (utc_now() if moment is None else _as_utc(moment)).strftime(COMPACT_FORMAT)


def new_run_id(moment: datetime | None = None) -> str:
    """`20240501T120000Z-1a2b3c`: when a run started, plus 6 random hex digits so two
    runs started in the same second differ."""
    return f"{compact_utc(moment)}-{secrets.token_hex(3)}"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def instant(text: object) -> datetime:
    """An ISO 8601 date-time as DevRev sends it (`...:00Z`, `...:00.500Z`, `+02:00`, any number
    of fraction digits) as an aware UTC instant, so dates compare by time and not as strings
    (where `10:00:00Z` sorts after `10:00:00.500Z`). A missing or unreadable one is the epoch:
    the oldest. Naive times are taken as UTC."""
    if not isinstance(text, str) or not text:
        return _EPOCH
    try:
        return _as_utc(datetime.fromisoformat(text.strip().replace("z", "Z")))
    except ValueError:
        return _EPOCH

