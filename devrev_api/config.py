"""Checks of the user's DevRev settings (token, base URL, a located URL) before anything is sent.

Apart from the client because the download code checks each attachment URL with the
same rule, and the scripts check DEVREV_* before they build a client.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from devrev_api import assumptions as facts
from devrev_api.errors import ConfigError, clean_text


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_scheme(url: str, what: str) -> None:
    """https anywhere; plain http only on a loopback host (the emulator). ConfigError (one
    line naming the value and the expected form) otherwise, a value without a scheme
    (`api.devrev.ai`) included."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. a bad port or an unclosed IPv6 bracket
        raise ConfigError(f"{what} {clean_text(url, 120)!r} is not a URL: expected the form "
                          f"https://api.devrev.ai") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and is_loopback_host(host):
        return
    if not parts.scheme or not host:
        raise ConfigError(f"{what} {clean_text(url, 120)!r} is not a URL: expected the form https://<host>, "
                          f"e.g. https://api.devrev.ai")
    raise ConfigError(f"{what} must use https (plain http only on a loopback host): {parts.scheme}://{host}")


def check_token(token: str | None, *, min_length: int = facts.MIN_TOKEN_LENGTH) -> str:
    """The token as it goes into the Authorization header: trimmed, without a `Bearer `
    prefix. ConfigError (one line, never the token) for a value that cannot be a DevRev
    token: empty, spaces or control characters, non-ASCII, or shorter than `min_length`
    (a PAT is a long JWT-like string; a short value is a placeholder or a paste that went
    wrong, and would make output masking useless)."""
    token = (token or "").strip()
    if token.lower() == "bearer" or token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise ConfigError("DEVREV_API_TOKEN is not set: put it in the environment or in .env")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ConfigError("DEVREV_API_TOKEN contains spaces or control characters: paste the token alone")
    if not token.isascii():
        raise ConfigError("DEVREV_API_TOKEN contains non-ASCII characters (smart quotes?): paste the token alone")
    if len(token) < min_length:
        raise ConfigError(f"DEVREV_API_TOKEN is {len(token)} characters long, too short for a DevRev token "
                          f"(a personal access token is a long eyJ... string): paste the whole token")
    return token
