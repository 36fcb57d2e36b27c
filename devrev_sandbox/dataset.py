"""Builds emulator datasets with their contacts CSV: the demo, the tests and the benches.

One generator, so the demo under demo/, the end-to-end tests and bench/ all
exercise the same shapes: merge sets with tickets over several pages, tickets
reported by both contacts, conversations with dev users, comments with attachments,
sets with two duplicates, and a group for every reason the tool skips one. The demo
(build_demo) also has the 2026 shapes (`extras`): a duplicate's own contact page, with
notes and files, and email tickets naming contacts in a custom field.

    python -m devrev_sandbox.dataset --sets 12 --seed 7 --out-dir devrev_sandbox/demo

Seed format, besides workspaces and dev users: a rev user may carry `comments` (its contact
page) and `artifacts` (files on the contact); tickets take `comments`, `artifacts`,
`custom_fields` (lists of contact seed keys become ids), `subtype`, `custom_schema_fragments`;
conversations take `comments` and `custom_fields`. A comment is {body, by, visibility,
created_date, artifacts}; an artifact {number, name, type, size, or content_b64 / content_seed}.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any

from contacts.csv_reader import (
    DUPLICATE_PREFIX,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SKIP_NO_PRIMARY,
    SKIP_SEVERAL_PRIMARIES,
    SKIP_SINGLE_CONTACT,
    SKIP_UNKNOWN_REFERENCE,
)

from .state import REGION, iso, stable_suffix

CSV_COLUMNS = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
# The demo `--sandbox` runs on (12 sets, seed 7); package data, so an installed command finds it too.
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
DEMO_SEED = os.path.join(DEMO_DIR, "demo_seed.json")
DEMO_CSV = os.path.join(DEMO_DIR, "demo_contacts.csv")
BASE_TIME = 1704067200.0  # 2024-01-01T00:00:00Z
EMAIL_MEMBERS_FIELD = "app_email_integration__members"   # S10: email tickets name their contacts here
FIRST_NAMES = ["ana", "ben", "chen", "dara", "emil", "fatou", "gus", "hana", "ivo", "jun", "kai", "lea",
               "mo", "nia", "omar", "pia", "quin", "rae", "sami", "tove", "uma", "vik", "wen", "xia", "yara", "zed"]


def csv_row(*values) -> dict:
    """A contacts CSV row from its cells, in CSV_COLUMNS order."""
    return dict(zip(CSV_COLUMNS, values, strict=True))


@dataclass
class Dataset:
    seed: dict
    rows: list[dict]
    merge_sets: list[dict] = field(default_factory=list)     # {"email", "primary", "duplicates": [keys]}
    skipped: dict[str, str] = field(default_factory=dict)     # email -> expected reason code

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def write(self, seed_path: str, csv_path: str) -> None:
        with open(seed_path, "w", encoding="utf-8") as fh:
            json.dump(self.seed, fh, indent=1, sort_keys=True)
            fh.write("\n")
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(self.csv_text())


class _Builder:
    def __init__(self, seed: int, devo: str):
        self.rng = random.Random(seed)
        self.devo = devo
        self.seed: dict[str, Any] = {"devo": devo, "workspaces": [], "dev_users": [], "rev_users": [], "tickets": [],
                     "conversations": []}
        self.rows: list[dict] = []
        self.clock = BASE_TIME
        self.artifact_number = 5000

    def stamp(self) -> str:
        self.clock += self.rng.randint(60, 86400) + self.rng.random()
        return iso(self.clock)

    def workspace(self, key: str, name: str) -> str:
        self.seed["workspaces"].append({"key": key, "display_name": name})
        return key

    def dev_user(self, key: str) -> str:
        self.seed["dev_users"].append({"key": key, "display_name": key, "email": f"{key}@support.example"})
        return key

    def contact(self, key: str, email: str, workspace: str, *, duplicate: bool, **extra) -> dict:
        suffix = stable_suffix("revu:" + key)
        user = {"key": key, "suffix": suffix, "email": email, "workspace": workspace,
                "display_name": email if duplicate else key.split("-")[0].title(),
                "created_date": self.stamp(), "modified_date": self.stamp()}
        user["external_ref"] = DUPLICATE_PREFIX + stable_suffix('ref:' + key, 22) if duplicate else f"REVU-{suffix}"
        if not duplicate:
            user["full_name"] = key.split("-")[0].title() + " Example"
        user.update(extra)
        self.seed["rev_users"].append(user)
        return user

    def don(self, user: dict) -> str:
        return f"don:identity:{REGION}:devo/{self.devo}:revu/{user['suffix']}"

    def row(self, user: dict, *, email: str | None = None, external_ref: str | None = None,
            ticket_count: int | str = "", use_don: bool = False, rev_user_id: str | None = None) -> None:
        self.rows.append(csv_row(
            rev_user_id or (self.don(user) if use_don else f"REVU-{user['suffix']}"), email or user["email"],
            external_ref or user["external_ref"], user.get("display_name", ""), user.get("full_name", ""),
            ticket_count, user["created_date"], user["modified_date"]))

    def attachments(self, rate: float, sizes: tuple[int, int]) -> list[dict]:
        out: list[dict] = []
        while self.rng.random() < rate and len(out) < 3:
            self.artifact_number += 1
            kind = self.rng.choice([("screenshot.png", "image/png"), ("invoice.pdf", "application/pdf"),
                                    ("log.txt", "text/plain")])
            out.append({"number": self.artifact_number, "name": f"{self.artifact_number % 97}-{kind[0]}",
                        "type": kind[1], "size": self.rng.randint(*sizes)})
        return out

    def comments(self, authors: list[str], count: int, rate: float, sizes: tuple[int, int]) -> list[dict]:
        return [{"by": self.rng.choice(authors),
                 "body": f"Message {i + 1}: " f"{self.rng.choice(['help', 'thanks', 'update', 'details'])}",
                 "created_date": self.stamp(), "artifacts": self.attachments(rate, sizes),
                 "visibility": self.rng.choice(["external", "external", "internal"])}
                for i in range(count)]


def _add_skipped_groups(b: _Builder, acme: str, globex: str, agents: list[str]) -> dict[str, str]:
    """One group per reason the tool skips one (CSV and live checks); email -> reason code."""
    skipped_reasons = {}

    def group(reason: str, name: str) -> str:
        skipped_reasons[f"{name}@skipped.example"] = reason
        return f"{name}@skipped.example"

    email = group(SKIP_SINGLE_CONTACT, "solo")
    b.row(b.contact("solo-primary", email, acme, duplicate=False))
    email = group(SKIP_NO_PRIMARY, "orphans")
    b.row(b.contact("orphans-dup0", email, acme, duplicate=True))
    b.row(b.contact("orphans-dup1", email, acme, duplicate=True))
    email = group(SKIP_SEVERAL_PRIMARIES, "twins")
    b.row(b.contact("twins-primary", email, acme, duplicate=False))
    b.row(b.contact("twins-primary2", email, acme, duplicate=False))
    email = group(SKIP_UNKNOWN_REFERENCE, "oddref")
    b.row(b.contact("oddref-primary", email, acme, duplicate=False))
    b.row(b.contact("oddref-other", email, acme, duplicate=True, external_ref=email))
    # groups the CSV calls merge sets, but live DevRev disagrees
    email = group("email_mismatch", "moved")
    b.row(b.contact("moved-primary", email, acme, duplicate=False))
    dup = b.contact("moved-dup0", "moved-elsewhere@skipped.example", acme, duplicate=True)
    b.row(dup, email=email)
    email = group("contact_inactive", "sleepy")
    b.row(b.contact("sleepy-primary", email, acme, duplicate=False))
    b.row(b.contact("sleepy-dup0", email, acme, duplicate=True, state="deactivated"))
    email = group("contact_not_found", "ghost")
    b.row(b.contact("ghost-primary", email, acme, duplicate=False))
    b.rows.append(csv_row(f"REVU-{stable_suffix('never-created')}", email,
                          DUPLICATE_PREFIX + stable_suffix('ghost', 22), email, "", "2", "", ""))
    email = group("cross_workspace", "split")
    b.row(b.contact("split-primary", email, acme, duplicate=False))
    b.row(b.contact("split-dup0", email, globex, duplicate=True))
    email = group("external_ref_mismatch", "renamed")
    b.row(b.contact("renamed-primary", email, acme, duplicate=False))
    dup = b.contact("renamed-dup0", email, acme, duplicate=True)
    b.row(dup, external_ref=DUPLICATE_PREFIX + stable_suffix('renamed-old', 22))
    for key in ("sleepy-dup0", "split-dup0", "moved-dup0", "renamed-dup0"):
        b.seed["tickets"].append({"key": f"{key}-t0", "title": "must stay", "reported_by": [key],
                                  "owned_by": [agents[0]], "workspace": acme, "created_by": key,
                                  "created_date": b.stamp()})
    return skipped_reasons


def build_dataset(sets: int = 12, *, seed: int = 0, tickets: tuple[int, int] = (0, 5),
                  conversations: tuple[int, int] = (0, 3), comments: tuple[int, int] = (0, 3),
                  attachment_rate: float = 0.3, attachment_size: tuple[int, int] = (200, 40_000),
                  big_set_tickets: int = 0, two_duplicate_sets: int = 1, skipped: bool = True,
                  extras: bool = False, devo: str = "DEVO1x") -> Dataset:
    """A dataset of `sets` merge sets (plus, if `skipped`, one group per skip reason).

    big_set_tickets: give the first set that many tickets (several pages).
    two_duplicate_sets: how many sets have two `user_` duplicates.
    extras: the first set's first duplicate also has a contact page (two agents' notes, one
    with a file, and a file on the contact) and two email tickets name it in a custom field
    (_add_contact_page_and_email_tickets); the demo has them, other datasets do not.
    """
    b = _Builder(seed, devo)
    acme, globex = b.workspace("acme", "Acme Inc"), b.workspace("globex", "Globex Corp")
    agents = [b.dev_user(f"agent{i}") for i in range(1, 4)]
    merge_sets = []

    for n in range(sets):
        name = f"{FIRST_NAMES[n % len(FIRST_NAMES)]}{n // len(FIRST_NAMES) or ''}"
        email = f"{name}@customer{n % 7}.example"
        workspace = acme if n % 3 else globex
        primary = b.contact(f"{name}-primary", email, workspace, duplicate=False)
        dups = [b.contact(f"{name}-dup{d}", email, workspace, duplicate=True)
                for d in range(1 + (n < two_duplicate_sets))]
        b.row(primary, use_don=(n % 4 == 1))
        merge_sets.append({"email": email, "primary": primary["key"], "duplicates": [d["key"] for d in dups]})
        for d_index, dup in enumerate(dups):
            count = big_set_tickets if (n == 0 and d_index == 0 and big_set_tickets) else b.rng.randint(*tickets)
            for t in range(count):
                reporters = [dup["key"]]
                if b.rng.random() < 0.25:
                    reporters = b.rng.sample([dup["key"], primary["key"]], 2)  # both contacts report it
                b.seed["tickets"].append({
                    "key": f"{dup['key']}-t{t}", "title": f"{name} issue {t + 1}", "reported_by": reporters,
                    "owned_by": [b.rng.choice(agents)], "workspace": workspace, "created_by": dup["key"],
                    "created_date": b.stamp(),
                    "comments": b.comments([dup["key"], b.rng.choice(agents)], b.rng.randint(*comments),
                                           attachment_rate, attachment_size),
                    "artifacts": b.attachments(attachment_rate / 3, attachment_size)})
            for c in range(b.rng.randint(*conversations)):
                members = [dup["key"]] + b.rng.sample(agents, b.rng.randint(1, 2))
                b.seed["conversations"].append({
                    "key": f"{dup['key']}-c{c}", "title": f"Chat with {name}", "members": members,
                    "owned_by": [members[1]], "created_by": dup["key"], "created_date": b.stamp(),
                    "comments": b.comments([dup["key"], members[1]], b.rng.randint(*comments),
                                           attachment_rate, attachment_size)})
            # the CSV's TICKET_COUNT is a warehouse figure: sometimes stale on purpose
            b.row(dup, ticket_count=count + (1 if n % 5 == 4 else 0), use_don=(n % 4 == 2))
        # the primary's own ticket, which must not change
        b.seed["tickets"].append({"key": f"{primary['key']}-own", "title": f"{name} own ticket",
                                  "reported_by": [primary["key"]], "owned_by": [agents[0]],
                                  "workspace": workspace, "created_by": primary["key"], "created_date": b.stamp()})

    skipped_reasons = _add_skipped_groups(b, acme, globex, agents) if skipped else {}
    if extras and merge_sets:
        _add_contact_page_and_email_tickets(b, merge_sets[0], agents)
        _add_field_differences(b, merge_sets[:2])
    return Dataset(b.seed, b.rows, merge_sets, skipped_reasons)


def _add_field_differences(b: _Builder, merge_sets: list[dict]) -> None:
    """Contacts of the first sets that differ in a few fields (issue 27), so a rehearsal shows
    the preview's differences and can try --fill-blanks: a tag on each contact, a phone number
    and a description on the duplicate only, a longer full name, and custom fields (one a
    consent flag, which is never widened). Attributes only: no object's number or date moves."""
    b.seed.setdefault("tags", []).extend([{"name": "vip"}, {"name": "imported"}])
    users = {u["key"]: u for u in b.seed["rev_users"]}
    first = merge_sets[0]
    users[first["primary"]]["tags"] = ["vip"]
    dup = users[first["duplicates"][0]]
    dup.update(tags=["imported"], phone_numbers=["+14155550123"],
               description="Imported from the helpdesk; prefers email")
    if len(merge_sets) > 1:
        second = merge_sets[1]
        users[second["primary"]]["custom_fields"] = {"tnt__account_tier": None}
        dup = users[second["duplicates"][0]]
        dup.update(full_name=dup["key"].split("-")[0].title() + " Example-Longer",
                   custom_fields={"tnt__account_tier": "gold", "tnt__marketing_opt_out": True})


def build_demo() -> Dataset:
    """The demo under demo/ (what `python -m devrev_sandbox.dataset` writes by default)."""
    return build_dataset(12, seed=7, extras=True)


def _text_file(lines: list[str]) -> str:
    """A small text file's content_b64."""
    return base64.b64encode(("\n".join(lines) + "\n").encode("utf-8")).decode("ascii")


def _add_contact_page_and_email_tickets(b: _Builder, merge_set: dict, agents: list[str]) -> None:
    """The 2026 shapes on `merge_set`'s first duplicate, added after everything else so no
    other object's number or date moves: agents' notes on its own contact page (one with a
    file) and a file on the contact itself; an email ticket its primary reports that names
    the duplicate in EMAIL_MEMBERS_FIELD, and one the duplicate reports that names it there."""
    primary, dup_key = merge_set["primary"], merge_set["duplicates"][0]
    dup = next(u for u in b.seed["rev_users"] if u["key"] == dup_key)
    name = dup_key.split("-")[0].title()
    dup["comments"] = [
        {"by": agents[0], "visibility": "internal", "created_date": b.stamp(),
         "body": f"Call with {name}: wants invoices sent to the billing address; notes attached.",
         "artifacts": [{"number": 8001, "name": "call-notes.txt", "type": "text/plain", "content_b64": _text_file([
             f"Call notes: {name} ({dup['email']})",
             "- invoices go to the billing address from March on",
             "- prefers email to phone; reachable mornings",
             "- second account under the same address: ask before merging",
             "- follow-up: send the updated contract by Friday",
             "- escalation contact: their finance lead",
             "- next review: end of quarter"])}]},
        {"by": agents[1], "visibility": "internal", "created_date": b.stamp(),
         "body": f"{name} confirmed the new billing address by email.", "artifacts": []}]
    dup["artifacts"] = [{"number": 8002, "name": "contact-card.vcf", "type": "text/vcard", "content_b64": _text_file([
        "BEGIN:VCARD", "VERSION:4.0", f"FN:{name} Example", f"EMAIL:{dup['email']}",
        "NOTE:billing contact; imported from the email integration", "END:VCARD"])}]
    workspace = dup["workspace"]
    for key, reporter, members in ((f"{primary}-email", primary, [primary, dup_key]),
                                   (f"{dup_key}-email", dup_key, [dup_key])):
        b.seed["tickets"].append({
            "key": key, "title": f"{name}: email thread", "reported_by": [reporter], "owned_by": [agents[0]],
            "workspace": workspace, "created_by": reporter, "created_date": b.stamp(), "source_channel": "email",
            "subtype": "email", "custom_fields": {EMAIL_MEMBERS_FIELD: members}})
    for row in b.rows:   # the duplicate reports one ticket more: its TICKET_COUNT stays right
        if row["EXTERNAL_REF"] == dup["external_ref"] and str(row["TICKET_COUNT"]).isdigit():
            row["TICKET_COUNT"] = int(row["TICKET_COUNT"]) + 1


@dataclass
class Tenant:
    """A large contacts-only tenant (see build_contact_tenant)."""

    seed: dict                     # "rev_users" is a one-shot generator: load it once
    contacts: int
    merge_sets: list[dict]         # {"email", "primary": DON, "duplicates": [DONs]}
    skipped: dict[str, str]        # email -> the reason code contacts.csv_reader gives its group
    without_email: int


def build_contact_tenant(contacts: int = 100_000, merge_sets: int = 300, *, seed: int = 0,
                         devo: str = "DEVO1x") -> Tenant:
    """A tenant of `contacts` contacts (no tickets) hiding `merge_sets` merge sets, for the
    find_duplicates bench: every fifth set has two duplicates, a tenth as many groups
    without a primary and with two primaries, 1% of contacts without an email, the rest
    single contacts; group members sit at random places in the walk.

    Built lazily: the seed's rev users are a generator and the group layout is a dict of
    the few positions that belong to groups, so the builder itself needs no memory for
    the contacts (the emulator that loads them does).
    """
    rng = random.Random(seed)
    members: list[tuple[str, str]] = []   # (email, "primary" | "duplicate") per group member
    expected, skipped = [], {}
    for n in range(merge_sets):
        email = f"dup{n}@customer{n % 97}.example"
        members += [(email, "primary")] + [(email, "duplicate")] * (2 if n % 5 == 0 else 1)
        expected.append(email)
    for n in range(max(1, merge_sets // 10)):
        for reason, roles in ((SKIP_NO_PRIMARY, ("duplicate", "duplicate")),
                              (SKIP_SEVERAL_PRIMARIES, ("primary", "primary"))):
            email = f"{reason}{n}@skipped.example"
            skipped[email] = reason
            members += [(email, role) for role in roles]
    if len(members) > contacts:
        raise ValueError(f"{contacts} contacts cannot hold {len(members)} group members")
    layout = dict(zip(rng.sample(range(contacts), len(members)), members))
    sets: dict[str, dict] = {e: {"email": e, "primary": None, "duplicates": []} for e in expected}
    without_email = 0
    for i in range(contacts):
        email, role = layout.get(i, (None, "single"))
        don = f"don:identity:{REGION}:devo/{devo}:revu/T{i}"
        if email in sets:
            if role == "primary":
                sets[email]["primary"] = don
            else:
                sets[email]["duplicates"].append(don)
        without_email += role == "single" and i % 100 == 99

    def rev_users():
        for i in range(contacts):
            email, role = layout.get(i, (None, "single"))
            if role == "single":
                email = None if i % 100 == 99 else f"person{i}@org{i % 500}.example"
            ref = DUPLICATE_PREFIX + f"{i:022d}" if role == "duplicate" else f"REVU-T{i}"
            yield {"key": f"T{i}", "suffix": f"T{i}", "email": email, "workspace": f"w{i % 20}",
                   "external_ref": ref, "display_name": email or f"Contact {i}",
                   "created_date": iso(BASE_TIME + i * 60)}

    tenant_seed = {"devo": devo, "workspaces": [{"key": f"w{n}", "display_name": f"Workspace {n}"} for n in range(20)],
                   "rev_users": rev_users()}
    return Tenant(tenant_seed, contacts, list(sets.values()), skipped, without_email)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write an emulator seed and its contacts CSV.")
    parser.add_argument("--sets", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--big-set-tickets", type=int, default=0)
    parser.add_argument("--out-dir", default=DEMO_DIR)
    parser.add_argument("--name", default="demo", help="file prefix: <name>_seed.json, <name>_contacts.csv")
    parser.add_argument("--no-extras", action="store_true",
                        help="leave out the contact page and the email tickets (build_dataset's extras)")
    args = parser.parse_args(argv)
    if args.sets < 0:
        parser.error("--sets must be 0 or more")
    os.makedirs(args.out_dir, exist_ok=True)
    dataset = build_dataset(args.sets, seed=args.seed, big_set_tickets=args.big_set_tickets,
                            extras=not args.no_extras)
    seed_path = os.path.join(args.out_dir, f"{args.name}_seed.json")
    csv_path = os.path.join(args.out_dir, f"{args.name}_contacts.csv")
    dataset.write(seed_path, csv_path)
    print(f"wrote {seed_path} and {csv_path}: {len(dataset.merge_sets)} merge sets, "
          f"{len(dataset.skipped)} skipped groups, {len(dataset.rows)} contacts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
