"""Where a presigned file URL may point: the rule downloads and uploads share (issue 23).

artifacts.locate and artifacts.prepare name a URL on another host, and a file's bytes (a
customer's attachment) go to or come from it without the token. Such a URL is followed only
over https, to hosts whose every address is public (never loopback, link-local or private),
checked on the name's resolved addresses before the request and again on the address actually
connected to (DNS rebinding is caught before a byte is sent); loopback only when the API itself
is the local emulator (`allow_loopback`). Through an HTTP(S) proxy the connected address is the
proxy's, so only the first check applies there.
"""
from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from devrev_api.config import address_refusal, check_url_scheme
from devrev_api.errors import ConfigError


class HostRefused(Exception):
    """A file URL that may not be used; its message is one line naming the host and why."""


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the check before a request; tests replace it)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def checked_host(url: str, *, allow_loopback: bool, what: str) -> str:
    """The URL's host, once `what` (attachment, upload) may go there: https (plain http only to
    loopback when the API is the local emulator) and every address its host resolves to public
    (address_refusal). HostRefused otherwise, before anything is sent. A name that does not
    resolve is left to the request, which fails on it as before."""
    try:
        check_url_scheme(url, f"{what} URL")
    except ConfigError as exc:
        raise HostRefused(str(exc)) from None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not allow_loopback:
        raise HostRefused(f"{what} URL must use https (plain http only from the local emulator): "
                          f"{parts.scheme}://{host}")
    try:
        addresses = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError, ValueError):
        return host
    for address in addresses:
        reason = address_refusal(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise HostRefused(f"the {what} host {host} resolves to {reason}: nothing sent (files go to and "
                              f"come from public addresses only)")
    return host


class RefusedPeer(Exception):
    """The address a download or upload connected to is not one it may use (raised before a byte is sent)."""


def peer_checking_session(allow_loopback: bool, headers: Any) -> requests.Session:
    """A session of its own for attachment downloads and uploads (no cookie or header of the API's but `headers`),
    whose direct connections check the address actually connected to (address_refusal) before
    anything is sent on them."""

    def check(sock: Any) -> None:
        try:
            address = sock.getpeername()[0]
        except (OSError, IndexError):
            return
        reason = address_refusal(str(address), allow_loopback=allow_loopback)
        if reason is not None:
            sock.close()
            raise RefusedPeer(reason)

    class Plain(HTTPConnection):
        def _new_conn(self) -> Any:
            sock = super()._new_conn()
            check(sock)
            return sock

    class Secure(HTTPSConnection):
        def _new_conn(self) -> Any:
            sock = super()._new_conn()
            if self._tunnel_host is None:   # through a proxy tunnel the peer is the proxy
                check(sock)
            return sock

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = Plain

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = Secure

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": PlainPool, "https": SecurePool}

    session = requests.Session()
    session.headers.update({k: v for k, v in headers.items() if k.lower() == "user-agent"})
    adapter = Adapter(pool_connections=4, pool_maxsize=16,
                      max_retries=Retry(total=3, connect=3, read=0, status=0, other=0, redirect=0,
                                        backoff_factor=0.2, allowed_methods=None, raise_on_status=False,
                                        respect_retry_after_header=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session



class NoAuth(requests.auth.AuthBase):
    """Strips any Authorization header (and stops requests from adding .netrc auth)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request
