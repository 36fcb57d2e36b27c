"""The savepoint journal: what the tool meant to do and what DevRev confirmed.

An sqlite3 database in WAL mode with synchronous=FULL, so each committed line survives
a crash or a power cut. Before every write to DevRev the tool records an intent; after
DevRev confirms, it records the step done. A re-run reads the journal: finished sets
are skipped, and a pending intent is re-checked against a fresh read before anything
is sent again. Every change is also appended to `events`, an audit trail.

Step names are stored as text and must never change (old savepoints resume by them);
`step_name` builds them and `parse_step` reads them. The grammar:

    step       := "external_ref"                       the primary takes the newest user_ ref
                | "external_refs"                      ...and keeps every duplicate's, where DevRev keeps a list
                | "primary_refs"                       restore: the duplicates' refs leave the primary's list
                | "merge_note" | "restore_note"        the note on the primary's own timeline (runs.notes)
                | dup "|" ("merge" | "retired" | "swept")
                | dup "|" ("backup" | "verify") "|" round
                | dup "|" ("ticket" | "conversation") "|" round "|" item
                | dup "|" "custom_fields" "|" round "|" item    the primary in place of dup in its custom fields
                | dup "|" ("primary_ref" | "recreate" | "verify_back")      restore_contacts.py
                | dup "|" ("ticket_back" | "conversation_back") "|" item   restore_contacts.py
                | dup "|" "custom_fields_back" "|" item          restore: the item's custom fields given back
                | dup "|" "note_back" "|" entry                  restore: a note of dup's own page written again
    dup, item  := a DevRev id (DON) without "|";  round := 1, 2, ... (decimal)

The restore's steps (its own savepoint file) are about the merged duplicate `dup` (the
id in the backup): the primary gives back its original external_ref, the contact is
created again, each item gets it back, and a listing shows it has them.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import stat
import threading
import urllib.parse
from typing import Any, Iterator, NamedTuple, cast

from contacts.csv_reader import EarlierPrimary
from plumbing.cli import UserError
from plumbing.clock import iso_utc
from plumbing.files import PRIVATE_FILE_MODE, make_private_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    set_key    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT,
    error      TEXT,
    context    TEXT,
    updated_at TEXT NOT NULL,
    run_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    set_key    TEXT NOT NULL,
    step       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('intent', 'done')),
    data       TEXT,
    updated_at TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    PRIMARY KEY (set_key, step)
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    set_key TEXT NOT NULL,
    step    TEXT,
    status  TEXT NOT NULL,
    data    TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    seconds     REAL NOT NULL,
    calls       INTEGER NOT NULL,
    sets_done   INTEGER NOT NULL,
    stopped_by  TEXT,
    exit_code   INTEGER
);
"""

# Step kinds, by the parts that follow the duplicate's id in a step name.
SET_KINDS = ("external_ref", "external_refs", "primary_refs", "merge_note", "restore_note", "fill_blanks",
             "fields_back")
DUPLICATE_KINDS = ("merge", "retired", "swept", "primary_ref", "recreate", "verify_back")
ROUND_KINDS = ("backup", "verify")
ITEM_KINDS = ("ticket", "conversation", "custom_fields")
# an item given back to the duplicate (no round); a note of its page written again (item: the entry's id)
BACK_KINDS = ("ticket_back", "conversation_back", "custom_fields_back", "note_back")


class Step(NamedTuple):
    """One parsed step name: kind, and the duplicate, round and item it is about (or None)."""
    kind: str
    duplicate: str | None = None
    round: int | None = None
    item: str | None = None


def step_name(kind: str, duplicate: str | None = None, round_no: int | None = None, item: str | None = None) -> str:
    """The stored name of a step (the module docstring gives the grammar).

    Raises ValueError for an unknown kind, missing or extra parts, or a part holding "|".
    """
    parts = {SET_KINDS: (), DUPLICATE_KINDS: (duplicate,), ROUND_KINDS: (duplicate, round_no),
             ITEM_KINDS: (duplicate, round_no, item), BACK_KINDS: (duplicate, item)}
    wanted = next((v for kinds, v in parts.items() if kind in kinds), None)
    given = tuple(p for p in (duplicate, round_no, item) if p is not None)
    if wanted is None or given != wanted or None in wanted or any("|" in str(p) or str(p) == "" for p in given):
        raise ValueError(f"not a valid journal step: kind={kind!r}, parts={given!r}")
    if round_no is not None and (not isinstance(round_no, int) or round_no < 1):
        raise ValueError(f"a step round is a positive integer, not {round_no!r}")
    head = [] if duplicate is None else [duplicate]
    return "|".join(head + [kind] + [str(p) for p in given[1:]])


def parse_step(name: str) -> Step:
    """The parts of a stored step name; ValueError if it does not follow the grammar."""
    if name in SET_KINDS:
        return Step(name)
    duplicate, _, rest = name.partition("|")
    kind, _, rest = rest.partition("|")
    round_text, _, item = rest.partition("|")
    if kind in BACK_KINDS:
        round_text, item = "", rest
    try:
        step = Step(kind, duplicate, int(round_text) if round_text else None, item or None)
        if step_name(*step) == name:
            return step
    except ValueError:
        pass
    raise ValueError(f"not a valid journal step name: {name!r}")


def is_finished(status: str | None, keep_duplicate: bool) -> bool:
    """Nothing left to do for a set: merged, or moved when the duplicates are to be kept
    (a set moved with --keep-duplicate is merged by a later run without it)."""
    return status == "merged" or (keep_duplicate and status == "moved_only")


class JournalError(UserError):
    """The savepoint file cannot be used (corrupt, locked, unwritable): one line, exit 2."""


ROWS_SUFFIX = ".rows"     # beside the savepoint: how many changes it was ever given (Journal._seal_rows)
_ROWS_RECORD = "devrev-merge savepoint rows {:020d}\n"   # fixed width: each write replaces the last whole


class Journal:
    """Thread-safe access to one savepoint file; every method commits durably.

    Beside it, `<savepoint>.rows` holds the number of changes (the `events` rows, numbered by
    sqlite's AUTOINCREMENT, never reused) the savepoint was given, rewritten in place after each
    commit (one pwrite, no fsync: written after sqlite's fsynced commit, it can only lag behind
    it). A savepoint holding fewer changes than that lost rows (truncated, replaced by an older
    copy, or its -wal file deleted after a crash): it is refused (JournalError), never resumed."""

    def __init__(self, path: str, run_id: str, *, exclusive: bool = False):
        """exclusive: hold an advisory lock on `<path>.lock` for the life of this object, so two
        runs (a cron job and a manual run) can never work from the same savepoint at once. The
        lock, the row count and the database are the path's real file's (a symlink to another
        run's savepoint takes that run's lock)."""
        self.path = path
        self.run_id = run_id
        self._lock = threading.Lock()
        make_private_dir(os.path.dirname(os.path.abspath(path)))
        real = os.path.realpath(path)
        self._rows_path = real + ROWS_SUFFIX
        self._rows_fd: int | None = None
        self._sealed = 0
        self._last_event: int | None = None
        self._lock_fd = None
        if exclusive:
            self._lock_fd = os.open(real + ".lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                raise JournalError(f"another run is using the savepoint {path}: wait for it to finish "
                                   f"(or stop it with Ctrl-C), then re-run") from None
        try:
            recorded = _recorded_rows(self._rows_path)     # before the database: it can only lag behind
            held_rows = _held_rows(real) if recorded else 0
        except sqlite3.DatabaseError:
            recorded, held_rows = None, 0                  # not a database: said below, as ever
        except JournalError:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            raise
        if recorded is not None and held_rows < recorded:
            if self._lock_fd is not None:     # refused before anything is written to it: left as it is
                os.close(self._lock_fd)
            raise JournalError(
                f"the savepoint {path} lost rows: it holds {held_rows} of the {recorded} changes written to it "
                f"({self._rows_path}), so it was truncated, replaced or its -wal file deleted; nothing was "
                f"sent: put back your copy of it (with its -wal file) and re-run, or, to start afresh knowing "
                f"merges it recorded will not be recognised, move it and {self._rows_path} aside")
        if not os.path.exists(real):
            os.close(os.open(real, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
        try:
            self._db = sqlite3.connect(real, check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            held = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        except sqlite3.DatabaseError as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            raise JournalError(f"the savepoint file {path} cannot be used ({exc}): move it aside only if "
                               f"you know no merge is half done") from None
        self._sealed = recorded or 0
        if exclusive and held and int(held[0]) > self._sealed:
            self._seal_rows(int(held[0]))     # a savepoint older than its row count, or a crash's last rows
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, PRIVATE_FILE_MODE)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._rows_fd is not None:
                os.close(self._rows_fd)
                self._rows_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the run lock
            self._lock_fd = None

    # ------------------------------------------------------------------ writes
    def _event(self, set_key: str, step: str | None, status: str, data: Any) -> None:
        cursor = self._db.execute(
            "INSERT INTO events (at, run_id, set_key, step, status, data) VALUES (?, ?, ?, ?, ?, ?)",
            (iso_utc(digits=6), self.run_id, set_key, step, status, _dump(data)))
        self._last_event = cursor.lastrowid

    def _seal_rows(self, rows: int) -> None:
        """Record in `<savepoint>.rows` that the savepoint holds `rows` changes (after they
        are committed; never lowered). JournalError if it cannot be written."""
        if rows <= self._sealed:
            return
        try:
            if self._rows_fd is None:
                self._rows_fd = os.open(self._rows_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        PRIVATE_FILE_MODE)
            os.pwrite(self._rows_fd, _ROWS_RECORD.format(rows).encode("ascii"), 0)
        except OSError as exc:
            raise JournalError(f"the savepoint's row count {self._rows_path} can no longer be written "
                               f"({exc.strerror or exc}): the run stops; fix it and re-run to resume") from None
        self._sealed = rows

    def set_status(self, set_key: str, email: str, status: str, *, reason: str | None = None,
                   error: str | None = None, context: dict[str, Any] | None = None) -> None:
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT context FROM sets WHERE set_key = ?", (set_key,)).fetchone()
            keep = context if context is not None else (json.loads(row[0]) if row and row[0] else None)
            self._db.execute(
                "INSERT INTO sets (set_key, email, status, reason, error, context, updated_at, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(set_key) DO UPDATE SET email = excluded.email, "
                "status = excluded.status, reason = excluded.reason, error = excluded.error, "
                "context = excluded.context, updated_at = excluded.updated_at, run_id = excluded.run_id",
                (set_key, email, status, reason, error, _dump(keep), iso_utc(digits=6), self.run_id))
            self._event(set_key, None, status, {"reason": reason, "error": error})

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One durable write; JournalError (one line) if the savepoint can no longer be
        written mid-run (disk full, folder gone): sqlite rolls the transaction back, so the
        journal stays as it was, and the caller sends nothing unrecorded."""
        try:
            with self._lock:
                self._last_event = None
                with self._db:
                    yield
                if self._last_event is not None:
                    self._seal_rows(self._last_event)
        except sqlite3.Error as exc:
            raise JournalError(f"the savepoint {self.path} can no longer be written ({exc}): the run stops; "
                               f"fix it and re-run the same command to resume") from None

    def _step(self, set_key: str, step: str, status: str, data: Any) -> None:
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO steps (set_key, step, status, data, updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(set_key, step) DO UPDATE SET status = excluded.status, data = excluded.data, "
                "updated_at = excluded.updated_at, run_id = excluded.run_id",
                (set_key, step, status, _dump(data), iso_utc(digits=6), self.run_id))
            self._event(set_key, step, status, data)

    def intent(self, set_key: str, step: str, data: Any = None) -> None:
        """Record what is about to be sent, before it is sent."""
        self._step(set_key, step, "intent", data)

    def done(self, set_key: str, step: str, data: Any = None) -> None:
        """Record that DevRev confirmed the step (or a fresh read showed it already true)."""
        self._step(set_key, step, "done", data)

    def forget(self, set_key: str, step: str) -> None:
        """Drop a step's intent whose call DevRev refused outright (a 403: nothing was done),
        so a later run asks afresh instead of treating it as possibly sent."""
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM steps WHERE set_key = ? AND step = ? AND status = 'intent'",
                             (set_key, step))
            self._event(set_key, step, "refused", None)

    # ------------------------------------------------------------------ reads
    def step(self, set_key: str, step: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT status, data, run_id FROM steps WHERE set_key = ? AND step = ?",
                                   (set_key, step)).fetchone()
        return None if row is None else {"status": row[0], "data": _load(row[1]), "run_id": row[2]}

    def is_done(self, set_key: str, step: str) -> bool:
        record = self.step(set_key, step)
        return bool(record and record["status"] == "done")

    def steps(self, set_key: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT step, status, data, run_id FROM steps WHERE set_key = ?",
                                    (set_key,)).fetchall()
        return {r[0]: {"status": r[1], "data": _load(r[2]), "run_id": r[3]} for r in rows}

    def set_record(self, set_key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT email, status, reason, error, context, updated_at, run_id FROM sets "
                                   "WHERE set_key = ?", (set_key,)).fetchone()
        if row is None:
            return None
        return {"set_key": set_key, "email": row[0], "status": row[1], "reason": row[2], "error": row[3],
                "context": _load(row[4]), "updated_at": row[5], "run_id": row[6]}

    def all_sets(self) -> list[dict[str, Any]]:
        with self._lock:
            keys = [r[0] for r in self._db.execute("SELECT set_key FROM sets ORDER BY rowid")]
        # each key was just read from `sets`, and no row of it is ever deleted: no record is None
        return cast(list[dict[str, Any]], [self.set_record(k) for k in keys])

    def status_rows(self, batch: int = 1000) -> Iterator["StatusRow"]:
        """Every set as --status shows it, in the order sets were first recorded, streamed: its
        record without the context (a few KB of JSON a set that the status does not show) and
        its steps done and open, counted by sqlite (the steps' primary key is by set)."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT s.set_key, s.email, s.status, s.reason, s.error, s.updated_at, s.run_id, "
                "(SELECT COUNT(*) FROM steps t WHERE t.set_key = s.set_key AND t.status = 'done'), "
                "(SELECT COUNT(*) FROM steps t WHERE t.set_key = s.set_key AND t.status = 'intent') "
                "FROM sets s ORDER BY s.rowid")
        shared: dict[str, str] = {}     # statuses and run ids repeat: one string each
        while True:
            with self._lock:
                rows = cursor.fetchmany(batch)
            if not rows:
                return
            for key, email, status, reason, error, updated_at, run_id, done, intents in rows:
                yield StatusRow(key, email, shared.setdefault(status, status), reason, error, updated_at,
                                shared.setdefault(run_id, run_id), done, intents)

    def record_run(self, run: "RunRecord") -> None:
        """What one run did, for --status's rate and estimated finish across runs (not an
        event: no set changed; a run recorded twice keeps its last record)."""
        with self._writing():
            self._db.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, seconds, calls, sets_done, stopped_by, exit_code) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET finished_at = excluded.finished_at, "
                "seconds = excluded.seconds, calls = excluded.calls, sets_done = excluded.sets_done, "
                "stopped_by = excluded.stopped_by, exit_code = excluded.exit_code", tuple(run))

    def runs(self) -> list["RunRecord"]:
        """The runs recorded, oldest first ([] for a savepoint from before they were)."""
        with self._lock:
            rows = self._db.execute("SELECT run_id, started_at, finished_at, seconds, calls, sets_done, stopped_by, "
                                    "exit_code FROM runs ORDER BY started_at, rowid").fetchall()
        return [RunRecord(*row) for row in rows]

    def step_counts(self) -> dict[str, dict[str, int]]:
        """Per set: how many steps are done and how many are still intents."""
        with self._lock:
            rows = self._db.execute("SELECT set_key, status, COUNT(*) FROM steps GROUP BY set_key, status").fetchall()
        out: dict[str, dict[str, int]] = {}
        for set_key, status, count in rows:
            out.setdefault(set_key, {"intent": 0, "done": 0})[status] = count
        return out

    def check(self) -> list[str]:
        """Consistency problems (for tests and --status): sqlite's own check plus ours."""
        with self._lock:
            problems = [r[0] for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
            orphan = self._db.execute("SELECT COUNT(*) FROM steps WHERE set_key NOT IN (SELECT set_key FROM sets)"
                                      ).fetchone()[0]
            finished_with_intents = self._db.execute(
                "SELECT COUNT(*) FROM steps s JOIN sets t ON s.set_key = t.set_key "
                "WHERE s.status = 'intent' AND t.status IN ('merged', 'moved_only', 'restored')").fetchone()[0]
        if orphan:
            problems.append(f"{orphan} step{'s belong' if orphan != 1 else ' belongs'} to no set")
        if finished_with_intents:
            problems.append(f"{finished_with_intents} intent{'s' if finished_with_intents != 1 else ''} left open in "
                            f"finished sets")
        return problems


class StatusRow(NamedTuple):
    """One set as --status shows it (Journal.status_rows): no context, its steps counted."""
    set_key: str
    email: str
    status: str
    reason: str | None
    error: str | None
    updated_at: str
    run_id: str
    done: int
    intents: int


class RunRecord(NamedTuple):
    """One run of the savepoint (the `runs` table): when, how long, its calls, the sets it
    finished, and why it stopped taking sets ("max_calls", "until", None)."""
    run_id: str
    started_at: str
    finished_at: str
    seconds: float
    calls: int
    sets_done: int
    stopped_by: str | None
    exit_code: int | None


def _held_rows(path: str) -> int:
    """How many changes the savepoint `path` holds (its last `events` number), read only,
    writing nothing to it: 0 when it is missing, empty or has none."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=30)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone() is None:
            return 0
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


def _recorded_rows(rows_path: str) -> int | None:
    """The change count `<savepoint>.rows` holds; None when there is none (a savepoint from
    before it, or a new one). JournalError when it is there but not such a file."""
    try:
        fd = os.open(rows_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"the savepoint's row count {rows_path} cannot be read ({exc.strerror or exc})") from None
    try:
        text = os.read(fd, 256).decode("ascii", "replace") if stat.S_ISREG(os.fstat(fd).st_mode) else ""
    finally:
        os.close(fd)
    if text == "" and os.path.getsize(rows_path) == 0:
        return None      # created, its first count lost to a power cut (a new file's data is written later)
    head, _, count = text.rpartition(" ")
    if head + " " != _ROWS_RECORD[:-len("{:020d}\n")] or not count.rstrip("\n").isdigit():
        raise JournalError(f"the savepoint's row count {rows_path} is not one this tool wrote: put back your copy "
                           f"of it, or move it aside only if you know the savepoint beside it is whole")
    return int(count)


def _dump(data: Any) -> str | None:
    return None if data is None else json.dumps(data, sort_keys=True, ensure_ascii=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def earlier_primaries(path: str) -> list[EarlierPrimary]:
    """The contacts merges recorded in the savepoint `path` made primary, oldest first: one
    per set merged (status "merged"), from the context the merge kept ({"primary": {"id",
    "display_id", "external_ref"}, "external_ref_set": the `user_...` reference it took}).
    A later merge's grouping recognises them (contacts.csv_reader.group_contacts).

    Read only: no savepoint file is no record ([]), and none is created; the file is opened
    read-only, never locked, so a run holding it is not disturbed (sqlite may leave the WAL's
    empty `-wal` and `-shm` side files beside it, owner-only like the file; the next run's
    Journal removes them). JournalError (one line) if it is not a savepoint sqlite can read."""
    if not os.path.isfile(path):
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=30)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sets'").fetchone() is None:
                return []     # an empty file (a run stopped before it wrote the schema): nothing merged
            rows = db.execute("SELECT email, context, run_id FROM sets WHERE status = 'merged' "
                              "ORDER BY updated_at, rowid").fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"the savepoint file {path} cannot be read ({exc})") from None
    found = []
    for email, context, run_id in rows:
        try:
            ctx = json.loads(context) if context else None
        except ValueError:
            ctx = None
        primary = ctx.get("primary") if isinstance(ctx, dict) else None
        if not isinstance(ctx, dict) or not isinstance(primary, dict) or not isinstance(primary.get("id"), str):
            continue     # not a context the merge wrote: nothing to recognise
        ref_set, display_id = ctx.get("external_ref_set"), primary.get("display_id")
        found.append(EarlierPrimary(id=primary["id"], display_id=display_id if isinstance(display_id, str) else "",
                                    external_ref_set=ref_set if isinstance(ref_set, str) else None,
                                    email=str(email), run_id=str(run_id)))
    return found


def _uri_path(path: str) -> str:
    """A file path as an sqlite URI's path (absolute, `?` and `#` escaped)."""
    return urllib.parse.quote(os.path.abspath(path), safe="/")


class SavedSet(NamedTuple):
    """One set of a savepoint read whole: its record and every step ({name: {"status", "data"}})."""
    set_key: str
    email: str
    status: str
    context: Any
    steps: dict[str, dict[str, Any]]


def read_savepoint(path: str) -> list[SavedSet] | None:
    """Every set of the savepoint `path` with its steps, read only as earlier_primaries reads
    (never created, never locked); None when there is no such file. JournalError (one line) if
    it is not a savepoint sqlite can read."""
    if not os.path.isfile(path):
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=30)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sets'").fetchone() is None:
                return []
            sets = db.execute("SELECT set_key, email, status, context FROM sets ORDER BY updated_at, rowid").fetchall()
            steps = db.execute("SELECT set_key, step, status, data FROM steps").fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"the savepoint file {path} cannot be read ({exc})") from None
    by_set: dict[str, dict[str, dict[str, Any]]] = {}
    for set_key, step, status, data in steps:
        try:
            loaded = _load(data)
        except ValueError:
            loaded = None
        by_set.setdefault(set_key, {})[step] = {"status": status, "data": loaded}
    out = []
    for set_key, email, status, context in sets:
        try:
            ctx = _load(context)
        except ValueError:
            ctx = None
        out.append(SavedSet(set_key, email, status, ctx, by_set.get(set_key, {})))
    return out
