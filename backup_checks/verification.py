"""Checking a backup folder: is everything `backup.write_backup` saved still there, unchanged?

Its own module because the merge (before touching a contact), verify_backups.py and the
restore each trust a folder only after this check, and the check reads nothing but the
folder: file names come from backup.py's layout helpers, never spelled here. Every
problem is listed, each naming its file; nothing is repaired.
"""
from __future__ import annotations

import bisect
import errno
import hashlib
import multiprocessing
import os
import signal
import stat
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from backup import (
    CONTACT_FOLDER,
    CONTACT_PAGE,
    CONVERSATIONS,
    CUSTOM_FIELD_TICKETS,
    JSON_FILES,
    MANIFEST,
    METADATA,
    PARTIAL_SUFFIX,
    TICKETS,
    JsonLimitError,
    _referenced_artifacts,
    artifact_label,
    attachment_path,
    attachment_prefix,
    display_of,
    file_path,
    is_attachment,
    load_json,
    manifest_digest,
    messages_path,
)
from devrev_api import assumptions as facts
from plumbing import manifest_key
from plumbing.files import open_regular


@dataclass
class Verification:
    folder: str
    problems: list[tuple[str, str]] = field(default_factory=list)   # (path relative to folder, reason)
    counts: dict[str, Any] = field(default_factory=dict)
    # whether this installation made the manifest (plumbing.manifest_key: authentic, forged, ...)
    authenticity: str = manifest_key.UNSIGNED

    @property
    def authentic(self) -> bool:
        return self.authenticity == manifest_key.AUTHENTIC

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "counts": self.counts, "authenticity": self.authenticity,
                "problems": [{"path": p, "reason": r} for p, r in self.problems]}


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_json(folder: str, relpath: str, result: Verification,
               object_hook: Callable[[dict[str, Any]], Any] | None = None, *, limit: int | None = None) -> Any:
    """The file's JSON value, of any shape (the callers check it); None when it is missing, unreadable,
    or not a regular file (a link or a FIFO planted under its name is never followed nor waited on:
    the file checks report it). Read only up to `limit` (the manifest's size) and backup's caps
    (MAX_JSON_BYTES, MAX_JSON_DEPTH): a larger or deeper file is a problem, never a crash."""
    try:
        return load_json(file_path(folder, relpath), limit if isinstance(limit, int) else None, object_hook)
    except FileNotFoundError:
        return None  # reported by the file checks
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL):   # a link or a FIFO: reported by the file checks
            return None
        result.add(relpath, f"cannot be read ({exc.strerror})")
    except JsonLimitError as exc:
        result.add(relpath, f"not valid JSON: {exc}")
    except (ValueError, UnicodeDecodeError):
        result.add(relpath, "not valid JSON")
    return None


def _size(listed: dict[str, dict[str, Any]], relpath: str) -> int | None:
    """The size the manifest records for a listed file (None if none)."""
    size = (listed.get(relpath) or {}).get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None



def verify_backup(folder: str, *, quick: bool = False) -> Verification:
    """Check a backup folder completely; every problem is listed, each naming its file.

    quick: compare sizes only, not sha256 (the rest of the checks still run).
    """
    folder = folder.rstrip(os.sep)
    result = Verification(folder)
    manifest = _read_manifest(folder, result)
    if manifest is None:
        return result
    counts = result.counts = manifest["counts"]
    _check_private(folder, ".", result, directory=True)
    listed = _check_listed_files(folder, manifest["files"], result, quick=quick)
    _check_unlisted(folder, listed, result)
    _check_contents(folder, listed, counts, result)
    return result


def _read_manifest(folder: str, result: Verification) -> dict[str, Any] | None:
    """verification.json with `files` (list) and `counts` (dict), or None when the folder
    has no usable manifest (the reason added to `result`). An edited manifest is returned,
    with that problem added: the other checks still run."""
    if folder.endswith(PARTIAL_SUFFIX):
        result.add(".", "incomplete backup: interrupted before it was finished (.partial)")
        return None
    if not os.path.isdir(folder):
        result.add(".", "backup folder not found")
        return None
    manifest = _load_json(folder, MANIFEST, result)
    if manifest is None:
        if not result.problems:
            result.add(MANIFEST, "missing: the backup was never completed")
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) or \
            not isinstance(manifest.get("counts"), dict):
        result.add(MANIFEST, "not a backup manifest (files or counts missing)")
        return None
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        result.add(MANIFEST, "manifest was edited: its own sha256 does not match")
    try:
        key = manifest_key.load_key(create=False)
    except OSError:
        key = None   # an unusable key file: nothing can be told authentic (the merge says why)
    result.authenticity = manifest_key.authenticity(manifest, key)
    if result.authenticity == manifest_key.FORGED:
        result.add(MANIFEST, manifest_key.describe(manifest_key.FORGED))
    return manifest


def _check_listed_files(folder: str, files: list[Any], result: Verification, *,
                        quick: bool) -> dict[str, dict[str, Any]]:
    """Each file the manifest lists: a safe path, a regular private file inside the folder,
    of the listed size (and sha256 unless `quick`). Returns the listed files by path."""
    listed: dict[str, dict[str, Any]] = {}
    inside = os.path.realpath(folder) + os.sep
    for item in files:
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/") or path == MANIFEST:
            result.add(str(path), "manifest lists an unsafe or invalid path")
            continue
        listed[path] = item
        if _check_file(folder, inside, path, item, result, quick=quick):
            _check_private(folder, path, result)
    return listed


def _check_file(folder: str, inside: str, path: str, item: dict[str, Any], result: Verification, *,
                quick: bool) -> bool:
    """One listed file against its manifest entry; False when it is missing, not a
    regular file inside the folder, of another size or unreadable (its mode then goes
    unchecked)."""
    full = file_path(folder, path)
    if os.path.islink(full) or (os.path.exists(full) and not os.path.isfile(full)):
        result.add(path, "not a regular file")
        return False
    if not os.path.exists(full):
        result.add(path, "missing")
        return False
    if not os.path.realpath(full).startswith(inside):
        result.add(path, "lies outside the backup folder (a linked folder)")
        return False
    try:
        size = os.path.getsize(full)
        if size != item.get("size"):
            result.add(path, f"size is {size} bytes, the manifest says {item.get('size')}"
                       + (" (truncated)" if isinstance(item.get("size"), int) and size < item["size"] else ""))
            return False
        if not quick and _sha256_file(full) != item.get("sha256"):
            result.add(path, "content changed: sha256 does not match the manifest")
    except OSError as exc:
        result.add(path, f"cannot be read ({exc.strerror or exc})")
        return False
    return True


def _check_unlisted(folder: str, listed: dict[str, dict[str, Any]], result: Verification) -> None:
    """Files on disk the manifest does not list, and sub-folders others can read."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
            if rel != MANIFEST and rel not in listed:
                result.add(rel, "not listed in the manifest (added after the backup)")
        for name in dirnames:
            _check_private(folder, os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"),
                           result, directory=True)


def _check_contents(folder: str, listed: dict[str, dict[str, Any]], counts: dict[str, Any],
                    result: Verification) -> None:
    """The JSON files read back: listed, valid, and agreeing with the manifest's counts."""
    for name in JSON_FILES:
        if name not in listed:
            result.add(name, "missing from the manifest")
    tickets = _load_json(folder, TICKETS, result, _checked_fields, limit=_size(listed, TICKETS)) \
        if TICKETS in listed else None
    conversations = _load_json(folder, CONVERSATIONS, result, _checked_fields, limit=_size(listed, CONVERSATIONS)) \
        if CONVERSATIONS in listed else None
    metadata = _load_json(folder, METADATA, result, limit=_size(listed, METADATA)) if METADATA in listed else None
    index = _PathIndex(listed)
    contact_files = _check_contact_page(folder, listed, index, counts, metadata, result)
    _check_custom_field_tickets(folder, listed, counts, result)
    _check_counts(folder, listed, index, counts, tickets, conversations, result, contact_files)


def _check_contact_page(folder: str, listed: dict[str, dict[str, Any]], index: _PathIndex, counts: dict[str, Any],
                        metadata: Any, result: Verification) -> set[str]:
    """The duplicate's own page (a format-2 backup: counts.contact_entries is a number): its
    timeline holds as many entries as counted, and every file its notes or its record refer
    to is saved. Returns the contact files it expects."""
    expected: set[str] = set()
    if counts.get("contact_entries") is None and CONTACT_PAGE not in listed:
        return expected   # a format-1 backup, or a round taken after DevRev retired the duplicate
    if CONTACT_PAGE not in listed:
        result.add(CONTACT_PAGE, "missing: the duplicate's own timeline")
        return expected
    entries = _load_json(folder, CONTACT_PAGE, result, limit=_size(listed, CONTACT_PAGE))
    saved = {p for p in index.under(CONTACT_FOLDER + "/") if is_attachment(p)}
    if not isinstance(entries, list):
        if entries is not None:
            result.add(CONTACT_PAGE, "should hold a list")
        return saved   # its files cannot be matched to its notes: the page's own problem says why
    if len(entries) != counts.get("contact_entries"):
        result.add(CONTACT_PAGE, f"holds {len(entries)} entries, the manifest counts {counts.get('contact_entries')}")
    record = (metadata or {}).get("duplicate") if isinstance(metadata, dict) else None
    holder = record if isinstance(record, dict) else {}
    for art in _referenced_artifacts(holder, [e for e in entries if isinstance(e, dict)]):
        file_name = (art.get("file") or {}).get("name")
        if file_name:
            path = attachment_path("", artifact_label(art), str(file_name), on_contact=True)
            expected.add(path)
            if path not in listed:
                result.add(path, f"missing: file {art.get('display_id')} of the duplicate's own page")
        else:
            prefix = attachment_prefix("", artifact_label(art), on_contact=True)
            matches = set(index.under(prefix))
            expected |= matches
            if not matches:
                result.add(prefix + "*", f"missing: file {art.get('display_id')} of the duplicate's own page")
    if len(saved) != counts.get("contact_files"):
        result.add(MANIFEST, f"counts {counts.get('contact_files')} files of the contact page, {len(saved)} are listed")
    return expected


def _check_custom_field_tickets(folder: str, listed: dict[str, dict[str, Any]], counts: dict[str, Any],
                                result: Verification) -> None:
    """The tickets found by a custom field only, where the backup looked for them."""
    if counts.get("custom_field_tickets") is None:
        return
    if CUSTOM_FIELD_TICKETS not in listed:
        result.add(CUSTOM_FIELD_TICKETS, "missing from the manifest")
        return
    data = _load_json(folder, CUSTOM_FIELD_TICKETS, result, _checked_fields, limit=_size(listed, CUSTOM_FIELD_TICKETS))
    if data is not None and (not isinstance(data, list) or len(data) != counts.get("custom_field_tickets")):
        result.add(CUSTOM_FIELD_TICKETS, f"should hold a list of {counts.get('custom_field_tickets')} tickets")


def _checked_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Of each object that has a display id, only what the checks read: a backup of
    thousands of tickets is checked without holding them whole."""
    if "display_id" not in obj:
        return obj
    return {k: obj[k] for k in ("id", "display_id", "artifacts", "file") if k in obj}


def _check_counts(folder: str, listed: dict[str, dict[str, Any]], index: _PathIndex, counts: dict[str, Any],
                  tickets: object, conversations: object, result: Verification, contact_files: set[str]) -> None:
    objects: list[dict[str, Any]] = []
    for name, data, key in ((TICKETS, tickets, "tickets"), (CONVERSATIONS, conversations, "conversations")):
        if data is None:
            continue
        if not isinstance(data, list):
            result.add(name, "should hold a list")
            continue
        if len(data) != counts.get(key):
            result.add(name, f"holds {len(data)} {key}, the manifest counts {counts.get(key)}")
        kept = [o for o in data if isinstance(o, dict) and isinstance(o.get("display_id") or o.get("id"), str)]
        if len(kept) != len(data):
            result.add(name, f"holds {len(data) - len(kept)} entries that are not {key} (no id)")
        objects += kept
    raw_entries_counts = counts.get("entries")
    entries_counts: dict[str, Any] = raw_entries_counts if isinstance(raw_entries_counts, dict) else {}
    expected_attachments: set[str] = set()
    messages, all_entries_read = 0, True
    for obj in objects:
        display_id = display_of(obj)
        relpath = messages_path(display_id)
        unmatched = set(index.under(relpath.rsplit("/", 1)[0] + "/attachments/"))
        if relpath not in listed:
            result.add(relpath, f"missing: no messages for {display_id}")
            all_entries_read, expected_attachments = False, expected_attachments | unmatched
            continue
        entries = _load_json(folder, relpath, result, limit=_size(listed, relpath))
        if entries is None:
            all_entries_read, expected_attachments = False, expected_attachments | unmatched
            continue
        if not isinstance(entries, list):
            result.add(relpath, "should hold a list")
            all_entries_read, expected_attachments = False, expected_attachments | unmatched
            continue
        if len(entries) != entries_counts.get(display_id):
            result.add(relpath, f"holds {len(entries)} entries, the manifest counts {entries_counts.get(display_id)}")
        messages += sum(1 for e in entries if isinstance(e, dict) and e.get("type") == facts.MESSAGE_ENTRY_TYPE)
        for art in _referenced_artifacts(obj, [e for e in entries if isinstance(e, dict)]):
            file_name = (art.get("file") or {}).get("name")
            prefix = attachment_prefix(display_id, artifact_label(art))
            if file_name:  # (an empty name was saved as "attachment", as collect() names it)
                path = attachment_path(display_id, artifact_label(art), str(file_name))
                expected_attachments.add(path)
                if path not in listed:
                    result.add(path, f"missing: attachment {art.get('display_id')} referenced by {display_id}")
            else:  # a bare summary: any saved file of that artifact will do
                matches = index.under(prefix)
                expected_attachments.update(matches)
                if not matches:
                    result.add(prefix + "*", f"missing: attachment {art.get('display_id')} referenced by {display_id}")
    if all_entries_read and isinstance(tickets, list) and isinstance(conversations, list) \
            and messages != counts.get("messages"):
        result.add(MANIFEST, f"counts {counts.get('messages')} messages, the messages.json files hold {messages}")
    saved = {p for p in listed if is_attachment(p)}
    for path in sorted(saved - expected_attachments - contact_files):
        result.add(path, "attachment not referenced by any message of the backup")
    saved = {p for p in saved if not p.startswith(CONTACT_FOLDER + "/")}
    if len(saved) != counts.get("attachments"):
        result.add(MANIFEST, f"counts {counts.get('attachments')} attachments, {len(saved)} are listed")


class _PathIndex:
    """The manifest's paths sorted once: the files under a prefix (an object's attachments) are
    found by bisection, not by a scan of every path per object, which made checking a backup
    quadratic in its objects (14,000 objects: about 200 million comparisons)."""

    def __init__(self, paths: Iterable[str]):
        self.paths = sorted(paths)

    def under(self, prefix: str) -> list[str]:
        """The paths that start with `prefix`."""
        start = end = bisect.bisect_left(self.paths, prefix)
        while end < len(self.paths) and self.paths[end].startswith(prefix):
            end += 1
        return self.paths[start:end]


def _check_private(folder: str, relpath: str, result: Verification, directory: bool = False) -> None:
    try:
        mode = os.stat(file_path(folder, relpath)).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        kind = "folder" if directory else "file"
        result.add(relpath, f"{kind} is readable by other users (mode {stat.S_IMODE(mode):o}); expected "
                            f"{'700' if directory else '600'}")


def find_backups(backup_root: str) -> list[str]:
    """Every backup folder (complete or .partial) directly under `backup_root`."""
    return sorted(os.path.join(backup_root, name) for name in os.listdir(backup_root)
                  if not name.startswith(".") and os.path.isdir(os.path.join(backup_root, name)))


def is_one_backup(folder: str) -> bool:
    """Whether `folder` is itself a backup (it holds a manifest or metadata.json, or is a
    `.partial` one), not a folder of backups."""
    return folder.rstrip(os.sep).endswith(PARTIAL_SUFFIX) or any(
        os.path.isfile(os.path.join(folder, name)) for name in (MANIFEST, METADATA))


def backup_folders(backup_dir: str, report_dir: str | None = None) -> list[str]:
    """The folders to check: `backup_dir` itself when it is one backup
    (`--backup-dir backups/<one backup>`), else find_backups() of it, less the
    report folder if it was put inside the backup folder."""
    if is_one_backup(backup_dir):
        return [backup_dir.rstrip(os.sep) or backup_dir]
    skip = os.path.realpath(report_dir) if report_dir else None
    return [f for f in find_backups(backup_dir) if os.path.realpath(f) != skip]


# --------------------------------------------------------------------------- many folders
# Below this many folders one process checks them: starting a worker (a fresh interpreter that
# imports the checks) costs more than it saves.
PARALLEL_FROM = 8
_CHUNK = 8   # folders per task: few enough messages, small enough to share the work evenly


def default_jobs() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_folder(folder: str, quick: bool = False) -> Verification:
    """verify_backup(), never raising on a bad backup: a folder that vanished or became
    unreadable mid-check is one problem of its own."""
    try:
        return verify_backup(folder, quick=quick)
    except OSError as exc:
        failed = Verification(folder)
        failed.add(".", f"cannot be checked ({exc.strerror or exc})")
        return failed


def _check_chunk(folders: list[str], quick: bool) -> list[Verification]:
    return [check_folder(folder, quick) for folder in folders]


def verify_all(folders: list[str], *, quick: bool = False, jobs: int = 1) -> list[Verification]:
    """check_folder() for each folder, results in the order of `folders`, on up to `jobs`
    processes. Processes, not threads: reading the JSON files back holds the GIL (only hashing
    releases it), so threads cannot use a second core. Each worker is a fresh interpreter
    (spawn: it sees the environment as it is now, the manifest key's location included, and
    no lock another thread held) running the very same checks; only each folder's path goes
    in and its result comes back, so memory stays that of the results."""
    jobs = max(1, min(jobs, (len(folders) + _CHUNK - 1) // _CHUNK))
    if jobs == 1 or len(folders) < PARALLEL_FROM:
        return _check_chunk(folders, quick)
    chunks = [folders[i:i + _CHUNK] for i in range(0, len(folders), _CHUNK)]
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_leave_interrupts_to_the_parent)
    try:
        return [result for chunk in pool.map(_check_chunk, chunks, [quick] * len(chunks)) for result in chunk]
    finally:   # Ctrl-C or SIGTERM in the parent: the folders not started are dropped, not checked
        pool.shutdown(wait=True, cancel_futures=True)


def _leave_interrupts_to_the_parent() -> None:
    """A worker ignores Ctrl-C (the terminal sends it to every process of the group): the parent
    stops the run with its one line (plumbing.cli), and no worker prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
