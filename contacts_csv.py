"""The admins' contacts CSV: strict reading and grouping into merge sets.

Shared by merge_contacts.py and create_test_sample.py, so a rehearsal sample is grouped
exactly as the real run will group it. Bad input raises CsvInputError with one line
that names the problem (and the line number); nothing here touches the network.
Each row keeps its raw text so a sample can copy rows byte for byte.
"""
from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import os
import re
import unicodedata
from dataclasses import dataclass, field

import idna

from cli import UserError

REQUIRED_COLUMNS = ("REV_USER_ID", "EMAIL", "EXTERNAL_REF")
OPTIONAL_COLUMNS = ("DISPLAY_NAME", "FULL_NAME", "TICKET_COUNT", "CREATED_AT", "UPDATED_AT")
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
    SKIP_NO_PRIMARY: f"no contact with a {PRIMARY_PREFIX} external reference",
    SKIP_SEVERAL_PRIMARIES: f"more than one contact with a {PRIMARY_PREFIX} external reference",
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

    @property
    def email_key(self) -> str:
        return email_key(self.email)

    @property
    def is_primary(self) -> bool:
        return self.external_ref.startswith(PRIMARY_PREFIX)

    @property
    def is_duplicate(self) -> bool:
        return self.external_ref.startswith(DUPLICATE_PREFIX)

    def as_dict(self) -> dict:
        return {"line": self.line, "REV_USER_ID": self.rev_user_id, "EMAIL": self.email,
                "EXTERNAL_REF": self.external_ref, "DISPLAY_NAME": self.display_name,
                "FULL_NAME": self.full_name, "TICKET_COUNT": self.ticket_count,
                "CREATED_AT": self.created_at, "UPDATED_AT": self.updated_at}


@dataclass
class MergeSet:
    email: str
    primary: ContactRow
    duplicates: list[ContactRow]

    @property
    def key(self) -> str:
        return email_key(self.email)

    @property
    def rows(self) -> list[ContactRow]:
        return [self.primary, *self.duplicates]


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
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return email.strip().translate(_ASCII_LOWER)
    folded = _domain_key(domain)
    return f"{local.translate(_ASCII_LOWER)}@{folded if folded is not None else domain.translate(_ASCII_LOWER)}"


def email_domain_problem(email: str) -> str | None:
    """Why the email's domain is not a valid IDNA domain (one line), or None."""
    domain = email.strip().rpartition("@")[2]
    return None if _domain_key(domain) is not None else _idna_error(domain)


@functools.lru_cache(maxsize=65536)
def _domain_key(domain: str) -> str | None:
    """A domain's comparison form: plain ASCII lower-cased; with a Unicode or `xn--` label,
    its IDNA A-label form (UTS #46 mapping, nontransitional) lower-cased; None if invalid."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.translate(_ASCII_LOWER)  # nothing to convert (and ASCII DNS names stay as they are)
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


def is_valid_rev_user_id(value: str) -> bool:
    return bool(_DISPLAY_ID.fullmatch(value) or _DON.fullmatch(value))


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
    """Feeds csv.reader line by line and remembers the raw text of each record."""

    def __init__(self, text: str):
        self._lines = iter(io.StringIO(text, newline=""))
        self._taken: list[str] = []
        self.line = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.line += 1
        self._taken.append(line)
        return line

    def take(self) -> str:
        raw, self._taken = "".join(self._taken), []
        return raw


def _decode(path: str, data: bytes) -> tuple[str, bool]:
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if not body.strip(b" \t\r\n"):
        raise CsvInputError(f"the contacts CSV is empty: {path}")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise CsvInputError(f"{path} is UTF-32 text: save it as UTF-8 (CSV UTF-8 in Excel)")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CsvInputError(f"{path} is UTF-16 text: save it as UTF-8 (CSV UTF-8 in Excel)")
    if b"\x00" in data:
        raise CsvInputError(f"{path} looks like a binary file, not a CSV (it contains NUL bytes)")
    bom = data.startswith(codecs.BOM_UTF8)
    try:
        text = data[len(codecs.BOM_UTF8) if bom else 0:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvInputError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start}): "
                            f"export it as UTF-8") from None
    # C0 (ESC...), DEL and C1 (the 8-bit CSI...): none belongs in a contacts export, and
    # each can drive a terminal or a log viewer that shows the value
    controls = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\r\n\t"]
    if len(controls) > 0:
        raise CsvInputError(f"{path} contains control characters (e.g. {controls[0]!r}): not a text CSV")
    return text, bom


def _check_value(value: str, column: str, line: int, max_len: int = _MAX_VALUE) -> str:
    if not value:
        raise CsvInputError(f"line {line}: {column} is empty")
    if len(value) > max_len:
        raise CsvInputError(f"line {line}: {column} is {len(value)} characters long (at most {max_len})")
    if value.startswith(_FORMULA_START):
        raise CsvInputError(f"line {line}: {column} {value[:40]!r} looks like a spreadsheet formula, not a value")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise CsvInputError(f"line {line}: {column} {value[:40]!r} contains spaces or control characters")
    return value


def _line_end(raw: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if raw.endswith(ending):
            return ending
    return "\r\n"


_EXCEL_SEP = re.compile(r"sep=(.?)[ \t]*(?:\r\n|\n|\r|$)", re.IGNORECASE)


def _excel_separator_line(path: str, text: str, tap: _LineTap) -> str:
    """Excel writes `sep=,` as the first line when asked to name the separator: skip it
    (the header is then on line 2, and line numbers stay the file's). Returns the raw line
    ("" if there is none); CsvInputError when it names another separator."""
    match = _EXCEL_SEP.match(text)
    if match is None:
        return ""
    if match.group(1) != ",":
        raise CsvInputError(f"line 1 of {path} says sep={match.group(1)}: the contacts CSV must be "
                            f"comma-separated (save it as CSV UTF-8, comma-delimited)")
    next(tap)
    return tap.take()


def read_contacts(path: str) -> ContactsFile:
    """Read and validate the contacts CSV; raise CsvInputError on anything unusable."""
    if not os.path.exists(path):
        raise CsvInputError(f"contacts CSV not found: {path}")
    if os.path.isdir(path):
        raise CsvInputError(f"{path} is a folder, not a contacts CSV file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CsvInputError(f"cannot read {path}: {exc.strerror}") from None
    text, bom = _decode(path, data)
    tap = _LineTap(text)
    preamble = _excel_separator_line(path, text, tap)
    reader = csv.reader(tap, strict=True)
    result = None
    start_line = 1
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            tap.take()  # blank lines before the header
            header = next(reader, None)
        header_raw = tap.take()
        columns = [c.strip().lstrip("\ufeff").strip().upper() for c in header or []]
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
        index = {name: i for i, name in enumerate(columns) if name}
        result = ContactsFile(path, hashlib.sha256(data).hexdigest(), bom, header_raw, columns,
                              newline=_line_end(header_raw), preamble=preamble)
        seen_ids: dict[str, int] = {}
        while True:
            start_line = tap.line + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            raw = tap.take()
            if not any(cell.strip() for cell in record):
                continue  # a blank line
            if len(record) != len(columns):
                raise CsvInputError(f"line {start_line}: {len(record)} fields where the header has {len(columns)}")
            cell = {name: record[i].strip() for name, i in index.items()}
            rev_user_id = _check_value(cell["REV_USER_ID"], "REV_USER_ID", start_line)
            if not is_valid_rev_user_id(rev_user_id):
                raise CsvInputError(f"line {start_line}: REV_USER_ID {rev_user_id[:60]!r} is neither a contact DON "
                                    f"(don:identity:...:revu/...) nor a REVU- display id")
            email = _check_value(cell["EMAIL"], "EMAIL", start_line, _MAX_EMAIL)
            if not _EMAIL.fullmatch(email):
                raise CsvInputError(f"line {start_line}: EMAIL {email[:60]!r} is not an email address")
            external_ref = _check_value(cell["EXTERNAL_REF"], "EXTERNAL_REF", start_line)
            key = user_id_key(rev_user_id)
            if key in seen_ids:
                raise CsvInputError(f"line {start_line}: REV_USER_ID {rev_user_id} already appears on line "
                                    f"{seen_ids[key]}")
            seen_ids[key] = start_line
            count = cell.get("TICKET_COUNT", "")
            result.rows.append(ContactRow(
                line=start_line, rev_user_id=rev_user_id, email=email, external_ref=external_ref,
                display_name=cell.get("DISPLAY_NAME", ""), full_name=cell.get("FULL_NAME", ""),
                ticket_count=int(count) if count.isascii() and count.isdigit() else None,
                created_at=cell.get("CREATED_AT", ""), updated_at=cell.get("UPDATED_AT", ""), raw=raw))
    except csv.Error as exc:
        # the line the broken record starts on (an unclosed quote swallows the rest of the file)
        line = start_line if result is not None else tap.line
        hint = "; a quoted field is never closed" if "unexpected end of data" in str(exc) else ""
        raise CsvInputError(f"line {line}: malformed CSV ({exc}{hint})") from None
    if not result.rows:
        raise CsvInputError(f"the contacts CSV has a header but no contacts: {path}")
    return result


def group_contacts(rows: list[ContactRow]) -> tuple[list[MergeSet], list[SkippedGroup]]:
    """Group rows by email; return the merge sets and the skipped groups, in file order."""
    groups: dict[str, list[ContactRow]] = {}
    for row in rows:
        groups.setdefault(row.email_key, []).append(row)
    merge_sets, skipped = [], []
    for members in groups.values():
        email = members[0].email.strip()
        primaries = [r for r in members if r.is_primary]
        duplicates = [r for r in members if r.is_duplicate]
        if email_domain_problem(email):
            skipped.append(SkippedGroup(email, members, SKIP_INVALID_DOMAIN))
        elif len(members) == 1:
            skipped.append(SkippedGroup(email, members, SKIP_SINGLE_CONTACT))
        elif len(primaries) + len(duplicates) < len(members):
            skipped.append(SkippedGroup(email, members, SKIP_UNKNOWN_REFERENCE))
        elif not primaries:
            skipped.append(SkippedGroup(email, members, SKIP_NO_PRIMARY))
        elif len(primaries) > 1:
            skipped.append(SkippedGroup(email, members, SKIP_SEVERAL_PRIMARIES))
        else:
            merge_sets.append(MergeSet(email, primaries[0], duplicates))
    return merge_sets, skipped
