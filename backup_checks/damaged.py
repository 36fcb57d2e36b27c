"""A backup that no longer verifies when a run comes back to it: set it aside, or refuse.

The journal decides. Before any write for the duplicate (a move, the merge, the primary's
external_ref) the backup protects nothing yet: it is renamed aside (never deleted, it is
evidence) and the same round is backed up afresh. Once a write may have been sent, that
backup is the only before-image: the set is refused until the operator puts the folder
back from their own copy, or records that it is lost with an acceptance file next to it
(`<folder>.accept-loss`), which lets the run set it aside and go on knowingly.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from backup import BackupFolderError
from plumbing.files import fsync_dir
from runs.journal import ITEM_KINDS, parse_step

ACCEPT_SUFFIX = ".accept-loss"
DAMAGED_SUFFIX = ".damaged-"
_WRITE_KINDS = ITEM_KINDS + ("merge",)


def accept_path(folder: str) -> str:
    """The file whose presence says the operator accepts that `folder` is lost."""
    return folder.rstrip(os.sep) + ACCEPT_SUFFIX


def writes_sent(steps: dict[str, dict[str, Any]], duplicate_id: str) -> list[str]:
    """The journal steps (of one set, as Journal.steps gives them) that wrote or may have
    written to DevRev for this duplicate: its moves of any round, its merge, and the set's
    external_ref. An intent counts: the call may have reached DevRev."""
    sent = []
    for name in steps:
        step = parse_step(name)
        if step.kind == "external_ref" or (step.duplicate == duplicate_id and step.kind in _WRITE_KINDS):
            sent.append(name)
    return sorted(sent)


def set_aside(folder: str, now: datetime) -> str | None:
    """Rename `folder` to `<folder>.damaged-<YYYYMMDDTHHMMSSZ>` (`-2`... if taken) and return
    the new path; None when the folder is missing (nothing to rename). Its `.accept-loss`
    file, if any, goes along (`<new path>.accept-loss`): used once, it can never accept the
    loss of a later backup that takes the same name. Raises BackupFolderError when the backup
    folder does not let them be renamed (a run stop)."""
    folder = folder.rstrip(os.sep)
    stem = f"{folder}{DAMAGED_SUFFIX}{now.strftime('%Y%m%dT%H%M%SZ')}"
    target, n = stem, 1
    while os.path.lexists(target) or os.path.lexists(accept_path(target)):
        n += 1
        target = f"{stem}-{n}"
    moved = os.path.lexists(folder)
    try:
        if moved:
            os.rename(folder, target)
        if os.path.lexists(accept_path(folder)):
            os.rename(accept_path(folder), accept_path(target))
        fsync_dir(os.path.dirname(target) or ".")
    except OSError as exc:
        raise BackupFolderError(f"could not set the damaged backup {folder} aside: "
                                f"{exc.strerror or exc}") from None
    return target if moved else None


def refusal(folder: str, email: str, duplicate: str, problem: str, sent: list[str]) -> str:
    """Why the set stops, and the two ways on: put the folder back, or accept its loss."""
    return (f"the backup {folder} of {email} no longer verifies ({problem}), and it is the only "
            f"before-image of what was already changed for {duplicate} ({len(sent)} journaled "
            f"write{'s' if len(sent) != 1 else ''}); nothing more was changed for this set. Put the folder "
            f"back from your own copy of the backups and re-run. If it cannot be restored, accept that "
            f"those changes cannot be undone from it: create the file {accept_path(folder)} (an empty file "
            f"will do) and re-run; the damaged folder is then set aside, what {duplicate} still owns is "
            f"backed up afresh, and the set goes on")


def aside_note(folder: str, problem: str, moved_to: str | None, duplicate: str, accepted: bool) -> str:
    """The one log line that says a damaged backup was set aside and why that was safe."""
    why = (f"its loss was accepted ({accept_path(folder)})" if accepted
           else f"nothing was changed for {duplicate} yet")
    where = f"set aside as {moved_to}" if moved_to else "nothing to set aside"
    return f"the backup {folder} no longer verifies ({problem}) and {why}: {where}; taking a fresh backup"
