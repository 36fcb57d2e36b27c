"""DevRev REST client: the one way the tool talks to DevRev.

A thin layer over one `requests.Session`: rate-limited POST calls with JSON bodies,
page iterators, bounded retries that never repeat a call that is not safe to repeat,
typed errors whose messages tell the user what to do, and attachment downloads that
never carry the token. Its parts live in devrev_api/, each imported from there: inferred
API behaviour in `assumptions`; the retry policy, Retry-After parsing and the run-wide fault
breaker in `retry_policy`; the pace in `pacing`; errors in `errors`; token and URL checks in
`config`; attachment downloads in `downloads` (held as `client.downloads`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator, Mapping, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from devrev_api import assumptions as facts
from devrev_api.config import ALLOW_HOST_VARIABLE, check_api_host, check_token, check_url_scheme, is_local_api
from devrev_api.downloads import ArtifactDownloads
from devrev_api.errors import (
    STATUS_ERRORS,
    AuthError,
    ConfigError,
    DevRevError,
    MovedError,
    RateLimitError,
    ResponseError,
    RunInterrupted,
    RunWideFault,
    ServerError,
    TransportError,
    clean_text,
)
from devrev_api.pacing import AnswerTimes, ClientPace, ServerPacer
from devrev_api.retry_policy import (
    Backoff,
    FaultBreaker,
    Retries,
    Throttled,
    answer_time,
    connection_cause,
    never_sent,
    parse_retry_after,
    parse_seconds,
    transport_failure,
)
from devrev_api.uploads import ArtifactUploads
from plumbing.cli import Redactor
from plumbing.version import TOOL_NAME, TOOL_VERSION

JsonObject = dict[str, Any]   # a JSON object as DevRev sends or takes it

USER_AGENT = f"{TOOL_NAME}/{TOOL_VERSION} (+python-requests/{requests.__version__})"

log = logging.getLogger(__name__)


def _dotenv_sets(name: str) -> bool:
    """The .env in the working folder (which the scripts read) sets `name`."""
    from dotenv import dotenv_values
    try:
        return name in dotenv_values(os.path.join(os.getcwd(), ".env"))
    except (OSError, UnicodeError, ValueError):
        return False


def _read_bounded(response: requests.Response) -> bool:
    """Read a streamed API answer into `response` (so .json() and .text work as usual), at most
    MAX_API_ANSWER_BYTES (assumptions): True, the connection closed, when the answer is longer
    or announces more. Raises requests' errors when the answer breaks off."""
    limit = facts.MAX_API_ANSWER_BYTES
    try:
        announced = int(response.headers.get("Content-Length", ""))
    except ValueError:
        announced = 0
    if announced > limit:
        response.close()
        return True
    chunks, size = [], 0
    for chunk in response.iter_content(1 << 16):
        size += len(chunk)
        if size > limit:
            response.close()
            return True
        chunks.append(chunk)
    response._content = b"".join(chunks)   # what requests itself keeps once it has read the body
    return False


# --------------------------------------------------------------------------- client
def _utc_minute(minute: int) -> str:
    """A minute since the epoch as "2026-01-02T03:04Z" (any minute a clock can show)."""
    try:
        return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(minute * 60))
    except (OverflowError, OSError, ValueError):
        return f"minute {minute}"


class DevRevClient:
    """Rate-limited, retrying access to the DevRev endpoints this tool needs."""

    MAX_EMPTY_PAGES = facts.MAX_EMPTY_PAGES_IN_A_ROW   # sparse pages are normal (S15); endless ones are not
    MAX_PAGES = facts.MAX_PAGES_PER_LISTING

    def __init__(self, token: str, base_url: str = facts.DEFAULT_BASE_URL, *,
                 calls_per_minute: float | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0),
                 max_retries: int = 5, max_throttle_retries: int = 8,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0,
                 page_limit: int = facts.PAGE_LIMIT,
                 stop_event: threading.Event | None = None,
                 sleep: Callable[[float], None] | None = None,
                 pacer: ServerPacer | None = None,
                 pool_size: int = 16,
                 breaker: FaultBreaker | None = None):
        token = check_token(token, min_length=1)  # the length rule is the user's config's (check_env)
        base_url = (base_url or facts.DEFAULT_BASE_URL).strip().rstrip("/")
        check_url_scheme(base_url, "DEVREV_BASE_URL")
        self._token = token
        self._redactor = Redactor(token)
        self.breaker = breaker or FaultBreaker()
        self.base_url = base_url
        self.timeout = timeout
        self.page_limit = page_limit
        self.stop_event = stop_event or threading.Event()
        self._sleep = sleep
        # Transient failures (5xx, lost answers) of calls safe to repeat; throttling (429).
        # Both sleep through wait(), which Ctrl-C cuts short.
        self.retry = Backoff(max_retries, backoff_base, backoff_cap, sleep=self.wait)
        self.throttle_retry = self.retry.with_(attempts=max_throttle_retries)
        self.pacer = pacer or ServerPacer()
        self.answer_times = AnswerTimes()   # recent answers' times: the run sizes its workers by them
        # With no rate given, the pace follows the X-Ratelimit-Limit DevRev announces.
        self.pace_from_server = calls_per_minute is None
        self._set_pace(calls_per_minute or facts.DEFAULT_CALLS_PER_MINUTE)
        self.stats: Counter[str] = Counter()
        self.calls_by_minute: Counter[int] = Counter()  # UTC minute (epoch seconds // 60) -> calls sent
        self._stats_lock = threading.Lock()

        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Connection failures happen before anything is sent, so urllib3 may retry them
        # for any call; everything after the request left is decided by _call below.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size,
                              max_retries=Retry(total=3, connect=3, read=0, status=0, other=0,
                                                redirect=0, backoff_factor=0.2,
                                                allowed_methods=None, raise_on_status=False,
                                                respect_retry_after_header=False))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._self_user: JsonObject | None = None   # dev-users.self, once asked (get_self)
        # attachments: another host, no token, their own breaker (devrev_api/downloads.py)
        self.downloads = ArtifactDownloads(self.session, timeout=timeout, retry=self.retry,
                                           locate=lambda artifact_id: self.locate_artifact(artifact_id),
                                           wait=self.wait, check_stop=self._check_stop, count=self._count,
                                           allow_loopback=is_local_api(base_url))
        self.uploads = ArtifactUploads(self.session, timeout=timeout, retry=self.retry,
                                       prepare=lambda name, mime: self.prepare_artifact(name, mime),
                                       wait=self.wait, check_stop=self._check_stop, count=self._count,
                                       allow_loopback=is_local_api(base_url))

    @staticmethod
    def check_env(env: Mapping[str, str] | None = None) -> tuple[str, str]:
        """(token, base URL) from DEVREV_API_TOKEN and DEVREV_BASE_URL, checked before any
        call: ConfigError (one line, never the token) for a token that cannot be a
        DevRev token (`check_token`), a base URL that is not https://<host>, or one whose host
        is outside DevRev's domains and not named by DEVREV_ALLOW_HOST (`config.check_api_host`)."""
        return DevRevClient._checked_env(env)[:2]

    @staticmethod
    def _checked_env(env: Mapping[str, str] | None) -> tuple[str, str, str]:
        from_os = env is None
        env = os.environ if env is None else env
        token = check_token(env.get("DEVREV_API_TOKEN"))
        base_url = (env.get("DEVREV_BASE_URL") or facts.DEFAULT_BASE_URL).strip().rstrip("/")
        check_url_scheme(base_url, "DEVREV_BASE_URL")
        line = check_api_host(base_url, env.get(ALLOW_HOST_VARIABLE),
                              allowed_from_file=from_os and _dotenv_sets(ALLOW_HOST_VARIABLE))
        return token, base_url, line

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "DevRevClient":
        """Build from DEVREV_API_TOKEN, DEVREV_BASE_URL and DEVREV_RATE_LIMIT (ConfigError
        if one cannot be right, see check_env)."""
        token, base_url, line = cls._checked_env(env)
        env = os.environ if env is None else env
        if overrides.get("calls_per_minute") is None:
            raw = (env.get("DEVREV_RATE_LIMIT") or "").strip()
            if raw:
                try:
                    value = float(raw)
                except ValueError:
                    value = 0
                if not value > 0:  # also refuses nan
                    raise ConfigError(f"DEVREV_RATE_LIMIT must be a positive number of calls per minute, not {raw!r}")
                overrides["calls_per_minute"] = value
            else:
                overrides.pop("calls_per_minute", None)
        # the host the token goes to, said before the first call (a .env in the working folder can change it)
        log.info("%s", line)
        return cls(token, base_url, **overrides)

    def __repr__(self) -> str:
        return f"DevRevClient(base_url={self.base_url!r}, token=***)"

    def _set_pace(self, calls_per_minute: float) -> None:
        """The client-side cap: one call per 60/N seconds, shared by every thread; its
        waits go through wait(), which Ctrl-C cuts short."""
        self.calls_per_minute = calls_per_minute
        self._throttle = ClientPace(calls_per_minute, lambda seconds: self.wait(seconds))

    def _follow_announced_limit(self) -> None:
        """Size the pace from X-Ratelimit-Limit (calls per window, [C] S3: the window is
        5 minutes, the quota shared by all of the token user's clients) when no rate was
        given: the announced quota spread evenly over the window."""
        limit = self.pacer.announced_limit
        if not self.pace_from_server or not limit:
            return
        pace = limit * 60.0 / facts.RATE_LIMIT_WINDOW_SECONDS
        if pace != self.calls_per_minute:
            log.info("DevRev announces %d calls per %d s: pacing at %.0f calls per minute", limit,
                     facts.RATE_LIMIT_WINDOW_SECONDS, pace)
            self._set_pace(pace)

    def close(self) -> None:
        self.session.close()
        self.downloads.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- low level
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def calls_per_minute_series(self, gap: int = 30) -> list[dict[str, str | int]]:
        """Calls sent per UTC minute, the minutes that had calls in order, short gaps (up to
        `gap` minutes) as 0: [{"minute": "2026-01-02T03:04Z", "calls": n}, ...] (for the report's
        chart). A longer gap is one entry {"minute": its first, "calls": 0, "gap_minutes": n}:
        the series grows with the calls made, never with the clock (a clock set years forward
        or back mid-run adds one entry, not millions)."""
        with self._stats_lock:
            minutes = sorted(self.calls_by_minute.items())
        series: list[dict[str, str | int]] = []
        for i, (minute, calls) in enumerate(minutes):
            if i:
                quiet = minute - minutes[i - 1][0] - 1
                empty = range(minute - quiet, minute) if quiet <= gap else ()
                series += [{"minute": _utc_minute(m), "calls": 0} for m in empty]
                if quiet > gap:
                    series.append({"minute": _utc_minute(minute - quiet), "calls": 0, "gap_minutes": quiet})
            series.append({"minute": _utc_minute(minute), "calls": calls})
        return series

    def _redact(self, text: str) -> str:
        """The token out of `text` (cli.Redactor: a short value only as a whole word); the
        console and log lines also lose URL query strings, in cli's formatter."""
        return self._redactor.mask_secret(text) if text else text

    def wait(self, seconds: float) -> None:
        """Sleep that Ctrl-C (the stop event) cuts short."""
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif self.stop_event.wait(seconds):
            raise RunInterrupted()

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise RunInterrupted()

    def call(self, endpoint: str, body: JsonObject, *, retry_transient: bool) -> JsonObject:
        """POST one DevRev call; retry what is safe to retry; return the JSON object.

        retry_transient: the call may be repeated after a 5xx, a dropped connection or a
        read timeout (reads, and `set`-style updates re-checked by the caller).
        429 is retried on every call: DevRev refused it without processing it.
        Raises a DevRevError subclass (RunWideFault once the breaker has tripped), or
        RunInterrupted when the stop event is set before a call is sent.
        """
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        transient, throttled = self.retry.start(), Throttled(self.throttle_retry.start())
        target = f"{endpoint} {payload[:200]!r}"
        while True:
            self._wait_turn(endpoint)
            outcome = self._attempt(endpoint, payload, target, throttled, retry_transient)
            if isinstance(outcome, dict):
                return outcome
            if outcome is not None:   # None: a 429 already waited for, which no transient retry counts
                self._retry_or_raise(endpoint, transient, *outcome)

    def _wait_turn(self, endpoint: str) -> None:
        """Wait until the call may go (the client's own pace, then DevRev's window), then
        count it as sent. RunInterrupted or RunWideFault instead when the run must stop.
        The call counts as in flight for DevRev's window only once its own slot came: a
        call queued behind the cap would otherwise hold others back on a short window."""
        self._check_stop()
        self._check_breaker()
        self._throttle.take()
        delay = self.pacer.reserve()
        try:
            self.wait(delay)
            self._check_stop()
        except BaseException:
            self.pacer.release()
            raise
        self._count("calls")
        self._count(f"calls:{endpoint}")
        with self._stats_lock:
            self.calls_by_minute[int(time.time() // 60)] += 1

    def _attempt(self, endpoint: str, payload: bytes, target: str, throttled: Throttled,
                 retry_transient: bool) -> JsonObject | tuple[str, DevRevError, bool] | None:
        """Send the call once: the answer's JSON object; None after a 429 (waited for);
        else (failure in words, the error to raise, whether a retry is allowed)."""
        url = f"{self.base_url}/{endpoint}"
        headers = {"Authorization": f"{facts.AUTH_SCHEME} {self._token}",
                   "Content-Type": "application/json",
                   facts.API_VERSION_HEADER: facts.API_VERSION}
        sent = time.monotonic()
        try:
            response = self.session.post(url, data=payload, headers=headers, timeout=self.timeout,
                                         allow_redirects=False, stream=True)
            oversized = _read_bounded(response)
            self.answer_times.add(time.monotonic() - sent)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:  # the answer broke off mid-body
            self.pacer.release()
            cause = connection_cause(exc)
            if cause is not None:
                self.breaker.failure(cause, target, connection=True)
            # returned, and raised by the caller outside this block, so it does not chain the
            # requests error (which holds the prepared request, token included)
            failure = transport_failure(exc)
            error = TransportError(f"could not reach DevRev at {urlsplit(url).hostname} ({failure})",
                                   endpoint=endpoint)
            return failure, error, retry_transient or never_sent(exc)
        if oversized:
            self.pacer.release(response.headers)
            raise ResponseError(f"DevRev's answer had not ended after {facts.MAX_API_ANSWER_BYTES >> 20} MiB, the most "
                                f"read for one answer (MAX_API_ANSWER_BYTES): not read further", endpoint=endpoint,
                                hint="re-run later; if it lasts, DEVREV_BASE_URL may not be DevRev")
        return self._read_answer(response, endpoint, target, throttled, retry_transient)

    def _read_answer(self, response: requests.Response, endpoint: str, target: str, throttled: Throttled,
                     retry_transient: bool) -> JsonObject | tuple[str, DevRevError, bool] | None:
        """What one HTTP answer means, as `_attempt` returns it; raises for a 3xx move and
        for a 4xx (never retried), and RateLimitError once the 429 retries are spent."""
        self.pacer.release(response.headers)
        self._follow_announced_limit()
        status = response.status_code
        log.debug("%s -> %d in %.0f ms", endpoint, status, response.elapsed.total_seconds() * 1000)
        if status >= 500:
            self.breaker.failure(f"DevRev answers HTTP {status} to every call", target, connection=False)
        else:
            self.breaker.success()
        if status == 429:
            self.wait(self._throttle_delay(response, endpoint, throttled))
            return None
        if status in facts.MOVED_STATUSES:
            location = self._redact(clean_text(response.headers.get("Location"), 200))
            raise MovedError(f"DevRev answered {status} (moved) to {location or 'an unknown place'}",
                             status=status, endpoint=endpoint, location=location or None)
        if 400 <= status < 500:
            raise self._error(response, endpoint, STATUS_ERRORS.get(status, DevRevError))
        if status >= 500:
            return f"HTTP {status}", self._error(response, endpoint, ServerError), retry_transient
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        error = ResponseError(f"DevRev sent an unreadable answer (HTTP {status}, not a JSON object)",
                              status=status, endpoint=endpoint)
        return f"an unreadable HTTP {status} answer", error, retry_transient

    def _retry_or_raise(self, endpoint: str, transient: Retries, failure: str, error: DevRevError,
                        retryable: bool) -> None:
        """Wait before the next attempt of a failed call, or raise `error` when it may not
        be repeated, its retries are spent, or the breaker has tripped."""
        self._check_breaker()
        delay = transient.next_delay() if retryable else None
        if delay is None:
            raise error
        self._count("retries")
        # the log file keeps every retry; the console only hears of faults that last
        log.debug("retrying %s after %s: waiting %.2fs (attempt %d/%d)", endpoint, failure, delay,
                  transient.used, self.retry.attempts)
        self.wait(delay)

    def _check_breaker(self) -> None:
        """RunWideFault, before anything is sent, once the breaker has tripped."""
        if self.breaker.tripped:
            if "HTTP" in (self.breaker.cause or ""):
                raise RunWideFault(f"DevRev at {self.base_url} is failing: {self.breaker.cause}; "
                                   f"re-run later to resume")
            raise RunWideFault(f"cannot reach DevRev at {self.base_url}: {self.breaker.cause}; "
                               f"check the network or DEVREV_BASE_URL")

    def _throttle_delay(self, response: requests.Response, endpoint: str, throttled: "Throttled") -> float:
        """How long to wait after a 429 (its Retry-After, in seconds or as a date, else
        backing off); RateLimitError, with advice that names the likely cause, when the
        throttle retries are spent."""
        self._count("throttled")
        retry_after = self._retry_after(response)
        throttled.hinted = throttled.hinted and retry_after is not None
        throttled.paced = throttled.paced or "X-Ratelimit-Remaining" in response.headers
        delay = throttled.retries.next_delay(retry_after)
        if delay is None:
            raise RateLimitError(f"still throttled after {throttled.retries.used} retries and "
                                 f"{throttled.waited:.0f} s of waiting", status=429, error_type="too_many_requests",
                                 endpoint=endpoint, retry_after=retry_after, hint=throttled.advice())
        throttled.waited += delay
        # on screen with its reason: a long silent wait looks like a hang
        log.warning("DevRev's rate limit: waiting %.2fs (%s) before retrying %s (429, retry %d/%d)", delay,
                    "Retry-After" if retry_after is not None else "backing off: no Retry-After", endpoint,
                    throttled.retries.used, self.throttle_retry.attempts)
        return delay

    def _call_for(self, endpoint: str, body: JsonObject, key: str) -> JsonObject:
        """A call whose answer holds one object under `key` (reads and `set` updates: safe to
        repeat); ResponseError, not KeyError, when DevRev's answer lacks it."""
        value = self.call(endpoint, body, retry_transient=True).get(key)
        if not isinstance(value, dict):
            raise ResponseError(f"the answer has no '{key}' object", endpoint=endpoint)
        return value

    def _retry_after(self, response: requests.Response) -> float | None:
        """The 429's wait in seconds: its Retry-After header (seconds or an HTTP-date,
        measured against the answer's Date), else the body's retry_after; at most one
        rate-limit window."""
        seconds = parse_retry_after(response.headers.get("Retry-After"), answer_time(response.headers))
        if seconds is None:
            try:
                seconds = parse_seconds(response.json().get("retry_after"))
            except (ValueError, AttributeError):
                seconds = None
        return None if seconds is None else min(seconds, facts.RATE_LIMIT_WINDOW_SECONDS)

    def _error(self, response: requests.Response, endpoint: str, cls: type[DevRevError]) -> DevRevError:
        status = response.status_code
        error_type = field_name = None
        object_ids: tuple[str, ...] = ()
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error_type = self._redact(clean_text(body.get("type"), 60)) or None
            field_name = self._redact(clean_text(body.get("field_name"), 80)) or None
            message = clean_text(body.get("message") or body.get("detail")) or "no message"
            named = body.get("object_ids")   # a 403's objects ([C] S6): the refusal is about them
            if isinstance(named, list):
                object_ids = tuple(self._redact(clean_text(i, 120)) for i in named[:5] if isinstance(i, str) and i)
        elif body is not None:
            message = f"HTTP {status} with a JSON {type(body).__name__} instead of an error object"
        else:
            ctype = clean_text(response.headers.get("Content-Type", "unknown type"), 60)
            message = f"HTTP {status} with a non-JSON body ({ctype})"
        if cls is AuthError and status == 401:
            message = f"DevRev rejected the token ({message})"
        return cls(self._redact(message), status=status, error_type=error_type, endpoint=endpoint,
                   field_name=field_name, object_ids=object_ids)

    def paginate(self, endpoint: str, body: JsonObject, items_key: str, *,
                 strict: bool = False) -> Iterator[JsonObject]:
        """Every item of a list endpoint once, following next_cursor to the end (walk_pages,
        with an item DevRev repeats across pages yielded once).

        Stops on a missing next_cursor, and on an empty page whose cursor repeats (the
        facts file's guard). A non-empty page that repeats a cursor would loop forever:
        that raises, because a silently truncated listing could leave a ticket behind.
        strict: the listing must prove an absence (a contact owns nothing before it is
        merged), so an empty page repeating its cursor raises instead of ending it.
        """
        seen_ids: set[str] = set()
        for items in self.walk_pages(endpoint, body, items_key, strict=strict):
            for item in items:
                item_id = item.get("id")
                if item_id in seen_ids:
                    continue
                if item_id:
                    seen_ids.add(item_id)
                yield item

    def walk_pages(self, endpoint: str, body: JsonObject, items_key: str, *, paged: bool = True,
                   strict: bool = False, max_pages: int | None = None) -> Iterator[list[JsonObject]]:
        """Each page of a listing as DevRev sent it, following next_cursor to the end.

        For walks over a whole tenant: unlike `paginate` it keeps no per-item state, so
        memory stays flat however many items there are (a caller that must not see an
        item twice removes repeats itself). paged=False is for `*.scan` operations, which
        take no `limit` or `mode` (the server sizes the page). Empty and short pages are
        followed while their cursor is new ([C] S15: a page may hold fewer entries, or none,
        while more exist). A repeated cursor raises ResponseError (after an empty page it ends
        the walk, unless `strict`), and so do MAX_EMPTY_PAGES empty pages in a row and more than
        `max_pages` pages (default MAX_PAGES; a walk over a whole tenant passes its own): a
        cursor that never ends still ends, with one line.
        """
        seen_cursors: set[str] = set()
        cursor = None
        empty_pages = pages = 0
        limit = self.MAX_PAGES if max_pages is None else max_pages
        while True:
            request = dict(body, limit=self.page_limit) if paged else dict(body)
            if cursor:
                request["cursor"] = cursor
                if paged:
                    request["mode"] = "after"
            data = self.call(endpoint, request, retry_transient=True)
            items = data.get(items_key)
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise ResponseError(f"the answer has no '{items_key}' list of objects", endpoint=endpoint)
            yield items
            cursor = data.get("next_cursor")
            if not cursor:
                return
            empty_pages, pages = (0 if items else empty_pages + 1), pages + 1
            if empty_pages >= self.MAX_EMPTY_PAGES:
                raise ResponseError(f"DevRev sent {empty_pages} empty pages in a row, each with a new cursor; "
                                    f"the listing cannot be trusted", endpoint=endpoint)
            if pages >= limit:
                raise ResponseError(f"DevRev's cursor had not ended after {pages} pages; the listing cannot be "
                                    f"trusted", endpoint=endpoint)
            if cursor in seen_cursors:
                if not items and not strict:
                    log.warning("%s returned an empty page with a repeated cursor: stopping there", endpoint)
                    return
                raise ResponseError("DevRev returned the same page cursor twice; the listing cannot be trusted",
                                    endpoint=endpoint)
            seen_cursors.add(cursor)

    # ----------------------------------------------------------------- rev users
    def get_self(self) -> JsonObject:
        """The dev user the token belongs to (dev-users.self): proves the token works. Asked
        once per client (the preflight and the reports' actor block share the answer)."""
        if self._self_user is None:
            self._self_user = self._call_for("dev-users.self", {}, "dev_user")
        return self._self_user

    def get_rev_user(self, user_id: str) -> JsonObject:
        return self._call_for("rev-users.get", {"id": user_id}, "rev_user")

    def list_rev_users(self, *, email: str | None = None, external_ref: str | None = None) -> Iterator[JsonObject]:
        body: JsonObject = {}
        if email is not None:
            body["email"] = [email]
        if external_ref is not None:
            body["external_ref"] = [external_ref]
        return self.paginate("rev-users.list", body, "rev_users")

    def update_rev_user_external_ref(self, user_id: str, external_ref: str) -> JsonObject:
        """Set one contact's external_ref (a `set`-style write: safe to repeat)."""
        return self._call_for("rev-users.update", {"id": user_id, "external_ref": external_ref}, "rev_user")

    def update_rev_user_fields(self, user_id: str, fields: dict[str, Any]) -> JsonObject:
        """Set some of one contact's fields (--fill-blanks, and the restore giving them back):
        display_name, description, phone_numbers, tags (as ids), custom_fields (the whole dict).
        A `set`-style write: safe to repeat. Returns the contact as DevRev now holds it."""
        return self._call_for("rev-users.update", {"id": user_id, **fields}, "rev_user")

    def update_rev_user_external_refs(self, user_id: str, external_refs: list[str]) -> JsonObject:
        """Set one contact's whole `external_refs` list (a `set`-style write: safe to repeat).
        Only for a tenant whose contacts carry the list (multi-association contacts): the
        caller sends it only after a read returned `external_refs`. ConflictError (409, or the
        status in devrev_api.assumptions.EXTERNAL_REF_CONFLICT_STATUS) when another contact
        holds one of them. [C] S16 rev-users-update-request.external_refs, S17"""
        return self._call_for("rev-users.update", {"id": user_id, "external_refs": list(external_refs)}, "rev_user")

    def create_rev_user(self, *, email: str, display_name: str | None, rev_org: str,
                        external_ref: str, profile: dict[str, Any] | None = None) -> JsonObject:
        """rev-users.create (201): a new contact in workspace `rev_org` (its id) carrying
        `external_ref` (and `profile`: the other fields it is created with); returns the new
        rev_user. Never repeated by the client (a repeat
        could create a second contact): the caller checks with list_rev_users first.
        ConflictError (409) when a contact that is not retired holds `external_ref`. [C] S1
        """
        body: dict[str, Any] = {"email": email, "rev_org": rev_org, "external_ref": external_ref}
        if display_name:
            body["display_name"] = display_name
        body.update(profile or {})   # phone_numbers, description; tags (as ids) and custom_fields (S16/S17 beta)
        user = self.call("rev-users.create", body, retry_transient=False).get("rev_user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            raise ResponseError("the answer has no 'rev_user' object", endpoint="rev-users.create")
        return user

    def merge_rev_users(self, primary_user: str, secondary_user: str) -> JsonObject:
        """Ask DevRev to merge `secondary_user` into `primary_user` (asynchronous)."""
        return self.call("rev-users.merge", {"primary_user": primary_user, "secondary_user": secondary_user},
                         retry_transient=False)

    def get_job(self, job_id: str) -> JsonObject:
        """jobs.get: one asynchronous job (a merge runs as one). [C] S15 /jobs.get"""
        return self._call_for("jobs.get", {"id": job_id}, "job")

    def list_jobs(self, category: str, *, created_by: str | None = None) -> Iterator[list[JsonObject]]:
        """jobs.list of one `job_category`, newest first, page by page (lists of jobs): the caller
        stops when it has found its job. [C] S15 /jobs.list (category, created_by, sort_by)."""
        body: JsonObject = {"category": [category], "sort_by": ["created_date:desc"]}
        if created_by is not None:
            body["created_by"] = [created_by]
        return self.walk_pages("jobs.list", body, "jobs")

    # ----------------------------------------------------------------- tickets
    def list_tickets(self, reported_by: str) -> Iterator[JsonObject]:
        return self.paginate("works.list", {"type": ["ticket"], "reported_by": [reported_by]}, "works")

    def list_reported_works(self, reported_by: str) -> Iterator[JsonObject]:
        """Every work item (tickets, issues) a user reports: to prove a contact owns nothing."""
        return self.paginate("works.list", {"reported_by": [reported_by]}, "works", strict=True)

    def list_tickets_naming(self, field_name: str, contact_id: str) -> Iterator[JsonObject]:
        """Tickets whose custom field `field_name` (a list of contact ids) holds `contact_id`:
        works.list's `custom_fields` filter. BadRequestError where the tenant refuses the filter
        (the preflight probes it first). [C] S16/S17 works-list custom_fields; [I] its shape
        (devrev_api.assumptions.CONTACT_CUSTOM_FIELDS)."""
        return self.paginate("works.list", {"type": ["ticket"], "custom_fields": {field_name: [contact_id]}}, "works")

    def set_custom_fields(self, kind: str, object_id: str, fields: JsonObject, schema: JsonObject) -> JsonObject:
        """Set some custom fields of a ticket (kind "ticket") or a conversation, each field's schema
        named in `schema` (a custom-schema-spec); fields left out stay unchanged. Returns the
        object as DevRev now holds it. A `set`-style write: safe to repeat. [C] S15
        works-update-request / conversations-update-request custom_fields, custom-schema-spec"""
        if kind == "ticket":
            return self._call_for("works.update", {"id": object_id, "type": "ticket", "custom_fields": dict(fields),
                                                   "custom_schema_spec": dict(schema)}, "work")
        return self._call_for("conversations.update", {"id": object_id, "custom_fields": dict(fields),
                                                       "custom_schema_spec": dict(schema)}, "conversation")

    def get_work(self, work_id: str) -> JsonObject:
        return self._call_for("works.get", {"id": work_id}, "work")

    def set_ticket_reporters(self, ticket_id: str, reporter_ids: list[str]) -> JsonObject:
        return self._call_for("works.update", {"id": ticket_id, "type": "ticket",
                                               "reported_by": {"set": list(reporter_ids)}}, "work")

    # ----------------------------------------------------------------- conversations
    def list_conversations(self, member: str | None, *, strict: bool = False,
                           rev_org: str | None = None) -> Iterator[JsonObject]:
        """A contact's conversations (`members`), or with member None those of a workspace
        (`rev_orgs`, [C] S1, S15), or both filters at once."""
        body: JsonObject = {"members": [member]} if member is not None else {}
        if rev_org is not None:
            body["rev_orgs"] = [rev_org]
        return self.paginate("conversations.list", body, "conversations", strict=strict)

    def get_conversation(self, conversation_id: str) -> JsonObject:
        return self._call_for("conversations.get", {"id": conversation_id}, "conversation")

    def set_conversation_members(self, conversation_id: str, member_ids: list[str]) -> JsonObject:
        return self._call_for("conversations.update", {"id": conversation_id, "members": {"set": list(member_ids)}},
                              "conversation")

    # ----------------------------------------------------------------- timeline
    def list_timeline_entries(self, object_id: str) -> Iterator[JsonObject]:
        return self.paginate("timeline-entries.list", {"object": object_id}, "timeline_entries")

    def create_timeline_note(self, object_id: str, body: str, *, external_ref: str,
                             artifacts: list[str] | None = None) -> JsonObject:
        """An internal comment on an object's timeline (a contact's too), marked with
        `external_ref`, which DevRev keeps unique within that timeline; returns the entry.
        Never repeated by the client (a repeat could write it twice): a caller whose answer
        was lost looks for `external_ref` on the timeline first. [C] S15
        timeline-entries-create-request(-timeline-comment), timeline-entry-object-type rev_user"""
        request: JsonObject = {"object": object_id, "type": "timeline_comment", "body": body, "body_type": "text",
                               "visibility": facts.CONTACT_NOTE_VISIBILITY, "external_ref": external_ref}
        if artifacts:
            request["artifacts"] = list(artifacts)   # ids of uploaded artifacts (at most 50, S15)
        entry = self.call("timeline-entries.create", request, retry_transient=False).get("timeline_entry")
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ResponseError("timeline-entries.create answered without the entry it made",
                                endpoint="timeline-entries.create")
        return entry

    # ----------------------------------------------------------------- artifacts
    def get_artifact(self, artifact_id: str) -> JsonObject:
        """{"artifact": {...}, "version": {...}} as DevRev returns it."""
        return self.call("artifacts.get", {"id": artifact_id}, retry_transient=True)

    def prepare_artifact(self, file_name: str, file_type: str | None) -> JsonObject:
        """artifacts.prepare: a new artifact's {id, url, form_data} to upload its bytes to
        (client.uploads does). Not repeated by the client: a repeat only leaves an unused
        artifact, but the caller decides. [C] S15 artifacts-prepare-request/response"""
        body: JsonObject = {"file_name": file_name}
        if file_type:
            body["file_type"] = file_type
        data = self.call("artifacts.prepare", body, retry_transient=True)
        if not isinstance(data.get("id"), str) or not isinstance(data.get("url"), str) \
                or not isinstance(data.get("form_data"), list):
            raise ResponseError("artifacts.prepare gave no id, url and form_data", endpoint="artifacts.prepare")
        return data

    def locate_artifact(self, artifact_id: str) -> JsonObject:
        """{"url": ..., "expires_at"?: ...}: a presigned URL to fetch without the token."""
        data = self.call("artifacts.locate", {"id": artifact_id}, retry_transient=True)
        if not isinstance(data.get("url"), str):
            raise ResponseError("artifacts.locate gave no url", endpoint="artifacts.locate")
        return data

    # ----------------------------------------------------------------- a contact's items, page by page
    def ticket_pages(self, reported_by: str) -> Iterator[list[JsonObject]]:
        """The tickets `reported_by` reports, a page at a time as DevRev sends them (walk_pages),
        for a caller that stops once it has the items it looks for (the restore's paged reads)."""
        return self.walk_pages("works.list", {"type": ["ticket"], "reported_by": [reported_by]}, "works")

    def conversation_pages(self, member: str) -> Iterator[list[JsonObject]]:
        """The conversations `member` takes part in, a page at a time (as ticket_pages)."""
        return self.walk_pages("conversations.list", {"members": [member]}, "conversations")
