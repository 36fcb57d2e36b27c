"""Edge cases of a real merge: shared tickets between sets, tickets filed mid-merge, refused
writes, issues, concurrent runs, previews that prove nothing, stop reasons and exit codes."""
from __future__ import annotations

import threading

import backup
from backup_checks import verification
from devrev_sandbox.dataset import build_dataset
from helpers import TEST_TOKEN, MergeRun, capture_stop_event, files_a_ticket, ids
from merging import engine
from plumbing import cli
from runs import journal


def test_ticket_shared_by_two_sets_keeps_both_customers(tmp_path, monkeypatch, make_sandbox):
    """Worker B lists a ticket, worker A moves it, then B writes: B must not undo A's move."""
    dataset = build_dataset(2, seed=31, tickets=(1, 1), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    (set_a, set_b) = dataset.merge_sets
    dup_a, dup_b = set_a["duplicates"][0], set_b["duplicates"][0]
    dataset.seed["tickets"].append({"key": "shared", "title": "both", "reported_by": [dup_a, dup_b],
                                    "owned_by": ["agent1"]})
    a_moved, b_listed = threading.Event(), threading.Event()
    seen = {dup_a: 0, dup_b: 0}

    def interleave(sandbox, entry):
        # Runs after the emulator computed each answer, before sending it. Order forced:
        # B re-reads the shared ticket, then A moves it, then B (holding the old read) writes.
        body = entry.get("body") or {}
        shared = sandbox.key_id("shared")
        if entry["endpoint"] == "works.update" and body.get("id") == shared and entry.get("applied") \
                and sandbox.key_id(set_a["primary"]) in body["reported_by"]["set"]:
            a_moved.set()
        for dup in (dup_a, dup_b):
            if entry["endpoint"] == "works.list" and body.get("reported_by") == [sandbox.key_id(dup)] \
                    and body.get("type") == ["ticket"]:
                seen[dup] += 1
                if seen[dup] == 2 and dup == dup_a:   # A's re-read before moving: wait until B has read
                    b_listed.wait(10)
                if seen[dup] == 2 and dup == dup_b:   # B's re-read: answer only after A moved the ticket
                    b_listed.set()
                    a_moved.wait(10)

    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    sandbox.on_request = interleave
    assert run.run("--workers", "2") == 0
    assert a_moved.is_set()
    # no write ever took A's primary off the ticket once A had put it there
    primary_a = sandbox.key_id(set_a["primary"])
    writes = [e["body"]["reported_by"]["set"] for e in sandbox.write_attempts()
              if e["endpoint"] == "works.update" and e["body"]["id"] == sandbox.key_id("shared")]
    first_a = next(i for i, w in enumerate(writes) if primary_a in w)
    assert all(primary_a in w for w in writes[first_a:]), writes
    reporters = ids(sandbox.dump()["works"][sandbox.key_id("shared")]["reported_by"])
    assert sorted(reporters) == sorted([sandbox.key_id(set_a["primary"]), sandbox.key_id(set_b["primary"])])


def test_ticket_filed_while_devrev_merges_is_backed_up_and_moved(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=32, tickets=(2, 2), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    ms = dataset.merge_sets[0]
    dup = ms["duplicates"][0]
    integration, filed = files_a_ticket(dup, "rev-users.merge", "filed during the merge")
    sandbox = make_sandbox(dataset.seed, on_request=integration, merge_retire_after_gets=2)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    dump = sandbox.dump()
    assert ids(dump["works"][filed["id"]]["reported_by"]) == [sandbox.key_id(ms["primary"])]
    outcome = run.latest_report()["sets"][0]
    assert outcome["status"] == "merged"
    assert len(outcome["duplicates"][0]["backups"]) == 2
    assert all(verification.verify_backup(f).ok for f in run.backups())
    tickets_json = [backup.load_metadata(f)["moves"]["tickets"] for f in outcome["duplicates"][0]["backups"]]
    assert [t["id"] for t in tickets_json[1]] == [filed["id"]]


def test_a_ticket_filed_after_the_preview_is_named_on_screen_and_in_the_log(tmp_path, monkeypatch, make_sandbox,
                                                                            capsys):
    """Issue 24 §3: what appeared under a duplicate after the preview and was moved is named on
    screen and in the log, not only in the report's JSON."""
    dataset = build_dataset(1, seed=32, tickets=(1, 1), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    ms = dataset.merge_sets[0]
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    new_id = sandbox.add_ticket({"title": "filed after the preview", "reported_by": [ms["duplicates"][0]],
                                 "owned_by": ["agent1"]})
    shown = sandbox.dump()["works"][new_id]["display_id"]
    capsys.readouterr()
    assert run.run() == 0
    out = capsys.readouterr().out
    assert "Appeared after the preview, backed up and moved too: 1 ticket or conversation" in out
    assert f"  {ms['email']}: {shown}" in out
    log = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "logs").glob("merge_*.log"))
    assert f"appeared since the preview; backed up and moved with the rest: {shown}" in log
    assert run.latest_report()["sets"][0]["duplicates"][0]["drift_appeared"] == [shown]


def test_refused_update_is_not_taken_for_a_vanished_ticket(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=33, tickets=(0, 0), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    ms = dataset.merge_sets[0]
    dataset.seed["rev_users"].append({"key": "gone-co-reporter", "email": "co@x.example", "workspace": "acme"})
    dataset.seed["tickets"].append({"key": "t", "title": "co-reported", "owned_by": ["agent1"],
                                    "reported_by": [ms["duplicates"][0], "gone-co-reporter"]})
    sandbox = make_sandbox(dataset.seed)
    user = sandbox.state.users[sandbox.key_id("gone-co-reporter")]
    user.update(_retired=True, _gone=True, state="deleted")  # deleted in DevRev after it reported the ticket
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.run() == 1
    outcome = run.latest_report()["sets"][0]
    assert outcome["status"] == "failed"
    assert "refused the new reported_by" in outcome["error"]
    assert not any(e["endpoint"] == "rev-users.merge" for e in sandbox.write_attempts())
    assert len(run.backups()) == 1  # no extra rounds pretending new tickets appeared


def test_issue_reported_by_the_duplicate_stops_the_merge(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=34, tickets=(1, 1), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    dup = dataset.merge_sets[0]["duplicates"][0]
    dataset.seed["tickets"].append({"key": "iss", "type": "issue", "title": "a bug", "reported_by": [dup],
                                    "owned_by": ["agent1"]})
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.latest_report("preview")["sets"][0]["reason"] == "other_work_items"
    assert run.run() == 0                      # skipped whole, as the preview showed (test_other_items.py)
    outcome = run.latest_report()["sets"][0]
    assert outcome["status"] == "skipped" and "ISS-" in outcome["error"] and "by hand" in outcome["error"]
    assert sandbox.write_attempts() == []
    assert ids(sandbox.dump()["works"][sandbox.key_id("iss")]["reported_by"]) == [sandbox.key_id(dup)]


def test_rounds_are_counted_per_run(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(1, seed=35, tickets=(1, 1), conversations=(0, 0), two_duplicate_sets=0, skipped=False)
    dup = dataset.merge_sets[0]["duplicates"][0]
    busy = {"on": True, "n": 0}

    def integration(sandbox, entry):
        if busy["on"] and entry["endpoint"] == "works.update" and entry.get("applied"):
            busy["n"] += 1
            sandbox.add_ticket({"title": f"busy {busy['n']}", "reported_by": [dup], "owned_by": ["agent1"]})

    sandbox = make_sandbox(dataset.seed, on_request=integration)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    assert run.run() == 1
    assert "kept appearing" in run.latest_report()["sets"][0]["error"]
    busy["on"] = False  # the admin paused the integration
    assert run.run() == 0
    dump = sandbox.dump()
    assert not any(sandbox.key_id(dup) in ids(w["reported_by"]) for w in dump["works"].values())
    assert all(verification.verify_backup(f).ok for f in run.backups())


def test_two_runs_cannot_share_a_savepoint(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(1, seed=36, skipped=False, two_duplicate_sets=0)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    sandbox.clear_log()
    holder = journal.Journal(str(tmp_path / "savepoints" / "j.sqlite3"), "other", exclusive=True)
    try:
        assert run.run() == 2
        assert "another run is using the savepoint" in capsys.readouterr().err
        assert sandbox.api_calls() == []
    finally:
        holder.close()
    assert run.run() == 0


def test_a_preview_of_another_target_or_an_incomplete_one_does_not_count(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=37, skipped=False, two_duplicate_sets=0)
    sandbox = make_sandbox(dataset.seed)
    other = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    monkeypatch.setenv("DEVREV_BASE_URL", other.base_url)
    assert run.preview() == 0                   # previewed against another DevRev
    monkeypatch.setenv("DEVREV_BASE_URL", sandbox.base_url)
    assert run.run() == 2
    assert sandbox.api_calls() == []
    # an interrupted preview (Ctrl-C) exits 130 and writes no report
    stopper = capture_stop_event(monkeypatch)
    sandbox.on_request = lambda sb, entry: stopper["event"].set()
    assert run.preview("--workers", "1") == 130
    sandbox.on_request = None
    assert run.run() == 2


def test_failed_backup_verification_exits_1_not_130_with_workers(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(4, seed=38, tickets=(1, 2), comments=(1, 1), attachment_rate=1.0,
                            two_duplicate_sets=0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0
    real_write = engine.write_backup
    first = dataset.merge_sets[0]["email"]

    def corrupting(client, root, **kw):
        result = real_write(client, root, **kw)
        if kw["email"] == first:
            with open(f"{result.folder}/tickets.json", "ab") as fh:
                fh.write(b" ")
        return result

    monkeypatch.setattr(engine, "write_backup", corrupting)
    assert run.run("--workers", "2") == 1
    report = run.latest_report()
    assert report["interrupted"] is False
    statuses = {s["email"]: s["status"] for s in report["sets"]}
    assert statuses[first] == "failed"
    touched = {e["body"].get("id") for e in sandbox.write_attempts()}
    first_dup = sandbox.key_id(dataset.merge_sets[0]["duplicates"][0])
    first_items = {w["id"] for w in sandbox.dump()["works"].values() if first_dup in ids(w["reported_by"])}
    assert not (touched & first_items)


def test_non_ascii_token_is_one_line_exit_2(tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(1, seed=39, skipped=False, two_duplicate_sets=0)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    monkeypatch.setenv("DEVREV_API_TOKEN", "\u201c" + TEST_TOKEN + "\u201d")
    assert run.preview() == 2
    err = capsys.readouterr().err
    assert "non-ASCII" in err and "Traceback" not in err and TEST_TOKEN not in err
    assert sandbox.api_calls() == []


def test_logs_hold_no_presigned_download_signature(tmp_path, monkeypatch, make_sandbox):
    dataset = build_dataset(2, seed=40, tickets=(1, 2), comments=(1, 2), attachment_rate=1.0, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview() == 0 and run.run() == 0
    assert any(e["server"] == "files" for e in sandbox.request_log)
    for log_file in (tmp_path / "logs").glob("*.log"):
        text = log_file.read_text()
        assert "sig=" not in text and "expires=" not in text
        assert "works.update -> 200" in text or "works.list -> 200" in text


def test_apostrophe_email_is_a_valid_contact(tmp_path, monkeypatch, make_sandbox):
    from contacts.csv_reader import read_contacts
    path = tmp_path / "c.csv"
    path.write_text("REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-a1,o'brien@x.example,REVU-a1\n"
                    "REVU-b2,O'Brien@X.example,user_b2\n")
    rows = read_contacts(str(path)).rows
    assert {r.email_key for r in rows} == {"o'brien@x.example"}


def test_a_resumed_set_whose_retired_duplicate_was_made_again_is_not_reported_merged(tmp_path, monkeypatch,
                                                                                      make_sandbox):
    """Stopped after its first duplicate was retired, the set is restored (or the integration
    makes that contact again) before the re-run: going on would call the set merged while
    the new contact keeps its reference and tickets."""
    from helpers import call
    dataset = build_dataset(1, seed=23, tickets=(2, 3), conversations=(1, 1), skipped=False, two_duplicate_sets=1)
    state = {"retired": None}

    def stop_after_first_merge(sandbox, entry):
        if entry.get("endpoint") == "rev-users.merge" and entry.get("applied") and state["retired"] is None:
            state["retired"] = entry["body"]["secondary_user"]
            stopper["event"].set()

    sandbox = make_sandbox(dataset.seed, on_request=stop_after_first_merge, merge_retire_after_gets=1)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    stopper = capture_stop_event(monkeypatch)
    assert run.preview() == 0
    assert run.run("--no-canary") == 130
    retired = sandbox.dump()["rev_users"][state["retired"]]
    call(sandbox, "rev-users.get", {"id": state["retired"]})            # retired by a read, if not already
    made_again = {"email": retired["email"], "display_name": "made again", "rev_org": retired["rev_org"]["id"],
                  "external_ref": retired["external_ref"]}
    assert call(sandbox, "rev-users.create", made_again).status_code == 201
    writes_before = len(sandbox.writes())
    assert run.run("--no-canary") == 1
    (line,) = run.latest_report()["sets"]
    assert line["status"] == "failed" and "make a fresh CSV" in line["error"]
    assert len(sandbox.writes()) == writes_before                       # nothing more was changed


def test_ctrl_c_while_the_preview_writes_its_files_says_it_finishes_them(tmp_path, monkeypatch, make_sandbox,
                                                                        capsys):
    """Issue 24 §3: a Ctrl-C once every set is previewed was acknowledged as "stopping" and then
    ignored (exit 0). Now it says the files are being finished and a second Ctrl-C abandons them."""
    import os
    import signal

    from operator_view import reports
    dataset = build_dataset(2, seed=37, skipped=False, two_duplicate_sets=0)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    real = reports.write_preview
    presses = {"n": 0}

    def ctrl_c_while_writing(*args, **kwargs):
        for _ in range(presses["n"]):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(reports, "write_preview", ctrl_c_while_writing)
    presses["n"] = 1
    capsys.readouterr()
    assert run.preview() == 0                                   # the files were finished, truthfully
    err = capsys.readouterr().err
    assert "Ctrl-C received. Every set is previewed: finishing the preview's files" in err
    assert "Stopping the preview" not in err and run.latest_report("preview")["complete"] is True
    presses["n"] = 2                                            # the second press abandons them
    monkeypatch.setattr(cli, "SAME_REQUEST_SECONDS", 0.0)       # (a second apart: not one request repeated)
    before = set(os.listdir(tmp_path / "reports"))
    assert run.preview() == 130
    assert set(os.listdir(tmp_path / "reports")) == before
