"""How the emulator behaves where DevRev's real behaviour is unknown: one switch per guess.

The defaults are the strict side of the guesses in `devrev_api.assumptions`. A test, bench or
rehearsal picks another answer with DevRevSandbox(modes=BehaviourModes(...)) (or the old
keyword of the same name, e.g. merge_outcome=...), or `python -m devrev_sandbox --mode
name=value`, so the tool can be run against each plausible DevRev. A new unknown gets a
field here (with its docstring, its parser in _PARSERS and its check in __post_init__),
read by the handlers through Settings.modes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from devrev_api import assumptions as facts

MERGE_OUTCOMES = ("404", "deleted", "primary_identity", "deactivated")
RETIRED_FILTER_ANSWERS = ("empty", "400", "404")
TOKEN_PERMISSIONS = ("all", "no_merge", "read_only")
LIST_PAGINGS = ("keyset", "offset")
RETRY_AFTER_FORMS = ("seconds", "date")
CONTACT_TIMELINE_ON_MERGE = ("deleted", "moved")
WORKS_CUSTOM_FIELDS_FILTERS = ("refused", "accepted")
MERGE_JOBS = ("completed", "failed_first", "in_progress", "refused", "lost_first")
CONVERSATIONS_MEMBERS_FILTERS = ("applied", "empty")
RATE_LIMIT_RESETS = ("whole", "fractional")


@dataclass(frozen=True)
class BehaviourModes:
    """DevRev behaviours the emulator can play either way (see the module docstring)."""

    merge_retire_after_gets: int | None = 2
    """A merged secondary retires after this many rev-users.get of it (None: not by reads)."""

    merge_retire_delay: float | None = None
    """...or this many seconds after rev-users.merge (None: not by time), whichever comes first."""

    merge_outcome: str = facts.MERGE_RETIRE_OUTCOME
    """How a retired secondary reads: "404" (gone; state deleted), "deleted" (readable,
    state deleted), "deactivated" (state deactivated) or "primary_identity" (readable,
    pointing at the primary). Sources: devrev-api.md section 14 (user-state enum)."""

    merge_moves_references: bool = facts.MERGE_MOVES_REFERENCES
    """Whether rev-users.merge, on retirement, moves every reference to the secondary to the
    primary by itself: tickets' reported_by, conversations' members and the contact ids in
    tickets' custom_fields, including objects the tool never listed (the 2023 internal spec
    says the merge transfers them)."""

    retired_filter_answer: str = "empty"
    """How works.list / conversations.list answer a reported_by / members filter naming a
    retired contact: "empty" (no items), "400" (bad_request, invalid_id) or "404"; the spec
    declares both errors on these lists, the case itself is undocumented."""

    token_permissions: str = "all"
    """What the token may do: "all", "no_merge" (403 on rev-users.merge: a scoped token
    without rev_user:all) or "read_only" (403 on every write)."""

    list_paging: str = "keyset"
    """How lists page: "keyset" (stable cursors, newest first) or "offset" (newest modified
    first, cursors that are offsets: an item written between two pages shifts the rest)."""

    locate_expires_at: bool = True
    """Whether artifacts.locate says when its URL expires (the spec makes expires_at optional)."""

    external_ref_conflict_status: int = facts.EXTERNAL_REF_CONFLICT_STATUS
    """The status of rev-users.update giving an external_ref another live contact holds:
    409 (conflict) or 400 (bad_request)."""

    scan_page_size: int = facts.SCAN_PAGE_SIZE
    """How many contacts one rev-users.scan page holds: the scan request has no `limit`,
    so the server alone decides (undocumented)."""

    contact_external_refs: bool = False
    """Whether contacts carry `external_refs` (DevRev's multi-association contacts, S16/S17:
    several identifiers per contact, each unique across the org; external_ref is the list's
    first). Off: answers have no `external_refs` and rev-users.update refuses the field
    (what a tenant without the feature answers is undocumented: 400 here)."""

    retry_after_form: str = "seconds"
    """How a 429 spells Retry-After: "seconds" (`30`, what the spec declares) or "date" (an
    HTTP-date, the other form RFC 9110 allows, which a proxy in front of DevRev may send)."""

    contact_timeline_on_merge: str = "deleted"
    """What becomes of a merged secondary's own contact page when it retires (DevRev's merge
    deletes the secondary, 2023 internal spec; what happens to its timeline is undocumented,
    devrev-api.md S15): "deleted" (its timeline entries are removed, its files emptied and, unless
    another object still holds them, the artifacts themselves deleted) or "moved" (its entries
    go to the end of the primary's timeline, keeping their ids and dates, and its files are
    appended to the primary's). Applies whatever merge_outcome is."""

    works_custom_fields_filter: str = "refused"
    """Whether works.list takes a `custom_fields` filter, which only the beta spec (S16) and the
    SDK types (S17) declare: "refused" (400 bad_request naming the field, a tenant whose public
    endpoint does not take it) or "accepted" ({"<field>": value or [values]}: a work whose field
    equals one of the values, or, list-valued, contains one of them)."""

    timeline_empty_pages: int = 0
    """How sparse timeline pages are: 0, full pages; N, one entry per page at most and N empty
    pages (each with a new cursor) before each entry, as [C] S15 allows for timeline-entries.list
    ("fewer (possibly zero) entries may be returned even if there are more")."""

    merge_job: str = "completed"
    """How DevRev's merge job ([C] S15 jobs.get/list, category merge_revuser) ends: "completed"
    (it completes when the secondary retires), "failed_first" (the first merge asked of each
    secondary fails when it would have retired: the job reads `failed` and the secondary stays
    active; a later ask works), "in_progress" (the job never ends and the secondary stays
    active), "refused" (rev-users.merge answers 400 with DevRev's reason, a limit on merges per
    contact, and nothing starts) or "lost_first" (the first ask is acknowledged, but no job is
    made and nothing happens; a later ask works)."""

    download_url_refused_seconds: float = 0.0
    """How long a fresh download URL (artifacts.locate's) is refused with 403 after it is issued,
    in seconds of the emulator's clock: 0, served at once; N, the file host not yet honouring the
    signature (an object store's replication, or its clock behind DevRev's). Undocumented."""

    server_clock_skew: float = 0.0
    """Seconds DevRev's rate-limit clock is off from the one stamping answers' Date: added to
    X-Ratelimit-Reset (an epoch time on DevRev's clock, [C] S3); 0, the two agree."""

    rate_limit_reset: str = "whole"
    """How X-Ratelimit-Reset spells the window's end ([C] S3: "Unix epoch seconds"): "whole"
    (an integer, rounded up: the window ends at most then) or "fractional" (to the
    millisecond, as some gateways send it). On a short window the two differ by up to a
    second per window (devrev_api.pacing.ServerPacer reads either)."""

    conversations_members_filter: str = "applied"
    """How conversations.list applies its `members` filter: "applied" (the conversations the
    users take part in) or "empty" (no conversation, whoever is named: what 6 of 6 real calls
    answered, devrev-api.md section 14), for the preflight's known-conversation check to catch."""

    fields_change_by_themselves: bool = False
    """Whether answers carry fields a server process keeps changing, as real tickets do ([C] S15,
    S10): tickets a work-duration timer (`custom_fields.tnt__work_duration_counter`, one more on
    every answer) and `sync_metadata` (last sync now), conversations `sentiment_modified_date`
    (now). Only answers tick; the stored objects (and dump()) do not."""

    listing_lag_seconds: float = 0.0
    """How long works.list keeps showing a ticket's old reporters after reported_by was set
    (seconds of emulator time): filtered and rendered as before the write, while works.get
    already answers the new ones. DevRev's lists may lag behind writes for a few seconds
    (issue 22, [I] how long)."""

    def __post_init__(self):
        for f in fields(self):   # numbers: finite, and only a clock skew may be below zero
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value) or abs(value) > 10**9 or (value < 0 and f.name != "server_clock_skew"):
                    raise ValueError(f"{f.name} must be a finite number of 0 or more (a skew: within a billion)")
        if self.merge_outcome not in MERGE_OUTCOMES:
            raise ValueError(f"merge_outcome must be one of {', '.join(MERGE_OUTCOMES)}")
        if self.external_ref_conflict_status not in (400, 409):
            raise ValueError("external_ref_conflict_status must be 400 or 409")
        if self.scan_page_size < 1:
            raise ValueError("scan_page_size must be 1 or more")
        if self.listing_lag_seconds < 0:
            raise ValueError("listing_lag_seconds must be 0 or more")
        if self.timeline_empty_pages < 0:
            raise ValueError("timeline_empty_pages must be 0 or more")
        if not 0 <= self.download_url_refused_seconds < float("inf"):
            raise ValueError("download_url_refused_seconds must be 0 or more")
        if not abs(self.server_clock_skew) < float("inf"):
            raise ValueError("server_clock_skew must be a finite number of seconds")
        for name, allowed in (("retired_filter_answer", RETIRED_FILTER_ANSWERS),
                              ("token_permissions", TOKEN_PERMISSIONS), ("list_paging", LIST_PAGINGS),
                              ("retry_after_form", RETRY_AFTER_FORMS),
                              ("contact_timeline_on_merge", CONTACT_TIMELINE_ON_MERGE),
                              ("works_custom_fields_filter", WORKS_CUSTOM_FIELDS_FILTERS),
                              ("merge_job", MERGE_JOBS),
                              ("conversations_members_filter", CONVERSATIONS_MEMBERS_FILTERS),
                              ("rate_limit_reset", RATE_LIMIT_RESETS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")

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
        try:
            return replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"--mode {' '.join(pairs)}: {exc}") from None


def _optional(parse):
    return lambda text: None if text.lower() == "none" else parse(text)


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


_PARSERS = {"merge_retire_after_gets": _optional(int), "merge_retire_delay": _optional(float),
            "merge_outcome": str, "merge_moves_references": _boolean, "external_ref_conflict_status": int,
            "retired_filter_answer": str, "token_permissions": str, "list_paging": str,
            "locate_expires_at": _boolean, "scan_page_size": int, "retry_after_form": str,
            "contact_external_refs": _boolean, "contact_timeline_on_merge": str,
            "works_custom_fields_filter": str, "timeline_empty_pages": int, "merge_job": str,
            "fields_change_by_themselves": _boolean, "listing_lag_seconds": float,
            "download_url_refused_seconds": float, "server_clock_skew": float,
            "conversations_members_filter": str, "rate_limit_reset": str}
MODE_NAMES = tuple(f.name for f in fields(BehaviourModes))
