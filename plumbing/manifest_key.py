"""This installation's key for backup manifests: a backup made here can be told from one
edited and resealed by someone else.

A manifest's sha256 sums can be recomputed by anyone who can write the backup folder, so they
prove only that nothing changed by accident. The merge also MACs the manifest (HMAC-SHA256,
standard library) with a secret key kept outside the backup folder, in the user's
configuration (`$XDG_CONFIG_HOME/devrev-contact-merge/manifest.key`, or `~/.config/...`, or
the file `DEVREV_MERGE_KEY_FILE` names), created on first use, readable by its owner only.

What it protects against: someone who can write the backups but not read the key (a shared or
synced backup drive, a copied folder) cannot make an edited backup pass as one made here.
What it does not: someone with this OS user's access (they can read the key), reading the
backups (they are not encrypted), a backup deleted whole, or a folder made on another machine
(it verifies as "not authenticated here": the restore then relies on the merge's journal).
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import threading
from typing import Any

from plumbing.files import open_regular

KEY_ENV = "DEVREV_MERGE_KEY_FILE"
APP_DIR = "devrev-contact-merge"
KEY_FILE = "manifest.key"
ALGORITHM = "hmac-sha256"
MAC_FIELD = "mac"

# what verify_backup says of a manifest's origin
AUTHENTIC = "authentic"              # MAC'd with this installation's key, and it matches
FORGED = "forged"                    # MAC'd with this key id, and it does not match: changed after it was made
OTHER_KEY = "other_installation"     # MAC'd with another key (another machine or user): cannot tell here
UNSIGNED = "unsigned"                # no MAC (made before 1.3.0, or its MAC removed): cannot tell
NO_KEY = "no_key"                    # this installation has no key yet: cannot tell

_lock = threading.Lock()
_cache: dict[str, bytes] = {}


class ManifestKeyError(OSError):
    """The key file exists but cannot be used (not a regular file, unreadable, malformed)."""


def key_path() -> str:
    """Where this installation's key lives (DEVREV_MERGE_KEY_FILE, else the user's config dir)."""
    named = os.environ.get(KEY_ENV)
    if named:
        return named
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, APP_DIR, KEY_FILE)


def load_key(*, create: bool) -> bytes | None:
    """The key (32 bytes); None when there is none and `create` is False. With `create`, a new
    one is made (0600, in a 0700 folder) if missing. Raises ManifestKeyError (an OSError) when the file
    is a link, not a regular file, or not a key."""
    path = key_path()
    with _lock:
        if path in _cache:
            return _cache[path]
        try:
            key = _read(path)
        except FileNotFoundError:
            if not create:
                return None
            key = _create(path)
        _cache[path] = key
        return key


def _read(path: str) -> bytes:
    try:
        fh = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestKeyError(errno.ELOOP, "the manifest key is a symbolic link: refused", path) from None
        if exc.errno == errno.EINVAL:
            raise ManifestKeyError(errno.EINVAL, "the manifest key is not a regular file", path) from None
        raise
    with fh:
        text = fh.read(200).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 32:
        raise ManifestKeyError(errno.EINVAL, "the manifest key file does not hold a key (64 hex digits)", path)
    return key


def _create(path: str) -> bytes:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:      # another process made it meanwhile: use theirs
        return _read(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.hex().encode("ascii") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def key_id(key: bytes) -> str:
    """A short public name of the key (16 hex digits), to tell 'another key' from 'changed'."""
    return hashlib.sha256(b"devrev-contact-merge manifest key id:" + key).hexdigest()[:16]


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != MAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mac_of(manifest: dict[str, Any], key: bytes) -> dict[str, str]:
    """The manifest's `mac` field: {"alg", "key_id", "value"} over every other field."""
    return {"alg": ALGORITHM, "key_id": key_id(key),
            "value": hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()}


def authenticity(manifest: dict[str, Any], key: bytes | None) -> str:
    """AUTHENTIC, FORGED, OTHER_KEY, UNSIGNED or NO_KEY (see the constants)."""
    mac = manifest.get(MAC_FIELD)
    if not isinstance(mac, dict):
        return UNSIGNED
    if key is None:
        return NO_KEY
    if mac.get("key_id") != key_id(key) or mac.get("alg") != ALGORITHM:
        return OTHER_KEY
    value = mac.get("value")
    good = mac_of(manifest, key)["value"]
    return AUTHENTIC if isinstance(value, str) and hmac.compare_digest(value, good) else FORGED


def describe(state: str) -> str:
    """A few words for verify_backups.py and the restore."""
    return {AUTHENTIC: "authentic: made by this installation",
            FORGED: "resealed: its MAC does not match this installation's key (changed after it was made)",
            OTHER_KEY: "not authenticated here: made by another installation (its key is not this one)",
            UNSIGNED: "not authenticated: the manifest carries no MAC (made before version 1.3.0, or it was removed)",
            NO_KEY: f"not authenticated: this installation has no manifest key ({key_path()})"}.get(state, state)


def forget_cached_keys() -> None:
    """Tests: read the key file afresh (another DEVREV_MERGE_KEY_FILE)."""
    with _lock:
        _cache.clear()
