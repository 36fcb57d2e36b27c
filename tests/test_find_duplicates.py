"""find_duplicates.py: the merge sets found in DevRev itself, grouped exactly as the merge
groups a CSV, written as a CSV the merge and the sampler take as they are.

End to end on the demo tenant (find, preview, merge, find again), then edge cases on
small emulators checked against DevRev's spec: look-alike and unusable emails, hostile
names, retired contacts, the review file, live ticket counts, both walk operations, and
the exit codes (1 DevRev failed mid-scan, 2 bad usage, 130 stopped; nothing written).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import signal
import stat

import pytest

import create_test_sample
import find_duplicates
import merge_contacts
from contacts import duplicate_finder
from contacts.csv_reader import ContactRow, group_contacts, read_contacts, row_problem, user_id_key
from devrev_sandbox.dataset import DEMO_CSV, DEMO_SEED, build_dataset
from devrev_sandbox.faults import Scripted
from devrev_sandbox.server import DevRevSandbox
from helpers import TEST_TOKEN
from runs import support

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_ids(merge_sets) -> set[tuple]:
    """Merge sets as (email key, primary id, duplicate ids): ids as DON or display id alike."""
    return {(m.key, user_id_key(m.primary.rev_user_id), frozenset(user_id_key(d.rev_user_id) for d in m.duplicates))
            for m in merge_sets}


def found_groups(path) -> tuple[list, list]:
    return group_contacts(read_contacts(str(path)).rows)


# --------------------------------------------------------------------------- the demo, end to end
def test_demo_tenant_find_then_preview_then_merge(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert find_duplicates.main(["--sandbox", "--output", "found.csv"]) == 0
    out = capsys.readouterr().out
    assert "merge sets: 15" in out and "Next: python3 merge_contacts.py --sandbox --csv found.csv --preview" in out
    assert stat.S_IMODE(os.stat("found.csv").st_mode) == 0o600

    # every merge set of the demo CSV whose contacts DevRev holds as the CSV says
    demo_sets, _ = found_groups(DEMO_CSV)
    tenant = DevRevSandbox(DEMO_SEED).dump()["rev_users"].values()   # not started: its state
    live = {user_id_key(u["id"]): u.get("email") for u in tenant}
    held = [m for m in demo_sets if all(live.get(user_id_key(r.rev_user_id)) == r.email for r in m.rows)]
    assert {m.email for m in demo_sets} - {m.email for m in held} == {"moved@skipped.example",
                                                                      "ghost@skipped.example"}
    found_sets, found_skipped = found_groups("found.csv")
    assert set_ids(found_sets) == set_ids(held)
    assert {g.email: g.reason for g in found_skipped} == {
        "orphans@skipped.example": "no_primary", "twins@skipped.example": "several_primaries",
        "oddref@skipped.example": "unknown_reference_format"}

    # the file feeds the sampler and the merge as it is
    assert create_test_sample.main(["--input", "found.csv", "--output", "sample.csv", "--size", "4",
                                    "--seed", "1"]) == 0
    assert merge_contacts.main(["--sandbox", "--csv", "found.csv", "--preview"]) == 0
    assert merge_contacts.main(["--sandbox", "--csv", "found.csv"]) == 0
    capsys.readouterr()
    report = json.load(open(sorted(glob.glob("reports/merge_report_*.json"))[-1], encoding="utf-8"))
    status = {s["email"]: (s["status"], s.get("reason")) for s in report["sets"]}
    assert status.pop("sleepy@skipped.example") == ("skipped", "contact_inactive")
    assert status.pop("split@skipped.example") == ("skipped", "cross_workspace")
    assert set(status.values()) == {("merged", None)} and len(status) == 13   # the 12 sets and renamed@
    assert {g["reason"] for g in report["skipped"]} == {"no_primary", "several_primaries",
                                                        "unknown_reference_format"}

    # found again after the merge: only the two sets the merge skipped on live checks
    assert find_duplicates.main(["--sandbox", "--output", "again.csv"]) == 0
    assert {m.email for m in found_groups("again.csv")[0]} == {"sleepy@skipped.example", "split@skipped.example"}


# --------------------------------------------------------------------------- edge cases
HOSTILE_NAME = '=HYPERLINK("http://evil.example","x")'


def tricky_seed() -> dict:
    def user(key, email, ref=None, ws="acme", **extra):
        return dict({"key": key, "email": email, "workspace": ws, "external_ref": ref}, **extra)
    users = [
        user("jane", "Jane@Acme.example", full_name=HOSTILE_NAME),
        user("jane-dup", "jane@acme.example ", "user_jane0", display_name="\x1b[31mjane\nline2"),
        user("jane-old", "jane@acme.example", "user_janeold", state="deleted"),        # merged away earlier
        user("jorg", "jörg@acme.example"), user("jorg-dup", "JÖRG@acme.example", "user_jorg0"),  # not ASCII case
        user("nomail", None),
        user("bad", "not-an-email"), user("bad-dup", "not-an-email", "user_bad0"),
        user("formula", "=cmd@evil.example"),
        user("orph1", "orphan@acme.example", "user_orph1"), user("orph2", "orphan@acme.example", "user_orph2"),
        user("twin1", "twin@acme.example"), user("twin2", "twin@acme.example", ws="globex"),
        user("odd1", "odd@acme.example"), user("odd2", "odd@acme.example", "odd@acme.example"),
        user("sam-eu", "sam@eu.globex.example", ws="globex"), user("sam", "sam@globex.example", ws="globex"),
        user("pat", "plee@initech.example", full_name="Pat Lee"),
        user("pat2", "pat.lee@initech.example", "user_pat2", full_name="pat  LEE"),
        user("bob", "bob@acme.example"),
    ]
    return {"workspaces": [{"key": "acme"}, {"key": "globex"}], "rev_users": users}


def expected_groups(sandbox) -> tuple[set, dict]:
    """What group_contacts makes of every usable live contact, groups of 2+ only."""
    rows = [ContactRow(0, u["id"], u["email"].strip(), u["external_ref"])
            for u in sandbox.dump()["rev_users"].values()
            if u.get("email", "").strip() and u["state"] != "deleted"
            and row_problem(u["id"], u["email"].strip(), u["external_ref"]) is None]
    sets, skipped = group_contacts(rows)
    return set_ids(sets), {g.key: g.reason for g in skipped if len(g.rows) > 1}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_RATE_LIMIT", "1000000")

    def point_at(sandbox):
        monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
        return sandbox
    return point_at


def test_groups_exactly_as_the_csv_grouping_and_writes_a_csv_the_merge_accepts(make_sandbox, env, capsys):
    sandbox = env(make_sandbox(tricky_seed(), page_cap=3))
    assert find_duplicates.main(["--output", "found.csv"]) == 0
    out = capsys.readouterr().out
    sets, skipped = found_groups("found.csv")
    want_sets, want_skipped = expected_groups(sandbox)
    assert set_ids(sets) == want_sets and len(want_sets) == 1            # jane, ASCII case folded
    assert {g.key: g.reason for g in skipped} == want_skipped == {
        "orphan@acme.example": "no_primary", "twin@acme.example": "several_primaries",
        "odd@acme.example": "unknown_reference_format"}
    for line in ("contacts scanned: 20 in 7 pages", "contacts without email: 1",
                 "contacts already merged away (not grouped): 1", "(EMAIL 3)", "groups found (2+ contacts "
                 "with one email): 4", "merge sets: 1 (1 duplicates)"):
        assert line in out, out
    text = open("found.csv", encoding="utf-8", newline="").read()
    assert text.startswith("REV_USER_ID,EMAIL,EXTERNAL_REF,DISPLAY_NAME,FULL_NAME,TICKET_COUNT,CREATED_AT,"
                           "UPDATED_AT,EXTERNAL_REFS\r\n")
    assert "'" + HOSTILE_NAME.replace('"', '""') in text and "\x1b" not in text and "line2" in text
    # reads only: the walk, and dev-users.self for the report's actor block
    assert sandbox.request_log and {e["endpoint"] for e in sandbox.api_calls()} == {"rev-users.list", "dev-users.self"}


def test_review_file_lists_look_alikes_and_unusable_contacts_never_in_the_csv(make_sandbox, env):
    env(make_sandbox(tricky_seed()))
    assert find_duplicates.main(["--output", "found.csv"]) == 0
    with open("found.csv.review.csv", encoding="utf-8", newline="") as fh:
        review = list(csv.DictReader(fh))
    clusters: dict[str, set] = {}
    for row in review:
        clusters.setdefault((row["REVIEW_GROUP"], row["REASON"]), set()).add(row["CONTACT_EMAIL"])
    assert sorted(clusters.values(), key=sorted) == sorted([
        {"sam@eu.globex.example", "sam@globex.example"}, {"plee@initech.example", "pat.lee@initech.example"},
        {"not-an-email"}, {"not-an-email"}, {"'=cmd@evil.example"}], key=sorted)   # formula-escaped
    reasons = {r["CONTACT_EMAIL"]: r["REASON"] for r in review}
    assert reasons["sam@globex.example"] == "same_local_part_same_site"
    assert reasons["plee@initech.example"] == "same_name_same_domain"
    assert reasons["not-an-email"] == "not_usable_in_csv"
    assert [r["OWN_EMAIL_GROUP"] for r in review if r["CONTACT_EMAIL"] == "sam@globex.example"] == ["single_contact"]
    with pytest.raises(Exception, match="no REV_USER_ID column"):
        read_contacts("found.csv.review.csv")      # the merge refuses the review file
    emails = {r.email for r in read_contacts("found.csv").rows}
    assert not emails & {"not-an-email", "=cmd@evil.example", "sam@globex.example", "plee@initech.example"}


def test_domain_spellings_and_odd_ids_group_exactly_as_the_csv_grouping(make_sandbox, make_client, tmp_path):
    """Whatever the email rule of contacts.csv_reader makes of an IDNA domain and its punycode
    spelling, the finder makes the same (it calls the same code); a DON the CSV's pattern
    does not know is written as the contact's REVU- display id."""
    sandbox = make_sandbox({"workspaces": [{"key": "acme"}], "rev_users": [
        {"key": "ida", "email": "ida@bücher.example", "workspace": "acme"},
        {"key": "ida-dup", "email": "ida@xn--bcher-kva.example", "workspace": "acme", "external_ref": "user_ida0"},
        {"key": "ida-dup2", "email": "IDA@BÜCHER.example", "workspace": "acme", "external_ref": "user_ida1"},
        {"key": "zoe", "email": "zoe@acme.example", "workspace": "acme"},
        {"key": "zoe-dup", "email": "zoe@acme.example", "workspace": "acme", "external_ref": "user_zoe0"}]})
    client = make_client(sandbox)
    zoe_dup = sandbox.key_id("zoe-dup")
    real_walk = client.walk_pages

    def odd_ids(*args, **kwargs):   # DevRev answering with a DON of a shape the CSV reader refuses
        for page in real_walk(*args, **kwargs):
            yield [dict(u, id=u["id"].replace("devo/", "devo/x_")) if u["id"] == zoe_dup else u for u in page]
    client.walk_pages = odd_ids
    found = duplicate_finder.find_duplicates(client, str(tmp_path))
    want_sets, want_skipped = expected_groups(sandbox)
    assert set_ids(found.merge_sets) == want_sets
    assert {g.key: g.reason for g in found.skipped} == want_skipped
    zoe = [m for m in found.merge_sets if m.email == "zoe@acme.example"][0]
    assert zoe.duplicates[0].rev_user_id == sandbox.dump()["rev_users"][zoe_dup]["display_id"]


def test_a_repeated_page_cursor_stops_the_scan_with_exit_1(make_sandbox, env, tmp_path):
    sandbox = env(make_sandbox(tricky_seed()))
    bob = {k: v for k, v in sandbox.dump()["rev_users"][sandbox.key_id("bob")].items() if not k.startswith("_")}
    sandbox.script("rev-users.list", Scripted(200, {"rev_users": [bob], "next_cursor": "c1"}),
                   Scripted(200, {"rev_users": [bob], "next_cursor": "c1"}))
    assert find_duplicates.main(["--output", "found.csv"]) == 1
    assert leftovers(tmp_path) == []


def test_ticket_counts_are_one_paged_count_per_contact_of_a_merge_set(make_sandbox, env):
    dataset = build_dataset(4, seed=3, tickets=(1, 4))
    sandbox = env(make_sandbox(dataset.seed, page_cap=2))
    assert find_duplicates.main(["--output", "found.csv", "--ticket-counts"]) == 0
    works = sandbox.dump()["works"].values()
    merge_sets, skipped = found_groups("found.csv")
    in_sets = [r for m in merge_sets for r in m.rows]
    for row in in_sets:
        assert row.ticket_count == sum(1 for w in works if w["type"] == "ticket"
                                       and row.rev_user_id in [u["id"] for u in w["reported_by"]])
    assert any(r.ticket_count for r in in_sets)
    assert all(r.ticket_count is None for g in skipped for r in g.rows)
    listed = {e["body"]["reported_by"][0] for e in sandbox.api_calls() if e["endpoint"] == "works.list"}
    assert listed == {r.rev_user_id for r in in_sets}


def test_without_ticket_counts_no_ticket_is_read(make_sandbox, env):
    sandbox = env(make_sandbox(build_dataset(2, seed=3).seed))
    assert find_duplicates.main(["--output", "found.csv"]) == 0
    assert {e["endpoint"] for e in sandbox.api_calls()} == {"rev-users.list", "dev-users.self"}
    assert all(r.ticket_count is None for r in read_contacts("found.csv").rows)


def test_scan_walk_finds_the_same_in_server_sized_pages(make_sandbox, make_client, tmp_path):
    sandbox = make_sandbox(tricky_seed(), scan_page_size=4)
    by_list = duplicate_finder.find_duplicates(make_client(sandbox), str(tmp_path))
    sandbox.clear_log()
    by_scan = duplicate_finder.find_duplicates(make_client(sandbox), str(tmp_path), endpoint="rev-users.scan")
    assert set_ids(by_scan.merge_sets) == set_ids(by_list.merge_sets)
    assert [g.reason for g in by_scan.skipped] == [g.reason for g in by_list.skipped]
    assert by_scan.review == by_list.review
    assert (by_scan.counts.scanned, by_list.counts.pages) == (by_list.counts.scanned, 1)
    calls = sandbox.api_calls()
    assert len(calls) == by_scan.counts.pages == math.ceil(20 / 4)
    assert all(e["endpoint"] == "rev-users.scan" and "limit" not in e["body"] for e in calls)
    assert os.listdir(tmp_path) == []     # the scratch index is gone


def test_a_contact_sent_twice_is_counted_once_and_not_grouped_with_itself(make_sandbox, make_client, tmp_path):
    sandbox = make_sandbox(tricky_seed())
    bob = {k: v for k, v in sandbox.dump()["rev_users"][sandbox.key_id("bob")].items() if not k.startswith("_")}
    sandbox.script("rev-users.list", Scripted(200, {"rev_users": [bob], "next_cursor": "c1"}),
                   Scripted(200, {"rev_users": [bob]}))
    found = duplicate_finder.find_duplicates(make_client(sandbox), str(tmp_path))
    assert found.counts.repeated == 1 and found.counts.scanned == 2
    assert found.merge_sets == [] and found.skipped == []


# --------------------------------------------------------------------------- exit codes
def leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n != "logs")


def test_devrev_failing_mid_scan_exits_1_and_writes_nothing(make_sandbox, env, tmp_path, capsys):
    sandbox = env(make_sandbox(tricky_seed(), page_cap=3))
    sandbox.script("rev-users.list", Scripted(200, {"rev_users": [], "next_cursor": "not-a-real-cursor"}))
    assert find_duplicates.main(["--output", "found.csv"]) == 1   # the next page is refused (400)
    err = capsys.readouterr().err
    assert "DevRev failed during the scan, nothing written" in err and "Traceback" not in err
    assert leftovers(tmp_path) == []


def test_ctrl_c_mid_scan_exits_130_and_writes_nothing(make_sandbox, env, tmp_path):
    def interrupt(sandbox, entry):
        if len(sandbox.api_calls()) == 2:
            os.kill(os.getpid(), signal.SIGINT)
    env(make_sandbox(tricky_seed(), page_cap=3, on_request=interrupt))
    assert find_duplicates.main(["--output", "found.csv"]) == 130
    assert leftovers(tmp_path) == []


def test_an_existing_output_needs_force(make_sandbox, env, tmp_path, capsys):
    sandbox = env(make_sandbox(tricky_seed()))
    (tmp_path / "found.csv").write_text("keep me")
    assert find_duplicates.main(["--output", "found.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: found.csv already exists: pass --force") and err.count("\n") == 1
    assert sandbox.request_log == [] and (tmp_path / "found.csv").read_text() == "keep me"
    (tmp_path / "found.csv").unlink()
    (tmp_path / "found.csv.review.csv").write_text("keep me too")
    assert find_duplicates.main(["--output", "found.csv"]) == 2 and sandbox.request_log == []
    assert find_duplicates.main(["--output", "found.csv", "--force"]) == 0
    assert read_contacts("found.csv").rows and "REVIEW_GROUP" in (tmp_path / "found.csv.review.csv").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--output"], "expected one argument"), ([], "--output"),
    (["--output", "x.csv", "--rate-limit", "nan"], "finite"),
])
def test_bad_usage_is_one_line_and_exit_2(argv, words, capsys):
    assert find_duplicates.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_a_rejected_token_is_exit_2_in_one_line(make_sandbox, env, monkeypatch, tmp_path, capsys):
    env(make_sandbox(tricky_seed()))
    monkeypatch.setenv("DEVREV_API_TOKEN", "wrong-token-of-a-plausible-length")
    assert find_duplicates.main(["--output", "found.csv"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("error: ") and "DevRev rejected the token" in lines[-1]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("output, words", [("", "is not a file name"), ("no-such-folder/found.csv",
                                                                          "folder for --output does not exist")])
def test_an_output_without_a_usable_name_or_folder_is_refused_before_any_call(output, words, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert find_duplicates.main(["--sandbox", "--output", output]) == 2
    assert words in capsys.readouterr().err
    assert os.listdir(tmp_path) == []      # no stray review file, no folder made, no emulator state


def test_the_run_writes_the_html_report_page_with_every_value_escaped(tmp_path, monkeypatch, capsys):
    from test_html_report import assert_self_contained_and_inert, parse, table, text_of
    monkeypatch.chdir(tmp_path)
    hostile = "<img src=x onerror=alert(1)>.csv"     # the header shows --output
    assert find_duplicates.main(["--sandbox", "--output", hostile]) == 0
    (json_path,) = glob.glob("reports/find_*.json")
    report = json.load(open(json_path, encoding="utf-8"))
    assert capsys.readouterr().out.rstrip().endswith(f"Report: {json_path[:-5]}.html")
    assert report["totals"]["merge_sets"] == 15 and report["output"] == str(tmp_path / hostile)
    raw = open(json_path[:-5] + ".html", encoding="utf-8").read()
    assert hostile not in raw and "&lt;img src=x onerror=alert(1)&gt;.csv" in raw
    doc = parse(json_path[:-5] + ".html")
    assert_self_contained_and_inert(doc)
    assert hostile in text_of(doc.find(".//body"))
    _, shown = table(doc, "sets")
    assert [r["email"] for r in shown] == [r["email"] for r in report["sets"]]
    assert [r["status"] for r in shown].count("merge set") == 15
    assert {r["_class"] for r in shown if r["status"] == "skipped"} == {"skip"}


def test_a_sandbox_scan_is_refused_while_another_run_holds_the_sandbox(tmp_path, monkeypatch, capsys):

    monkeypatch.chdir(tmp_path)
    with support.sandbox_held(support.RunTarget(sandbox=True)):
        assert find_duplicates.main(["--sandbox", "--output", "found.csv"]) == 2
    assert "another run is using the sandbox" in capsys.readouterr().err
    assert not os.path.exists("found.csv")
