"""Preview and merge reports (JSON and CSV), and the tables printed for admins.

Reports are what admins read and keep, and the CSV ones get opened in spreadsheets:
every cell that could be taken for a formula is escaped. Both are written atomically.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections import Counter

from operator_view import html_page, summary
from plumbing import cli
from plumbing.csv_files import csv_cell, write_csv
from plumbing.files import atomic_write_json, durable_file, make_private_dir


def write_report(report_dir: str, name: str, data: dict, columns: list[str], rows: list[dict],
                 html_columns: list[str] | None = None) -> tuple[str, str]:
    """Write `<name>.json` (data), `.csv` (rows) and `.html` (html_page's page of the same
    rows, `html_columns` shown); returns the JSON and CSV paths (`html_path` gives the third)."""
    make_private_dir(report_dir)
    json_path = os.path.join(report_dir, f"{name}.json")
    csv_path = os.path.join(report_dir, f"{name}.csv")
    data, rows = cli.scrub(data), cli.scrub(rows)   # no token, no terminal escape from a hostile answer
    atomic_write_json(json_path, data)
    write_csv(csv_path, columns, rows)
    html_page.write(html_path(json_path), data, rows=rows, columns=html_columns or columns)
    return json_path, csv_path


def html_path(json_path: str) -> str:
    """The HTML page written next to a JSON report."""
    return os.path.splitext(json_path)[0] + ".html"


# --------------------------------------------------------------------------- skipped groups
SKIPPED_COLUMNS = ["email", "reason", "line", "REV_USER_ID", "EMAIL", "EXTERNAL_REF", "DISPLAY_NAME", "FULL_NAME",
                   "TICKET_COUNT", "CREATED_AT", "UPDATED_AT"]


def write_skipped_rows(report_dir: str, name: str, rows) -> str:
    """Stream every row of the CSV's skipped groups to `<name>_skipped.csv` (one line per
    contact, its group's reason code first), in flat memory however many there are; written
    only on request (merge_contacts.py --preview --list-skipped).
    rows: iterable of (reason code, contacts.csv_reader.ContactRow). Returns the path."""
    make_private_dir(report_dir)
    path = os.path.join(report_dir, f"{name}_skipped.csv")
    with durable_file(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(SKIPPED_COLUMNS)
        for reason, row in rows:
            cells = row.as_dict()
            writer.writerow([csv_cell(row.email_key), reason] + [csv_cell(cells[c]) for c in SKIPPED_COLUMNS[2:]])
        text.flush()
        text.detach()
    return path


# --------------------------------------------------------------------------- preview
NOT_A_MERGE_SET = "not_a_merge_set"  # the status of a CSV group that is not a merge set, in report rows
PREVIEW_COLUMNS = ["email", "status", "reason", "primary", "duplicates", "duplicate_refs", "tickets", "conversations",
                   "messages", "attachments", "attachment_bytes", "estimated_calls", "estimated_backup_bytes",
                   "new_external_ref", "external_refs_kept", "refs_without_contact", "other_works", "frozen",
                   "ticket_ids", "conversation_ids", "custom_field_refs", "custom_field_only", "contact_notes",
                   "contact_entries", "contact_files", "contact_file_bytes", "field_differences", "fills", "detail"]


# what the HTML page shows of each row (the CSV keeps every column)
PREVIEW_HTML_COLUMNS = ["email", "status", "reason", "primary", "duplicate_refs", "tickets", "conversations",
                        "messages", "attachments", "custom_field_refs", "contact_notes", "contact_files",
                        "estimated_calls", "field_differences", "fills", "detail"]


def preview_rows(preview: dict) -> list[dict]:
    rows = []
    for record in preview["sets"]:
        dups = record.get("duplicates") or []
        primary = record.get("primary")
        rows.append({
            "email": record["email"], "status": record["status"], "reason": record.get("reason"),
            "detail": record.get("detail"),
            "primary": primary.get("display_id") if isinstance(primary, dict) else primary,
            "duplicates": [d.get("display_id") for d in dups],
            "duplicate_refs": [d.get("external_ref") for d in dups] or _csv_refs(record),
            # each item once, though two duplicates of the set report it
            "tickets": len(_distinct(dups, "ticket_ids", "tickets")) if dups else None,
            "conversations": len(_distinct(dups, "conversation_ids", "conversations")) if dups else None,
            "messages": sum(d["messages"] for d in dups) if dups else None,
            "attachments": sum(d["attachments"] for d in dups) if dups else None,
            "attachment_bytes": sum(d["attachment_bytes"] for d in dups) if dups else None,
            "estimated_calls": record.get("estimated_calls"),
            "estimated_backup_bytes": record.get("estimated_backup_bytes"),
            "new_external_ref": record.get("new_external_ref"),
            "external_refs_kept": record.get("external_refs_kept"),
            "refs_without_contact": record.get("refs_without_contact"),
            "other_works": [w for d in dups for w in d.get("other_works", [])],
            "frozen": [f for d in dups for f in d.get("frozen", [])],
            "ticket_ids": list(dict.fromkeys(t for d in dups for t in d["tickets"])),
            "conversation_ids": list(dict.fromkeys(c for d in dups for c in d["conversations"])),
            "custom_field_refs": [r for d in dups for r in d.get("custom_field_refs", [])],
            "custom_field_only": [r for d in dups for r in d.get("custom_field_only", [])],
            **{k: sum(d.get(k) or 0 for d in dups) if dups else None
               for k in ("contact_notes", "contact_entries", "contact_files", "contact_file_bytes")},
            # per field each contact's value (display_name: REVU-a="Ana" ...), and what --fill-blanks fills
            "field_differences": [_difference_line(d) for d in record.get("field_differences") or []],
            "fills": [f"{name}: {json.dumps(value, sort_keys=True, default=str)}"
                      for name, value in (record.get("fills") or {}).items()]})
    for group in preview["skipped"]:
        rows.append({"email": group["email"], "status": NOT_A_MERGE_SET, "reason": group["reason"],
                     "detail": group["detail"], "duplicates": [r["REV_USER_ID"] for r in group["rows"]],
                     "duplicate_refs": [r.get("EXTERNAL_REF") for r in group["rows"]]})
    return rows


def _consent_left_behind(diff: dict) -> bool:
    """A consent field the primary lacks and a duplicate holds (left on the retired duplicate)."""
    values = diff.get("values") or []
    return bool(diff.get("consent")) and bool(values) and values[0].get("value") in (None, "") \
        and any(v.get("value") not in (None, "") for v in values[1:])


def _difference_line(diff: dict) -> str:
    """One field difference as the CSV and the page show it."""
    values = " ".join(f"{v.get('contact')}{' (primary)' if v.get('role') == 'primary' else ''}="
                      f"{json.dumps(v.get('value'), default=str)}" for v in diff.get("values") or [])
    return f"{diff.get('field')}{' (consent: never filled)' if diff.get('consent') else ''}: {values}"


def _distinct(dups: list[dict], ids_key: str, names_key: str) -> set[str]:
    """The items the duplicates would move, each once (by id; by display id in older previews)."""
    return {item for d in dups for item in (d.get(ids_key) or d[names_key])}


def _csv_refs(record: dict) -> list[str]:
    """The `user_...` references of a set's duplicates as the CSV gives them (a skipped set)."""
    refs = [r.get("EXTERNAL_REF") for r in (record.get("csv_rows") or [])[1:]]   # the first row is the primary
    return [ref for ref in refs if ref and not str(ref).startswith("REVU-")]


def preview_totals(preview: dict) -> dict:
    """The preview's totals in the one vocabulary (summary.py): merge sets previewed, of them
    would_merge, skipped (by live checks), failed, already_done; not_merge_sets (the CSV's
    other groups); what would move (counts, bytes) and the estimated calls."""
    sets = preview["sets"]
    dups = [d for s in sets for d in s.get("duplicates") or []]
    return {"merge_sets": len(sets), "would_merge": sum(1 for s in sets if s["status"].startswith("would")),
            "skipped": sum(1 for s in sets if s["status"] == "skipped"),
            "failed": sum(1 for s in sets if s["status"] == "failed"),
            "already_done": sum(1 for s in sets if s["status"].startswith("already")),
            "restored": sum(1 for s in sets if s["status"] == "restored"),
            "merge_refused": sum(1 for s in sets if s["status"] == "merge_refused"),
            # field differences between each primary and its duplicates (issue 27), and the fills --fill-blanks makes
            "sets_with_differences": sum(1 for s in sets if s.get("field_differences")),
            "difference_fields": dict(sorted(Counter(d["field"] for s in sets for d in s.get("field_differences") or []
                                                     ).items())),
            "sets_filled": sum(1 for s in sets if s.get("fills")),
            # a consent/opt-out value only a duplicate holds: the merge retires it, --fill-blanks never copies it
            "consent_only_on_duplicates": sum(1 for s in sets if any(_consent_left_behind(d)
                                                                      for d in s.get("field_differences") or [])),
            "csv_merge_sets": (preview.get("csv") or {}).get("merge_sets"),
            "not_merge_sets": not_merge_sets(preview),
            "tickets": len(_distinct(dups, "ticket_ids", "tickets")),
            "conversations": len(_distinct(dups, "conversation_ids", "conversations")),
            "messages": sum(d["messages"] for d in dups), "attachments": sum(d["attachments"] for d in dups),
            "attachment_bytes": sum(d["attachment_bytes"] for d in dups),
            "custom_field_refs": sum(len(d.get("custom_field_refs", [])) + len(d.get("custom_field_only", []))
                                     for d in dups),
            "custom_fields_filter": next((s["custom_fields_filter"] for s in sets if "custom_fields_filter" in s),
                                         None),
            **{k: sum(d.get(k) or 0 for d in dups)
               for k in ("contact_notes", "contact_entries", "contact_files", "contact_file_bytes")},
            "estimated_calls": sum(s.get("estimated_calls") or 0 for s in sets),
            "estimated_contents": any(d.get("estimated") for d in dups),
            "refs_without_contact": sum(len(s.get("refs_without_contact") or []) for s in sets),
            "sets_with_other_works": sum(1 for s in sets
                                         if any(d.get("other_works") for d in s.get("duplicates") or [])),
            "frozen": sum(len(d.get("frozen", [])) for d in dups),
            "estimated_backup_bytes": sum(s.get("estimated_backup_bytes") or 0 for s in sets)}


def not_merge_sets(report: dict) -> int:
    """How many of the CSV's groups are not merge sets: all of them (`skipped_counts`, by
    reason), not only the few listed under the report's `skipped`."""
    counts = report.get("skipped_counts")
    return sum(counts.values()) if isinstance(counts, dict) else len(report.get("skipped") or [])


def write_preview(report_dir: str, name: str, preview: dict) -> tuple[str, str]:
    """Add the totals to `preview` and write `<name>.json` and `.csv`; returns both paths."""
    preview["totals"] = preview_totals(preview)
    return write_report(report_dir, name, preview, PREVIEW_COLUMNS, preview_rows(preview), PREVIEW_HTML_COLUMNS)


def load_reports(report_dir: str, prefix: str) -> list[tuple[str, dict]]:
    """Every readable `<prefix>_*.json` report in `report_dir` (a JSON object), as (path,
    data), newest first by its `created_at`; files that cannot be read are passed over."""
    found = []
    for path in glob.glob(os.path.join(report_dir, f"{prefix}_*.json")):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append((str(data.get("created_at", "")), path, data))
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return [(path, data) for _, path, data in found]


def load_previews(report_dir: str, csv_sha256: str, target: str) -> list[tuple[str, dict]]:
    """Every preview in `report_dir` made from a CSV with these exact bytes against the same
    DevRev (a sandbox preview does not unlock a production run), as (path, data), newest first."""
    return [(path, data) for path, data in load_reports(report_dir, "preview")
            if (data.get("csv") or {}).get("sha256") == csv_sha256 and data.get("target") == target]


# --------------------------------------------------------------------------- merge report
MERGE_COLUMNS = ["email", "status", "reason", "error", "note", "primary", "duplicates", "duplicate_refs",
                 "tickets_moved", "conversations_moved", "messages", "attachments", "backups", "backups_verified",
                 "drift_appeared", "drift_vanished", "custom_field_refs", "custom_fields_moved", "contact_entries",
                 "contact_files", "fields_filled", "external_ref_set", "other_duplicate_refs",
                 "external_refs_kept", "refs_without_contact", "merge_note", "merge_note_refused", "resumed",
                 "duration_s"]


MERGE_HTML_COLUMNS = ["email", "status", "reason", "primary", "duplicate_refs", "tickets_moved",
                      "conversations_moved", "backups", "backups_verified", "drift_appeared", "drift_vanished",
                      "external_ref_set", "error", "note"]  # drift and backups get their own sections


def merge_rows(report: dict) -> list[dict]:
    rows = []
    for outcome in report["sets"]:
        dups = outcome.get("duplicates") or []
        rows.append({
            "email": outcome["email"], "status": outcome["status"], "reason": outcome.get("reason"),
            # what went wrong, apart from what is only said ("already finished in an earlier run")
            "error": outcome.get("error"), "note": outcome.get("note"), "primary": outcome.get("primary"),
            "duplicates": [d["display_id"] for d in dups],
            "duplicate_refs": [d.get("external_ref") for d in dups],
            # distinct items (one moved for two duplicates of the set counts once), when known
            "tickets_moved": _set_moved(outcome, "moved_ticket_ids", dups, "tickets_moved"),
            "conversations_moved": _set_moved(outcome, "moved_conversation_ids", dups, "conversations_moved"),
            "messages": sum(d["messages"] for d in dups), "attachments": sum(d["attachments"] for d in dups),
            "backups": [b for d in dups for b in d["backups"]],
            "backups_verified": all(d["backups_verified"] for d in dups) if dups else None,
            "drift_appeared": [x for d in dups for x in d["drift_appeared"]],
            "drift_vanished": [x for d in dups for x in d["drift_vanished"]],
            "custom_field_refs": [x for d in dups for x in d.get("custom_field_refs", [])],
            "custom_fields_moved": [x for d in dups for x in d.get("custom_fields_moved", [])],
            "contact_entries": sum(d.get("contact_entries") or 0 for d in dups),
            "contact_files": sum(d.get("contact_files") or 0 for d in dups),
            "external_ref_set": outcome.get("external_ref_set"),
            "other_duplicate_refs": outcome.get("other_duplicate_refs"),
            "external_refs_kept": outcome.get("external_refs_kept"),
            "refs_without_contact": outcome.get("refs_without_contact"),
            "fields_filled": sorted(outcome.get("fields_filled") or []),
            "merge_note": outcome.get("merge_note"), "merge_note_refused": outcome.get("merge_note_refused"),
            "resumed": outcome.get("resumed"), "duration_s": outcome.get("duration_s")})
    for group in report["skipped"]:
        rows.append({"email": group["email"], "status": NOT_A_MERGE_SET, "reason": group["reason"],
                     "note": group["detail"],
                     "duplicate_refs": [r.get("EXTERNAL_REF") for r in group.get("rows") or []]})
    return rows


def _set_moved(outcome: dict, ids_key: str, dups: list[dict], count_key: str) -> int:
    ids = outcome.get(ids_key)
    return len(ids) if ids is not None else sum(d[count_key] for d in dups)


def _distinct_total(sets: list[dict], ids_key: str, count_key: str) -> int:
    """Items moved across the run, each once (a ticket two sets share counts once); a set
    line without the ids (an older shape) adds its duplicates' counts."""
    ids: set[str] = set()
    uncounted = 0
    for outcome in sets:
        if outcome.get(ids_key) is not None:
            ids.update(outcome[ids_key])
        else:
            uncounted += sum(d.get(count_key) or 0 for d in outcome.get("duplicates") or [])
    return len(ids) + uncounted


def merge_totals(report: dict, rows: list[dict]) -> dict:
    """The merge report's totals so far, in the one vocabulary (summary.py): merge sets by
    outcome, the CSV's groups that are not merge sets, distinct tickets and conversations moved
    (each once, though two duplicates or two sets had it); under "this_run" the same for the
    sets this run worked on (not those finished earlier or not reached). `rows`:
    merge_rows(report), kept for callers."""
    def moved(sets: list[dict]) -> dict:
        return {"tickets_moved": _distinct_total(sets, "moved_ticket_ids", "tickets_moved"),
                "conversations_moved": _distinct_total(sets, "moved_conversation_ids", "conversations_moved")}

    totals = dict(summary.count_merge_sets((s["status"] for s in report["sets"]), not_merge_sets(report)),
                  **moved(report["sets"]), csv_merge_sets=(report.get("csv") or {}).get("merge_sets"))
    mine = [s for s in report["sets"] if not s.get("finished_earlier") and not s.get("not_reached")]
    this_run = summary.count_merge_sets((s["status"] for s in mine), 0)
    this_run.pop("not_merge_sets")
    # what this run itself moved: a resumed set's earlier moves are the earlier runs' (so far counts them)
    this_run.update({"tickets_moved": _distinct_total(mine, "this_run_ticket_ids", "tickets_moved"),
                     "conversations_moved": _distinct_total(mine, "this_run_conversation_ids",
                                                            "conversations_moved")})
    totals["this_run"] = this_run
    # objects naming a duplicate in a custom field, and those whose fields name the primary now
    totals["custom_field_refs"] = sum(len(r.get("custom_field_refs") or []) for r in rows)
    totals["custom_fields_moved"] = sum(len(r.get("custom_fields_moved") or []) for r in rows)
    totals["contact_entries"] = sum(r.get("contact_entries") or 0 for r in rows)
    totals["contact_files"] = sum(r.get("contact_files") or 0 for r in rows)
    # user_ references of merged duplicates that no contact holds (DevRev keeps one per contact)
    totals["refs_without_contact"] = sum(len(s.get("refs_without_contact") or []) for s in report["sets"])
    totals["merge_notes_refused"] = sum(1 for s in report["sets"] if s.get("merge_note_refused"))
    # failed sets a later run may finish without a person (a merge job running, DevRev busy): exit 75
    totals["retry_later"] = sum(1 for s in report["sets"] if s.get("retry_later"))
    totals["sets_filled"] = sum(1 for s in mine if s.get("fields_filled"))   # --fill-blanks, this run
    return totals


def plan_line(report: dict) -> None:
    """A run that followed a plan (--plan) says which, and who approved it, in one line the page's
    header shows ("approved plan"); the "plan" block keeps the same in fields."""
    plan = report.get("plan")
    if isinstance(plan, dict):
        report["approved_plan"] = f"{plan.get('path')} (sha256 {str(plan.get('sha256'))[:16]}…), by " \
            f"{plan.get('author')}, " + (f"approved by {plan['approved_by']}, key {plan.get('key_fingerprint')}"
                                        if plan.get("approved_by") else "not approved (approval not required)")


def write_merge_report(report_dir: str, name: str, report: dict) -> tuple[str, str]:
    """Add the totals to `report` and write `<name>.json` and `.csv` (rows built once)."""
    plan_line(report)
    rows = merge_rows(report)
    report["totals"] = merge_totals(report, rows)
    return write_report(report_dir, name, report, MERGE_COLUMNS, rows, MERGE_HTML_COLUMNS)
