"""Attachment downloads: presigned URLs fetched without the token, retried, and re-located when refused.

Apart from the REST calls because a download talks to another host (the file store the
presigned URL points at), never carries the token, and has its own failure modes and
its own breaker. DevRevClient holds one as `client.downloads`, handing it what it shares
with the REST calls (the HTTP session, the timeout, the retry policy, the stop-aware wait,
the call counters, artifacts.locate) explicitly at construction.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ContextManager, Iterator
from urllib.parse import urljoin, urlsplit

import requests

from devrev_api import assumptions as facts
from devrev_api.config import check_url_scheme
from devrev_api.errors import ConfigError, DownloadError, RunWideFault
from devrev_api.retry_policy import (
    Backoff,
    FaultBreaker,
    answer_time,
    connection_cause,
    parse_retry_after,
    transport_failure,
)

log = logging.getLogger(__name__)


def _refusal_waits(jitter: bool) -> Iterator[float]:
    """The waits between locating a refused URL again and fetching it: none the first time,
    then backing off (0.5 s doubling to 4 s) until PRESIGNED_URL_REFUSAL_SECONDS are waited."""
    yield 0.0
    waited = 0.0
    for delay in Backoff(attempts=None, base=0.5, cap=4.0, jitter=jitter).delays():
        delay = min(delay, facts.PRESIGNED_URL_REFUSAL_SECONDS - waited)
        if delay <= 0:
            return
        waited += delay
        yield delay


class _NoAuth(requests.auth.AuthBase):
    """Strips any Authorization header (and stops requests from adding .netrc auth)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


@dataclass
class DownloadResult:
    """One attachment fetched in full: its size in bytes and the SHA-256 of its bytes (hex)."""
    size: int
    sha256: str


class ArtifactDownloads:
    """DevRevClient's attachment downloads (`client.downloads`), with their own breaker.

    `locate(artifact_id)` is artifacts.locate's answer ({"url": ...}); `wait(seconds)` sleeps
    and raises RunInterrupted when the run is stopped; `check_stop()` raises it at once;
    `count(key)` adds one to the client's call statistics.
    """

    def __init__(self, session: requests.Session, *, timeout: tuple[float, float], retry: Backoff,
                 locate: Callable[[str], dict[str, Any]], wait: Callable[[float], None],
                 check_stop: Callable[[], None], count: Callable[[str], None]) -> None:
        self.session = session
        self.timeout = timeout
        self.retry = retry
        self._locate = locate
        self._wait = wait
        self._check_stop = check_stop
        self._count = count
        # the attachment host's breaker, apart (another host, another fault); its first download is not alone
        self.file_breaker = FaultBreaker(first_contact_threshold=6)

    def download(self, url: str, out: BinaryIO, *, expected_size: int | None = None,
                 chunk_size: int = 1 << 20, max_redirects: int = 3) -> DownloadResult:
        """Stream a located URL into `out`, hashing as it goes; never sends the token.

        The URL is presigned and may live on another host: the request carries no
        Authorization header (and no .netrc credentials). Redirects are followed by hand,
        to https (or loopback http) only. A short or long body raises DownloadError.
        """
        for _ in range(max_redirects + 1):
            self._check_stop()
            try:
                check_url_scheme(url, "attachment URL")
            except ConfigError as exc:
                raise DownloadError(str(exc), endpoint="download") from None
            host = urlsplit(url).hostname
            try:
                response = self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=False,
                                            auth=_NoAuth(), headers={"Accept": "*/*"})
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise DownloadError(f"could not fetch the attachment from {host} ({transport_failure(exc)})",
                                    endpoint="download", transient=True, cause=connection_cause(exc)) from None
            with response:
                status = response.status_code
                if status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                    url = urljoin(url, response.headers["Location"])
                    continue
                if status in (401, 403, 410):
                    raise DownloadError("the attachment host refused the URL",
                                        status=status, endpoint="download", expired=True)
                if status != 200:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"),
                                                    answer_time(response.headers)) if status == 429 else None
                    raise DownloadError(f"the attachment host answered HTTP {status}", status=status,
                                        endpoint="download", transient=status >= 500 or status == 429,
                                        retry_after=retry_after)
                digest = hashlib.sha256()
                size = 0
                try:
                    for chunk in response.iter_content(chunk_size):
                        if not chunk:
                            continue
                        size += len(chunk)
                        if expected_size is not None and size > expected_size:
                            raise DownloadError(f"the attachment is larger than its declared {expected_size} bytes",
                                                endpoint="download")
                        digest.update(chunk)
                        out.write(chunk)
                        self._check_stop()
                except (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError) as exc:
                    raise DownloadError(f"the attachment download broke off after {size} bytes "
                                        f"({type(exc).__name__})", endpoint="download", transient=True) from None
                if expected_size is not None and size != expected_size:
                    raise DownloadError(f"the attachment is {size} bytes, shorter than its declared "
                                        f"{expected_size}", endpoint="download")
                self._count("downloads")
                return DownloadResult(size=size, sha256=digest.hexdigest())
        raise DownloadError("too many redirects fetching the attachment", endpoint="download")

    def download_artifact(self, artifact_id: str, open_out: Callable[[], ContextManager[BinaryIO]], *,
                          expected_size: int | None = None) -> DownloadResult:
        """Locate an artifact and stream its bytes into a fresh `open_out()` file, under the
        same bounded retry policy as reads (`self.retry`).

        A transient failure on the file host (5xx, 429, a dropped connection, a read
        timeout, a body cut off) is retried on the same URL after a backoff (a 429's
        Retry-After wins). A refused URL (401/403/410) is located again with artifacts.locate
        and fetched at once (it may have expired on the way); refused again, it is located again
        and fetched after a backing-off wait (a fresh URL may be refused for a moment after it
        is issued), until PRESIGNED_URL_REFUSAL_SECONDS have been waited in all.
        `open_out` must discard what was written when its block raises (plumbing.files.durable_file
        does), so a partial file is never kept. Raises DownloadError once the retries (or that
        time) are spent or for a failure a retry cannot fix (a body longer or shorter than
        declared, a redirect off https).
        """
        retries = self.retry.start()
        refusal_waits, refused_for = _refusal_waits(self.retry.jitter), 0.0
        url = self._locate(artifact_id)["url"]
        while True:
            self._check_file_breaker(url)
            try:
                with open_out() as out:
                    result = self.download(url, out, expected_size=expected_size)
                self.file_breaker.success()
                return result
            except DownloadError as exc:
                self._count_file_fault(exc, artifact_id)
                self._check_file_breaker(url)
                if exc.expired:
                    delay = next(refusal_waits, None)
                    if delay is None:   # not an old URL: every fresh one was refused too
                        raise DownloadError(f"the attachment host kept refusing {artifact_id}'s download URL for "
                                            f"{refused_for:.0f} s, a freshly located one each time",
                                            status=exc.status, endpoint="download",
                                            hint="re-run later to resume") from None
                    refused_for += delay
                else:
                    delay = retries.next_delay(exc.retry_after) if exc.transient else None
                    if delay is None:
                        raise
                self._count("download_retries")
                log.info("retrying the download of %s after %s (%s)", artifact_id, exc.message,
                         f"located again, fetched {delay:.1f} s later" if exc.expired
                         else f"attempt {retries.used}/{self.retry.attempts}")
                if exc.expired:   # a fresh URL first, then the wait: a URL is refused for a moment after it is issued
                    url = self._locate(artifact_id)["url"]
                self._wait(delay)

    def _count_file_fault(self, exc: DownloadError, artifact_id: str) -> None:
        """Feed the file host's breaker: no connection at all, or a 5xx, counts; any other answer resets it."""
        if exc.cause is not None:
            self.file_breaker.failure(exc.cause, artifact_id, connection=True)
        elif exc.status is not None and exc.status >= 500:
            self.file_breaker.failure(f"it answers HTTP {exc.status} to every download", artifact_id,
                                      connection=False)
        elif exc.status is not None:
            self.file_breaker.success()

    def _check_file_breaker(self, url: str) -> None:
        """RunWideFault once the attachment host has failed every download for a while."""
        if self.file_breaker.tripped:
            raise RunWideFault(f"cannot fetch attachments from {urlsplit(url).hostname}: "
                               f"{self.file_breaker.cause}; check the network (a proxy or firewall in front of "
                               f"the attachment host?) and re-run to resume")
