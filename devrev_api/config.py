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


def is_local_api(base_url: str) -> bool:
    """True when the API itself is the local emulator: a plain-http URL on a loopback host (every
    test and --sandbox). Only then may attachment URLs point at loopback addresses."""
    try:
        parts = urlsplit(base_url)
        return parts.scheme == "http" and is_loopback_host(parts.hostname)
    except ValueError:
        return False


def is_devrev_host(host: str | None) -> bool:
    """`host` is one of DevRev's own domains (assumptions.DEVREV_DOMAINS) or a subdomain of one."""
    host = (host or "").lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in facts.DEVREV_DOMAINS)


ALLOW_HOST_VARIABLE = "DEVREV_ALLOW_HOST"


def check_api_host(base_url: str, allowed: str | None, *, allowed_from_file: bool = False) -> str:
    """Where the token will go: a sentence naming the host, for the run's first line. ConfigError
    (one line, before any call) for a host outside DevRev's domains (assumptions.DEVREV_DOMAINS)
    that `allowed` (DEVREV_ALLOW_HOST: host names, comma-separated) does not name; a loopback
    host (the emulator) needs none. allowed_from_file: the .env in the working folder sets
    DEVREV_ALLOW_HOST, which is not honoured (the .env is what could redirect the token)."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    shown = f"{clean_text(host, 120)}" + (f":{parts.port}" if parts.port else "")
    if is_loopback_host(host):
        return f"DevRev API: {shown} (a loopback address: the local emulator)"
    if is_devrev_host(host):
        return f"DevRev API: {shown}"
    names = {name.strip().lower().rstrip(".") for name in (allowed or "").split(",") if name.strip()}
    if host in names and not allowed_from_file:
        return f"DevRev API: {shown} (not a DevRev domain; allowed by {ALLOW_HOST_VARIABLE})"
    if host in names:
        raise ConfigError(f"{ALLOW_HOST_VARIABLE} is set in .env, which may not allow a host: DEVREV_BASE_URL "
                          f"points at {shown}, outside DevRev's domains ({', '.join(facts.DEVREV_DOMAINS)}); remove "
                          f"it from .env and set it in the environment if the token is meant to go there")
    raise ConfigError(f"DEVREV_BASE_URL points at {shown}, outside DevRev's domains "
                      f"({', '.join(facts.DEVREV_DOMAINS)}): the token would be sent there; check DEVREV_BASE_URL "
                      f"(the environment or .env), or, if that host is meant, run with "
                      f"{ALLOW_HOST_VARIABLE}={clean_text(host, 120)} set in the environment")


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translation: IPv4-mapped (::ffff:a.b.c.d),
    NAT64 (64:ff9b::/96, 64:ff9b:1::/48: the last 32 bits), 6to4 (2002::/16: bits 16-48) or the
    deprecated IPv4-compatible form (::a.b.c.d); None for a native IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) >> 32 == 0 and int(ip) > 1:   # ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(int(ip))
    return None


def address_refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why an attachment may not be fetched from IP `address` (loopback, link-local, private or
    any other non-global address; an IPv4-mapped IPv6 address judged as its IPv4), or None when it
    may. allow_loopback: the API is the local emulator (is_local_api), whose file host is loopback."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{clean_text(address, 60)} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:   # mapped, NAT64, 6to4 or IPv4-compatible: judged as the IPv4 it reaches
            inner = address_refusal(str(embedded), allow_loopback=allow_loopback)
            return f"{ip} ({inner})" if inner is not None else None
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is not a public address"
    return None


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
