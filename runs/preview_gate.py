"""Which preview unlocks a real run: the rule the merge and the restore share.

Only the newest complete preview (of the same input, against the same DevRev) counts: an older,
wider preview must not unlock what the admin's latest preview did not show ("preview N sets,
run N sets"), and an interrupted preview (not complete) unlocks nothing and hides nothing. What
"shows everything the run would do" means is each run's own (`difference`). A preview older than
a day (--preview-max-age) unlocks nothing: DevRev has moved on since the admin read it. A plan
the admin names (--plan, runs.plan_file) is then the only preview considered, under the same rules.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from plumbing.clock import instant, utc_now

Preview = tuple[str, dict[str, Any]]   # (path of the JSON report, its data)

DEFAULT_MAX_AGE_HOURS = 24.0    # a preview older than this no longer unlocks a run (--preview-max-age)
FUTURE_SKEW_HOURS = 5 / 60      # a preview dated later than now by more than this unlocks nothing


def too_old(preview: dict[str, Any], max_age_hours: float | None, now: datetime | None = None) -> str | None:
    """Why `preview` is too old to unlock a run (its "created_at" more than `max_age_hours`
    before `now`), in a few words; None when it is not (or no limit is set). A preview that
    records no readable time is too old: DevRev may have changed in any way since."""
    if max_age_hours is None:
        return None
    made = instant(preview.get("created_at"))
    hours = ((now or utc_now()) - made).total_seconds() / 3600
    if hours < -FUTURE_SKEW_HOURS:   # dated in the future: planted or from a wrong clock, never trusted
        return "it is dated in the future (a wrong clock, or a file not made by this tool): preview again"
    if hours <= max_age_hours:
        return None
    age = f"{hours * 60:.0f} minutes" if hours < 1 else f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
    if made.year == 1970:
        age = "of unknown age"
    else:
        age = f"{age} old"
    return (f"it is {age}, older than the {max_age_hours:g} hours a preview unlocks a run for "
            f"(--preview-max-age): preview again "
            f"(or raise --preview-max-age HOURS)")


def newest_complete(previews: list[Preview], difference: Callable[[dict[str, Any]], str | None], *,
                    max_age_hours: float | None = None, now: datetime | None = None
                    ) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The newest complete preview (previews: newest first) if it is at most `max_age_hours`
    old (too_old) and `difference(data)` finds nothing it does not show: (path, data, None);
    else (None, None, the difference, naming that preview); (None, None, "no complete
    preview") when there is none."""
    for path, data in previews:
        if data.get("complete") is not True:
            continue
        why = too_old(data, max_age_hours, now) or difference(data)
        if why is None:
            return path, data, None
        return None, None, f"{why} ({path}, the newest complete preview)"
    return None, None, "no complete preview"
