"""Finding the merge sets in DevRev itself: walk every contact once, group them by email.

The grouping is contacts.csv_reader's own (`email_key` decides which contacts share an email,
`group_contacts` decides merge set or skipped group), so the CSV written here groups
exactly as merge_contacts.py will group it. A tenant can hold hundreds of thousands of
contacts and only a few hundred duplicates, so the contacts are not kept in memory: each
page goes into a scratch sqlite3 index on disk (private folder, removed afterwards),
and only the groups of two or more contacts are read back. Peak memory grows with the
candidate groups, not with the tenant (bench/find_duplicates_scan.py measures it).

A contact an earlier merge made primary carries a `user_...` external_ref (its display id stays
REVU-...): its group is a merge set again when the merge's savepoint names it (`earlier`), or
when DevRev's `external_refs` for it hold its own display id (written to the CSV's EXTERNAL_REFS
column, so merge_contacts.py recognises it the same way).

Contacts that look related but do not share an email are listed for a person to look
at, never grouped: the same local part at two domains of one site (`jane@eu.acme.com`,
`jane@us.acme.com`), or the same name at one domain with different local parts.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import sqlite3
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from contacts.csv_reader import (
    OPTIONAL_COLUMNS,
    PRIMARY_PREFIX,
    REFS_COLUMN,
    REQUIRED_COLUMNS,
    ContactRow,
    EarlierPrimaries,
    EarlierPrimary,
    MergeSet,
    SkippedGroup,
    as_earlier_primaries,
    email_key,
    group_contacts,
    is_valid_rev_user_id,
    own_reference,
    references_in,
    row_problem,
)
from devrev_api import assumptions as facts
from plumbing.csv_files import csv_cell

log = logging.getLogger(__name__)

CSV_COLUMNS = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, REFS_COLUMN]
# Not the contacts CSV's names on purpose: merge_contacts.py refuses this file.
REVIEW_COLUMNS = ["REVIEW_GROUP", "REASON", "CONTACT_ID", "CONTACT_EMAIL", "CONTACT_EXTERNAL_REF", "DISPLAY_NAME",
                  "FULL_NAME", "WORKSPACE", "OWN_EMAIL_GROUP", "CREATED_AT", "UPDATED_AT"]
REVIEW_SAME_LOCAL_PART = "same_local_part_same_site"
REVIEW_SAME_NAME = "same_name_same_domain"
REVIEW_UNUSABLE = "not_usable_in_csv"
REVIEW_REASONS = {
    REVIEW_SAME_LOCAL_PART: "the same local part at two domains of one site (e.g. eu.acme.com and acme.com)",
    REVIEW_SAME_NAME: "the same name at one domain, with different local parts",
    REVIEW_UNUSABLE: "its email or reference is one merge_contacts.py would refuse in a CSV",
}


@dataclass
class ScanCounts:
    """What the walk saw: contacts by what became of them, and the pages it took."""

    scanned: int = 0
    pages: int = 0
    without_email: int = 0
    already_merged: int = 0        # retired by an earlier merge (state deleted / primary_identity)
    repeated: int = 0              # a contact DevRev sent twice during the walk, counted once
    unusable: Counter = field(default_factory=Counter)   # column -> contacts the CSV rules refuse


@dataclass
class Findings:
    counts: ScanCounts
    merge_sets: list[MergeSet]
    skipped: list[SkippedGroup]
    review: list[dict]             # REVIEW_COLUMNS rows
    ticket_counts: dict[str, int] = field(default_factory=dict)   # DON -> tickets it reports

    @property
    def groups(self) -> int:
        return len(self.merge_sets) + len(self.skipped)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(g.reason for g in self.skipped).items()))

    @property
    def earlier_primaries(self) -> int:
        """Merge sets whose primary an earlier merge made (MergeSet.earlier_primary)."""
        return sum(1 for ms in self.merge_sets if ms.earlier_primary is not None)


# --------------------------------------------------------------------------- keys
def _site(domain: str) -> str:
    """The last two labels of a domain (`eu.acme.com` -> `acme.com`): a crude registrable
    domain, enough to put two sub-domains of one company side by side for a person."""
    return ".".join(domain.split(".")[-2:])


def name_key(*names: str) -> str:
    """A person's name to compare (NFKC, case-folded, spaces collapsed); "" when unknown or
    when the name is an email (the system writes the email as a copy's display name)."""
    for name in names:
        text = " ".join(unicodedata.normalize("NFKC", name or "").casefold().split())
        if text and "@" not in text:
            return text
    return ""


def _clean(value) -> str:
    """An informative cell: text with control characters (line breaks included) as spaces,
    so a hostile name can neither break the CSV's line structure nor drive a terminal."""
    text = "" if value is None else str(value)
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).strip()


def csv_references(user: dict) -> tuple[str, ...]:
    """The contact's `external_refs` (tenants with multi-association contacts) as the CSV's
    EXTERNAL_REFS column holds them, in DevRev's order: only the references the column can
    hold whole (no separator, no control character; a display id is always one), so the
    merge reads back exactly these and groups the contact as the finder did."""
    refs = user.get(facts.CONTACT_REFS_FIELD)
    if not isinstance(refs, list):
        return ()
    return tuple(dict.fromkeys(r for r in refs if isinstance(r, str) and r.isprintable() and references_in(r) == (r,)))


def merged_away(user: dict) -> bool:
    """A contact an earlier merge already retired (still readable on some tenants). Narrower
    than live_checks.is_retired on purpose: a deactivated contact is kept, so the preview
    shows its group skipped as contact_inactive instead of the finder hiding it."""
    return bool(user.get("primary_identity")) or user.get("state") == "deleted"


# --------------------------------------------------------------------------- the index
_SCHEMA = """
CREATE TABLE contact (
  id TEXT PRIMARY KEY, seq INTEGER, usable INTEGER, problem TEXT, email_key TEXT, local TEXT,
  domain TEXT, site TEXT, name_key TEXT, workspace TEXT, email TEXT, external_ref TEXT,
  display_name TEXT, full_name TEXT, created_at TEXT, updated_at TEXT, refs TEXT)
"""
_FIELDS = ("id", "seq", "usable", "problem", "email_key", "local", "domain", "site", "name_key", "workspace",
           "email", "external_ref", "display_name", "full_name", "created_at", "updated_at", "refs")


class ContactIndex:
    """A scratch sqlite3 table of the usable contacts, on disk in a private folder.

    Memory stays at sqlite's small page cache whatever the tenant's size. The folder
    (0700, under `parent`) and everything in it are removed by close().
    """

    def __init__(self, parent: str):
        self.folder = tempfile.mkdtemp(prefix=".find_duplicates-", dir=parent or ".")
        self.db = sqlite3.connect(os.path.join(self.folder, "contacts.sqlite3"))
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-2048"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(_SCHEMA)
        self.seq = 0

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, user: dict, counts: ScanCounts) -> None:
        """File one contact of a page (or count it as without email / already merged)."""
        email = (user.get("email") or "").strip()
        if not email:
            counts.without_email += 1
            return
        if merged_away(user):
            counts.already_merged += 1
            return
        self.seq += 1
        don, ref = str(user.get("id") or ""), str(user.get("external_ref") or "").strip()
        refs = csv_references(user)
        display_id = str(user.get("display_id") or "")
        if is_valid_rev_user_id(display_id) and (not is_valid_rev_user_id(don) or (
                display_id in refs and own_reference(don) != display_id)):
            # a DON the CSV's pattern does not know, or one the CSV cannot tell its display id
            # from (which its references hold): its REVU- id then
            don = display_id
        problem = row_problem(don, email, ref)
        key = email_key(email) if problem is None else None
        local, _, domain = (key or email).rpartition("@")
        org = user.get("rev_org") or {}
        row = (don, self.seq, int(problem is None), problem and problem[1], key, local, domain, _site(domain),
               name_key(user.get("full_name"), user.get("display_name")),
               _clean(org.get("display_name") or org.get("display_id") or org.get("id")), email, ref,
               _clean(user.get("display_name")), _clean(user.get("full_name")),
               _clean(user.get("created_date")), _clean(user.get("modified_date")), " ".join(refs))
        cursor = self.db.execute(f"INSERT OR IGNORE INTO contact VALUES ({','.join('?' * len(_FIELDS))})", row)
        if cursor.rowcount == 0:
            counts.repeated += 1
        elif problem is not None:
            counts.unusable[problem[0]] += 1

    def finish(self) -> None:
        self.db.commit()
        self.db.execute("CREATE INDEX by_email ON contact(email_key) WHERE usable")
        self.db.execute("CREATE INDEX by_site ON contact(site, local) WHERE usable")
        self.db.execute("CREATE INDEX by_name ON contact(domain, name_key) WHERE usable AND name_key != ''")

    def _rows(self, sql: str, *params) -> Iterator[dict]:
        for values in self.db.execute(sql, params):
            yield dict(zip(_FIELDS, values))

    def email_groups(self) -> Iterator[list[dict]]:
        """Each email key's contacts, for keys with two or more: primaries first, then oldest first."""
        rows = self._rows("SELECT * FROM contact WHERE usable AND email_key IN (SELECT email_key FROM contact "
                          "WHERE usable GROUP BY email_key HAVING COUNT(*) > 1) ORDER BY email_key, "
                          f"external_ref NOT LIKE '{PRIMARY_PREFIX}%', created_at, id")
        yield from _consecutive(rows, lambda r: r["email_key"])

    def related(self) -> Iterator[tuple[str, list[dict]]]:
        """(review reason, contacts) for each cluster that looks related across email keys."""
        rows = self._rows("SELECT c.* FROM contact c JOIN (SELECT site, local FROM contact WHERE usable "
                          "GROUP BY site, local HAVING COUNT(DISTINCT email_key) > 1) g "
                          "ON c.site = g.site AND c.local = g.local WHERE c.usable "
                          "ORDER BY c.site, c.local, c.email_key, c.id")
        for group in _consecutive(rows, lambda r: (r["site"], r["local"])):
            yield REVIEW_SAME_LOCAL_PART, group
        rows = self._rows("SELECT c.* FROM contact c JOIN (SELECT domain, name_key FROM contact WHERE usable "
                          "AND name_key != '' GROUP BY domain, name_key HAVING COUNT(DISTINCT local) > 1) g "
                          "ON c.domain = g.domain AND c.name_key = g.name_key WHERE c.usable "
                          "ORDER BY c.domain, c.name_key, c.email_key, c.id")
        for group in _consecutive(rows, lambda r: (r["domain"], r["name_key"])):
            yield REVIEW_SAME_NAME, group
        for row in self._rows("SELECT * FROM contact WHERE NOT usable ORDER BY seq"):
            yield REVIEW_UNUSABLE, [row]


def _consecutive(rows: Iterable[dict], key: Callable[[dict], object]) -> Iterator[list[dict]]:
    group: list[dict] = []
    for row in rows:
        if group and key(row) != key(group[0]):
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def contact_row(row: dict, line: int = 0) -> ContactRow:
    """The index's row as the CSV reader's ContactRow (what group_contacts takes)."""
    return ContactRow(line=line, rev_user_id=row["id"], email=row["email"], external_ref=row["external_ref"],
                      display_name=row["display_name"], full_name=row["full_name"],
                      created_at=row["created_at"], updated_at=row["updated_at"],
                      external_refs=tuple(row["refs"].split()) if row["refs"] else ())


# --------------------------------------------------------------------------- the walk
def walk_contacts(client, index: ContactIndex, counts: ScanCounts, *,
                  endpoint: str = facts.CONTACT_WALK_ENDPOINT,
                  on_page: Callable[[int, ScanCounts], None] | None = None) -> None:
    """Read every contact of the tenant into `index`, one page at a time.

    endpoint: "rev-users.list" (asks for `limit` = the client's page size) or
    "rev-users.scan" (no limit: the server sizes pages). on_page(items, counts) after
    each page, for the progress bar. Raises the client's DevRevError / RunInterrupted;
    the index then holds a partial walk, which the caller discards.
    """
    paged = endpoint != "rev-users.scan"
    # a whole tenant: 10,000,000 pages at most (a million contacts take 10,000-20,000)
    for page in client.walk_pages(endpoint, {}, "rev_users", paged=paged, max_pages=10_000_000):
        counts.pages += 1
        counts.scanned += len(page)
        for user in page:
            index.add(user, counts)
        if on_page is not None:
            on_page(len(page), counts)
    index.finish()


def find_groups(index: ContactIndex, earlier: Iterable[EarlierPrimary] | EarlierPrimaries | None = None
                ) -> tuple[list[MergeSet], list[SkippedGroup], dict[str, str]]:
    """Every email group of two or more contacts, grouped by contacts.csv_reader.group_contacts
    (with `earlier`, the primaries of the merge's savepoint, as the merge will group them).

    Returns (merge sets, skipped groups, email key -> "merge_set" or the skip reason).
    """
    lookup = as_earlier_primaries(earlier)
    merge_sets: list[MergeSet] = []
    skipped: list[SkippedGroup] = []
    outcome: dict[str, str] = {}
    line = 1
    for group in index.email_groups():
        rows = [contact_row(r, line + i) for i, r in enumerate(group)]
        line += len(rows)
        sets, skips = group_contacts(rows, lookup)
        merge_sets += sets
        skipped += skips
        for found in sets:
            outcome[found.key] = "merge_set"
        for found in skips:
            outcome[found.key] = found.reason
    return merge_sets, skipped, outcome


def review_rows(index: ContactIndex, outcome: dict[str, str]) -> list[dict]:
    """The REVIEW_COLUMNS rows: one numbered cluster per look-alike, for a person."""
    out = []
    for number, (reason, group) in enumerate(index.related(), start=1):
        for row in group:
            own = outcome.get(row["email_key"] or "", "single_contact" if row["usable"] else row["problem"])
            out.append({"REVIEW_GROUP": number, "REASON": reason, "CONTACT_ID": row["id"],
                        "CONTACT_EMAIL": row["email"], "CONTACT_EXTERNAL_REF": row["external_ref"],
                        "DISPLAY_NAME": row["display_name"], "FULL_NAME": row["full_name"],
                        "WORKSPACE": row["workspace"], "OWN_EMAIL_GROUP": own,
                        "CREATED_AT": row["created_at"], "UPDATED_AT": row["updated_at"]})
    return out


def count_tickets(client, merge_sets: list[MergeSet]) -> dict[str, int]:
    """Tickets each contact of each merge set reports: one paged works.list count each."""
    counts = {}
    for ms in merge_sets:
        for row in ms.rows:
            counts[row.rev_user_id] = sum(1 for _ in client.list_tickets(row.rev_user_id))
    return counts


def find_duplicates(client, folder: str, *, endpoint: str = facts.CONTACT_WALK_ENDPOINT,
                    ticket_counts: bool = False, on_page=None,
                    earlier: Iterable[EarlierPrimary] | EarlierPrimaries | None = None) -> Findings:
    """Walk the tenant, group, and (with ticket_counts) count the merge sets' tickets.

    folder: where the scratch index lives while it runs (removed before returning).
    earlier: the contacts earlier merges made primary (the merge's savepoint,
    runs.journal.earlier_primaries); a contact whose `external_refs` hold its own display id
    is recognised as one without it (contacts.csv_reader.EarlierPrimaries.of).
    Raises the client's errors; nothing is left on disk then either.
    """
    counts = ScanCounts()
    index = ContactIndex(folder)
    try:
        walk_contacts(client, index, counts, endpoint=endpoint, on_page=on_page)
        merge_sets, skipped, outcome = find_groups(index, earlier)
        review = review_rows(index, outcome)
    finally:
        index.close()
    findings = Findings(counts, merge_sets, skipped, review)
    if ticket_counts:
        findings.ticket_counts = count_tickets(client, merge_sets)
    return findings


# --------------------------------------------------------------------------- output
def contacts_csv_bytes(findings: Findings) -> bytes:
    """The contacts CSV (UTF-8, CRLF, contacts.csv_reader's columns), merge sets and skipped groups
    in email order; informative cells formula-escaped (the required ones passed
    contacts.csv_reader's own checks, which refuse formulas)."""
    groups = sorted([(ms.key, ms.rows) for ms in findings.merge_sets] +
                    [(g.key, g.rows) for g in findings.skipped], key=lambda pair: pair[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for _key, rows in groups:
        for row in rows:
            tickets = findings.ticket_counts.get(row.rev_user_id)
            writer.writerow([row.rev_user_id, row.email, row.external_ref, csv_cell(row.display_name),
                             csv_cell(row.full_name), "" if tickets is None else tickets,
                             csv_cell(row.created_at), csv_cell(row.updated_at), csv_cell(row.external_refs)])
    return out.getvalue().encode("utf-8")


def review_csv_bytes(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REVIEW_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(row[c]) for c in REVIEW_COLUMNS])
    return out.getvalue().encode("utf-8")


def summary_lines(findings: Findings, endpoint: str) -> list[str]:
    """The summary the script prints (and logs)."""
    c = findings.counts
    unusable = sum(c.unusable.values())
    skipped = findings.skipped_by_reason()
    clusters = len({r["REVIEW_GROUP"] for r in findings.review})
    lines = [f"contacts scanned: {c.scanned} in {c.pages} page{'s' if c.pages != 1 else ''} of {endpoint}",
             f"contacts without email: {c.without_email}",
             f"contacts already merged away (not grouped): {c.already_merged}",
             f"contacts a CSV cannot hold (listed for review): {unusable}"
             + (f" ({', '.join(f'{k} {v}' for k, v in sorted(c.unusable.items()))})" if unusable else ""),
             f"groups found (2+ contacts with one email): {findings.groups}",
             f"merge sets: {len(findings.merge_sets)} "
             f"({sum(len(ms.duplicates) for ms in findings.merge_sets)} duplicates)",
             *([f"merge sets whose primary an earlier merge made: {findings.earlier_primaries}"]
               if findings.earlier_primaries else []),
             f"skipped groups: {len(findings.skipped)}"
             + (f" ({', '.join(f'{k} {v}' for k, v in skipped.items())})" if skipped else ""),
             f"related but not grouped, for review: {len(findings.review)} contacts in {clusters} clusters"]
    if c.repeated:
        lines.append(f"contacts DevRev sent twice during the walk (counted once): {c.repeated}")
    return lines
