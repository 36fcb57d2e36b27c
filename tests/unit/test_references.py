"""What a merge does with the duplicates' user_ references (issue 21 §3), as the preview says it."""
from __future__ import annotations

from merging.engine import reference_plan
from operator_view import summary

OLD = {"external_ref": "user_old", "modified_date": "2026-01-01T00:00:00Z"}
NEW = {"external_ref": "user_new", "modified_date": "2026-03-01T00:00:00Z"}
MID = {"external_ref": "user_mid", "modified_date": "2026-02-01T00:00:00Z"}


def test_where_devrev_keeps_one_reference_the_others_belong_to_no_contact():
    plan = reference_plan({"external_ref": "REVU-p"}, [OLD, NEW, MID])
    assert plan == {"new_external_ref": "user_new", "refs_without_contact": ["user_mid", "user_old"]}
    assert reference_plan({"external_ref": "REVU-p"}, [NEW]) == {"new_external_ref": "user_new",
                                                                  "refs_without_contact": []}


def test_where_devrev_keeps_a_list_the_primary_keeps_every_reference_newest_first():
    plan = reference_plan({"external_ref": "REVU-p", "external_refs": ["REVU-p", "crm-7"]}, [OLD, NEW])
    assert plan == {"new_external_ref": "user_new", "external_refs_kept": ["user_new", "user_old", "REVU-p", "crm-7"]}


def test_the_preview_summary_names_references_left_without_a_contact():
    totals = {"merge_sets": 2, "would_merge": 2, "tickets": 1, "conversations": 0, "messages": 0, "attachments": 0,
              "attachment_bytes": 0, "estimated_calls": 9, "estimated_backup_bytes": 10}
    assert "belong to no contact" not in summary.describe_preview(totals)
    text = summary.describe_preview(dict(totals, refs_without_contact=2))
    assert "2 user_ references of merged duplicates would belong to no contact" in text
