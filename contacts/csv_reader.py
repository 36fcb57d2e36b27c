"""The admins' contacts CSV: strict reading and grouping into merge sets.

Shared by merge_contacts.py and create_test_sample.py, so a rehearsal sample is grouped
exactly as the real run will group it. Bad input raises CsvInputError with one line
that names the problem (and the line number); nothing here touches the network.
Rows are streamed (ContactsReader); read_contacts keeps them all, each with its raw text
so a sample can copy rows byte for byte.
"""
from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import idna

from plumbing.cli import UserError

REQUIRED_COLUMNS = ("REV_USER_ID", "EMAIL", "EXTERNAL_REF")
OPTIONAL_COLUMNS = ("DISPLAY_NAME", "FULL_NAME", "TICKET_COUNT", "CREATED_AT", "UPDATED_AT")
# Optional too, read when present: every reference DevRev lists for the contact (`external_refs`,
# in tenants with multi-association contacts), separated by spaces. find_duplicates.py writes it.
REFS_COLUMN = "EXTERNAL_REFS"
PRIMARY_PREFIX = "REVU-"      # DevRev-native contacts: external_ref is their own display id
DUPLICATE_PREFIX = "user_"    # copies made by an import, widget or integration

# Stable reason codes for groups that are not merge sets (the report uses them).
SKIP_SINGLE_CONTACT = "single_contact"
SKIP_NO_PRIMARY = "no_primary"
SKIP_SEVERAL_PRIMARIES = "several_primaries"
SKIP_UNKNOWN_REFERENCE = "unknown_reference_format"
SKIP_INVALID_DOMAIN = "invalid_email_domain"
CSV_SKIP_REASONS = {
    SKIP_INVALID_DOMAIN: "the email's domain is not a valid internationalized domain name (IDNA), so the tool "
                         "cannot tell which spellings are the same mailbox",
    SKIP_SINGLE_CONTACT: "only one contact has this email",
    SKIP_NO_PRIMARY: f"no contact with a {PRIMARY_PREFIX} external reference, nor one an earlier merge made "
                     f"primary",
    SKIP_SEVERAL_PRIMARIES: f"more than one contact with a {PRIMARY_PREFIX} external reference or made primary by "
                            f"an earlier merge",
    SKIP_UNKNOWN_REFERENCE: f"an external reference is neither {PRIMARY_PREFIX}... nor {DUPLICATE_PREFIX}...",
}

_DISPLAY_ID = re.compile(r"REVU-[A-Za-z0-9]{1,64}")
_DON = re.compile(r"don:identity:[a-z0-9-]{1,32}:devo/[A-Za-z0-9]{1,64}(?::revo/[A-Za-z0-9]{1,64})?"
                  r":revu/([A-Za-z0-9]{1,64})")
_EMAIL = re.compile(r"[^@\s/\\<>\"`,;:()\[\]]{1,64}@[^@\s/\\<>\"'`,;:()\[\]]+\.[^@\s/\\<>\"'`,;:()\[\].]{2,}")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_VALUE = 256
_MAX_EMAIL = 254


class CsvInputError(UserError):
    """The contacts CSV cannot be used; the message is one line a user can act on (exit 2)."""


@dataclass(frozen=True)
class ContactRow:
    line: int
    rev_user_id: str
    email: str
    external_ref: str
    display_name: str = ""
    full_name: str = ""
    ticket_count: int | None = None
    created_at: str = ""
    updated_at: str = ""
    raw: str = ""
    external_refs: tuple[str, ...] = ()   # the EXTERNAL_REFS column's references, when the CSV has one

    @property
    def email_key(self) -> str:
        return email_key(self.email)

    @property
    def is_primary(self) -> bool:
        return self.external_ref.startswith(PRIMARY_PREFIX)

    @property
    def is_duplicate(self) -> bool:
        return self.external_ref.startswith(DUPLICATE_PREFIX)

    @property
    def own_reference(self) -> str:
        """The contact's own REVU- display id (from REV_USER_ID, a DON or the display id)."""
        return own_reference(self.rev_user_id)

    @property
    def keeps_own_reference(self) -> bool:
        """EXTERNAL_REFS holds the contact's own display id (keeps_own_reference)."""
        return keeps_own_reference(self.rev_user_id, self.external_refs)

    def as_dict(self) -> dict:
        return {"line": self.line, "REV_USER_ID": self.rev_user_id, "EMAIL": self.email,
                "EXTERNAL_REF": self.external_ref, "DISPLAY_NAME": self.display_name,
                "FULL_NAME": self.full_name, "TICKET_COUNT": self.ticket_count,
                "CREATED_AT": self.created_at, "UPDATED_AT": self.updated_at,
                **({REFS_COLUMN: " ".join(self.external_refs)} if self.external_refs else {})}


@dataclass(frozen=True)
class EarlierPrimary:
    """A contact an earlier merge made a set's primary. Its external_ref is now the `user_...`
    reference it took (its display id stays REVU-...), so the CSV alone no longer tells it is
    the DevRev-native contact of its email: this record does. Read from the merge's savepoint
    (runs.journal.earlier_primaries); or, with run_id None, recognised from the contact's own
    references (its EXTERNAL_REFS holds its display id: ContactRow.keeps_own_reference)."""
    id: str                         # the contact's DON (a REVU- display id is matched alike)
    display_id: str                 # its REVU- display id
    external_ref_set: str | None    # the `user_...` reference the merge gave it
    email: str                      # the merged set's email
    run_id: str | None              # the run that merged it; None: recognised from its references

    @property
    def note(self) -> str:
        """One phrase for a preview or a report."""
        if self.run_id is None:
            return f"primary from an earlier merge (its references still hold {self.display_id})"
        return f"primary from an earlier merge (run {self.run_id})"


class EarlierPrimaries:
    """The earlier primaries a grouping recognises, by contact: a DON and its REVU- display id
    are one (user_id_key). Given oldest first, the newest record of a contact wins."""

    def __init__(self, records: Iterable[EarlierPrimary] = ()):
        self._by_key: dict[str, EarlierPrimary] = {}
        for record in records:
            for ident in (record.id, record.display_id):
                if is_valid_rev_user_id(ident):    # (a DON of another shape: its display id matches)
                    self._by_key[user_id_key(ident)] = record

    def __len__(self) -> int:
        return len(set(self._by_key.values()))

    def recognises(self, rev_user_id: str, external_refs: tuple[str, ...] = (), id_key: str | None = None) -> bool:
        """Whether this contact is an earlier merge's primary (as `of` decides, from its cells).
        id_key: user_id_key(rev_user_id), when the caller has it."""
        return (user_id_key(rev_user_id) if id_key is None else id_key) in self._by_key or \
            keeps_own_reference(rev_user_id, external_refs)

    def of(self, row: ContactRow) -> EarlierPrimary | None:
        """The record that makes `row` an earlier merge's primary, or None: from the savepoint,
        else from its own references (EXTERNAL_REFS holding its display id; run_id None)."""
        found = self._by_key.get(user_id_key(row.rev_user_id))
        if found is None and row.keeps_own_reference:
            found = EarlierPrimary(row.rev_user_id, row.own_reference, row.external_ref, row.email.strip(), None)
        return found


@dataclass
class MergeSet:
    email: str
    primary: ContactRow
    duplicates: list[ContactRow]
    # set when the primary is a `user_...` row an earlier merge made primary (group_contacts)
    earlier_primary: EarlierPrimary | None = None

    @property
    def key(self) -> str:
        return email_key(self.email)

    @property
    def rows(self) -> list[ContactRow]:
        return [self.primary, *self.duplicates]

    @property
    def primary_note(self) -> str | None:
        """"primary from an earlier merge (run X)" when it is one, for a preview or a report."""
        return self.earlier_primary.note if self.earlier_primary is not None else None


@dataclass
class SkippedGroup:
    email: str
    rows: list[ContactRow]
    reason: str

    @property
    def key(self) -> str:
        return email_key(self.email)

    @property
    def detail(self) -> str:
        if self.reason == SKIP_INVALID_DOMAIN:
            return email_domain_problem(self.email) or CSV_SKIP_REASONS[self.reason]
        return CSV_SKIP_REASONS[self.reason]


@dataclass
class ContactsFile:
    path: str
    sha256: str
    bom: bool
    header_raw: str
    columns: list[str]
    rows: list[ContactRow] = field(default_factory=list)
    newline: str = "\r\n"
    row_count: int = 0
    preamble: str = ""  # Excel's `sep=,` line before the header, raw (a sample copies it)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def email_key(email: str) -> str:
    """How rows are grouped and how DevRev's email is compared (one rule for every script).

    The local part (before the last `@`): trimmed, ASCII letters lower-cased, nothing
    else. Only ASCII case is folded: Unicode case folding would make different
    mailboxes one (`straße@` and `strasse@`; a Kelvin sign U+212A and `k`), so a
    look-alike contact could be merged into someone else's and take over their reference.
    The domain: its IDNA form (UTS #46, the `idna` package), lower-cased, because a
    domain is case-insensitive and its Unicode and punycode spellings
    (`bücher.example`, `xn--bcher-kva.example`) are one domain. A domain that is not
    valid IDNA keeps the ASCII-only folding (no guess); `email_domain_problem` names it,
    and grouping skips such a group (`invalid_email_domain`).
    """
    email = email.strip()
    if email.isascii():
        lowered = email.lower()
        if "xn--" not in lowered:
            return lowered     # the fast path: nothing to convert
    local, at, domain = email.rpartition("@")
    if not at:
        return email.translate(_ASCII_LOWER)
    folded = _domain_key(domain)
    local = local.lower() if local.isascii() else local.translate(_ASCII_LOWER)
    return f"{local}@{folded if folded is not None else domain.translate(_ASCII_LOWER)}"


def email_domain_problem(email: str) -> str | None:
    """Why the email's domain is not a valid IDNA domain (one line), or None."""
    domain = email.strip().rpartition("@")[2]
    return None if _domain_key(domain) is not None else _idna_error(domain)


@functools.lru_cache(maxsize=65536)
def _domain_key(domain: str) -> str | None:
    """A domain's comparison form: plain ASCII lower-cased; with a Unicode or `xn--` label,
    its IDNA A-label form (UTS #46 mapping, nontransitional) lower-cased; None if invalid."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()  # nothing to convert (and ASCII DNS names stay as they are)
    return None if _idna_error(domain) else idna.encode(domain, uts46=True).decode("ascii").lower()


@functools.lru_cache(maxsize=1024)
def _idna_error(domain: str) -> str | None:
    try:
        idna.encode(domain, uts46=True)
    except (idna.IDNAError, UnicodeError) as exc:
        return f"the domain {domain!r} is not a valid internationalized domain name ({exc})"
    return None


def user_id_key(rev_user_id: str) -> str:
    """The same contact whether written as a DON or as its REVU- display id."""
    match = _DON.fullmatch(rev_user_id)
    return match.group(1) if match else rev_user_id[len(PRIMARY_PREFIX):]


def own_reference(rev_user_id: str) -> str:
    """A contact's own REVU- display id, from its DON or its display id."""
    return PRIMARY_PREFIX + user_id_key(rev_user_id)


def keeps_own_reference(rev_user_id: str, external_refs: tuple[str, ...]) -> bool:
    """The contact's references (EXTERNAL_REFS) hold its own display id: a DevRev-native
    contact whose external_ref an earlier merge replaced by a `user_...` one, its REVU- one
    kept in the list (tenants with multi-association contacts)."""
    return bool(external_refs) and own_reference(rev_user_id) in external_refs


def is_valid_rev_user_id(value: str) -> bool:
    return bool(_DISPLAY_ID.fullmatch(value) or _DON.fullmatch(value))


def _id_key(value: str) -> str | None:
    """user_id_key of a valid REV_USER_ID (is_valid_rev_user_id), None if it is not one."""
    if value.startswith(PRIMARY_PREFIX):   # (a DON never starts so: one match, not two)
        return value[len(PRIMARY_PREFIX):] if _DISPLAY_ID.fullmatch(value) else None
    match = _DON.fullmatch(value)
    return match.group(1) if match else None


def row_problem(rev_user_id: str, email: str, external_ref: str) -> tuple[str, str] | None:
    """Why `read_contacts` would refuse a row with these required cells, or None.

    Returns (column, message), e.g. ("EMAIL", "EMAIL 'a b@x' contains spaces ..."): the
    same checks, so a file written from rows that pass is never refused for them.
    """
    try:
        _check_value(rev_user_id, "REV_USER_ID", 0)
        if not is_valid_rev_user_id(rev_user_id):
            return "REV_USER_ID", f"REV_USER_ID {rev_user_id[:60]!r} is neither a contact DON nor a REVU- display id"
        _check_value(email, "EMAIL", 0, _MAX_EMAIL)
        if not _EMAIL.fullmatch(email):
            return "EMAIL", f"EMAIL {email[:60]!r} is not an email address"
        _check_value(external_ref, "EXTERNAL_REF", 0)
    except CsvInputError as exc:
        message = str(exc).removeprefix("line 0: ")
        return message.split(" ", 1)[0], message
    return None


class _LineTap:
    """Feeds csv.reader line by line, counting lines; keeps the raw text of each record
    only while `keep` is set (the sample tool copies rows byte for byte; a run does not)."""

    def __init__(self, lines, keep: bool = True):
        self._lines = iter(lines)
        self._taken: list[str] = []
        self.keep = keep
        self.line = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.line += 1
        if self.keep:
            self._taken.append(line)
        return line

    def take(self) -> str:
        raw, self._taken = "".join(self._taken), []
        return raw


# Unicode category Cc (C0, DEL, C1) except tab, CR and LF: none belongs in a contacts
# export, and each can drive a terminal or a log viewer that shows the value.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s")    # exactly str.isspace()
# Values that pass every _check_value test at a glance: printable ASCII, no space, no formula start
_PLAIN_VALUE = re.compile(r"(?![=+\-@])[\x21-\x7e]{1,%d}" % _MAX_VALUE)
_PLAIN_EMAIL = re.compile(r"(?![=+\-@])[\x21-\x7e]{1,%d}" % _MAX_EMAIL)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Scan:
    sha256: str
    bom: bool
    stamp: tuple[int, int]    # (size, mtime_ns): the file must not change between passes


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _scan(path: str) -> _Scan:
    """The byte-level checks, streamed in 1 MiB chunks (memory flat in the file's size),
    reported with the same precedence as on the whole text: empty, UTF-32/16, NUL bytes,
    not UTF-8 (with the offset), control characters."""
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")()
    content = nul = False
    bad_offset: int | None = None
    control: str | None = None
    offset = 0   # body bytes (after a UTF-8 BOM) given to the decoder so far
    try:
        stamp = _stamp(path)
        with open(path, "rb") as fh:
            chunk = fh.read(_CHUNK)
            bom = chunk.startswith(codecs.BOM_UTF8)
            if chunk.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
                raise CsvInputError(f"{path} is UTF-32 text: save it as UTF-8 (CSV UTF-8 in Excel)")
            if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise CsvInputError(f"{path} is UTF-16 text: save it as UTF-8 (CSV UTF-8 in Excel)")
            digest.update(chunk)
            body = chunk[len(codecs.BOM_UTF8):] if bom else chunk
            while True:   # an empty body (end of file) goes through once, to end the decoding
                content = content or bool(body.strip(b" \t\r\n"))
                nul = nul or b"\x00" in body
                if bad_offset is None:
                    pending = len(decoder.getstate()[0])
                    try:
                        text = decoder.decode(body, final=not body)
                    except UnicodeDecodeError as exc:
                        bad_offset = offset - pending + exc.start
                    else:
                        if control is None and (found := _CONTROL.search(text)):
                            control = found.group()
                offset += len(body)
                if not body:
                    break
                body = fh.read(_CHUNK)
                digest.update(body)
    except OSError as exc:
        raise CsvInputError(f"cannot read {path}: {exc.strerror}") from None
    if not content:
        raise CsvInputError(f"the contacts CSV is empty: {path}")
    if nul:
        raise CsvInputError(f"{path} looks like a binary file, not a CSV (it contains NUL bytes)")
    if bad_offset is not None:
        raise CsvInputError(f"{path} is not UTF-8 text (invalid byte at offset {bad_offset}): export it as UTF-8")
    if control is not None:
        raise CsvInputError(f"{path} contains control characters (e.g. {control!r}): not a text CSV")
    return _Scan(digest.hexdigest(), bom, stamp)


def _check_value(value: str, column: str, line: int, max_len: int = _MAX_VALUE) -> str:
    if not value:
        raise CsvInputError(f"line {line}: {column} is empty")
    if len(value) > max_len:
        raise CsvInputError(f"line {line}: {column} is {len(value)} characters long (at most {max_len})")
    if value.startswith(_FORMULA_START):
        raise CsvInputError(f"line {line}: {column} {value[:40]!r} looks like a spreadsheet formula, not a value")
    if not value.isprintable() or _SPACE.search(value):
        raise CsvInputError(f"line {line}: {column} {value[:40]!r} contains spaces or control characters")
    return value


def _line_end(raw: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if raw.endswith(ending):
            return ending
    return "\r\n"


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise CsvInputError(f"contacts CSV not found: {path}")
    if os.path.isdir(path):
        raise CsvInputError(f"{path} is a folder, not a contacts CSV file")
    if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO waits for ever, /dev/zero never ends
        raise CsvInputError(f"{path} is not a regular file (a FIFO, a device or a socket): give the contacts CSV "
                            f"file itself")


def _check_columns(path: str, header: list[str] | None, columns: list[str]) -> None:
    header = header or []
    if not any(columns):
        raise CsvInputError(f"{path} has no header line (expected {', '.join(REQUIRED_COLUMNS)})")
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            hint = ""
            if len(columns) == 1:
                for sep in (";", "\t", "|"):
                    if sep in header[0]:
                        hint = f" (the header looks separated by {sep!r}: the file must be comma-separated)"
                        break
            if any(is_valid_rev_user_id(cell.strip()) for cell in header):
                hint = " (the first line holds a contact, not the header line)"
            raise CsvInputError(f"the contacts CSV has no {name} column{hint}; "
                                f"required: {', '.join(REQUIRED_COLUMNS)}")
    for name in columns:
        if name and columns.count(name) > 1:
            raise CsvInputError(f"column {name} appears twice in the header of {path}")


_EXCEL_SEP = re.compile(r"sep=(.?)[ \t]*(?:\r\n|\n|\r)?", re.IGNORECASE)


def _excel_separator_line(path: str, tap: _LineTap) -> tuple[str, list[str]]:
    """Excel writes `sep=,` as the first line when asked to name the separator: skip it
    (the header is then on line 2, and line numbers stay the file's). Returns (the raw
    line or "", [the first line] when it is not one, for the CSV reader to read first);
    CsvInputError when it names another separator."""
    first = next(tap, "")
    match = _EXCEL_SEP.fullmatch(first)
    if match is None:
        return "", [first]
    if match.group(1) != ",":
        raise CsvInputError(f"line 1 of {path} says sep={match.group(1)}: the contacts CSV must be "
                            f"comma-separated (save it as CSV UTF-8, comma-delimited)")
    return tap.take(), []


class ContactsReader:
    """Streams the validated rows of a contacts CSV, one at a time: memory stays flat in the
    file's size (only the caller decides what to keep). A first pass checks the bytes
    (`_scan`), then each pass over the rows re-reads the file; CsvInputError if it changed.

        reader = ContactsReader(path)     # reader.file: the ContactsFile (no rows)
        for row in reader: ...            # ContactRow, validated, in file order

    Every iteration re-reads the file from the top. The same contact twice is the
    caller's check (read_contacts, contacts.index). keep_raw: each row keeps its raw text.
    """

    def __init__(self, path: str, *, keep_raw: bool = False, scan: _Scan | None = None):
        _check_path(path)
        self.path, self.keep_raw = path, keep_raw
        self.scan = scan or _scan(path)
        self._reading: BinaryIO | None = None   # the binary file under the pass in progress
        self.file = self._header()

    def _open(self):
        if _stamp(self.path) != self.scan.stamp:
            raise CsvInputError(f"{self.path} changed while it was being read: run again once it is complete")
        try:
            return open(self.path, encoding="utf-8-sig" if self.scan.bom else "utf-8", newline="")
        except OSError as exc:
            raise CsvInputError(f"cannot read {self.path}: {exc.strerror}") from None

    def _header(self) -> ContactsFile:
        with self._open() as fh:
            tap = _LineTap(fh)
            preamble, first = _excel_separator_line(self.path, tap)
            reader = csv.reader(itertools.chain(first, tap), strict=True)
            try:
                header = next(reader, None)
                while header is not None and not any(cell.strip() for cell in header):
                    tap.take()  # blank lines before the header
                    header = next(reader, None)
            except csv.Error as exc:
                raise CsvInputError(f"line {tap.line}: malformed CSV ({exc}{_hint(exc)})") from None
            header_raw = tap.take()
            self._header_lines = tap.line
        columns = [c.strip().lstrip("\ufeff").strip().upper() for c in header or []]
        _check_columns(self.path, header, columns)
        self._index = {name: i for i, name in enumerate(columns) if name}
        self._id_at, self._email_at, self._ref_at = (self._index[name] for name in REQUIRED_COLUMNS)
        self._refs_at = self._index.get(REFS_COLUMN)
        return ContactsFile(self.path, self.scan.sha256, self.scan.bom, header_raw, columns,
                            newline=_line_end(header_raw), preamble=preamble)

    def records(self) -> Iterator[tuple[int, list[str], str]]:
        """(line the record starts on, its cells, its raw text or "") for each non-blank record."""
        with self._open() as fh:
            self._reading = fh.buffer
            tap = _LineTap(fh, keep=False)
            for _ in range(self._header_lines):
                next(tap)
            # without raw text, csv.reader counts the lines itself (line_num)
            source = tap if self.keep_raw else fh
            tap.keep = self.keep_raw
            reader = csv.reader(source, strict=True)
            skipped = self._header_lines
            start_line = 1
            try:
                while True:
                    start_line = (tap.line if self.keep_raw else skipped + reader.line_num) + 1
                    try:
                        record = next(reader)
                    except StopIteration:
                        return
                    raw = tap.take() if self.keep_raw else ""
                    if record and (record[0].strip() or any(cell.strip() for cell in record)):
                        yield start_line, record, raw
            except csv.Error as exc:
                # the line the broken record starts on (an unclosed quote swallows the rest of the file)
                raise CsvInputError(f"line {start_line}: malformed CSV ({exc}{_hint(exc)})") from None

    def position(self) -> int:
        """How many bytes of the file the pass in progress (`records`) has read: for a progress line."""
        try:
            return self._reading.tell() if self._reading is not None else 0
        except (OSError, ValueError):   # the pass is over (its file closed)
            return self.file_size

    @property
    def file_size(self) -> int:
        return self.scan.stamp[0]

    def __iter__(self) -> Iterator[ContactRow]:
        for line, record, raw in self.records():
            yield self.row(line, record, raw)

    def check(self, start_line: int, record: list[str]) -> tuple[str, str, str]:
        """The record's (REV_USER_ID, EMAIL, EXTERNAL_REF), each checked; CsvInputError naming
        the line if the record is not a usable contact. (The plain-ASCII patterns are only a
        fast path: a value they do not match gets every check, and its exact message.)"""
        rev_user_id, _, email, external_ref = self.check_keyed(start_line, record)
        return rev_user_id, email, external_ref

    def check_keyed(self, start_line: int, record: list[str]) -> tuple[str, str, str, str]:
        """`check`'s (REV_USER_ID, its user_id_key, EMAIL, EXTERNAL_REF): the id matched once
        for both (contacts.index's pass over every row)."""
        if len(record) != len(self.file.columns):
            raise CsvInputError(f"line {start_line}: {len(record)} fields where the header has "
                                f"{len(self.file.columns)}")
        rev_user_id = record[self._id_at].strip()
        id_key = _id_key(rev_user_id)
        if id_key is None:   # (a valid id passes every _check_value test)
            _check_value(rev_user_id, "REV_USER_ID", start_line)
            raise CsvInputError(f"line {start_line}: REV_USER_ID {rev_user_id[:60]!r} is neither a contact DON "
                                f"(don:identity:...:revu/...) nor a REVU- display id")
        email = record[self._email_at].strip()
        if not (_PLAIN_EMAIL.fullmatch(email) and _EMAIL.fullmatch(email)):
            _check_value(email, "EMAIL", start_line, _MAX_EMAIL)
            if not _EMAIL.fullmatch(email):
                raise CsvInputError(f"line {start_line}: EMAIL {email[:60]!r} is not an email address")
        external_ref = record[self._ref_at].strip()
        if not _PLAIN_VALUE.fullmatch(external_ref):
            _check_value(external_ref, "EXTERNAL_REF", start_line)
        return rev_user_id, id_key, email, external_ref

    def records_at(self, lines: set[int]) -> Iterator[tuple[int, list[str]]]:
        """(line, cells) of the records starting on these lines (from `records`), in file
        order, without parsing the others: a fast second pass for a few rows."""
        with self._open() as fh:
            source, number = iter(fh), 0
            for text in source:
                number += 1
                if number in lines:
                    reader = csv.reader(itertools.chain([text], source), strict=True)
                    yield number, next(reader)
                    number += reader.line_num - 1

    def references(self, record: list[str]) -> tuple[str, ...]:
        """The record's EXTERNAL_REFS references (() when the CSV has no such column)."""
        return () if self._refs_at is None else references_in(record[self._refs_at])

    def email_of(self, record: list[str]) -> str:
        """The grouping key of a record already checked (contacts.index's second pass)."""
        return email_key(record[self._email_at])

    def row(self, start_line: int, record: list[str], raw: str = "") -> ContactRow:
        """One record as a validated ContactRow; CsvInputError naming the line if it is not."""
        rev_user_id, email, external_ref = self.check(start_line, record)
        cell = {name: record[i].strip() for name, i in self._index.items() if name in _OPTIONAL}
        count = cell.get("TICKET_COUNT", "")
        return ContactRow(line=start_line, rev_user_id=rev_user_id, email=email, external_ref=external_ref,
                          display_name=cell.get("DISPLAY_NAME", ""), full_name=cell.get("FULL_NAME", ""),
                          ticket_count=int(count) if count.isascii() and count.isdigit() else None,
                          created_at=cell.get("CREATED_AT", ""), updated_at=cell.get("UPDATED_AT", ""), raw=raw,
                          external_refs=self.references(record))


_OPTIONAL = frozenset(OPTIONAL_COLUMNS)
_REFERENCE = re.compile(r"[^\s,;\[\]\"']+")


def references_in(cell: str) -> tuple[str, ...]:
    """The references of an EXTERNAL_REFS cell: separated by spaces (as find_duplicates.py
    writes them), commas or semicolons; brackets and quotes (a JSON list) are ignored."""
    return tuple(_REFERENCE.findall(cell))


def _hint(exc: csv.Error) -> str:
    return "; a quoted field is never closed" if "unexpected end of data" in str(exc) else ""


def duplicate_row_error(row: ContactRow, first_line: int) -> CsvInputError:
    return CsvInputError(f"line {row.line}: REV_USER_ID {row.rev_user_id} already appears on line {first_line}")


def read_contacts(path: str, *, keep_raw: bool = True) -> ContactsFile:
    """Read and validate the whole contacts CSV, every row in memory (with its raw text
    unless keep_raw=False): for small files and the sample tool. A run over a large file
    uses contacts.index.index_contacts, which keeps only the merge sets' rows.
    Raises CsvInputError on anything unusable."""
    reader = ContactsReader(path, keep_raw=keep_raw)
    result = reader.file
    seen_ids: dict[str, int] = {}
    for row in reader:
        key = user_id_key(row.rev_user_id)
        if key in seen_ids:
            raise duplicate_row_error(row, seen_ids[key])
        seen_ids[key] = row.line
        result.rows.append(row)
    if not result.rows:
        raise CsvInputError(f"the contacts CSV has a header but no contacts: {path}")
    result.row_count = len(result.rows)
    return result


def as_earlier_primaries(earlier: Iterable[EarlierPrimary] | EarlierPrimaries | None) -> EarlierPrimaries:
    """`earlier` as the lookup the grouping uses (built once; None: no savepoint record)."""
    return earlier if isinstance(earlier, EarlierPrimaries) else EarlierPrimaries(earlier or ())


def primary_of(members: list[ContactRow], earlier: EarlierPrimaries) -> tuple[list[ContactRow], list[ContactRow]]:
    """A group's (primaries, duplicates): a primary is a REVU- row or a `user_...` row an earlier
    merge made primary (earlier.of); the duplicates are the other `user_...` rows."""
    primaries: list[ContactRow] = []
    duplicates: list[ContactRow] = []
    for row in members:
        if row.is_primary or (row.is_duplicate and earlier.of(row) is not None):
            primaries.append(row)
        elif row.is_duplicate:
            duplicates.append(row)
    return primaries, duplicates


def merge_set_of(email: str, primary: ContactRow, duplicates: list[ContactRow],
                 earlier: EarlierPrimaries) -> MergeSet:
    """The merge set, noting an earlier merge's primary (a `user_...` row) as such."""
    return MergeSet(email, primary, duplicates, None if primary.is_primary else earlier.of(primary))


def group_contacts(rows: list[ContactRow], earlier: Iterable[EarlierPrimary] | EarlierPrimaries | None = None
                   ) -> tuple[list[MergeSet], list[SkippedGroup]]:
    """Group rows by email; return the merge sets and the skipped groups, in file order.

    A group's primary is its one REVU- row or, in a group without one, its one `user_...` row
    that an earlier merge made primary: a contact in `earlier` (the merge's savepoint,
    runs.journal.earlier_primaries) or whose EXTERNAL_REFS holds its own display id. Two
    such rows, or one beside a REVU- row: several_primaries."""
    lookup = as_earlier_primaries(earlier)
    groups: dict[str, list[ContactRow]] = {}
    for row in rows:
        groups.setdefault(row.email_key, []).append(row)
    merge_sets, skipped = [], []
    for members in groups.values():
        email = members[0].email.strip()
        primaries, duplicates = primary_of(members, lookup)
        if email_domain_problem(email):
            skipped.append(SkippedGroup(email, members, SKIP_INVALID_DOMAIN))
        elif len(members) == 1:
            skipped.append(SkippedGroup(email, members, SKIP_SINGLE_CONTACT))
        elif any(not (r.is_primary or r.is_duplicate) for r in members):
            skipped.append(SkippedGroup(email, members, SKIP_UNKNOWN_REFERENCE))
        elif not primaries:
            skipped.append(SkippedGroup(email, members, SKIP_NO_PRIMARY))
        elif len(primaries) > 1:
            skipped.append(SkippedGroup(email, members, SKIP_SEVERAL_PRIMARIES))
        else:
            merge_sets.append(merge_set_of(email, primaries[0], duplicates, lookup))
    return merge_sets, skipped
