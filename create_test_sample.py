"""Cut a small rehearsal CSV out of the contacts CSV, made of whole merge sets.

    python create_test_sample.py --input contacts.csv --output test_contacts.csv --size 4 [--seed S] [--force]

A random sample of rows would split merge sets (a primary without its duplicate), so
this picks whole merge sets, grouped exactly as merge_contacts.py groups them (the
grouping code is shared: contacts.csv_reader.group_contacts, with the primaries earlier
merges made, read from the merge's savepoint as the merge reads them), whose rows add up to --size
contacts. When no combination hits --size exactly it takes the largest total below it
and says so. Among the choices of that total it prefers the sets whose duplicates have
the fewest tickets (TICKET_COUNT), so the rehearsal is quick, but at least one: a set whose
duplicates own nothing comes last, since a rehearsal should move something; ties are broken by a
seeded random choice (the seed is printed so the sample can be reproduced).

The sample keeps the input's header, column order, encoding (BOM included) and each
chosen row byte for byte, in the input's order. It is written atomically and readable
by its owner only (it holds customer data).

Exit codes: 0 sample written; 2 bad usage or input (one line on stderr).
"""
from __future__ import annotations

import argparse
import codecs
import os
import random
import secrets
import sys
from dataclasses import dataclass

from contacts.csv_reader import (
    ContactRow,
    ContactsFile,
    EarlierPrimary,
    MergeSet,
    SkippedGroup,
    group_contacts,
    read_contacts,
)
from merging.plan import set_key
from operator_view.summary import plural
from plumbing import cli, json_summary
from plumbing.cli import ExitCode, UsageError
from plumbing.files import atomic_write_bytes
from runs.journal import earlier_primaries, read_savepoint
from runs.support import MERGE_SAVEPOINT, SANDBOX_MERGE_SAVEPOINT


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="create_test_sample.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="CSV", help="the full contacts CSV")
    p.add_argument("--output", required=True, metavar="CSV", help="the sample CSV to write")
    p.add_argument("--size", required=True, type=cli.int_between(1), metavar="N",
                   help="how many contacts (rows) the sample holds")
    p.add_argument("--seed", type=cli.int_between(-2 ** 63, 2 ** 63 - 1), metavar="S",
                   help="pick the same sample again (default: a random seed, printed)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    p.add_argument("--include-skipped", action="store_true",
                   help="also include one group the CSV skips (e.g. a single contact), counted in --size")
    p.add_argument("--savepoint", metavar="FILE",
                   help=f"the merge's savepoint journal, read only, to group as merge_contacts.py does with it: "
                        f"a contact an earlier merge made primary (its external_ref now a user_ reference) is its "
                        f"group's primary (default: {MERGE_SAVEPOINT}, used if it exists; for a --sandbox "
                        f"rehearsal give {SANDBOX_MERGE_SAVEPOINT})")
    cli.add_json_option(p)
    return p


# --------------------------------------------------------------------------- selection
@dataclass
class Selection:
    merge_sets: list[MergeSet]
    skipped: SkippedGroup | None
    total: int            # contacts (rows) in the sample
    tickets: int          # the selection's ticket cost (unknown counts weighted high)


def set_costs(merge_sets: list[MergeSet]) -> dict[int, int]:
    """How little each set is worth rehearsing with (lower is better), from its duplicates'
    TICKET_COUNT: the tickets a rehearsal would move, so it stays quick, except that a set
    whose duplicates own nothing costs more than any set that moves something (a rehearsal
    that moves nothing proves little).

    The primary's own tickets do not move, so its count is ignored. A duplicate without
    a TICKET_COUNT counts as one more than the largest count in the file (unknown is
    assumed big); a set owning nothing as two more. When no row has a count at all, every
    set costs the same.
    """
    known = [r.ticket_count for ms in merge_sets for r in ms.rows if r.ticket_count is not None]
    unknown = (max(known) + 1) if known else 0
    costs = {}
    for ms in merge_sets:
        tickets = sum(unknown if d.ticket_count is None else d.ticket_count for d in ms.duplicates)
        costs[id(ms)] = tickets if tickets or not known else unknown + 1
    return costs


def _best_by_total(merge_sets: list[MergeSet], costs: dict[int, int], limit: int) -> list:
    """0/1 knapsack over set sizes: best[t] = (cost, chain of chosen indexes) or None.

    For each reachable total t <= limit, the cheapest combination reaching it; the first
    one found wins ties, so the callers' shuffle decides among equals.
    """
    best: list = [None] * (limit + 1)
    best[0] = (0, None)
    reach = 0
    for index, ms in enumerate(merge_sets):
        size, cost = len(ms.rows), costs[id(ms)]
        if size > limit:
            continue
        reach = min(limit, reach + size)
        for t in range(reach, size - 1, -1):
            prev = best[t - size]
            if prev is None:
                continue
            candidate = prev[0] + cost
            current = best[t]
            if current is None or candidate < current[0]:
                best[t] = (candidate, (index, prev[1]))
    return best


def _unchain(chain) -> list[int]:
    out = []
    while chain is not None:
        out.append(chain[0])
        chain = chain[1]
    return out


def select(merge_sets: list[MergeSet], skipped: list[SkippedGroup], size: int, rng: random.Random,
           include_skipped: bool = False) -> Selection:
    """Whole merge sets (and at most one skipped group) adding up to `size` or the most below it."""
    if not merge_sets:
        raise UsageError("no merge set in the CSV: every email group is skipped, so there is nothing to rehearse")
    smallest = min(len(ms.rows) for ms in merge_sets)
    order = list(merge_sets)
    rng.shuffle(order)
    costs = set_costs(order)
    candidates: list[SkippedGroup | None] = [None]
    if include_skipped:
        if not skipped:
            raise UsageError("--include-skipped: the CSV has no skipped group to include")
        candidates = list(skipped)
        rng.shuffle(candidates)
        smallest_group = min(len(g.rows) for g in candidates)
        if size < smallest + smallest_group:
            raise UsageError(f"--size {size} is too small for one merge set ({smallest} contacts at least) "
                             f"plus one skipped group ({smallest_group} at least)")
    elif size < smallest:
        raise UsageError(f"--size {size} is smaller than the smallest merge set ({smallest} contacts)")
    total_rows = sum(len(ms.rows) for ms in order)
    limit = min(size - (0 if candidates[0] is None else min(len(g.rows) for g in candidates)), total_rows)
    best = _best_by_total(order, costs, limit)
    choice = None  # (total, cost, chain, group)
    for group in candidates:
        extra = 0 if group is None else len(group.rows)
        room = min(size - extra, limit)
        reached = next((t for t in range(room, 0, -1) if best[t] is not None), None)
        if reached is None:
            continue
        total, cost = reached + extra, best[reached][0]
        if choice is None or (total, -cost) > (choice[0], -choice[1]):
            choice = (total, cost, best[reached][1], group)
    if choice is None:  # only possible with --include-skipped: every group leaves too little room
        raise UsageError(f"--size {size} leaves no room for a merge set next to any skipped group")
    total, cost, chain, group = choice
    chosen = {id(order[i]) for i in _unchain(chain)}
    return Selection([ms for ms in merge_sets if id(ms) in chosen], group, total, cost)


# --------------------------------------------------------------------------- output
def sample_bytes(contacts: ContactsFile, rows: list[ContactRow]) -> bytes:
    """The header and `rows` in file order, each exactly as in the input."""
    ordered = sorted(rows, key=lambda r: r.line)
    parts = [contacts.preamble, contacts.header_raw]
    for i, row in enumerate(ordered):
        raw = row.raw
        if i < len(ordered) - 1 and not raw.endswith(("\n", "\r")):
            raw += contacts.newline  # only the input's last row can lack a terminator
        parts.append(raw)
    return (codecs.BOM_UTF8 if contacts.bom else b"") + "".join(parts).encode("utf-8")


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_paths(args) -> None:
    if not os.path.exists(args.input):
        raise UsageError(f"contacts CSV not found: {args.input}")
    if _same_file(args.input, args.output):
        raise UsageError(f"--output {args.output} is the input file: choose another name for the sample")
    if os.path.isdir(args.output):
        raise UsageError(f"--output {args.output} is a folder: give a file name")
    if os.path.lexists(args.output) and not args.force:
        raise UsageError(f"{args.output} already exists: pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise UsageError(f"the folder for --output does not exist: {folder}")


def _tickets(ms: MergeSet) -> str:
    counts = [d.ticket_count for d in ms.duplicates]
    if None in counts:
        return "ticket count unknown"
    return plural(sum(counts), "ticket")


def main(argv=None) -> int:
    """Write the sample; 0 written, 2 bad usage or input (one `error:` line on stderr)."""
    return cli.run_script(_main, argv, script="create_test_sample.py", kind="sample")


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    _check_paths(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    try:
        contacts = read_contacts(args.input)
    except ValueError as exc:  # a value the reader did not expect (e.g. a TICKET_COUNT of '²')
        raise UsageError(f"{args.input}: unusable value in the CSV ({exc})") from None
    merge_sets, skipped = group_contacts(contacts.rows, _earlier(args))
    merge_sets, left_out = _not_settled(merge_sets, args.savepoint or MERGE_SAVEPOINT)
    if left_out and not merge_sets:
        raise UsageError(f"every merge set of the CSV was skipped by the live checks, merged or restored already "
                         f"(savepoint {args.savepoint or MERGE_SAVEPOINT}): nothing left to rehearse with")
    picked = select(merge_sets, skipped, args.size, random.Random(seed), args.include_skipped)
    rows = [r for ms in picked.merge_sets for r in ms.rows] + (picked.skipped.rows if picked.skipped else [])
    data = sample_bytes(contacts, rows)
    if _same_file(args.input, args.output):  # re-check right before writing
        raise UsageError(f"--output {args.output} is the input file: choose another name for the sample")
    try:
        atomic_write_bytes(args.output, data)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {cli.describe_os_error(exc)}") from None
    _print_summary(args, seed, picked, len(merge_sets))
    if left_out:
        print(f"note: left out {plural(len(left_out), 'merge set')} the savepoint shows as skipped by the live checks, "
              f"merged or restored already (a rehearsal of them would prove nothing)")
    print("(chosen from the CSV and the savepoint: the live checks run against DevRev in the preview may still "
          "skip a set of the sample; the preview says which)")
    json_summary.record("sample", totals={"contacts": picked.total, "merge_sets": len(picked.merge_sets),
                                          "skipped_groups": 1 if picked.skipped else 0,
                                          "merge_sets_in_csv": len(merge_sets)},
                        reports={"sample_csv": os.path.abspath(args.output)}, seed=seed,
                        merge_sets=[ms.email for ms in picked.merge_sets])
    return ExitCode.OK


SETTLED = ("skipped", "merged", "moved_only", "restored")


def _not_settled(merge_sets: list[MergeSet], savepoint: str) -> tuple[list[MergeSet], list[MergeSet]]:
    """The merge sets a rehearsal can learn from, and those left out: the savepoint shows them
    skipped by the live checks (they would be skipped again), merged, or restored. The CSV alone
    cannot tell a set the live checks will skip; the savepoint can, for the sets a run tried."""
    saved = read_savepoint(savepoint) if os.path.isfile(savepoint) else None
    settled = {one.set_key for one in saved or [] if one.status in SETTLED}
    if not settled:
        return merge_sets, []
    keep = [ms for ms in merge_sets if set_key(ms) not in settled]
    return keep, [ms for ms in merge_sets if set_key(ms) in settled]


def _earlier(args) -> list[EarlierPrimary]:
    """The primaries earlier merges made, from --savepoint (or the merge's default one): none
    when it does not exist (a note on stderr when --savepoint named it)."""
    savepoint = args.savepoint or MERGE_SAVEPOINT
    if args.savepoint and not os.path.isfile(savepoint):
        print(f"note: no savepoint at {savepoint}: no earlier merge is known", file=sys.stderr)
    return earlier_primaries(savepoint)


def _print_summary(args, seed: int, picked: Selection, merge_set_count: int) -> None:
    print(f"seed: {seed}" + ("" if args.seed is not None else f" (pass --seed {seed} to pick this sample again)"))
    print(f"picked {plural(len(picked.merge_sets), 'merge set')}:")
    for ms in picked.merge_sets:
        print(f"  {ms.email} ({len(ms.rows)} contacts, {_tickets(ms)}"
              + (f"; {ms.primary_note}" if ms.primary_note else "") + ")")
    if picked.skipped:
        g = picked.skipped
        print(f"plus 1 skipped group: {g.email} ({plural(len(g.rows), 'contact')}, {g.reason})")
    if picked.total != args.size:
        if len(picked.merge_sets) == merge_set_count:
            print(f"note: the CSV's merge sets do not add up to {args.size} contacts; took every one of them "
                  f"({picked.total} contacts{' with the skipped group' if picked.skipped else ''})")
        else:
            print(f"note: no combination of whole merge sets adds up to exactly {args.size} contacts; "
                  f"took {picked.total}, the most below it")
    groups = plural(len(picked.merge_sets), "merge set")
    if picked.skipped:
        groups += " and 1 skipped group"
    print(f"sample: {picked.total} contacts in {groups} -> {args.output}")


if __name__ == "__main__":
    sys.exit(main())
