"""End-to-end tests of merge_contacts.py against the emulator (issues: merge, merge details)."""
from __future__ import annotations

import os
import sqlite3
import sys

import pytest

import backup
import runs.journal
from backup_checks import verification
from devrev_api.errors import RunInterrupted
from devrev_sandbox.dataset import build_dataset
from devrev_sandbox.faults import Scripted
from helpers import ROOT, TEST_TOKEN, MergeRun, capture_stop_event, expected_after_merge, files_a_ticket, normalized
from merging import engine

LIVE_SKIPS = {"email_mismatch", "contact_inactive", "contact_not_found", "cross_workspace", "external_ref_mismatch"}
CSV_SKIPS = {"single_contact", "no_primary", "several_primaries", "unknown_reference_format"}


@pytest.fixture
def big_dataset():
    return build_dataset(20, seed=11, big_set_tickets=120, two_duplicate_sets=2, attachment_rate=0.4)


@pytest.fixture
def small_dataset():
    return build_dataset(3, seed=5, tickets=(1, 3), conversations=(1, 2), two_duplicate_sets=1, skipped=False)


def test_preview_changes_nothing_and_lists_what_would_move(tmp_path, monkeypatch, make_sandbox, big_dataset, capsys):
    sandbox = make_sandbox(big_dataset.seed)
    run = MergeRun(tmp_path, sandbox, big_dataset, monkeypatch)
    before = sandbox.dump()
    assert run.preview() == 0
    assert sandbox.write_attempts() == []
    assert sandbox.dump() == before
    preview = run.latest_report("preview")
    by_email = {s["email"]: s for s in preview["sets"]}
    for ms in big_dataset.merge_sets:
        record = by_email[ms["email"]]
        assert record["status"] == "would_merge"
        for dup_key, dup in zip(ms["duplicates"], record["duplicates"]):
            dup_id = sandbox.key_id(dup_key)
            assert dup["id"] == dup_id
            live = sorted(w["display_id"] for w in before["works"].values()
                          if dup_id in [u["id"] for u in w["reported_by"]])
            assert sorted(dup["tickets"]) == live
            convs = sorted(c["display_id"] for c in before["conversations"].values()
                           if dup_id in [u["id"] for u in c["members"]])
            assert sorted(dup["conversations"]) == convs
        assert record["estimated_calls"] > 0 and record["estimated_backup_bytes"] > 0
    first = by_email[big_dataset.merge_sets[0]["email"]]
    assert len(first["duplicates"][0]["tickets"]) >= 120  # several pages
    live_reasons = {s["reason"] for s in preview["sets"] if s["status"] == "skipped"}
    assert live_reasons == LIVE_SKIPS
    assert {g["reason"] for g in preview["skipped"]} == CSV_SKIPS
    out = capsys.readouterr().out
    assert "would be merged" in out and "nothing was changed in DevRev" in out
    with open(tmp_path / "reports" / os.path.basename(
            sorted((tmp_path / "reports").glob("preview_*.csv"))[0]), encoding="utf-8") as fh:
        assert fh.readline().startswith("email,status,reason")


def test_real_run_refuses_without_preview(tmp_path, monkeypatch, make_sandbox, small_dataset, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.run() == 2
    assert "run with --preview first" in capsys.readouterr().err
    assert sandbox.api_calls() == []
    # a preview of different CSV content does not count
    assert run.preview() == 0
    with open(run.csv, "a", encoding="utf-8") as fh:
        fh.write("REVU-extra1,extra@x.example,REVU-extra1,,,,,\r\n")
    sandbox.clear_log()
    assert run.run() == 2
    assert sandbox.api_calls() == []


@pytest.mark.slow
def test_full_run_moves_everything_and_changes_nothing_else(tmp_path, monkeypatch, make_sandbox, big_dataset):
    sandbox = make_sandbox(big_dataset.seed)
    run = MergeRun(tmp_path, sandbox, big_dataset, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview() == 0
    assert run.run("--workers", "4") == 0
    after = normalized(sandbox.dump())
    merged = {ms["email"] for ms in big_dataset.merge_sets}
    assert after == expected_after_merge(before, sandbox, big_dataset, merged)
    for ms in big_dataset.merge_sets:
        for dup in ms["duplicates"]:
            dup_id = sandbox.key_id(dup)
            assert not any(dup_id in w["reported_by"] for w in after["works"].values())
            assert not any(dup_id in c["members"] for c in after["conversations"].values())
    # dev users stay in conversations
    assert any(any(m.startswith("don:identity:dvrv-us-1:devo/DEVO1x:devu/") for m in c["members"])
               for c in after["conversations"].values())
    report = run.latest_report()
    statuses = {s["email"]: s["status"] for s in report["sets"]}
    assert all(statuses[e] == "merged" for e in merged)
    assert {s["reason"] for s in report["sets"] if s["status"] == "skipped"} == LIVE_SKIPS
    assert report["totals"]["failed"] == 0
    assert report["totals"]["tickets_moved"] == sum(
        1 for w in before["works"].values() for ms in big_dataset.merge_sets
        if any(sandbox.key_id(d) in w["reported_by"] for d in ms["duplicates"]))
    folders = run.backups()
    assert len(folders) == sum(len(ms["duplicates"]) for ms in big_dataset.merge_sets)
    assert all(verification.verify_backup(f).ok for f in folders)
    # the live-skipped sets were left untouched, their tickets included
    for key in ("sleepy-dup0", "split-dup0", "moved-dup0", "renamed-dup0"):
        assert after["rev_users"][sandbox.key_id(key)]["retired"] is False


def test_completed_run_rerun_makes_no_writes(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    sandbox.clear_log()
    assert run.run() == 0
    assert sandbox.write_attempts() == []
    assert sandbox.api_calls() == []
    report = run.latest_report()
    assert {s["status"] for s in report["sets"]} == {"merged"}
    assert all(s["resumed"] for s in report["sets"])


def _count_boundaries(tmp_path, monkeypatch, make_sandbox, dataset) -> int:
    calls = {"n": 0}
    real_intent, real_done = runs.journal.Journal.intent, runs.journal.Journal.done

    def counting(real):
        def wrapper(self, *a, **kw):
            calls["n"] += 1
            return real(self, *a, **kw)
        return wrapper

    monkeypatch.setattr(runs.journal.Journal, "intent", counting(real_intent))
    monkeypatch.setattr(runs.journal.Journal, "done", counting(real_done))
    sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
    (tmp_path / "count").mkdir()
    run = MergeRun(tmp_path / "count", sandbox, dataset, monkeypatch)
    assert run.run("--skip-preview-check", "--workers", "1") == 0
    monkeypatch.setattr(runs.journal.Journal, "intent", real_intent)
    monkeypatch.setattr(runs.journal.Journal, "done", real_done)
    return calls["n"], normalized(sandbox.dump())


class Crash(BaseException):
    """Stands in for a crash: not an Exception, so nothing in the tool handles it."""


@pytest.mark.slow
def test_exception_at_every_step_boundary_then_rerun_ends_in_same_state(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=8, tickets=(1, 2), conversations=(1, 1), comments=(0, 1),
                            two_duplicate_sets=1, skipped=False)
    total, reference = _count_boundaries(tmp_path, monkeypatch, make_sandbox, dataset)
    assert total > 10
    real_intent, real_done = runs.journal.Journal.intent, runs.journal.Journal.done
    for boundary in range(1, total + 1):
        calls = {"n": 0}

        def crashing(real, calls=calls, boundary=boundary):
            def wrapper(self, *a, **kw):
                calls["n"] += 1
                if calls["n"] == boundary:
                    raise Crash(f"boundary {boundary}")
                return real(self, *a, **kw)
            return wrapper

        monkeypatch.setattr(runs.journal.Journal, "intent", crashing(real_intent))
        monkeypatch.setattr(runs.journal.Journal, "done", crashing(real_done))
        sandbox = make_sandbox(dataset.seed, merge_retire_after_gets=1)
        workdir = tmp_path / f"b{boundary}"
        workdir.mkdir()
        run = MergeRun(workdir, sandbox, dataset, monkeypatch)
        with pytest.raises(Crash):
            run.run("--skip-preview-check", "--workers", "1")
        monkeypatch.setattr(runs.journal.Journal, "intent", real_intent)
        monkeypatch.setattr(runs.journal.Journal, "done", real_done)
        assert run.run("--skip-preview-check", "--workers", "1") == 0, f"boundary {boundary}"
        assert normalized(sandbox.dump()) == reference, f"boundary {boundary}"
        assert all(verification.verify_backup(f).ok for f in run.backups()), f"boundary {boundary}"
        db = runs.journal.Journal(str(workdir / "savepoints" / "j.sqlite3"), "check")
        assert db.check() == []
        db.close()
        sandbox.stop()


def test_write_discipline(tmp_path, monkeypatch, make_sandbox, small_dataset):
    """Three sets, one with two duplicates: every kind of write the tool makes."""
    violations = []

    def owns_nothing_at_merge(sandbox, entry):
        if entry["endpoint"] == "rev-users.merge" and entry.get("applied"):
            dup = entry["body"]["secondary_user"]
            owned = [w["display_id"] for w in sandbox.state.works.values() if dup in w["reported_by"]]
            owned += [c["display_id"] for c in sandbox.state.conversations.values() if dup in c["members"]]
            if owned:
                violations.append((dup, owned))

    sandbox = make_sandbox(small_dataset.seed, on_request=owns_nothing_at_merge)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    primaries = {sandbox.key_id(ms["primary"]) for ms in small_dataset.merge_sets}
    duplicates = {sandbox.key_id(d) for ms in small_dataset.merge_sets for d in ms["duplicates"]}
    moved_objects = set()
    for entry in sandbox.write_attempts():
        body = entry["body"]
        if entry["endpoint"] == "works.update":
            assert set(body) == {"id", "type", "reported_by"} and body["type"] == "ticket"
            moved_objects.add(body["id"])
        elif entry["endpoint"] == "conversations.update":
            assert set(body) == {"id", "members"}
            moved_objects.add(body["id"])
        elif entry["endpoint"] == "rev-users.update":
            assert set(body) == {"id", "external_ref"} and body["id"] in primaries
        elif entry["endpoint"] == "rev-users.merge":
            assert body["secondary_user"] in duplicates and body["primary_user"] in primaries
        elif entry["endpoint"] == "timeline-entries.create":    # the merge note, internal, on a primary
            assert body["object"] in primaries and body["visibility"] == "internal"
            assert body["type"] == "timeline_comment" and body["external_ref"].startswith("devrev-contact-merge:merge:")
        else:
            pytest.fail(f"unexpected write {entry['endpoint']}")
    assert violations == []
    # only objects a duplicate was on were written
    before = normalized(build_sandbox_state(small_dataset))
    owned_before = {oid for kind, field in (("works", "reported_by"), ("conversations", "members"))
                    for oid, obj in before[kind].items()
                    if set(obj[field]) & {sandbox_key(small_dataset, d) for d in duplicates_keys(small_dataset)}}
    assert moved_objects == owned_before


def build_sandbox_state(dataset):
    from devrev_sandbox.state import SandboxState
    state = SandboxState()
    state.load_seed(dataset.seed)
    return state.dump()


def sandbox_key(dataset, key):
    from devrev_sandbox.state import REGION
    user = [u for u in dataset.seed["rev_users"] if u["key"] == key][0]
    return f"don:identity:{REGION}:devo/{dataset.seed['devo']}:revu/{user['suffix']}"


def duplicates_keys(dataset):
    return [d for ms in dataset.merge_sets for d in ms["duplicates"]]


def test_two_duplicates_each_backed_up_and_newest_reference_wins(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=4, tickets=(1, 2), two_duplicate_sets=1, skipped=False)
    ms = dataset.merge_sets[0]
    assert len(ms["duplicates"]) == 2
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    email_prefix = ms["email"]
    folders = [f for f in run.backups() if os.path.basename(f).startswith(email_prefix)]
    assert len(folders) == 2
    dup_displays = {sandbox.dump()["rev_users"][sandbox.key_id(d)]["display_id"] for d in ms["duplicates"]}
    assert {os.path.basename(f).rsplit("_", 1)[1] for f in folders} == dup_displays
    seeds = {u["key"]: u for u in dataset.seed["rev_users"]}
    newest = max(ms["duplicates"], key=lambda k: seeds[k]["modified_date"])
    other = [k for k in ms["duplicates"] if k != newest][0]
    primary = sandbox.dump()["rev_users"][sandbox.key_id(ms["primary"])]
    assert primary["external_ref"] == seeds[newest]["external_ref"]
    outcome = [s for s in run.latest_report()["sets"] if s["email"] == ms["email"]][0]
    assert outcome["external_ref_set"] == seeds[newest]["external_ref"]
    assert outcome["other_duplicate_refs"] == [seeds[other]["external_ref"]]


def test_duplicate_owning_nothing_still_gets_a_backup(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=2, tickets=(0, 0), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    primary_ref = sandbox.dump()["rev_users"][sandbox.key_id(dataset.merge_sets[0]["primary"])]["external_ref"]
    assert run.preview() == 0 and run.run() == 0
    [folder] = run.backups()
    assert verification.verify_backup(folder).ok
    meta = backup.load_metadata(folder)
    assert meta["primary"]["id"] == sandbox.key_id(dataset.merge_sets[0]["primary"])
    assert meta["original_external_refs"]["primary"] == primary_ref
    assert meta["moves"] == {"tickets": [], "conversations": []}


def test_never_prompts(tmp_path, monkeypatch, make_sandbox, small_dataset):
    class NoInput:
        def read(self, *a):
            raise AssertionError("the tool read from stdin")
        readline = read

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stdin", NoInput())
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0


def test_poll_backoff_and_time_limit(tmp_path, make_sandbox, make_client, small_dataset):
    sandbox = make_sandbox(small_dataset.seed, merge_retire_after_gets=None, merge_retire_delay=3600)
    waits = []
    now = {"t": 0.0}

    def fake_sleep(seconds):
        waits.append(seconds)
        now["t"] += seconds

    client = make_client(sandbox, sleep=fake_sleep)
    journal = runs.journal.Journal(str(tmp_path / "j.sqlite3"), "r")
    options = engine.MergeOptions(backup_dir=str(tmp_path / "b"), run_id="r", merge_timeout=20)
    merger = engine.SetMerger(client, journal, options, clock=lambda: now["t"])
    from contacts.csv_reader import group_contacts, read_contacts
    path = tmp_path / "c.csv"
    path.write_text(small_dataset.csv_text())
    ms = group_contacts(read_contacts(str(path)).rows)[0][0]
    outcome = merger.merge(ms)
    # DevRev's merge job is still running: said with its id, state and progress; a later run finishes it
    assert outcome.status == "failed" and "not retired 20 s after rev-users.merge" in outcome.error
    assert "merge job don:core:" in outcome.error and "in_progress, 40 %" in outcome.error
    assert outcome.retry_later is True
    assert waits[0] <= 0.5
    assert waits == sorted(waits[:-1]) + waits[-1:]   # backs off (the last wait is cut at the deadline)
    assert max(waits) <= 5
    assert sum(waits) == pytest.approx(20, abs=0.01)
    journal.close()


def test_resume_removes_own_partial_backup(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    stranger = backups / "someone@else.example_20250101_000000_REVU-abc.partial"
    stranger.mkdir()

    real_write = backup.write_backup

    def crash_midway(client, root, **kw):
        monkeypatch.setattr(backup.shutil, "rmtree", lambda *a, **k: None)  # a SIGKILL cleans nothing up
        original = backup._Writer.write_json

        def die(self, relpath, obj):
            if relpath == "metadata.json":
                raise Crash("killed while writing metadata")
            return original(self, relpath, obj)

        monkeypatch.setattr(backup._Writer, "write_json", die)
        return real_write(client, root, **kw)

    monkeypatch.setattr(engine, "write_backup", crash_midway)
    assert run.preview() == 0
    with pytest.raises(Crash):
        run.run("--workers", "1")
    monkeypatch.undo()
    run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=open(run.csv, encoding="utf-8", newline="").read())
    partials = [p for p in os.listdir(backups) if p.endswith(".partial")]
    assert len(partials) == 2
    assert run.run("--workers", "1") == 0
    left = sorted(p for p in os.listdir(backups) if p.endswith(".partial"))
    assert left == [stranger.name]
    import verify_backups
    assert verify_backups.main(["--backup-dir", str(backups), "--report-dir", str(tmp_path / "r2")]) == 1


def test_rejected_token_stops_the_run(tmp_path, monkeypatch, make_sandbox, small_dataset, capsys):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0
    monkeypatch.setenv("DEVREV_API_TOKEN", "wrong-token-of-a-plausible-length")
    sandbox.clear_log()
    assert run.run("--workers", "1") == 2
    err = capsys.readouterr().err
    assert "DevRev rejected the token" in err and "DEVREV_API_TOKEN" in err
    assert "Traceback" not in err
    assert len(sandbox.api_calls()) == 1


def test_token_rejected_mid_run_starts_no_further_set(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0
    sandbox.clear_log()
    sandbox.script("works.update", Scripted(401, {"type": "unauthenticated", "message": "token expired"}))
    assert run.run("--workers", "1") == 2
    touched = {e["body"].get("id") for e in sandbox.api_calls() if e["endpoint"] == "rev-users.get"}
    # only the first set's contacts were read: no further set started
    first = small_dataset.merge_sets[0]
    assert touched <= {sandbox.key_id(first["primary"])} | {sandbox.key_id(d) for d in first["duplicates"]} | \
        {f"REVU-{u['suffix']}" for u in small_dataset.seed["rev_users"]
         if u["key"] in [first["primary"], *first["duplicates"]]}
    db = runs.journal.Journal(str(tmp_path / "savepoints" / "j.sqlite3"), "check")
    assert db.check() == []
    db.close()
    # and a re-run with a good token finishes the job
    assert run.run("--workers", "1") == 0


def test_plain_http_attachment_url_fails_the_set_and_changes_nothing(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=3, tickets=(1, 1), comments=(1, 1), attachment_rate=1.0,
                            two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = sandbox.dump()
    assert run.preview() == 0
    sandbox.script("artifacts.locate", *[Scripted(200, {"url": "http://files.example.com/blob/1"})] * 5)
    assert run.run() == 1
    assert sandbox.write_attempts() == []
    assert sandbox.dump() == before
    outcome = run.latest_report()["sets"][0]
    assert outcome["status"] == "failed" and "https" in outcome["error"]
    assert not any(f.endswith(".partial") for f in run.backups())


def test_status_only_and_max_merges(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(4, seed=9, tickets=(1, 2), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    target = dataset.merge_sets[2]["email"]
    capsys.readouterr()
    assert run.preview("--only", target) == 0
    assert "1 merge set of the CSV's 4: 1 would be merged" in capsys.readouterr().out   # not "from the CSV"
    assert run.run("--only", target.upper()) == 0
    assert "So far: 1 merge set of the CSV's 4: 1 merged" in capsys.readouterr().out
    report = run.latest_report()
    assert [s["email"] for s in report["sets"]] == [target]
    assert run.preview() == 0                  # the newest preview showed one set: preview the rest
    assert run.run("--max-merges", "2") == 0
    statuses = [s["status"] for s in run.latest_report()["sets"]]
    assert statuses.count("merged") == 3 and statuses.count("pending") == 1
    capsys.readouterr()
    assert merge_contacts_main(run, "--status") == 0
    out = capsys.readouterr().out
    assert "3 merged" in out and target in out
    assert merge_contacts_main(run, "--status", "--csv", run.csv, "--only", target.upper()) == 0
    out = capsys.readouterr().out                      # --status --only: that set alone, counted alone
    assert "1 merge set of the CSV's 4: 1 merged" in out
    assert [line.split()[0] for line in out.splitlines()[3:]] == [target]
    assert merge_contacts_main(run, "--status", "--only", "nobody@nowhere.example") == 2   # a typo is one line
    assert merge_contacts_main(run, "--sandbox", "--sandbox-reset", "--status") == 2     # --status only reads
    assert run.run("--only", "nobody@nowhere.example") == 2


def test_batches_go_on_with_sets_not_tried_and_retry_skipped_ones_only_when_asked(tmp_path, monkeypatch,
                                                                                  make_sandbox, capsys):
    """With --max-merges, sets an earlier batch's live checks skipped do not come first again
    (every batch would merge nothing and exit 0 for ever): each batch goes on with sets it has
    not tried; --retry-skipped (previewed with it) tries the skipped ones again."""
    dataset = build_dataset(5, seed=9, tickets=(1, 2), two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    deactivated = [sandbox.key_id(ms["duplicates"][0]) for ms in dataset.merge_sets[:2]]
    with sandbox.state.lock:                 # the first two sets now fail the live checks
        for dup in deactivated:
            sandbox.state.users[dup]["state"] = "deactivated"
    batches = []
    for _ in range(4):
        code = run.run("--max-merges", "2")
        mine = run.latest_report()["totals"]["this_run"]
        batches.append((code, mine["merged"], mine["skipped"]))
    assert batches == [(0, 0, 2), (0, 2, 0), (0, 1, 0), (0, 0, 0)]
    assert [s["status"] for s in run.latest_report()["sets"]] == ["skipped"] * 2 + ["merged"] * 3
    capsys.readouterr()
    assert merge_contacts_main(run, "--status", "--csv", str(run.csv)) == 0
    out = capsys.readouterr().out
    assert "3 merged" in out and "2 skipped" in out, out
    with sandbox.state.lock:
        for dup in deactivated:
            sandbox.state.users[dup]["state"] = "active"
    assert run.preview() == 0                         # shows them skipped earlier, not tried again
    shown = [s for s in run.latest_report("preview")["sets"] if s.get("skipped_earlier")]
    assert len(shown) == 2 and "--retry-skipped" in shown[0]["detail"]
    sandbox.clear_log()
    assert run.run("--retry-skipped") == 2            # that preview did not show them tried again
    assert sandbox.write_attempts() == []
    assert run.preview("--retry-skipped") == 0 and run.run("--retry-skipped") == 0
    assert [s["status"] for s in run.latest_report()["sets"]] == ["merged"] * 5


def merge_contacts_main(run, *args):
    import merge_contacts
    return merge_contacts.main(["--savepoint", str(run.dir / "savepoints" / "j.sqlite3"), *args])


def test_keep_duplicate_moves_only(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    before = normalized(sandbox.dump())
    assert run.preview("--keep-duplicate") == 0 and run.run("--keep-duplicate") == 0
    after = normalized(sandbox.dump())
    assert not any(e["endpoint"] in ("rev-users.merge", "rev-users.update") for e in sandbox.write_attempts())
    assert {s["status"] for s in run.latest_report()["sets"]} == {"moved_only"}
    for ms in small_dataset.merge_sets:
        for d in ms["duplicates"]:
            assert after["rev_users"][sandbox.key_id(d)] == before["rev_users"][sandbox.key_id(d)]
            assert not any(sandbox.key_id(d) in w["reported_by"] for w in after["works"].values())


def test_drift_since_preview_and_new_ticket_during_the_run(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=6, tickets=(3, 3), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    ms = dataset.merge_sets[0]
    dup_key = ms["duplicates"][0]
    # the integration files a new ticket under the duplicate right after the first move
    integration_files_a_ticket, filed = files_a_ticket(dup_key, "works.update", "filed mid-run")
    sandbox = make_sandbox(dataset.seed, on_request=integration_files_a_ticket)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    preview_tickets = run.latest_report("preview")["sets"][0]["duplicates"][0]["tickets"]
    appeared = sandbox.add_ticket({"title": "after preview", "reported_by": [dup_key], "owned_by": ["agent1"]})
    assert run.run() == 0
    dump = sandbox.dump()
    dup_id, primary_id = sandbox.key_id(dup_key), sandbox.key_id(ms["primary"])
    for ticket_id in (appeared, filed["id"]):
        assert [u["id"] for u in dump["works"][ticket_id]["reported_by"]] == [primary_id]
    outcome = run.latest_report()["sets"][0]
    dup = outcome["duplicates"][0]
    assert dup["drift_appeared"] == [dump["works"][appeared]["display_id"]]
    assert dup["drift_vanished"] == []
    assert len(dup["backups"]) == 2  # the mid-run ticket got a backup round of its own
    assert all(verification.verify_backup(f).ok for f in dup["backups"])
    assert dup["tickets_moved"] == len(preview_tickets) + 2
    assert not any(dup_id in [u["id"] for u in w["reported_by"]] for w in dump["works"].values())


def test_journal_is_durable_sqlite_wal(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    path = tmp_path / "savepoints" / "j.sqlite3"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    open_intents = con.execute("SELECT COUNT(*) FROM steps WHERE status = 'intent'").fetchone()[0]
    assert open_intents == 0
    con.close()


def test_default_savepoint_location(tmp_path, monkeypatch, make_sandbox, small_dataset):
    sandbox = make_sandbox(small_dataset.seed)
    run = MergeRun(tmp_path, sandbox, small_dataset, monkeypatch)
    import merge_contacts
    args = ["--csv", run.csv, "--report-dir", "reports", "--log-dir", "logs", "--backup-dir", "backups"]
    assert merge_contacts.main(args + ["--preview"]) == 0 and merge_contacts.main(args) == 0
    assert (tmp_path / "savepoints" / "merge_journal.sqlite3").exists()
    logs = list((tmp_path / "logs").glob("merge_*.log"))
    assert len(logs) == 2
    text = logs[-1].read_text() + logs[0].read_text()
    assert TEST_TOKEN not in text
    run_id = logs[0].name[len("merge_"):-len(".log")]
    assert all(run_id in line for line in logs[0].read_text().splitlines() if line.strip())


def test_bad_input_exits_2_before_any_call(tmp_path, monkeypatch, make_sandbox, capsys):
    sandbox = make_sandbox({})
    bad = {"missing column": "REV_USER_ID,EMAIL\r\nREVU-a1,a@x.example\r\n",
           "duplicate id": "REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,a@x.example,REVU-a1\nREVU-a1,a@x.example,user_1\n",
           "malformed id": "REV_USER_ID,EMAIL,EXTERNAL_REF\nUSER-1,a@x.example,REVU-a1\n",
           "empty": ""}
    for name, text in bad.items():
        run = MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=text)
        assert run.preview() == 2, name
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and "error" in err.lower(), (name, err)
    assert sandbox.api_calls() == []


@pytest.mark.slow
def test_concurrent_workers_resume_with_another_count(tmp_path, monkeypatch, make_sandbox):
    """--workers N: sets run at once over one session and one journal; an interrupted run with
    8 workers resumed with 2 ends exactly like a clean run (correctness only, not timing)."""
    dataset = build_dataset(12, seed=21, tickets=(0, 4), conversations=(0, 2), two_duplicate_sets=2, skipped=False)
    calls = {"n": 0}

    def stop_midway(sandbox, entry):
        calls["n"] += 1
        if calls["n"] == 150:
            stopper["event"].set()  # as Ctrl-C does: the workers stop after their call in flight

    sandbox = make_sandbox(dataset.seed, on_request=stop_midway)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    before = normalized(sandbox.dump())
    stopper = capture_stop_event(monkeypatch)
    assert run.preview("--workers", "8") == 0
    calls["n"] = 0  # count the real run's calls only
    assert run.run("--workers", "8") == 130
    interrupted = run.latest_report()
    assert interrupted["interrupted"] is True
    assert any(s["status"] != "merged" for s in interrupted["sets"])
    db = runs.journal.Journal(str(tmp_path / "savepoints" / "j.sqlite3"), "check")
    assert db.check() == []
    db.close()
    assert run.run("--workers", "2") == 0
    merged = {ms["email"] for ms in dataset.merge_sets}
    assert normalized(sandbox.dump()) == expected_after_merge(before, sandbox, dataset, merged)
    assert {s["status"] for s in run.latest_report()["sets"]} == {"merged"}
    assert all(verification.verify_backup(f).ok for f in run.backups())


def test_an_interrupted_run_reports_what_devrev_holds(tmp_path, monkeypatch, make_sandbox):
    """A set stopped half-way reports the moves DevRev applied (from the journal), not 0."""
    dataset = build_dataset(3, seed=17, tickets=(4, 6), conversations=(1, 2), skipped=False)
    calls = {"n": 0, "moves": set()}

    def stop_midway(sandbox, entry):
        calls["n"] += 1
        if entry.get("endpoint") in ("works.update", "conversations.update") and entry.get("applied"):
            calls["moves"].add(entry["body"]["id"])
            if len(calls["moves"]) == 3:
                stopper["event"].set()

    sandbox = make_sandbox(dataset.seed, on_request=stop_midway)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    stopper = capture_stop_event(monkeypatch)
    assert run.preview() == 0
    calls["moves"].clear()
    assert run.run("--workers", "1", "--no-canary") == 130
    report = run.latest_report()
    moved = {i for s in report["sets"] for i in s.get("moved_ticket_ids", []) + s.get("moved_conversation_ids", [])}
    assert moved == calls["moves"] and len(moved) >= 3
    totals = report["totals"]
    assert totals["tickets_moved"] + totals["conversations_moved"] == len(moved)


def test_ctrl_c_during_the_canary_re_read_is_an_interrupt_not_a_crash(tmp_path, monkeypatch, make_sandbox):
    from merging import canary
    dataset = build_dataset(3, seed=19, tickets=(1, 2), conversations=(1, 1), skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    stopper = capture_stop_event(monkeypatch)
    assert run.preview() == 0

    def stopped_mid_read(client, outcome):
        stopper["event"].set()                     # Ctrl-C while the canary re-reads
        raise RunInterrupted("stopped")

    monkeypatch.setattr(canary, "check_set", stopped_mid_read)
    assert run.run() == 130
    report = run.latest_report()
    assert report["interrupted"] is True
    assert [s["status"] for s in report["sets"]].count("merged") == 1   # the first set, done before the stop
    monkeypatch.undo()
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.run() == 0


@pytest.mark.slow
def test_ctrl_c_stops_after_the_call_in_flight_and_exits_130(tmp_path, make_sandbox):
    import signal
    import subprocess
    import time

    from devrev_sandbox.faults import Faults
    dataset = build_dataset(6, seed=13, tickets=(1, 3), conversations=(1, 2), skipped=False)
    sandbox = make_sandbox(dataset.seed, faults=Faults(latency=0.02))
    run = MergeRun(tmp_path, sandbox, dataset)
    env = dict(os.environ, DEVREV_API_TOKEN=TEST_TOKEN, DEVREV_BASE_URL=sandbox.base_url,
               DEVREV_RATE_LIMIT="1000000")
    script = os.path.join(ROOT, "merge_contacts.py")
    command = [sys.executable, script, *run.paths(), "--skip-preview-check", "--workers", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(sandbox.api_calls()) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    at_signal = len(sandbox.api_calls())
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert len(sandbox.api_calls()) <= at_signal + 1  # only the call that was in flight
    assert b"Traceback" not in err and b"re-run the same command" in err.lower()
    db = runs.journal.Journal(str(tmp_path / "savepoints" / "j.sqlite3"), "check")
    assert db.check() == []
    db.close()
    assert run.latest_report()["interrupted"] is True
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert {s["status"] for s in run.latest_report()["sets"]} == {"merged"}


def test_sandbox_status_counts_against_the_csv_the_rehearsal_used(tmp_path, monkeypatch, capsys):
    """Issue 24 §3: `--sandbox --status` counted against the demo CSV whatever was merged."""
    import merge_contacts
    monkeypatch.chdir(tmp_path)
    assert merge_contacts.main(["--sandbox", "--sandbox-reset", "--preview"]) == 0
    found = tmp_path / "mine.csv"
    import find_duplicates
    assert find_duplicates.main(["--sandbox", "--output", str(found)]) == 0
    rows = found.read_text(encoding="utf-8").splitlines()
    (tmp_path / "two.csv").write_text("\n".join(rows[:1] + [r for r in rows[1:] if "ana@" in r]) + "\n",
                                      encoding="utf-8")
    assert merge_contacts.main(["--sandbox", "--csv", "two.csv", "--preview"]) == 0
    assert merge_contacts.main(["--sandbox", "--csv", "two.csv"]) == 0
    capsys.readouterr()
    assert merge_contacts.main(["--sandbox", "--status"]) == 0
    out = capsys.readouterr().out
    assert "Savepoint .sandbox/savepoints.sqlite3: 2 merge sets from the CSV: 2 merged, 0 failed." in out
    assert "the CSV of the newest sandbox run" in out and "two.csv" in out
