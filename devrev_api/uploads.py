"""Attachment uploads: a file sent again to DevRev through artifacts.prepare's presigned form.

The restore gives a contact's notes back with their files: each file is uploaded again from the
backup (artifacts.prepare, then a multipart POST to the URL it names, without the token), and the
new artifact's id is attached to the note. The form's fields are sent as DevRev gave them, the
bytes last as the part devrev_api.assumptions.UPLOAD_FILE_FIELD names ([I] the presigned-POST
convention). A repeat of the same form overwrites the same object, so a failed upload is retried
under the client's policy for reads.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import requests

from devrev_api import assumptions as facts
from devrev_api.errors import UploadError
from devrev_api.file_hosts import HostRefused, NoAuth, RefusedPeer, checked_host, peer_checking_session
from devrev_api.retry_policy import Backoff, connection_cause, transport_failure

log = logging.getLogger(__name__)


class ArtifactUploads:
    """DevRevClient's uploads (`client.uploads`). `prepare(file_name, file_type)` is
    artifacts.prepare's answer; the rest is shared with the client as for downloads."""

    def __init__(self, session: requests.Session, *, timeout: tuple[float, float], retry: Backoff,
                 prepare: Callable[[str, str | None], dict[str, Any]], wait: Callable[[float], None],
                 check_stop: Callable[[], None], count: Callable[[str], None],
                 allow_loopback: bool = False) -> None:
        # allow_loopback: the API is the local emulator, its file host on loopback (file_hosts)
        self.allow_loopback = allow_loopback
        # a session of its own: the API's cookies never go to a file host; connections check their address
        self.session = peer_checking_session(allow_loopback, session.headers)
        self.timeout = timeout
        self.retry = retry
        self._prepare = prepare
        self._wait = wait
        self._check_stop = check_stop
        self._count = count

    def upload(self, file_name: str, data: bytes, mime_type: str | None) -> str:
        """Upload `data` as a new artifact named `file_name`; returns the artifact's id.

        Raises DevRevError from artifacts.prepare, and UploadError (endpoint "upload") when the
        file host refuses the upload or the retries are spent."""
        prepared = self._prepare(file_name, mime_type)
        url, form = prepared["url"], prepared["form_data"]
        retries = self.retry.start()
        while True:
            self._check_stop()
            try:
                self._post(url, form, file_name, data, mime_type)
                self._count("uploads")
                return str(prepared["id"])
            except UploadError as exc:
                delay = retries.next_delay(exc.retry_after) if exc.transient else None
                if delay is None:
                    raise
                log.info("retrying the upload of %r after %s", file_name, exc.message)
                self._wait(delay)

    def _post(self, url: str, form: list[dict[str, str]], file_name: str, data: bytes, mime_type: str | None) -> None:
        try:
            host = checked_host(url, allow_loopback=self.allow_loopback, what="upload")
        except HostRefused as exc:
            raise UploadError(str(exc), endpoint="upload") from None
        fields: list[tuple[str, tuple[str | None, str | bytes, str] | tuple[None, str]]] = \
            [(str(f["key"]), (None, str(f["value"]))) for f in form]
        fields.append((facts.UPLOAD_FILE_FIELD, (file_name, data, mime_type or "application/octet-stream")))
        try:
            response = self.session.post(url, files=fields, timeout=self.timeout, allow_redirects=False,
                                         auth=NoAuth())
        except RefusedPeer as exc:
            raise UploadError(f"the upload host {host} connected from {exc}: nothing sent (files go to public "
                              f"addresses only)", endpoint="upload") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise UploadError(f"could not upload the file to {host} ({transport_failure(exc)})",
                                endpoint="upload", transient=True, cause=connection_cause(exc)) from None
        with response:
            if response.status_code in (200, 201, 204):
                return
            raise UploadError(f"the file host answered HTTP {response.status_code} to the upload",
                                status=response.status_code, endpoint="upload",
                                transient=response.status_code >= 500 or response.status_code == 429)
