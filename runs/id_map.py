"""The id map: every contact a merge retired, and where it went, in one append-only CSV.

Downstream systems (a CRM sync, a data warehouse, the integration that made the `user_`
copies) store contact ids. After a merge they need to know which id now stands for which:
`<report-dir>/id_map.csv` gets one row per duplicate a run retired (its id, display id and
`user_` reference, the primary it went into, the reference the primary carries now, the run),
and one row per duplicate a restore created again (event `restored`, with the new contact's
id). Rows are only ever appended, across runs: the newest row about a duplicate is its state.

Each row is written with one `write` on a file opened for appending, then synced: a crash
leaves at most a last line without its end, which the next append ends first.
"""
from __future__ import annotations

import csv
import errno
import io
import logging
import os
import stat
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

from plumbing.clock import iso_utc
from plumbing.csv_files import csv_cell
from plumbing.version import TOOL_VERSION

log = logging.getLogger(__name__)

FILE_NAME = "id_map.csv"


@dataclass(frozen=True)
class IdMapRow:
    """One row of the id map. event: "merged" (the duplicate was retired into the primary) or
    "restored" (a restore gave its items back to `new_contact_id`)."""
    recorded_at: str
    event: str
    run_id: str
    duplicate_id: str
    duplicate_display_id: str | None
    duplicate_external_ref: str | None
    primary_id: str | None
    primary_display_id: str | None
    primary_external_ref: str | None = None     # the reference the primary carries after the merge
    new_contact_id: str | None = None           # restored: the contact created again (or the kept one)
    new_contact_display_id: str | None = None
    tool_version: str = TOOL_VERSION
    target: str | None = None   # the DevRev (base URL, or sandbox:<id>): rehearsal rows apart from production's


COLUMNS = [f.name for f in fields(IdMapRow)]


def append(report_dir: str, rows: Iterable[IdMapRow]) -> int:
    """Append `rows` to `<report_dir>/id_map.csv` (created with its header, owner-only);
    returns how many were written. Raises OSError when the file cannot be written."""
    rows = list(rows)
    if not rows:
        return 0
    path = os.path.join(report_dir, FILE_NAME)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_NONBLOCK", 0), 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):   # a FIFO or device planted under its name
            raise OSError(errno.EINVAL, "not a regular file", path)
        size = os.fstat(fd).st_size
        if size == 0:
            writer.writerow(COLUMNS)
        elif not _ends_a_line(path, size):
            buffer.write("\n")   # a crash cut the last row: end it, never glue a row to it
        for row in rows:
            writer.writerow([csv_cell(v) if v is not None else "" for v in asdict(row).values()])
        os.write(fd, buffer.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(rows)


def _ends_a_line(path: str, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def merged_rows(run_id: str, contexts: Iterable[dict[str, Any]], target: str | None = None) -> list[IdMapRow]:
    """Rows for the duplicates a merge run retired, from each merged set's journal context
    ({"primary": {"id", "display_id", "external_ref"}, "duplicates": [{"id", ...}],
    "external_ref_set": the reference the primary took})."""
    when = iso_utc()
    out = []
    for ctx in contexts:
        primary = ctx.get("primary") or {}
        now = ctx.get("external_ref_set") or primary.get("external_ref")
        for dup in ctx.get("duplicates") or []:
            out.append(IdMapRow(when, "merged", run_id, dup["id"], dup.get("display_id"), dup.get("external_ref"),
                                primary.get("id"), primary.get("display_id"), now, target=target))
    return out


def restored_rows(run_id: str, lines: Iterable[Any], target: str | None = None) -> list[IdMapRow]:
    """Rows for the duplicates a restore run gave back (its report lines, status restored,
    not restored by an earlier run)."""
    when = iso_utc()
    out = []
    for line in lines:
        primary = line.primary if isinstance(line.primary, dict) else {}
        for dup in line.duplicates or []:
            out.append(IdMapRow(when, "restored", run_id, dup.id, dup.display_id, dup.external_ref,
                                primary.get("id"), primary.get("display_id"), None, dup.new_id,
                                dup.new_display_id, target=target))
    return out
