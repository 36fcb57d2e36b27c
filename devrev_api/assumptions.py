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
# [C] S15 timeline-entries.list: "fewer (possibly zero) entries may be returned even if there are
# more entries"; the returned cursor is guaranteed to advance. So an empty or short page is no
# end: the client follows the cursor while it is new. [I] how many empty pages in a row a real
# timeline can give is unknown: the client stops a listing only after this many (a cursor that
# never ends, new every page) or after MAX_PAGES_PER_LISTING pages in all, with one line. Both
# are far beyond any real listing (10,000 pages of 100 = a million items for one contact).
MAX_EMPTY_PAGES_IN_A_ROW = 1000
MAX_PAGES_PER_LISTING = 10_000
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
# [C] S3 X-Ratelimit-Reset is an epoch time, on DevRev's clock. [I] it is read against the same
# answer's Date header (DevRev's clock too), so a skewed local clock changes nothing; a reset
# further than one window (plus this slack, for Date's whole seconds) from Date, or before it,
# means DevRev's own clocks disagree: it is not waited for, the 429's Retry-After (seconds,
# needing no clock) is. Emulator mode server_clock_skew.
CLOCK_SLACK_SECONDS = 5
# a wait on DevRev's rate limit longer than this is said on screen (WARNING) with its reason
LONG_WAIT_SECONDS = 5.0
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
# [C] S15 jobs.get / jobs.list: merges run as jobs of this category, in one of these states
# (queued, started, in_progress, completed, failed), with `progress` in percent. [I] how a job is
# tied to its rev-users.merge (the answer is an empty acknowledgement): the job's metadata_list
# holds the secondary's DON as a value (metadata-type includes `don`). When no job names the
# duplicate, the tool takes it that there is none. Read only after --merge-timeout ran out.
MERGE_JOB_CATEGORY = "merge_revuser"
MERGE_JOB_RUNNING_STATES = frozenset({"queued", "started", "in_progress"})
MERGE_JOB_FAILED_STATE = "failed"
# how many pages of the token's merge jobs, newest first, are searched for the duplicate's job
MERGE_JOB_PAGES = 5
# [I] how many times one duplicate's merge is asked in all, across runs, while DevRev's job for
# it fails (or none exists) and the duplicate stays active: a failure DevRev repeats is not
# worked around by asking more, and the set's line then says so.
MERGE_ATTEMPTS = 3
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
# [C] S15 (the 2026 public spec) reverses S1: works.update and conversations.update CAN set custom
# fields, each with its schema named in custom_schema_spec (an unnamed one: 400), and a schema left
# out of the spec stays unchanged, so the tool sends only the fields it changes. It replaces the
# duplicate by the primary in every custom field of every ticket and conversation it moves
# (merging/custom_fields.py), and the restore gives them back.
# [I] how a field's name says its schema (custom-schema-spec: apps, subtype, tenant_fragment):
# `tnt__x` is the tenant's fragment (tenant_fragment: true), `ctype__x` the object's subtype
# (subtype: the object's own `subtype`), any other `<prefix>__x` the app `<prefix>` (apps:
# [prefix]; e.g. app_email_integration__members). DevRev's customization guide names tnt__ and
# ctype__; the app rule is inferred from S10's field names.
TENANT_FIELD_PREFIX = "tnt__"
SUBTYPE_FIELD_PREFIX = "ctype__"
# [C] S10 the fields known to name contacts: a tenant may have more (every custom field naming the
# duplicate on a listed ticket is moved whatever its name); these are the ones the works.list
# `custom_fields` filter is asked about, to find tickets naming the duplicate only there.
CONTACT_CUSTOM_FIELDS = ("app_email_integration__members",)
# [C] S16/S17 works.list takes a `custom_fields` filter (public types; DevRev's MCP server sends it
# to the public endpoint), S15 does not declare it: [I] a tenant may refuse it with 400. The
# preflight probes it read-only; [I] its shape {"<field>": [contact id]} matching a list-valued
# field that contains the id (emulator mode works_custom_fields_filter).
# [C] S10 6 of 6 conversations.list {members: [contact]} came back empty; [I] whether the
# filter matches contacts on every tenant is unproven: the preflight (--check) compares what
# works.list reported_by and conversations.list members return with the contact asked for
# (preflight.check_filters).
# [I] fields DevRev stamps on every write: the canary ignores them when it compares the first
# set's objects with their backup.
MODIFICATION_STAMPS = ("modified_date", "modified_by")
# [I] DevRev's lists may show an item's old reporters or members for a few seconds after a write
# (issue 22; emulator mode listing_lag_seconds). The verification trusts a fresh read of a listed
# item over the list, and waits between rounds this long, doubling each round (1 s, 2 s, ...).
ROUND_PAUSE_SECONDS = 1.0
# Fields a server process changes without anyone writing them: a change in one is reported in
# the canary's section (`moved_by_themselves`) and does not stop the run. Names as the canary
# compares them (a custom field as `custom_fields.<name>`), shell-style patterns, each with why.
# [C] S15 (ticket `sync_metadata`, `state_display_name`; tickets' and conversations' `sentiment*`,
# `sla_summary`), S10 (real tickets' timers `tnt__work_duration`, `tnt__work_duration_counter`).
# [I] that nothing else changes by itself: any other field changed stops the run (a workflow or
# automation reacting to the tool's writes), and so does `stage`, whose display name may follow.
FIELDS_THAT_CHANGE_BY_THEMSELVES = {
    "custom_fields.*work_duration*": "a work-duration timer DevRev keeps running",
    "sync_metadata": "an integration's sync bookkeeping (last sync in or out)",
    "state_display_name": "the display name DevRev gives the ticket's state",
    "sentiment*": "DevRev's sentiment analysis of the conversation",
    "sla_summary": "the SLA clock's stage",
}

# --- artifacts -----------------------------------------------------------------
# [C] S1 artifacts.locate requires only `url`; `expires_at` is optional. The backup never
# reads the expiry: it downloads at once and locates again once if the URL was refused
# (emulator mode locate_expires_at=false, and a short url_ttl, in tests/test_devrev_modes.py).
# [I] a URL issued moments ago may still be refused for a moment (an object store not yet
# honouring a fresh signature, or its clock behind DevRev's). A refused URL is located again
# and fetched at once, then located again and fetched after backing-off waits (0.5, 1, 2, 4,
# 8 s: each wait starts from a fresh URL, so one must outlast the refusal) until this many
# seconds have been waited in all;
# only then is the download failed, saying the host kept refusing fresh URLs (not "expired").
# Emulator mode download_url_refused_seconds.
PRESIGNED_URL_REFUSAL_SECONDS = 16.0

# [C] S15 artifacts.prepare answers {id, url, form_data}; [I] the upload is an HTTP POST of
# multipart/form-data to `url` carrying every form_data field and then the bytes as a part
# named "file" (the presigned-POST convention of the object stores DevRev's URLs point at),
# without the token. The restore uploads a backed-up file again this way before attaching it.
UPLOAD_FILE_FIELD = "file"

# --- timeline entries ------------------------------------------------------------
# [I] real responses may hold entry types other than comments; "messages" are the
# entries of this type, and backups keep every entry raw whatever its type.
MESSAGE_ENTRY_TYPE = "timeline_comment"
# [C] S15 timeline-entry-object-type includes rev_user: a contact has a timeline of its own
# (agents' notes, with files), and S17's RevUser carries `artifacts` (files on the contact).
# [I] what DevRev's merge does with the secondary's timeline is undocumented: it may be deleted
# with the contact or moved to the primary (emulator mode contact_timeline_on_merge). The backup
# holds it whole; the restore writes each comment again on the re-created contact as an internal
# comment (the API cannot set an author or a date: both are written into the text), and entries
# of other types (system events) cannot be written through the API: the restore report counts them.
CONTACT_NOTE_VISIBILITY = "internal"

# --- redirects -----------------------------------------------------------------
# [I] a 301 means the object's id changed (new id in Location). The client never
# follows it (a library would turn the POST into a GET); it raises MovedError.
MOVED_STATUSES = frozenset({301, 302, 303, 307, 308})

# --- the preflight's known conversation ------------------------------------------
# [C] S1, S15 conversations.list takes `rev_orgs` (a contact's workspace, its `rev_org`) and, new
# in S15, `account`; S15's conversation carries `account`, no workspace. [I] no public field leads
# from a workspace or a contact to its account (only the beta rev-org has `account`), so the
# preflight lists the workspace's conversations by `rev_orgs` and needs one with a contact member
# returned when listing that member's (preflight.check_known_member): a `members` filter answering
# nothing (S10's 6 of 6) fails it (emulator mode conversations_members_filter=empty). The emulator
# gives each workspace an account of its own ([I]) and takes both filters.

# --- where the token may go, and how much is read (issue 23) ----------------------
# [C] S1 `servers`: `{protocol}://{hostname}`, hostname default `api.devrev.ai`; every DevRev
# host the docs name (api., app., developer., docs.) is under devrev.ai. [I] no DevRev API is
# served from another domain: a DEVREV_BASE_URL whose host is neither one of these domains nor a
# subdomain of one is refused before the token is sent, unless DEVREV_ALLOW_HOST (a real
# environment variable: a .env cannot grant it) names that host; a loopback host (the emulator)
# needs none (devrev_api.config.check_api_host).
DEVREV_DOMAINS = ("devrev.ai",)
# [I] DevRev does not document an attachment's largest size. An attachment whose size the API does
# not declare (no `file.size`) is downloaded up to this many bytes and refused beyond (an endless
# body); one with a declared size is bounded by it. The free disk is checked while streaming too.
MAX_UNDECLARED_ATTACHMENT_BYTES = 1 << 30
# [I] the largest API answer the client reads (streamed, counted as it arrives): a page of 100
# objects is at most a few MiB; an answer that has not ended by this size fails its call with
# one line (an endless JSON body). Not a DevRev limit.
MAX_API_ANSWER_BYTES = 64 << 20

# --- what a listing returns (the canary, issue 25) --------------------------------
# [C] S15: works.list's `works` and conversations.list's `conversations` are arrays of the same
# `work` / `conversation` schemas works.get and conversations.get answer with. [I] that DevRev fills
# a listing's items as fully as a get's (no summaries). The backups are listing copies, so the
# canary compares them with the primary's listings now; a listed copy lacking a field its backup
# has, or whose reported_by / members still names a duplicate (a list lagging behind the write,
# issue 22, emulator mode listing_lag_seconds), is read with a get instead (merging.canary._usable).
LISTINGS_CARRY_WHOLE_OBJECTS = True

# --- the restore's paged reads (issue 25) -------------------------------------------
# [C] S15: works.list and conversations.list answer with the `work` / `conversation` schemas of
# works.get and conversations.get. [I] a listed item's `reported_by` / `members` is whole, as a
# get's: the restore reads the items the merge moved from the listings by the primary (a page per
# 100 items) and gets only those not listed or listed without that list (restoring.live_items,
# which logs how many). Items whose custom fields go back are read with a get each (fanned out):
# they may name the primary only in a custom field, which no listing by the primary returns.
LISTED_USERS_WHOLE = True

# --- pacing on short windows (issue 25) -----------------------------------------------
# [C] S3 X-Ratelimit-Reset is "Unix epoch seconds". [I] whether DevRev sends whole seconds or a
# fraction is unknown: the pacer takes either as sent (devrev_api.pacing.ServerPacer); a whole
# second is read as "the window ends by then". Emulator mode rate_limit_reset (whole, the
# default: rounded up; fractional). [I] An answer's Date has whole seconds only: where our clock
# reads within DATE_AGREES_SECONDS after it, the clocks agree and ours places the reset to the
# fraction (pacing.server_now); else Date is used, as before.
# [I] X-Ratelimit-Remaining may count calls DevRev received after the one it answers (the
# emulator's count is taken when it answers): the pacer subtracts every call of ours still in
# flight, which is then one call too careful per call in flight, never too bold.
