"""Attachment downloads: presigned URLs fetched without the token, retried, and re-located when refused.

Apart from the REST calls because a download talks to another host (the file store the
presigned URL points at), never carries the token, and has its own failure modes and
its own breaker. DevRevClient holds one as `client.downloads`, handing it what it shares
with the REST calls (the HTTP session, the timeout, the retry policy, the stop-aware wait,
the call counters, artifacts.locate) explicitly at construction.

Where a download may go: devrev_api.file_hosts (https, public addresses only; loopback only from
the local emulator). How much it may read: the declared size, else
MAX_UNDECLARED_ATTACHMENT_BYTES; and never the disk's last STREAM_DISK_MARGIN_BYTES.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ContextManager, Iterator
from urllib.parse import urljoin, urlsplit

import requests

from devrev_api import assumptions as facts
from devrev_api.errors import DownloadError, RunWideFault
from devrev_api.file_hosts import HostRefused, NoAuth, RefusedPeer, checked_host, peer_checking_session
from devrev_api.retry_policy import (
    Backoff,
    FaultBreaker,
    answer_time,
    connection_cause,
    parse_retry_after,
    transport_failure,
)

log = logging.getLogger(__name__)

# the free disk an attachment download never takes (as backup.check_free_space keeps before a backup)
STREAM_DISK_MARGIN_BYTES = 16 << 20


def _free_bytes(out: BinaryIO) -> int | None:
    """Free bytes (for an unprivileged user) on the file system `out` is written to; None when
    `out` is no file (a BytesIO)."""
    try:
        stat = os.fstatvfs(out.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return stat.f_bavail * stat.f_frsize


def _refusal_waits(jitter: bool) -> Iterator[float]:
    """The waits between locating a refused URL again and fetching it: none the first time,
    then backing off (0.5 s, doubling, no cap) until PRESIGNED_URL_REFUSAL_SECONDS are waited:
    each wait starts with a freshly located URL, so one wait must outlast the refusal."""
    yield 0.0
    waited = 0.0
    for delay in Backoff(attempts=None, base=0.5, cap=facts.PRESIGNED_URL_REFUSAL_SECONDS, jitter=jitter).delays():
        delay = min(delay, facts.PRESIGNED_URL_REFUSAL_SECONDS - waited)
        if delay <= 0:
            return
        waited += delay
        yield delay


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
                 check_stop: Callable[[], None], count: Callable[[str], None],
                 allow_loopback: bool = False) -> None:
        # allow_loopback: the API is the local emulator (config.is_local_api), its file host on loopback
        self.allow_loopback = allow_loopback
        # a session of its own: the API's cookies never go to a file host; connections check their address
        self.session = peer_checking_session(allow_loopback, session.headers)
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
        each hop checked like the first (`_check_target`: https, public addresses only). A
        short or long body raises DownloadError; so does a body with no declared size past
        MAX_UNDECLARED_ATTACHMENT_BYTES, and one that would leave less than
        STREAM_DISK_MARGIN_BYTES free on `out`'s disk (checked as it streams).
        """
        for _ in range(max_redirects + 1):
            self._check_stop()
            host = self._check_target(url)
            try:
                response = self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=False,
                                            auth=NoAuth(), headers={"Accept": "*/*"})
            except RefusedPeer as exc:
                raise DownloadError(f"the attachment host {host} connected from {exc}: not fetched (attachments "
                                    f"come only from public addresses)", endpoint="download") from None
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
                self._check_announced_length(response, expected_size)
                try:
                    for chunk in response.iter_content(chunk_size):
                        if not chunk:
                            continue
                        size += len(chunk)
                        if expected_size is not None and size > expected_size:
                            raise DownloadError(f"the attachment is larger than its declared {expected_size} bytes",
                                                endpoint="download")
                        if expected_size is None and size > facts.MAX_UNDECLARED_ATTACHMENT_BYTES:
                            raise DownloadError(f"the attachment declares no size and had not ended after "
                                                f"{_mib(facts.MAX_UNDECLARED_ATTACHMENT_BYTES)} MiB, the most read "
                                                f"for one (MAX_UNDECLARED_ATTACHMENT_BYTES): not kept",
                                                endpoint="download")
                        self._check_free_disk(out, len(chunk))
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

    def _check_target(self, url: str) -> str:
        """The URL's host once it may be fetched (file_hosts.checked_host); DownloadError otherwise."""
        try:
            return checked_host(url, allow_loopback=self.allow_loopback, what="attachment")
        except HostRefused as exc:
            raise DownloadError(str(exc), endpoint="download") from None

    @staticmethod
    def _check_announced_length(response: requests.Response, expected_size: int | None) -> None:
        """DownloadError before reading, for a Content-Length past what may be read."""
        try:
            announced = int(response.headers.get("Content-Length", ""))
        except ValueError:
            return
        if expected_size is None and announced > facts.MAX_UNDECLARED_ATTACHMENT_BYTES:
            raise DownloadError(f"the attachment declares no size and its host announces {_mib(announced)} MiB, "
                                f"more than the {_mib(facts.MAX_UNDECLARED_ATTACHMENT_BYTES)} MiB read for one "
                                f"(MAX_UNDECLARED_ATTACHMENT_BYTES): not fetched", endpoint="download")

    @staticmethod
    def _check_free_disk(out: BinaryIO, more: int) -> None:
        """DownloadError when writing `more` bytes would leave less than STREAM_DISK_MARGIN_BYTES
        free on the disk `out` is on (nothing to check for an in-memory `out`)."""
        free = _free_bytes(out)
        if free is not None and free < more + STREAM_DISK_MARGIN_BYTES:
            raise DownloadError(f"not enough free disk space for the attachment: {_mib(free)} MiB free, "
                                f"{_mib(STREAM_DISK_MARGIN_BYTES)} MiB kept free; free some space and re-run to "
                                f"resume", endpoint="download")

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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"
