"""Which preview unlocks a real run: the rule the merge and the restore share.

Only the newest complete preview (of the same input, against the same DevRev) counts: an older,
wider preview must not unlock what the admin's latest preview did not show ("preview N sets,
run N sets"), and an interrupted preview (not complete) unlocks nothing and hides nothing. What
"shows everything the run would do" means is each run's own (`difference`).
"""
from __future__ import annotations

from typing import Any, Callable

Preview = tuple[str, dict[str, Any]]   # (path of the JSON report, its data)


def newest_complete(previews: list[Preview], difference: Callable[[dict[str, Any]], str | None]
                    ) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The newest complete preview (previews: newest first) if `difference(data)` finds
    nothing it does not show: (path, data, None); else (None, None, the difference, naming
    that preview); (None, None, "no complete preview") when there is none."""
    for path, data in previews:
        if data.get("complete") is not True:
            continue
        why = difference(data)
        if why is None:
            return path, data, None
        return None, None, f"{why} ({path}, the newest complete preview)"
    return None, None, "no complete preview"
