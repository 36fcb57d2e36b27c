"""create_test_sample.py: whole merge sets, byte-exact rows, safe output, and a sample merge_contacts.py accepts."""
from __future__ import annotations

import codecs
import glob
import itertools
import json
import os
import random
import re
import stat
import subprocess
import sys

import pytest

import create_test_sample
import merge_contacts
from contacts.csv_reader import group_contacts, read_contacts
from devrev_sandbox.dataset import build_dataset
from helpers import ROOT, TEST_TOKEN

HEADER = "REV_USER_ID,EMAIL,EXTERNAL_REF,DISPLAY_NAME,TICKET_COUNT"
_ids = itertools.count(1)


def _id() -> str:
    return f"REVU-id{next(_ids)}"


def merge_set(email: str, dup_tickets: list, nl: str = "\n") -> list[str]:
    """One merge set's records: a primary plus one duplicate per entry of dup_tickets ("" = unknown)."""
    primary = _id()
    records = [f"{primary},{email},{primary},Primary {email.split('@')[0]},{nl}"]
    records += [f"{_id()},{email},user_{email.split('@')[0]}{i},{email},{count}{nl}"
                for i, count in enumerate(dup_tickets)]
    return records


def write_csv(tmp_path, records: list[str], name: str = "contacts.csv", header: str = HEADER,
              nl: str = "\n", bom: bool = False) -> str:
    path = tmp_path / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + (header + nl + "".join(records)).encode("utf-8"))
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = create_test_sample.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def sample_groups(path: str) -> tuple[dict, dict]:
    """email -> rows of the sample's merge sets, email -> rows of its skipped groups."""
    merge_sets, skipped = group_contacts(read_contacts(path).rows)
    return ({m.email: [r.raw for r in m.rows] for m in merge_sets},
            {g.email: [r.raw for r in g.rows] for g in skipped})


def input_groups(path: str) -> dict:
    merge_sets, skipped = group_contacts(read_contacts(path).rows)
    return {g.email: sorted(r.raw for r in g.rows) for g in [*merge_sets, *skipped]}


# --------------------------------------------------------------------------- size
def test_exact_size_takes_whole_sets(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [1]) + merge_set("b@x.example", [1, 1])
                    + merge_set("c@x.example", [1]) + merge_set("d@x.example", [1, 1]))
    out_path = tmp_path / "test_contacts.csv"
    code, out, err = run(capsys, "--input", src, "--output", out_path, "--size", 5, "--seed", 1)
    assert code == 0, err
    sets, skipped = sample_groups(str(out_path))
    assert sum(len(rows) for rows in sets.values()) == 5 and len(sets) == 2 and not skipped
    assert sorted(len(rows) for rows in sets.values()) == [2, 3]
    assert f"sample: 5 contacts in 2 merge sets -> {out_path}" in out
    assert "note:" not in out
    for email in sets:
        assert email in out
    assert stat.S_IMODE(os.stat(out_path).st_mode) == 0o600  # customer data


def test_no_exact_combination_takes_largest_total_below_and_says_so(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0, 0]) + merge_set("b@x.example", [0, 0]))
    out_path = tmp_path / "s.csv"
    code, out, err = run(capsys, "--input", src, "--output", out_path, "--size", 4, "--seed", 7)
    assert code == 0, err
    sets, _ = sample_groups(str(out_path))
    assert len(sets) == 1 and len(next(iter(sets.values()))) == 3
    assert "no combination of whole merge sets adds up to exactly 4 contacts; took 3" in out
    assert "sample: 3 contacts in 1 merge set -> " in out


def test_mixed_sizes_without_exact_hit(tmp_path, capsys):
    # sets of 3, 3 and 5 contacts: 7 is unreachable, 6 (3 + 3) is the most below it
    src = write_csv(tmp_path, merge_set("a@x.example", [0, 0]) + merge_set("b@x.example", [0, 0])
                    + merge_set("c@x.example", [0, 0, 0, 0]))
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 7, "--seed", 2)
    assert code == 0
    assert sorted(sample_groups(str(tmp_path / "s.csv"))[0]) == ["a@x.example", "b@x.example"]
    assert "took 6" in out and "sample: 6 contacts in 2 merge sets" in out


def test_size_above_every_set_takes_them_all(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]) + merge_set("b@x.example", [0]))
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 50, "--seed", 2)
    assert code == 0 and "sample: 4 contacts in 2 merge sets" in out and "note:" in out
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "contacts.csv").read_bytes()


def test_size_below_smallest_set_is_an_error(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0, 0]) + merge_set("b@x.example", [0, 0, 0]))
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 2)
    assert_usage_error(code, err, "smallest merge set", "3")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("size", ["0", "-1", "-7", "abc", "2.5", ""])
def test_bad_size_is_an_error(tmp_path, capsys, size):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]))
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", f"--size={size}")
    assert_usage_error(code, err, "--size")
    assert not (tmp_path / "s.csv").exists()


def test_missing_arguments_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "--input", tmp_path / "x.csv", "--size", 4)
    assert_usage_error(code, err, "--output")


# --------------------------------------------------------------------------- input
def test_missing_input_is_an_error(tmp_path, capsys):
    code, _, err = run(capsys, "--input", tmp_path / "nope.csv", "--output", tmp_path / "s.csv", "--size", 4)
    assert_usage_error(code, err, "not found", "nope.csv")
    assert not (tmp_path / "s.csv").exists()


def test_csv_without_merge_sets_is_an_error(tmp_path, capsys):
    solo, p1, p2, d1, d2 = _id(), _id(), _id(), _id(), _id()
    src = write_csv(tmp_path, [f"{solo},solo@x.example,{solo},Solo,\n",
                               f"{p1},twins@x.example,{p1},A,\n", f"{p2},twins@x.example,{p2},B,\n",
                               f"{d1},orph@x.example,user_1,C,0\n", f"{d2},orph@x.example,user_2,D,0\n"])
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 4)
    assert_usage_error(code, err, "no merge set")
    assert not (tmp_path / "s.csv").exists()


def test_malformed_csv_is_one_line(tmp_path, capsys):
    src = write_csv(tmp_path, ["REVU-a,a@x.example\n"])
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 4)
    assert_usage_error(code, err, "line 2")


# --------------------------------------------------------------------------- output safety
@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink", "hardlink"])
def test_refuses_to_overwrite_the_input(tmp_path, capsys, monkeypatch, spelling):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]) + merge_set("b@x.example", [0]))
    before = open(src, "rb").read()
    monkeypatch.chdir(tmp_path)
    output = {"same": src, "dot-slash": "./contacts.csv", "symlink": "link.csv", "hardlink": "hard.csv"}[spelling]
    if spelling == "symlink":
        os.symlink(src, tmp_path / "link.csv")
    if spelling == "hardlink":
        os.link(src, tmp_path / "hard.csv")
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "--input", "contacts.csv", "--output", output, "--size", 2, *extra)
        assert_usage_error(code, err, "input file")
        assert open(src, "rb").read() == before


def test_refuses_existing_output_without_force(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]) + merge_set("b@x.example", [0, 0]))
    out_path = tmp_path / "s.csv"
    out_path.write_bytes(b"keep me")
    code, _, err = run(capsys, "--input", src, "--output", out_path, "--size", 2, "--seed", 1)
    assert_usage_error(code, err, "already exists", "--force")
    assert out_path.read_bytes() == b"keep me"
    code, out, err = run(capsys, "--input", src, "--output", out_path, "--size", 2, "--seed", 1, "--force")
    assert code == 0, err
    assert list(sample_groups(str(out_path))[0]) == ["a@x.example"]
    assert stat.S_IMODE(os.stat(out_path).st_mode) == 0o600
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_output_folder_must_exist(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]))
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "no" / "s.csv", "--size", 2)
    assert_usage_error(code, err, "does not exist")


# --------------------------------------------------------------------------- randomness
def _many_equal_sets(tmp_path) -> str:
    return write_csv(tmp_path, [r for i in range(12) for r in merge_set(f"u{i}@x.example", [2])])


def test_same_seed_same_bytes_different_seeds_differ(tmp_path, capsys):
    src = _many_equal_sets(tmp_path)
    samples = {}
    for seed in range(8):
        for attempt in ("a", "b"):
            path = tmp_path / f"s{seed}{attempt}.csv"
            code, out, _ = run(capsys, "--input", src, "--output", path, "--size", 4, "--seed", seed)
            assert code == 0 and f"seed: {seed}" in out
        assert (tmp_path / f"s{seed}a.csv").read_bytes() == (tmp_path / f"s{seed}b.csv").read_bytes()
        samples[seed] = (tmp_path / f"s{seed}a.csv").read_bytes()
    assert len(set(samples.values())) > 1


def test_without_seed_prints_it_and_it_reproduces(tmp_path, capsys):
    src = _many_equal_sets(tmp_path)
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "first.csv", "--size", 6)
    assert code == 0
    seed = int(re.search(r"^seed: (\d+)", out, re.M).group(1))
    code, out2, _ = run(capsys, "--input", src, "--output", tmp_path / "again.csv", "--size", 6, "--seed", seed)
    assert code == 0
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "first.csv").read_bytes()
    emails = lambda text: re.findall(r"^  (\S+@\S+) ", text, re.M)  # noqa: E731
    assert emails(out) == emails(out2) and len(emails(out)) == 3


# --------------------------------------------------------------------------- preferences
def test_prefers_sets_with_few_tickets_but_at_least_one(tmp_path, capsys):
    records = (merge_set("busy@x.example", [40]) + merge_set("calm@x.example", [0])
               + merge_set("heavy@x.example", [25]) + merge_set("quiet@x.example", [1])
               + merge_set("unknown@x.example", [""]) + merge_set("mid@x.example", [3]))
    src = write_csv(tmp_path, records)
    for seed in range(6):
        path = tmp_path / f"s{seed}.csv"
        code, out, _ = run(capsys, "--input", src, "--output", path, "--size", 4, "--seed", seed)
        assert code == 0
        assert sorted(sample_groups(str(path))[0]) == ["mid@x.example", "quiet@x.example"]
    # a duplicate without TICKET_COUNT counts as more than any known count, one owning nothing as more still
    code, _, _ = run(capsys, "--input", src, "--output", tmp_path / "six.csv", "--size", 6, "--seed", 0)
    assert sorted(sample_groups(str(tmp_path / "six.csv"))[0]) == ["heavy@x.example", "mid@x.example",
                                                                   "quiet@x.example"]
    code, _, _ = run(capsys, "--input", src, "--output", tmp_path / "all.csv", "--size", 12, "--seed", 0)
    assert len(sample_groups(str(tmp_path / "all.csv"))[0]) == 6  # sets owning nothing when nothing else fits


def test_prefers_fewest_tickets_over_the_whole_sample_and_sets_that_move_something(tmp_path, capsys):
    # a set owning nothing costs the largest count + 2 (here 11): size 5: {3-set 5+5, 2-set 9} = 19 beats
    # {3-set 0+0, 2-set 9} = 20, {3-set 5+5, 2-set 0} = 21 and {3-set 0+0, 2-set 0} = 22
    src = write_csv(tmp_path, merge_set("a@x.example", [0, 0]) + merge_set("b@x.example", [5, 5])
                    + merge_set("c@x.example", [9]) + merge_set("d@x.example", [0]))
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 5, "--seed", 3)
    assert code == 0
    assert sorted(sample_groups(str(tmp_path / "s.csv"))[0]) == ["b@x.example", "c@x.example"]
    # a smaller set of 9 tickets does not win when it would fall short of the size
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "t.csv", "--size", 3, "--seed", 3)
    assert sorted(sample_groups(str(tmp_path / "t.csv"))[0]) == ["b@x.example"]
    # with no count at all, every set costs the same
    assert set(create_test_sample.set_costs(group_contacts(read_contacts(str(write_csv(
        tmp_path, merge_set("e@x.example", [""]) + merge_set("f@x.example", [""]), name="u.csv"))).rows)[0]
                                            ).values()) == {0}


def test_selection_is_optimal_against_brute_force(tmp_path):
    rng = random.Random(11)
    for trial in range(40):
        records = [r for i in range(rng.randint(1, 8))
                   for r in merge_set(f"s{trial}-{i}@x.example",
                                      [rng.choice(["", 0, 1, 2, 5, 9]) for _ in range(rng.randint(1, 3))])]
        path = write_csv(tmp_path, records, name=f"c{trial}.csv")
        merge_sets, _ = group_contacts(read_contacts(path).rows)
        costs = create_test_sample.set_costs(merge_sets)
        size = rng.randint(min(len(m.rows) for m in merge_sets), 14)
        best = None
        for n in range(1, len(merge_sets) + 1):
            for combo in itertools.combinations(merge_sets, n):
                total = sum(len(m.rows) for m in combo)
                if total <= size:
                    key = (total, -sum(costs[id(m)] for m in combo))
                    best = key if best is None or key > best else best
        picked = create_test_sample.select(merge_sets, [], size, random.Random(trial))
        assert (picked.total, -picked.tickets) == best
        assert picked.tickets == sum(costs[id(m)] for m in picked.merge_sets)
        assert picked.total == sum(len(m.rows) for m in picked.merge_sets)


def test_no_ticket_count_column(tmp_path, capsys):
    header = "REV_USER_ID,EMAIL,EXTERNAL_REF"
    records = [f"{p},{e},{p}\n{d},{e},user_{i}\n" for i, e in enumerate(["a@x.example", "b@x.example"])
               for p, d in [(_id(), _id())]]
    src = write_csv(tmp_path, records, header=header)
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 2, "--seed", 4)
    assert code == 0 and "ticket count unknown" in out


# --------------------------------------------------------------------------- byte-exact rows
def test_bom_crlf_and_multiline_rows_are_kept_byte_for_byte(tmp_path, capsys):
    header = b"REV_USER_ID,EMAIL,EXTERNAL_REF,DISPLAY_NAME,TICKET_COUNT\r\n"
    records = [
        b"REVU-p1,ana@x.example,REVU-p1,Ana,\r\n",
        b'REVU-d1,ana@x.example,user_ana,"Ana ""the"" Caf\xc3\xa9\r\nsecond line, with a comma",0\r\n',
        b"REVU-p2,ben@x.example,REVU-p2,Ben,\r\n",
        b"REVU-d2,ben@x.example,user_ben,\xe6\x97\xa5\xe6\x9c\xac,7\r\n",
        b"REVU-p3,cy@x.example,REVU-p3,Cy,\r\n",
        b'REVU-d3,cy@x.example,user_cy,"multi\nline (LF only)",1\r\n',
        b"REVU-d4,ana@x.example,user_ana2,  spaced ,0",  # the last record, without a line end
    ]
    src = tmp_path / "contacts.csv"
    src.write_bytes(codecs.BOM_UTF8 + header + b"".join(records))
    out_path = tmp_path / "s.csv"
    code, out, err = run(capsys, "--input", src, "--output", out_path, "--size", 5, "--seed", 0)
    assert code == 0, err
    # only ana (3 contacts) reaches 5; with cy (2 contacts, 1 ticket) it beats ben's 7
    assert out_path.read_bytes() == (codecs.BOM_UTF8 + header + records[0] + records[1] + records[4]
                                     + records[5] + records[6])
    # without the BOM and with the no-terminator row left out
    src.write_bytes(header + b"".join(records[:6]))
    code, _, _ = run(capsys, "--input", src, "--output", out_path, "--size", 2, "--seed", 0, "--force")
    assert out_path.read_bytes() == header + records[4] + records[5]  # cy's 1 ticket beats ana's 0


def test_header_and_column_order_with_unknown_columns(tmp_path, capsys):
    header = "Email , notes,rev_user_id,Ticket_Count,segment,EXTERNAL_REF"
    records = ["a@x.example,\"likes, commas\",REVU-a1,,gold,REVU-a1\n",
               "a@x.example,,REVU-a2,3,gold,user_a\n",
               "b@x.example,n,REVU-b1,,silver,REVU-b1\n",
               "B@X.example,n2,REVU-b2,1,,user_b\n"]
    src = write_csv(tmp_path, records, header=header)
    code, out, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 2, "--seed", 0)
    assert code == 0, err
    assert (tmp_path / "s.csv").read_bytes() == (header + "\n" + records[2] + records[3]).encode()
    assert "b@x.example" in out


# --------------------------------------------------------------------------- whole sets only
def _shuffled_dataset_csv(tmp_path) -> str:
    rng = random.Random(5)
    records = []
    for i in range(30):
        records.append(merge_set(f"m{i}@x.example", [rng.choice(["", 0, 1, 2, 3, 8])
                                                     for _ in range(rng.choice([1, 1, 2, 3]))]))
    skipped = [[f"{p},solo{i}@x.example,{p},S,\n"] for i in range(3) for p in [_id()]]
    skipped += [[f"{p},twin@x.example,{p},T,\n", f"{q},twin@x.example,{q},U,\n"] for p, q in [(_id(), _id())]]
    skipped += [[f"{d},orph@x.example,user_o1,O,0\n", f"{e},orph@x.example,user_o2,P,0\n"]
                for d, e in [(_id(), _id())]]
    groups = records + skipped
    rows = [r for g in groups for r in g]
    rng.shuffle(rows)  # interleave the groups' rows through the file
    return write_csv(tmp_path, rows)


def test_merge_sets_are_never_split(tmp_path, capsys):
    src = _shuffled_dataset_csv(tmp_path)
    wanted = input_groups(src)
    src_bytes = open(src, "rb").read()
    for size in (2, 3, 5, 8, 13, 21):
        for seed in (0, 1, 2):
            path = tmp_path / f"s{size}-{seed}.csv"
            code, out, _ = run(capsys, "--input", src, "--output", path, "--size", size, "--seed", seed)
            assert code == 0
            sets, skipped = sample_groups(str(path))
            assert not skipped
            assert sum(len(v) for v in sets.values()) == size  # reachable with these set sizes
            for email, rows in sets.items():
                assert sorted(rows) == wanted[email], email  # every row of the set, nothing else
                assert f"  {email} (" in out
            # the sample's rows keep the input's order
            data = path.read_bytes()
            body = data.split(b"\n", 1)[1]
            positions = [src_bytes.index(line + b"\n") for line in body.splitlines()]
            assert positions == sorted(positions)


def test_include_skipped_adds_exactly_one_skipped_group(tmp_path, capsys):
    src = _shuffled_dataset_csv(tmp_path)
    wanted = input_groups(src)
    code, out, _ = run(capsys, "--input", src, "--output", tmp_path / "plain.csv", "--size", 7, "--seed", 1)
    assert code == 0 and not sample_groups(str(tmp_path / "plain.csv"))[1]
    seen_reasons = set()
    for seed in range(6):
        path = tmp_path / f"s{seed}.csv"
        code, out, err = run(capsys, "--input", src, "--output", path, "--size", 7, "--seed", seed,
                             "--include-skipped")
        assert code == 0, err
        sets, skipped = sample_groups(str(path))
        assert len(skipped) == 1 and sets
        (email, rows), = skipped.items()
        assert sorted(rows) == wanted[email]
        assert sum(len(v) for v in sets.values()) + len(rows) == 7  # the skipped rows count toward --size
        assert "and 1 skipped group" in out and f"plus 1 skipped group: {email}" in out
        seen_reasons.add(email)
    assert len(seen_reasons) > 1  # the seed decides which one


def test_include_skipped_without_any_skipped_group(tmp_path, capsys):
    src = write_csv(tmp_path, merge_set("a@x.example", [0]))
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 3, "--include-skipped")
    assert_usage_error(code, err, "no skipped group")


def test_include_skipped_needs_room_for_a_merge_set(tmp_path, capsys):
    p = _id()
    src = write_csv(tmp_path, merge_set("a@x.example", [0]) + [f"{p},solo@x.example,{p},S,\n"])
    code, _, err = run(capsys, "--input", src, "--output", tmp_path / "s.csv", "--size", 2, "--include-skipped")
    assert_usage_error(code, err, "too small")


# --------------------------------------------------------------------------- as a script
def test_script_errors_are_one_line_and_help_works(tmp_path):
    script = os.path.join(ROOT, "create_test_sample.py")
    bad = subprocess.run([sys.executable, script, "--input", "x.csv", "--output", "y.csv", "--size", "four"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    helped = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--include-skipped" in helped.stdout


# --------------------------------------------------------------------------- round trip
def test_sample_previews_cleanly_with_merge_contacts(tmp_path, capsys, monkeypatch, make_sandbox):
    dataset = build_dataset(8, seed=3)
    full = tmp_path / "contacts.csv"
    full.write_bytes(dataset.csv_text().encode("utf-8"))
    sample = tmp_path / "test_contacts.csv"
    code, out, err = run(capsys, "--input", full, "--output", sample, "--size", 4, "--seed", 9)
    assert code == 0, err
    sampled, skipped = sample_groups(str(sample))
    assert sum(len(v) for v in sampled.values()) == 4 and not skipped
    real_sets = {m["email"] for m in dataset.merge_sets}
    assert set(sampled) <= real_sets  # low-ticket sets; the live-skipped groups carry no low counts

    sandbox = make_sandbox(dataset.seed)
    monkeypatch.chdir(tmp_path)  # no .env of the repo is read
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    code = merge_contacts.main(["--csv", str(sample), "--preview", "--report-dir", str(tmp_path / "reports"),
                                "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "sp.sqlite3"),
                                "--rate-limit", "100000"])
    capsys.readouterr()
    assert code == 0
    (report,) = glob.glob(str(tmp_path / "reports" / "preview_*.json"))
    with open(report, encoding="utf-8") as fh:
        preview = json.load(fh)
    assert preview["csv"]["sha256"] == read_contacts(str(sample)).sha256
    assert sorted(s["email"] for s in preview["sets"]) == sorted(sampled)
    assert {s["status"] for s in preview["sets"]} == {"would_merge"}
    assert preview["skipped"] == []
    assert sandbox.writes() == [] and sandbox.write_attempts() == []


def test_sets_the_savepoint_shows_skipped_or_merged_are_left_out_and_the_sample_says_so(tmp_path, capsys,
                                                                                       monkeypatch, make_sandbox):
    """Issue 24 §3: the sample filled the rehearsal with sets the live checks skip. Where the
    savepoint knows (a run tried them), such sets and merged ones are left out, and it says so."""
    from helpers import MergeRun
    dataset = build_dataset(6, seed=3)                  # with one group per live-check skip reason
    sandbox = make_sandbox(dataset.seed)
    run_ = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run_.preview() == 0 and run_.run("--max-merges", "9") == 0
    savepoint = str(tmp_path / "savepoints" / "j.sqlite3")
    report = run_.latest_report()
    settled = {s["email"] for s in report["sets"] if s["status"] in ("skipped", "merged")}
    assert any(s["status"] == "skipped" for s in report["sets"])
    sample = tmp_path / "test_contacts.csv"
    code, out, err = run(capsys, "--input", run_.csv, "--output", sample, "--size", 100, "--seed", 1,
                         "--savepoint", savepoint)
    assert code == 0, err
    sampled, _ = sample_groups(str(sample))
    assert sampled and not set(sampled) & settled
    assert f"left out {len(settled)} merge sets the savepoint shows" in out
    assert "the live checks run against DevRev in the preview may still skip a set of the sample" in out
