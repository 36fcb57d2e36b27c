"""Every inferred ([I]) DevRev behaviour the tool relies on, in one place.

`shared/devrev-api.md` marks what public sources confirm ([C]) and what we had to
guess ([I]). The client, the emulator and the merge logic read the guesses from here
instead of hard-coding them, so when production proves one wrong, a single edit
changes the tool and the emulator together (and the tests show what that breaks).
"""

# --- transport -----------------------------------------------------------------
DEFAULT_BASE_URL = "https://api.devrev.ai"  # [C] spec servers
# [I] which version the server defaults to is unknown; we pin the spec's own version
# so the shapes we validate against are the shapes we get.
API_VERSION = "2024-01-24"
API_VERSION_HEADER = "X-Devrev-Version"
# [C] docs say "Bearer <token>"; [I] the server also accepts the bare token (DevRev's
# own code sends both). The client sends Bearer; the emulator accepts both.
AUTH_SCHEME = "Bearer"
# [C] the docs show a token as a JWT ("Bearer eyJhbGciOi...", devrev-api.md section 1): long;
# [I] no DevRev token is shorter than this. The client refuses shorter values (a
# placeholder, a half paste) before any call; conservative on purpose.
MIN_TOKEN_LENGTH = 20
ACCEPTED_API_VERSIONS = ("2022-10-20", "2024-01-24")  # [I] emulator: others are 400 invalid_api_version

# --- pagination ----------------------------------------------------------------
# [C] the default page is 50; [I] the maximum is undocumented (a third-party SDK clamps to
# 100). The client asks for 100 and follows next_cursor whatever size the server sends.
PAGE_LIMIT = 100
SANDBOX_PAGE_CAP = 100   # [I] the emulator clamps `limit` to this (configurable per emulator)
# [C] rev-users.scan takes no `limit`: the server picks its page size. [I] how big is
# undocumented; the emulator serves this many (the list's documented default).
SCAN_PAGE_SIZE = 50
# Which operation find_duplicates.py walks every contact with. [C] both take the same
# filters and a cursor; rev-users.list also takes `limit`, so asking for the page cap
# gives the fewest pages, ceil(N / cap); rev-users.scan's page size is the server's
# undocumented choice. [I] switch to "rev-users.scan" if production shows a list walk
# of a whole tenant is refused or inconsistent (the finder supports both).
CONTACT_WALK_ENDPOINT = "rev-users.list"

# --- rate limits ---------------------------------------------------------------
RATE_LIMIT_WINDOW_SECONDS = 300  # [C] the window resets every 5 minutes
# [C] S3: X-Ratelimit-* come on every answer and the quota is per user, across all of that
# user's clients. [I] X-Ratelimit-Limit counts calls per window: with no rate given, the
# client paces at that limit spread evenly over RATE_LIMIT_WINDOW_SECONDS.
RATE_LIMIT_HEADER = "X-Ratelimit-Limit"
# [I] the default quota is unpublished; the docs' example is 1000 per 5 minutes, i.e.
# 200 per minute. This is the client-side cap when DEVREV_RATE_LIMIT is not set.
DEFAULT_CALLS_PER_MINUTE = 200

# --- identifiers ---------------------------------------------------------------
# [I] whether display ids (REVU-...) are accepted in filters, `set` lists and merge
# fields is unknown. The client resolves each contact to its DON once and sends DONs
# everywhere; the emulator accepts display ids only in the `id` of *.get / *.update
# requests, so a client that forgets to resolve fails in tests, not in production.
DISPLAY_IDS_ACCEPTED_IN_REFERENCES = False

# --- contacts and merging ------------------------------------------------------
# [I] how a merged (retired) duplicate looks once DevRev has processed rev-users.merge:
# rev-users.get answers 404, or the user's state is one of these, or it carries
# `primary_identity`. The merge step polls until one of the three holds.
RETIRED_STATES = frozenset({"deleted", "deactivated", "locked", "shadow"})
# [C, dated] the 2023 internal spec (/internal/rev-users.merge) says every object referencing
# the secondary is transferred to the primary; [I] whether today's public merge does so is
# unconfirmed. The tool moves tickets and conversations explicitly first (that is what the
# backup covers) and never relies on the merge; the emulator's default merge moves nothing,
# the mode merge_moves_references=true moves everything (custom fields included).
MERGE_MOVES_REFERENCES = False
# [C] S10: a real merge took effect within about 2.3 s: retirement is modelled in seconds
# (emulator mode merge_retire_delay), and polled with backoff up to --merge-timeout.
MERGE_RETIRE_SECONDS_OBSERVED = 2.3
# [I] what the emulator does to a merged secondary by default: "404" (gone),
# "primary_identity" (readable, pointing at the primary) or "deactivated".
MERGE_RETIRE_OUTCOME = "404"
# [C] S1 works.list / conversations.list declare 400 (invalid_id, unexpected_id_type; the
# emulator also plays 404); [I] how a filter naming a merged contact is answered is
# undocumented. Once a fresh read shows the duplicate retired, these statuses on its
# listings mean "owns nothing".
RETIRED_FILTER_ERRORS = frozenset({400, 404})
# [C] S6 a scoped token needs this permission for rev-users.merge; a 403 there leaves the
# set moved_only (the tool says which permission is missing).
MERGE_PERMISSION = "rev_user:all"
# [I] external_ref is unique among contacts that are not retired, and a clash on update
# is refused with this status (409 conflict; the real code may be 400).
EXTERNAL_REF_CONFLICT_STATUS = 409
# [C] S16/S17 (devrev-api.md section 15): contacts of orgs with multi-association contacts carry
# `external_refs`, a list rev-users.update sets whole; [I] a contact read without that field
# belongs to an org that keeps one reference per contact (the tool then names, in the preview
# and the report, the merged duplicates' references no contact holds), and a contact read with
# it keeps every merged duplicate's reference there (the emulator: mode contact_external_refs,
# the list's first item being external_ref). The tool never relies on that order: it sets
# external_ref and the list apart.
CONTACT_REFS_FIELD = "external_refs"

# [C] S10: email tickets carry contact ids in custom_fields (app_email_integration__members);
# [C] S15 (the 2026 public spec) reverses S1: works.update CAN set custom fields, with their
# schema named (custom_schema_spec; without it, 400). The tool does not move them yet (issue 21
# section 2): it lists such references (preview, backup, report); [I] no public filter finds a ticket that
# names a contact only there (backup.custom_field_refs).
# [C] S10 6 of 6 conversations.list {members: [contact]} came back empty; [I] whether the
# filter matches contacts on every tenant is unproven: the preflight (--check) compares what
# works.list reported_by and conversations.list members return with the contact asked for
# (preflight.check_filters).
# [I] fields DevRev stamps on every write: the canary ignores them when it compares the first
# set's objects with their backup.
MODIFICATION_STAMPS = ("modified_date", "modified_by")

# --- artifacts -----------------------------------------------------------------
# [C] S1 artifacts.locate requires only `url`; `expires_at` is optional. The backup never
# reads the expiry: it downloads at once and locates again once if the URL was refused
# (emulator mode locate_expires_at=false, and a short url_ttl, in tests/test_devrev_modes.py).

# --- timeline entries ------------------------------------------------------------
# [I] real responses may hold entry types other than comments; "messages" are the
# entries of this type, and backups keep every entry raw whatever its type.
MESSAGE_ENTRY_TYPE = "timeline_comment"

# --- redirects -----------------------------------------------------------------
# [I] a 301 means the object's id changed (new id in Location). The client never
# follows it (a library would turn the POST into a GET); it raises MovedError.
MOVED_STATUSES = frozenset({301, 302, 303, 307, 308})
