"""merging.plan.plan_run: the one resume decision, and reports' totals built once."""
from __future__ import annotations

from contacts.csv_reader import group_contacts, read_contacts
from merging.plan import finished_outcome, finished_preview, plan_run, set_key
from operator_view import reports
from runs.journal import Journal


def _sets(tmp_path, n=4):
    text = "REV_USER_ID,EMAIL,EXTERNAL_REF\r\n" + "".join(
        f"REVU-p{i},c{i}@x.example,REVU-p{i}\r\nREVU-d{i},c{i}@x.example,user_d{i}\r\n" for i in range(n))
    (tmp_path / "c.csv").write_text(text)
    return group_contacts(read_contacts(str(tmp_path / "c.csv")).rows)[0]


def test_plan_skips_finished_sets_and_caps_only_the_unfinished(tmp_path):
    sets = _sets(tmp_path)
    journal = Journal(str(tmp_path / "j.sqlite3"), "run0")
    journal.set_status(set_key(sets[1]), sets[1].email, "merged", context={"primary": {"display_id": "REVU-p1"}})
    journal.set_status(set_key(sets[2]), sets[2].email, "moved_only")
    plan = plan_run(journal, sets, max_merges=2, keep_duplicate=False)
    assert [ms.email for ms in plan.todo] == ["c0@x.example", "c2@x.example"]   # moved_only: merge it now
    assert list(plan.finished) == [sets[1].key]
    assert [ms.email for ms in plan.order] == ["c0@x.example", "c1@x.example", "c2@x.example"]
    kept = plan_run(journal, sets, max_merges=None, keep_duplicate=True)
    assert set(kept.finished) == {sets[1].key, sets[2].key} and [m.email for m in kept.todo] == \
        ["c0@x.example", "c3@x.example"]
    outcome = finished_outcome(sets[1], plan.finished[sets[1].key])
    assert outcome.status == "merged" and outcome.primary == "REVU-p1" and outcome.resumed is True
    assert finished_preview(sets[1], plan.finished[sets[1].key])["status"] == "already_merged"
    journal.close()
    fresh = plan_run(None, sets, max_merges=None, keep_duplicate=False)
    assert fresh.todo == sets == fresh.order and fresh.finished == {}


def test_skipped_sets_wait_unless_retried_and_then_come_after_the_untried_ones(tmp_path):
    """Batches go on: a set the live checks skipped is not tried again; with --retry-skipped it is,
    after every set not tried yet (a retry loop of --max-merges would otherwise never get past it)."""
    sets = _sets(tmp_path, 5)
    journal = Journal(str(tmp_path / "j.sqlite3"), "run0")
    for ms in sets[:2]:
        journal.set_status(set_key(ms), ms.email, "skipped", reason="contact_inactive")
    plan = plan_run(journal, sets, max_merges=2, keep_duplicate=False)
    assert [ms.email for ms in plan.todo] == ["c2@x.example", "c3@x.example"]
    assert set(plan.skipped_earlier) == {sets[0].key, sets[1].key}
    retried = plan_run(journal, sets, max_merges=4, keep_duplicate=False, retry_skipped=True)
    assert [ms.email for ms in retried.todo] == ["c2@x.example", "c3@x.example", "c4@x.example", "c0@x.example"]
    journal.close()


def test_merge_report_totals_and_csv_come_from_one_set_of_rows(tmp_path):
    dup = {"display_id": "REVU-d0", "tickets_moved": 3, "conversations_moved": 2, "messages": 1, "attachments": 0,
           "backups": ["b"], "backups_verified": True, "drift_appeared": [], "drift_vanished": []}
    report = {"sets": [{"email": "a@x", "status": "merged", "duplicates": [dup]},
                       {"email": "b@x", "status": "interrupted", "duplicates": []}],
              "skipped": [{"email": "c@x", "reason": "single_contact", "detail": "one contact"}]}
    json_path, csv_path = reports.write_merge_report(str(tmp_path), "merge_report_x", report)
    this_run = {"merge_sets": 2, "merged": 1, "moved_only": 0, "skipped": 0, "failed": 0, "pending": 1, "restored": 0,
                "tickets_moved": 3, "conversations_moved": 2}
    assert report["totals"] == dict(this_run, not_merge_sets=1, this_run=this_run, custom_field_refs=0,
                                    refs_without_contact=0, merge_notes_refused=0, custom_fields_moved=0,
                                    contact_entries=0, contact_files=0, csv_merge_sets=None, retry_later=0,
                                    sets_filled=0)
    lines = open(csv_path, encoding="utf-8").read().splitlines()
    assert lines[0].startswith("email,status") and len(lines) == 4
