"""The restore's report rows: one per duplicate of each set, then the backup folders not used.

The restore preview and the restore report are written by operator_view.reports.write_report
(JSON, CSV, HTML) from these rows; the screen's table reads them too.
"""
from __future__ import annotations

import json

from operator_view import reports
from operator_view.summary import plural
from runs.outcomes import SetStatus

PREVIEW_COLUMNS = ["email", "status", "primary", "duplicate", "action", "primary_ref_back", "tickets", "conversations",
                   "changed_since", "deleted_since", "left_alone", "custom_fields_back", "notes_back", "files_back",
                   "entries_not_writable", "backups", "writes", "detail"]
REPORT_COLUMNS = ["email", "status", "primary", "duplicate", "new_contact", "recreated", "primary_ref_back",
                  "moved_back", "moved_back_earlier", "already_back", "deleted_since", "left_alone",
                  "custom_fields_back",
                  "custom_fields_left", "notes_back", "files_back", "entries_not_writable", "notes_found_on_primary",
                  "backups", "error"]
# what a restore cannot give back, said in every restore report (the API's limits)
NOT_GIVEN_BACK = ("a re-created contact has a new id and display id, no full_name and is_verified false (the API "
                  "sets neither on a new contact); "
                  "notes written again have new ids, are "
                  "internal, and carry their original author, date and visibility in their text (the API cannot "
                  "set an author or a date); entries other than comments (system events) are not written again "
                  "(entries_not_writable); the notes the merge and the restore leave on the primary stay")


def _items(dup: dict, kind: str | None = None, action: str | None = None) -> list[str]:
    return [i["display_id"] for i in dup.get("items", []) if (kind is None or i["kind"] == kind)
            and (action is None or i.get("action") == action)]


def preview_rows(preview: dict) -> list[dict]:
    """One row per duplicate of each set (one per set when it has none to show), then the
    backup folders that are not used."""
    rows = []
    for s in preview["sets"]:
        primary = (s.get("primary") or {}).get("display_id")
        for n, dup in enumerate(s.get("duplicates") or [{}]):
            rows.append({"email": s["email"], "status": s["status"], "primary": primary,
                         "duplicate": dup.get("display_id"),
                         "action": None if not dup else ("re-create" if dup.get("recreate") else "use as is"),
                         "primary_ref_back": dup.get("primary_ref_back"),
                         "tickets": _items(dup, "ticket", "move_back"),
                         "conversations": _items(dup, "conversation", "move_back"),
                         "changed_since": [f"{i['display_id']} {json.dumps(i['changed_since'], sort_keys=True)}"
                                           for i in dup.get("items", []) if i.get("changed_since")],
                         "deleted_since": _items(dup, action="deleted_since"),
                         "left_alone": _items(dup, action="left_alone"),
                         "custom_fields_back": dup.get("custom_fields"), "notes_back": dup.get("notes"),
                         "files_back": dup.get("files"), "entries_not_writable": dup.get("entries_not_writable"),
                         "backups": dup.get("backups"),
                         # every write of the set, on its first row (the run makes no other)
                         "writes": [_write_line(w) for w in s.get("writes") or []] if n == 0 else [],
                         "detail": s.get("error") or s.get("note") or dup.get("blocked_by")})
    rows += [{"email": f.get("email"), "status": "backup_failed", "backups": [f["folder"]],
              "detail": f"{f['path']}: {f['reason']}"} for f in preview["failed_folders"]]
    return rows


def _write_line(write: dict) -> str:
    """One listed write as the preview's CSV and page show it ("item_back TKT-12")."""
    return f"{write.get('write')} {write.get('display_id') or write.get('id')}"


def preview_also(preview: dict) -> str:
    """What a restore would give back besides tickets and conversations, and what it cannot, in
    a few sentences ("" when nothing): sets part of which cannot be undone (an accepted backup
    loss), the custom fields, and the duplicates' own notes and files."""
    dups = [d for s in preview["sets"] if s.get("status") == "would_restore" for d in s.get("duplicates") or []]
    fields = sum(len(d.get("custom_fields") or []) for d in dups)
    notes, files = sum(d.get("notes") or 0 for d in dups), sum(d.get("files") or 0 for d in dups)
    other = sum(d.get("entries_not_writable") or 0 for d in dups)
    record_notes = sum(d.get("record_note") or 0 for d in dups)
    out = []
    partial = [s["email"] for s in preview["sets"] if s.get("status") == "would_restore"
               and any(d.get("not_in_backups") for d in s.get("duplicates") or [])]
    if partial:
        out.append(f"Part of {plural(len(partial), 'merge set')} cannot be undone ({', '.join(partial[:3])}"
                   f"{', …' if len(partial) > 3 else ''}): tickets or conversations the merge moved are in no backup "
                   f"here (a backup lost and accepted as lost); they stay on the primary (not_in_backups in the "
                   f"preview).")
    back = [s["email"] for s in preview["sets"] if s.get("status") == "would_restore"
            and (s.get("primary") or {}).get("fields_back")]
    left = sum(len((s.get("primary") or {}).get("fields_left") or []) for s in preview["sets"])
    if back or left:
        out.append(f"It would give back the fields --fill-blanks filled on {plural(len(back), 'primary', 'primaries')}"
                   + (f"; {plural(left, 'field')} changed since the fill would be left as they are" if left else "")
                   + " (fields_back, fields_left in the preview).")
    if fields:
        items = plural(fields, "ticket or conversation", "tickets and conversations")
        out.append(f"It would also give back the custom fields of {items} (where the primary still holds the "
                   f"duplicate's place).")
    if notes or files:
        more = f" (and {plural(record_notes, 'note')} for the files that were on the contacts themselves)" \
            if record_notes else ""
        out.append(f"It would write {plural(notes, 'note')} of the duplicates' own contact pages again on the "
                   f"re-created contacts (new ids), as internal comments with their author and date in their text"
                   f"{more}, and re-attach {plural(files, 'file')}"
                   + (f"; {plural(other, 'entry', 'entries')} of other types cannot be written through the API."
                      if other else "."))
    return " ".join(out)


def preview_totals(preview: dict) -> dict:
    """A restore preview's counts, in its screen's words: sets by status, the duplicates it would
    create again, the items it would give back, the writes it lists, the folders not used."""
    sets = preview["sets"]
    dups = [d for s in sets if s.get("status") == "would_restore" for d in s.get("duplicates") or []]
    return {"sets": len(sets), "would_restore": sum(1 for s in sets if s.get("status") == "would_restore"),
            "already_restored": sum(1 for s in sets if s.get("status") == "already_restored"),
            "failed": sum(1 for s in sets if s.get("status") == "failed"),
            "folders_failed": len(preview.get("failed_folders") or []),
            "contacts_to_recreate": sum(1 for d in dups if d.get("recreate")),
            "items_to_give_back": sum(1 for d in dups for i in d.get("items") or [] if i.get("action") == "move_back"),
            "writes": sum(len(s.get("writes") or []) for s in sets if s.get("status") == "would_restore")}


def report_rows(report: dict) -> list[dict]:
    """One row per duplicate of each set, then the backup folders that are not used."""
    rows = []
    for s in report["sets"]:
        primary = (s.get("primary") or {}).get("display_id")
        for dup in s.get("duplicates") or [{}]:
            rows.append({"email": s["email"], "status": s["status"], "primary": primary,
                         "duplicate": dup.get("display_id"), "new_contact": dup.get("new_display_id"),
                         "recreated": dup.get("recreated"), "recreated_earlier": dup.get("recreated_earlier"),
                         "primary_ref_back": dup.get("primary_ref_back"),
                         **{k: dup.get(k, []) for k in ("moved_back", "moved_back_earlier", "already_back",
                                                        "deleted_since", "left_alone",
                                                        "custom_fields_back", "custom_fields_left")},
                         **{k: dup.get(k) for k in ("notes_back", "files_back", "entries_not_writable",
                                                    "notes_found_on_primary")},
                         "backups": dup.get("backups"), "error": s.get("error") or s.get("note"),
                         "earlier": bool(s.get("earlier"))})
    rows += [{"email": f.get("email"), "status": "backup_failed", "backups": [f["folder"]],
              "error": f"{f['path']}: {f['reason']}"} for f in report["failed_folders"]]
    return rows


def report_totals(report: dict, rows: list[dict]) -> dict:
    count = lambda status: sum(1 for s in report["sets"] if s["status"] == status)  # noqa: E731
    earlier = sum(1 for s in report["sets"] if s["status"] == SetStatus.RESTORED and s.get("earlier"))
    return {"sets": len(report["sets"]), "restored": count(SetStatus.RESTORED) - earlier, "restored_earlier": earlier,
            "failed": count("failed"),
            "pending": count("pending") + count("interrupted"), "folders_failed": len(report["failed_folders"]),
            # this run's; with an interrupted run's before it: contacts_recreated_in_all
            "contacts_recreated": sum(1 for r in rows if r.get("recreated") and not r.get("earlier")
                                      and not r.get("recreated_earlier")),
            "contacts_recreated_in_all": sum(1 for r in rows if r.get("recreated")),
            # what this run gave back (a resumed set's earlier runs' moves apart: "items_moved_back_in_all")
            "items_moved_back": sum(len(r.get("moved_back") or []) - len(r.get("moved_back_earlier") or [])
                                    for r in rows if not r.get("earlier")),
            "items_moved_back_in_all": sum(len(r.get("moved_back") or []) for r in rows),
            "custom_fields_back": sum(len(r.get("custom_fields_back") or []) for r in rows if not r.get("earlier")),
            "notes_back": sum(r.get("notes_back") or 0 for r in rows if not r.get("earlier")),
            "files_back": sum(r.get("files_back") or 0 for r in rows if not r.get("earlier"))}


def write_preview(report_dir: str, name: str, preview: dict) -> tuple[str, str]:
    """`<name>.json`, `.csv` and `.html` of a restore preview; returns (json path, csv path)."""
    return reports.write_report(report_dir, name, preview, PREVIEW_COLUMNS, preview_rows(preview))


def write_restore_report(report_dir: str, name: str, report: dict) -> tuple[str, str]:
    """The restore report's files, its "totals" added first; returns (json path, csv path)."""
    reports.plan_line(report)   # the plan it followed, and who approved it
    rows = report_rows(report)
    report["totals"] = report_totals(report, rows)
    report["not_given_back"] = NOT_GIVEN_BACK
    return reports.write_report(report_dir, name, report, REPORT_COLUMNS, rows)
