"""Crash-safe, private file writing shared by backups, reports, savepoints and samples.

Every file the tool writes holds customer data or decides what happens on resume, so
each is written to a temporary file, flushed, fsynced and renamed into place (a crash
leaves the old file or the new one, never half of one), and is readable by its owner
only. Names that come from the CSV or the API go through `safe_name` first.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import unicodedata
from typing import Any, BinaryIO, Iterable, Iterator

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: str) -> str:
    """Create `path` (and parents) if needed; a folder we create is owner-only."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def open_private(path: str, mode: str = "xb") -> BinaryIO:
    """Open a new file that only its owner can read (fails if it exists, for "x")."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_EXCL if "x" in mode else os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable_file(path: str, *, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """Write `path` whole or not at all: the one write-flush-fsync-rename of the tool.

    Yields a new private (0600) binary file beside `path` (`.<name>.<random>.tmp`). When
    the block ends normally it is flushed, fsynced and renamed over `path`, then the
    folder is fsynced so the rename survives a power cut (sync_dir=False leaves that to
    a caller that syncs its folders once, like a backup). If the block raises, the
    temporary file is removed and `path` is left as it was. Raises OSError.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)[:100]}.{secrets.token_hex(4)}.tmp")
    try:
        with open_private(tmp) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically and durably, mode 0600 (see durable_file)."""
    with durable_file(path) as fh:
        fh.write(data)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def write_json_list(fh: BinaryIO, items: Iterable[Any]) -> tuple[int, str]:
    """Write exactly json_bytes(list(items)) to `fh`, item by item, so a long list is never
    whole in memory. Returns (bytes written, their sha256 hex)."""
    digest, size = hashlib.sha256(), 0
    for n, item in enumerate(items):
        text = json.dumps(item, indent=2, ensure_ascii=False, sort_keys=True).replace("\n", "\n  ")
        data = (("[\n  " if n == 0 else ",\n  ") + text).encode("utf-8")
        fh.write(data)
        digest.update(data)
        size += len(data)
    tail = b"\n]\n" if size else b"[]\n"
    fh.write(tail)
    digest.update(tail)
    return size + len(tail), digest.hexdigest()


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def safe_name(text: str, *, max_bytes: int = 120, fallback: str = "file") -> str:
    """A file-name component that cannot escape its folder or upset a terminal.

    Keeps letters and digits of any script and `._-+@`; everything else (separators,
    `..`, control and format characters, spaces) becomes `_`. Never starts with a
    dot, and fits in `max_bytes` of UTF-8 while keeping the extension when it can.
    """
    text = unicodedata.normalize("NFC", str(text))
    out = "".join(ch if (ch.isalnum() or ch in "._-+@") and unicodedata.category(ch)[0] in "LNP" else "_"
                  for ch in text)
    while ".." in out:
        out = out.replace("..", "_")
    out = out.lstrip(".") or fallback
    if len(out.encode("utf-8")) > max_bytes:
        stem, dot, ext = out.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext.encode()) <= 16 else ""
        stem = out[: len(out) - len(ext)]
        budget = max_bytes - len(ext.encode("utf-8"))
        while len(stem.encode("utf-8")) > budget:
            stem = stem[:-1]
        out = stem + ext
    return out


def open_regular(path: str) -> BinaryIO:
    """A file opened for reading only if it is a regular file: a link is not followed (OSError
    ELOOP) and a FIFO or device is never waited on or read (OSError EINVAL), whatever was
    planted under the name. Every reader of a backup folder, and of the manifest key, opens
    through it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "not a regular file (a link)", path) from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fh
