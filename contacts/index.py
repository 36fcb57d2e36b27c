"""A large contacts CSV grouped in flat memory: the merge sets in full, the rest as counts.

An export can hold half a million contacts of which a few hundred are merge sets. Keeping
every row (and its raw text) costs about 2 KiB a row; this index keeps, per email, one
int per row (its line and whether it is a primary, a copy, or a copy an earlier merge made
primary: contacts.csv_reader.EarlierPrimaries), groups them exactly as
contacts.csv_reader.group_contacts does, and re-reads the file for the rows it needs: the merge
sets' (before any API call), and, only when asked (--list-skipped), the skipped groups'
(streamed to a report file). A big file shows its progress while it is read (read_progress).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from contacts.csv_reader import (
    DUPLICATE_PREFIX,
    PRIMARY_PREFIX,
    SKIP_INVALID_DOMAIN,
    SKIP_NO_PRIMARY,
    SKIP_SEVERAL_PRIMARIES,
    SKIP_SINGLE_CONTACT,
    SKIP_UNKNOWN_REFERENCE,
    ContactRow,
    ContactsFile,
    ContactsReader,
    CsvInputError,
    EarlierPrimaries,
    EarlierPrimary,
    MergeSet,
    SkippedGroup,
    as_earlier_primaries,
    duplicate_row_error,
    email_domain_problem,
    email_key,
    merge_set_of,
    primary_of,
    user_id_key,
)
from contacts.read_progress import ReadProgress

EXAMPLES_PER_REASON = 3
_OTHER, _PRIMARY, _DUPLICATE, _EARLIER = 0, 1, 2, 3   # _EARLIER: a user_ row an earlier merge made primary
_MERGE_SET = -1
_REASONS = [SKIP_SINGLE_CONTACT, SKIP_UNKNOWN_REFERENCE, SKIP_NO_PRIMARY, SKIP_SEVERAL_PRIMARIES, SKIP_INVALID_DOMAIN]
_INVALID_DOMAIN = _REASONS.index(SKIP_INVALID_DOMAIN)


def _kind(reader: ContactsReader, record: list[str], rev_user_id: str, id_key: str, external_ref: str,
          earlier: EarlierPrimaries) -> int:
    """As contacts.csv_reader.primary_of tells them apart (ContactRow.is_primary / is_duplicate,
    and a `user_...` row an earlier merge made primary)."""
    if external_ref.startswith(PRIMARY_PREFIX):
        return _PRIMARY
    if not external_ref.startswith(DUPLICATE_PREFIX):
        return _OTHER
    return _EARLIER if earlier.recognises(rev_user_id, reader.references(record), id_key) else _DUPLICATE


def _classify(kinds: list[int]) -> int:
    """The group's fate as group_contacts decides it: _MERGE_SET or an index into _REASONS."""
    if len(kinds) == 1:
        return 0
    if _OTHER in kinds:
        return 1
    primaries = kinds.count(_PRIMARY) + kinds.count(_EARLIER)
    return 2 if primaries == 0 else 3 if primaries > 1 else _MERGE_SET


@dataclass
class ContactsIndex:
    """What a run needs from the CSV, in memory flat in its size.

    file: the ContactsFile (header, sha256, row_count; no rows kept).
    merge_sets: every merge set, with its rows, in file order.
    skipped_counts: reason code -> number of skipped groups (every reason, 0 included).
    skipped_examples: the first EXAMPLES_PER_REASON skipped groups of each reason, with rows.
    skipped_row_counts: reason code -> number of rows in those groups (every reason, 0 included).
    """
    file: ContactsFile
    merge_sets: list[MergeSet]
    skipped_counts: dict[str, int]
    skipped_examples: list[SkippedGroup]
    _reader: ContactsReader = field(repr=False)
    _fate: dict[str, int] = field(repr=False)      # email key -> _MERGE_SET or an index into _REASONS
    _only: str | None = None
    earlier: EarlierPrimaries = field(default_factory=EarlierPrimaries, repr=False)   # what grouped it
    skipped_row_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_REASONS, 0))

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped_counts.values())

    @property
    def skipped_rows_total(self) -> int:
        """The rows of the CSV that are in no merge set (what `skipped_rows` would list)."""
        return sum(self.skipped_row_counts.values())

    @property
    def csv_merge_sets(self) -> int:
        """The merge sets of the whole CSV, whatever --only narrowed this index to (headlines
        say "1 merge set of the CSV's 15", not "1 merge set from the CSV")."""
        return sum(1 for fate in self._fate.values() if fate == _MERGE_SET)

    def narrowed(self, email: str) -> ContactsIndex:
        """The same index holding only the group of `email` (--only)."""
        key = email_key(email)
        fate = self._fate.get(key)
        counts = dict.fromkeys(_REASONS, 0)
        row_counts = dict.fromkeys(_REASONS, 0)
        if fate is not None and fate != _MERGE_SET:
            counts[_REASONS[fate]] = 1
        examples = [g for g in self.skipped_examples if g.key == key]
        if fate is not None and fate != _MERGE_SET and not examples:
            examples = [SkippedGroup(g[0].email.strip(), g, _REASONS[fate]) for g in self._rows_of({key}).values()]
        for group in examples:
            row_counts[group.reason] += len(group.rows)
        return ContactsIndex(self.file, [m for m in self.merge_sets if m.key == key], counts, examples,
                             self._reader, self._fate, key, self.earlier, row_counts)

    def skipped_rows(self) -> Iterator[tuple[str, ContactRow]]:
        """(reason code, row) for every row of a skipped group, in file order; re-reads the file
        (CsvInputError if it changed since it was indexed)."""
        for line, record, _ in self._reader.records():
            row = self._reader.row(line, record)
            key = row.email_key
            if self._only is not None and key != self._only:
                continue
            fate = self._fate[key]
            if fate != _MERGE_SET:
                yield _REASONS[fate], row

    def _rows_of(self, keys: set[str]) -> dict[str, list[ContactRow]]:
        groups: dict[str, list[ContactRow]] = {}
        for line, record, _ in self._reader.records():
            key = self._reader.email_of(record)
            if key in keys:
                groups.setdefault(key, []).append(self._reader.row(line, record))
        return groups


def index_contacts(path: str, earlier: Iterable[EarlierPrimary] | EarlierPrimaries | None = None, *,
                   progress: ReadProgress | None = None) -> ContactsIndex:
    """Validate the whole CSV (every check read_contacts makes, same messages) and group it,
    keeping full rows only for the merge sets and a few skipped groups per reason.
    earlier: the contacts earlier merges made primary (runs.journal.earlier_primaries), as
    group_contacts takes them. progress: what reports the reading (None: on stderr, for a big
    file or a slow read only). Raises CsvInputError on anything unusable."""
    progress = ReadProgress(path) if progress is None else progress
    progress.start()
    try:
        index = _index(path, as_earlier_primaries(earlier), progress)
    finally:
        progress.close()
    progress.done(index.file.row_count)
    return index


_TICK = 4096   # rows between two progress updates (a cheap test in the loop)


def _index(path: str, lookup: EarlierPrimaries, progress: ReadProgress) -> ContactsIndex:
    """index_contacts' two passes: every row checked and packed by email, then the rows kept in full."""
    reader = ContactsReader(path)
    groups: dict = {}   # email key -> packed row (line << 2 | kind), or a list of them
    seen: set[int] = set()
    rows = 0
    for line, record, _ in reader.records():
        rev_user_id, id_key, email, external_ref = reader.check_keyed(line, record)
        rows += 1
        if not rows % _TICK:
            progress.update(rows, reader.position())
        ident = hash(id_key)
        if ident in seen:
            _check_repeat(reader, reader.row(line, record))      # a true repeat, or two ids with one hash
        seen.add(ident)
        packed = line << 2 | _kind(reader, record, rev_user_id, id_key, external_ref, lookup)
        key = email_key(email)
        held = groups.get(key)
        if held is None:
            groups[key] = packed
        elif isinstance(held, int):
            groups[key] = [held, packed]
        else:
            held.append(packed)
    del seen
    if not rows:
        raise CsvInputError(f"the contacts CSV has a header but no contacts: {path}")
    reader.file.row_count = rows
    progress.update(rows, reader.file_size)
    counts = dict.fromkeys(_REASONS, 0)
    row_counts = dict.fromkeys(_REASONS, 0)
    wanted: set[int] = set()           # the lines of the rows kept in full
    fate: dict[str, int] = groups      # reused in place: each group's rows become its fate
    invalid: dict[str, bool] = {}      # domain -> not valid IDNA (one check per domain, not per group)
    for key, held in groups.items():
        members: list[int] = [held] if isinstance(held, int) else held
        domain = key[key.rfind("@") + 1:]
        bad = invalid.get(domain)
        if bad is None:
            bad = invalid[domain] = email_domain_problem(key) is not None
        # (as group_contacts: a domain that is not valid IDNA is never guessed at)
        outcome = _INVALID_DOMAIN if bad else _classify([p & 3 for p in members])
        fate[key] = outcome
        if outcome == _MERGE_SET or counts[_REASONS[outcome]] < EXAMPLES_PER_REASON:
            wanted.update(p >> 2 for p in members)
        if outcome != _MERGE_SET:
            counts[_REASONS[outcome]] += 1
            row_counts[_REASONS[outcome]] += len(members)
    return _build(reader, fate, counts, row_counts, wanted, lookup)


def _build(reader: ContactsReader, fate: dict[str, int], counts: dict[str, int], row_counts: dict[str, int],
           wanted: set[int], earlier: EarlierPrimaries) -> ContactsIndex:
    """Second pass: the full rows of the merge sets and of the example skipped groups."""
    index = ContactsIndex(reader.file, [], counts, [], reader, fate, earlier=earlier, skipped_row_counts=row_counts)
    groups: dict[str, list[ContactRow]] = {}
    for line, record in reader.records_at(wanted):
        row = reader.row(line, record)
        groups.setdefault(row.email_key, []).append(row)
    for key, members in groups.items():
        email = members[0].email.strip()
        if fate[key] == _MERGE_SET:
            primaries, duplicates = primary_of(members, earlier)
            index.merge_sets.append(merge_set_of(email, primaries[0], duplicates, earlier))
        else:
            index.skipped_examples.append(SkippedGroup(email, members, _REASONS[fate[key]]))
    return index


def _check_repeat(reader: ContactsReader, row: ContactRow) -> None:
    """The id of `row` hashes like an earlier one: find that row; CsvInputError if it is the
    same contact (the message read_contacts gives), nothing if only the hashes met."""
    key = user_id_key(row.rev_user_id)
    for earlier in reader:
        if earlier.line >= row.line:
            return
        if user_id_key(earlier.rev_user_id) == key:
            raise duplicate_row_error(row, earlier.line)

