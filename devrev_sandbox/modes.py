"""How the emulator behaves where DevRev's real behaviour is unknown: one switch per guess.

The defaults are the strict side of the guesses in `devrev_assumptions`. A test, bench or
rehearsal picks another answer with DevRevSandbox(modes=BehaviourModes(...)) (or the old
keyword of the same name, e.g. merge_outcome=...), or `python -m devrev_sandbox --mode
name=value`, so the tool can be run against each plausible DevRev. A new unknown gets a
field here (with its docstring, its parser in _PARSERS and its check in __post_init__),
read by the handlers through Settings.modes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import devrev_assumptions as facts

MERGE_OUTCOMES = ("404", "primary_identity", "deactivated")
RETRY_AFTER_FORMS = ("seconds", "date")


@dataclass(frozen=True)
class BehaviourModes:
    """DevRev behaviours the emulator can play either way (see the module docstring)."""

    merge_retire_after_gets: int | None = 2
    """A merged secondary retires after this many rev-users.get of it (None: not by reads)."""

    merge_retire_delay: float | None = None
    """...or this many seconds after rev-users.merge (None: not by time), whichever comes first."""

    merge_outcome: str = facts.MERGE_RETIRE_OUTCOME
    """How a retired secondary reads: "404" (gone; state deleted), "deactivated" (state
    deactivated) or "primary_identity" (readable, pointing at the primary)."""

    merge_moves_references: bool = facts.MERGE_MOVES_REFERENCES
    """Whether rev-users.merge, on retirement, moves the secondary's tickets (reported_by)
    and conversations (members) to the primary by itself."""

    external_ref_conflict_status: int = facts.EXTERNAL_REF_CONFLICT_STATUS
    """The status of rev-users.update giving an external_ref another live contact holds:
    409 (conflict) or 400 (bad_request)."""

    scan_page_size: int = facts.SCAN_PAGE_SIZE
    """How many contacts one rev-users.scan page holds: the scan request has no `limit`,
    so the server alone decides (undocumented)."""

    retry_after_form: str = "seconds"
    """How a 429 spells Retry-After: "seconds" (`30`, what the spec declares) or "date" (an
    HTTP-date, the other form RFC 9110 allows, which a proxy in front of DevRev may send)."""

    def __post_init__(self):
        if self.merge_outcome not in MERGE_OUTCOMES:
            raise ValueError(f"merge_outcome must be one of {', '.join(MERGE_OUTCOMES)}")
        if self.external_ref_conflict_status not in (400, 409):
            raise ValueError("external_ref_conflict_status must be 400 or 409")
        if self.scan_page_size < 1:
            raise ValueError("scan_page_size must be 1 or more")
        if self.retry_after_form not in RETRY_AFTER_FORMS:
            raise ValueError(f"retry_after_form must be one of {', '.join(RETRY_AFTER_FORMS)}")

    def with_pairs(self, pairs: list[str]) -> "BehaviourModes":
        """These modes with `name=value` pairs applied (command line values: `none` for
        None, `true`/`false`). Raises ValueError with one line naming the bad pair."""
        changes = {}
        for pair in pairs:
            name, sep, text = pair.partition("=")
            if not sep or name not in _PARSERS:
                raise ValueError(f"--mode {pair!r}: expected name=value, name one of {', '.join(_PARSERS)}")
            try:
                changes[name] = _PARSERS[name](text.strip())
            except ValueError:
                raise ValueError(f"--mode {pair!r}: not a valid value for {name}") from None
        return replace(self, **changes)


def _optional(parse):
    return lambda text: None if text.lower() == "none" else parse(text)


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


_PARSERS = {"merge_retire_after_gets": _optional(int), "merge_retire_delay": _optional(float),
            "merge_outcome": str, "merge_moves_references": _boolean, "external_ref_conflict_status": int,
            "scan_page_size": int, "retry_after_form": str}
MODE_NAMES = tuple(f.name for f in fields(BehaviourModes))
