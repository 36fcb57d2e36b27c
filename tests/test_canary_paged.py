"""Issue 25, row 1: the canary compares the first set from the primary's paged listings (one call
per page of 100) instead of one get per object, reads what the listings do not return usable with
gets fanned out over the workers (a sample of them past canary.GET_SAMPLE), and is skipped when no
set follows the first. Any change the tool did not make still stops the run."""
from __future__ import annotations

import math

import devrev_client
from devrev_api import assumptions as facts
from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun
from merging import canary

BIG_TICKETS, CONVERSATIONS = 230, 40   # the first duplicate's: 270 objects, three pages of tickets


def _big_first_set():
    return build_dataset(2, seed=31, tickets=(1, 2), conversations=(CONVERSATIONS, CONVERSATIONS), comments=(0, 0),
                         attachment_rate=0, big_set_tickets=BIG_TICKETS, two_duplicate_sets=0, skipped=False)


def _small(sets: int = 3):
    return build_dataset(sets, seed=23, tickets=(2, 3), conversations=(1, 2), comments=(0, 1), attachment_rate=0,
                         two_duplicate_sets=0, skipped=False)


def _canary_calls(monkeypatch, sandbox) -> dict:
    """The emulator's log entries of the canary's own calls (filled in once it ran)."""
    seen: dict = {}
    real = canary.check_set

    def counted(merger, outcome):
        start = len(sandbox.api_calls())
        try:
            return real(merger, outcome)
        finally:
            seen["calls"] = sandbox.api_calls()[start:]
    monkeypatch.setattr(canary, "check_set", counted)
    return seen


def _renames_on_update(sandbox, endpoint: str, table: str) -> list[str]:
    """A DevRev automation that, the first time an `endpoint` write lands, retitles that object."""
    done: list[str] = []

    def hook(sb, entry):
        if entry["endpoint"] == endpoint and entry.get("applied") and not done:
            with sb.state.lock:
                getattr(sb.state, table)[entry["body"]["id"]]["title"] = "retitled by an automation"
            done.append(entry["body"]["id"])
    sandbox.on_request = hook
    return done


def _first_set_objects(sandbox, dataset) -> int:
    dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    dump = sandbox.dump()
    return sum(dup in [u["id"] for u in obj[field]]
               for kind, field in (("works", "reported_by"), ("conversations", "members"))
               for obj in dump[kind].values())


def test_a_big_first_set_is_compared_at_one_call_per_page_and_a_side_effect_still_stops_the_run(
        tmp_path, monkeypatch, make_sandbox):
    dataset = _big_first_set()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    objects = _first_set_objects(sandbox, dataset)
    assert objects == BIG_TICKETS + CONVERSATIONS
    assert run.preview() == 0
    seen = _canary_calls(monkeypatch, sandbox)
    retitled = _renames_on_update(sandbox, "conversations.update", "conversations")
    assert run.run() == 1
    report = run.latest_report()
    assert [(d["field"], d["after"]) for d in report["canary"]["differences"]] == [
        ("title", "retitled by an automation")]
    assert retitled and [s["status"] for s in report["sets"]] == ["merged", "pending"]
    calls = [c["endpoint"] for c in seen["calls"]]
    # every page of both listings, and the primary's own get: no get per ticket or conversation
    assert sorted(set(calls)) == ["conversations.list", "rev-users.get", "works.list"]
    assert calls.count("rev-users.get") == 1
    assert calls.count("works.list") == math.ceil(BIG_TICKETS / 100)
    assert calls.count("conversations.list") == math.ceil(CONVERSATIONS / 100)
    assert len(calls) <= objects / 100 + 3
    assert report["canary"]["checked"] == objects + 1 and report["canary"]["listed"] == objects
    assert report["canary"]["read_one_by_one"] == 1 and report["canary"]["not_checked"] == 0


def _as_summaries(monkeypatch, dropped: str = "title") -> None:
    """Listings that leave `dropped` out of every item (a DevRev whose listings are summaries)."""
    for name in ("ticket_pages", "conversation_pages"):
        real = getattr(devrev_client.DevRevClient, name)

        def pages(self, user_id, real=real):
            for items in real(self, user_id):
                yield [{k: v for k, v in item.items() if k != dropped} for item in items]
        monkeypatch.setattr(devrev_client.DevRevClient, name, pages)


def test_listing_copies_that_lack_a_field_are_read_with_gets_fanned_out(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    objects = _first_set_objects(sandbox, dataset)
    assert run.preview() == 0
    seen = _canary_calls(monkeypatch, sandbox)
    _as_summaries(monkeypatch)
    _renames_on_update(sandbox, "works.update", "works")
    assert run.run() == 1
    report = run.latest_report()
    assert [d["field"] for d in report["canary"]["differences"]] == ["title"]
    assert report["canary"]["listed"] == 0 and report["canary"]["read_one_by_one"] == objects + 1
    gets = [c for c in seen["calls"] if c["endpoint"] in ("works.get", "conversations.get", "rev-users.get")]
    assert len(gets) == objects + 1


def test_a_devrev_whose_listings_are_summaries_is_read_with_gets(tmp_path, monkeypatch, make_sandbox):
    """devrev_api.assumptions.LISTINGS_CARRY_WHOLE_OBJECTS proved wrong: one edit there, and the
    canary reads every object with a get (fanned out), no listing."""
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    objects = _first_set_objects(sandbox, dataset)
    assert run.preview() == 0
    seen = _canary_calls(monkeypatch, sandbox)
    monkeypatch.setattr(facts, "LISTINGS_CARRY_WHOLE_OBJECTS", False)
    assert run.run() == 0
    report = run.latest_report()
    assert report["canary"]["differences"] == [] and report["canary"]["read_one_by_one"] == objects + 1
    calls = [c["endpoint"] for c in seen["calls"]]
    assert set(calls) <= {"works.get", "conversations.get", "rev-users.get"} and len(calls) == objects + 1


def test_a_listing_lagging_behind_the_moves_is_not_trusted(tmp_path, monkeypatch, make_sandbox):
    """[I] issue 22: a listing may show a ticket as it was before its reporters changed. Those
    copies are read with a get: no false difference, and a side effect is still caught."""
    dataset = _small(4)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1, listing_lag_seconds=3600.0)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    seen = _canary_calls(monkeypatch, sandbox)
    assert run.run("--max-merges", "2") == 0
    report = run.latest_report()
    assert report["canary"]["differences"] == []
    tickets = sum(1 for kind, _ in _first_backup_objects(run) if kind == "ticket")
    assert [c["endpoint"] for c in seen["calls"]].count("works.get") == tickets   # none listed usable

    retitled = _renames_on_update(sandbox, "works.update", "works")
    assert run.run() == 1      # the third set is this run's first: its canary sees the automation
    assert retitled and [d["field"] for d in run.latest_report()["canary"]["differences"]] == ["title"]


def _first_backup_objects(run) -> list[tuple[str, dict]]:
    report = run.latest_report()
    folders = [b for d in report["sets"][0]["duplicates"] for b in d["backups"]]
    return canary._backed_up(folders)[0]


def test_more_reads_than_the_sample_read_a_seeded_sample(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(2, seed=23, tickets=(6, 8), conversations=(2, 3), comments=(0, 0), attachment_rate=0,
                            two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    objects = _first_set_objects(sandbox, dataset)
    assert objects > 3
    assert run.preview() == 0
    _as_summaries(monkeypatch)
    monkeypatch.setattr(canary, "GET_SAMPLE", 3)
    capsys.readouterr()
    assert run.run() == 0
    result = run.latest_report()["canary"]
    assert result["read_one_by_one"] == 3 + 1 and result["not_checked"] == objects - 3
    seen = capsys.readouterr()
    (line,) = [e for e in (seen.out + seen.err).splitlines() if "canary" in e and "re-read" in e]
    assert f"{objects - 3} objects past the sample of 3 reads not compared" in line


def test_the_sample_keeps_the_first_and_the_last_and_is_the_same_for_the_same_set():
    items = list(range(1000))
    chosen = canary.sample(items, 200, "ada@customer0.example")
    assert len(chosen) == 200 and chosen[0] == 0 and chosen[-1] == 999 and chosen == sorted(set(chosen))
    assert chosen == canary.sample(items, 200, "ada@customer0.example")
    assert chosen != canary.sample(items, 200, "bob@customer1.example")
    assert canary.sample(items[:200], 200, "x") == items[:200]    # no larger than the sample: all of it
    assert canary.sample([], 200, "x") == []


def test_the_canary_is_skipped_when_no_set_follows(tmp_path, monkeypatch, make_sandbox):
    dataset = _small()
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    seen = _canary_calls(monkeypatch, sandbox)
    _renames_on_update(sandbox, "works.update", "works")
    assert run.run("--max-merges", "1") == 0     # one set in this run: nothing left to protect
    report = run.latest_report()
    assert report["canary"] == canary.SKIPPED == "skipped: no set followed"
    assert "calls" not in seen and [s["status"] for s in report["sets"]] == ["merged", "pending", "pending"]
    log = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "logs").glob("*.log"))
    assert "skipped, no set followed it in this run" in log
    assert run.run() == 0      # the next run's first set is checked again (the automation acted once)
    assert run.latest_report()["canary"]["checked"] > 0


class _Pages:
    """A client whose ticket listing is the given pages; counts the pages read."""

    def __init__(self, pages: list[list[dict]]):
        self.pages, self.read = pages, 0

    def ticket_pages(self, user_id):
        for page in self.pages:
            self.read += 1
            yield page


def test_the_listing_walk_stops_when_it_stops_paying():
    wanted = {f"t{i}": {"id": f"t{i}"} for i in range(3)}
    own = [[{"id": f"own{p}-{i}"} for i in range(100)] for p in range(5)]   # a primary with 500 tickets of its own
    client = _Pages(own + [[{"id": "t0"}, {"id": "t1"}, {"id": "t2"}]])
    found, pages = canary._listing_pages(client, "ticket", "p", wanted)
    assert found == {} and pages == client.read == canary.SPARE_PAGES   # the rest: one get each

    wanted = {f"t{i}": {"id": f"t{i}"} for i in range(250)}
    ids = list(wanted)
    client = _Pages([[], [{"id": i} for i in ids[:100]], [{"id": i} for i in ids[100:200]], [],
                     [{"id": i} for i in ids[200:]], [{"id": "never read"}]])
    found, pages = canary._listing_pages(client, "ticket", "p", wanted)
    assert set(found) == set(wanted) and pages == 5    # empty pages on the way do not end it; found all: stop
