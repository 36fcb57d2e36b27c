"""Issue 27: field differences in the preview, and an opt-in --fill-blanks that a restore undoes.

The rule is tested alone (merging.field_fill, restoring.fields_back), then on the emulator's demo
data, whose first sets differ in a few fields (a tag on each contact, a phone number and a
description on the duplicate only, a longer full name, a custom field and a consent flag).
"""
from __future__ import annotations

import pytest

from devrev_sandbox.dataset import DEMO_CSV, DEMO_SEED
from helpers import MergeRun, normalized
from merging import field_fill
from merging.field_fill import differences, parse_fields, plan_fill, update_body
from plumbing.cli import UsageError
from restoring.fields_back import plan_fields_back

VIP = {"tag": {"id": "don:core:t/1", "display_id": "TAG-1", "name": "vip"}}
IMPORTED = {"tag": {"id": "don:core:t/2", "display_id": "TAG-2", "name": "imported"}}


def contact(display_id: str, created: str = "2026-01-01T00:00:00Z", **fields) -> dict:
    return {"id": "don:" + display_id, "display_id": display_id, "created_date": created, "state": "active",
            "modified_date": "2026-02-02T00:00:00Z", **fields}


# --------------------------------------------------------------------------- the rule alone
def test_blanks_are_filled_from_the_newest_duplicate_and_nothing_the_primary_has_is_overwritten():
    primary = contact("REVU-p", display_name="Ana", phone_numbers=["+14155550100"], tags=[VIP],
                      custom_fields={"tnt__tier": None, "tnt__region": "EU"})
    old = contact("REVU-old", "2026-01-02T00:00:00Z", display_name="ana@x", description="old note",
                  phone_numbers=["+14155550100", "+14155550111"], custom_fields={"tnt__tier": "silver"})
    new = contact("REVU-new", "2026-03-01T00:00:00Z", description="new note", tags=[IMPORTED, VIP],
                  custom_fields={"tnt__tier": "gold", "tnt__region": "US", "tnt__marketing_opt_out": True})
    plan = plan_fill(primary, [old, new], field_fill.FILLABLE)
    assert "display_name" not in plan.values                        # the primary has one: kept
    assert plan.values["description"] == "new note"                 # the newest duplicate's
    assert plan.values["phone_numbers"] == ["+14155550100", "+14155550111"]   # union, the primary's first
    assert plan.values["tags"] == [VIP, IMPORTED]
    assert plan.values["custom_fields"] == {"tnt__tier": "gold", "tnt__region": "EU"}   # no consent flag widened
    assert set(plan.filled) == {"description", "phone_numbers", "tags", "custom_fields.tnt__tier"}
    assert plan.before == {"description": None, "phone_numbers": ["+14155550100"], "tags": [VIP],
                           "custom_fields": {"tnt__tier": None, "tnt__region": "EU"}}
    assert update_body({"tags": plan.values["tags"]}) == {"tags": [{"id": "don:core:t/1"}, {"id": "don:core:t/2"}]}
    assert not plan_fill(primary, [old, new], ("display_name",))     # nothing blank: an empty plan
    assert plan_fill(primary, [old, new], ("phone_numbers",)).values == {"phone_numbers": plan.values["phone_numbers"]}


def test_differences_name_every_field_that_differs_with_each_contacts_value_the_primary_first():
    primary = contact("REVU-p", email="Ana@X.example", display_name="Ana", tags=[VIP],
                      custom_fields={"tnt__marketing_opt_out": False})
    dup = contact("REVU-d", email="ana@x.example", display_name="Ana", phone_numbers=["+14155550111"],
                  custom_fields={"tnt__marketing_opt_out": True}, created_by={"id": "don:bot"})
    found = {d["field"]: d for d in differences(primary, [dup])}
    assert set(found) == {"phone_numbers", "tags", "custom_fields.tnt__marketing_opt_out"}   # email: case only
    assert found["tags"]["values"] == [{"contact": "REVU-p", "role": "primary", "value": ["vip"]},
                                       {"contact": "REVU-d", "role": "duplicate", "value": None}]
    assert found["custom_fields.tnt__marketing_opt_out"]["consent"] is True


@pytest.mark.parametrize("text, fields", [("all", field_fill.FILLABLE),
                                          ("tags, phone_numbers", ("phone_numbers", "tags"))])
def test_fill_blanks_fields_are_parsed(text, fields):
    assert parse_fields(text) == fields


@pytest.mark.parametrize("text", ["", "email", "all,tags", "phone"])
def test_fill_blanks_refuses_what_it_cannot_fill(text):
    with pytest.raises(UsageError):
        parse_fields(text)


def test_a_restore_gives_back_what_the_fill_wrote_and_leaves_a_field_changed_since():
    fill = {"before": {"description": None, "phone_numbers": [], "custom_fields": {"tnt__tier": None}},
            "after": {"description": "note", "phone_numbers": ["+14155550111"], "custom_fields": {"tnt__tier": "gold"}}}
    now = contact("REVU-p", description="note", phone_numbers=["+14155550111", "+14155550199"],
                  custom_fields={"tnt__tier": "gold", "tnt__region": "EU"})
    back = plan_fields_back([fill], now)
    assert back.back == ["description", "custom_fields.tnt__tier"] and back.left == ["phone_numbers"]
    assert back.body == {"description": "", "custom_fields": {"tnt__tier": None, "tnt__region": "EU"}}


# --------------------------------------------------------------------------- on the emulator's demo data
def _demo(tmp_path, monkeypatch, make_sandbox) -> MergeRun:
    sandbox = make_sandbox(DEMO_SEED)
    return MergeRun(tmp_path, sandbox, None, monkeypatch, csv_text=open(DEMO_CSV, encoding="utf-8", newline="").read())


def test_the_preview_shows_the_differences_exactly_as_the_emulator_holds_the_contacts(tmp_path, monkeypatch,
                                                                                    make_sandbox, capsys):
    run = _demo(tmp_path, monkeypatch, make_sandbox)
    capsys.readouterr()
    assert run.preview() == 0
    out = capsys.readouterr().out
    assert "merge sets differ in contact fields between the primary and its duplicates" in out
    users = run.sandbox.dump()["rev_users"]
    by_display = {u["display_id"]: u for u in users.values()}
    preview = run.latest_report("preview")
    checked = 0
    for record in preview["sets"]:
        for diff in record.get("field_differences") or []:
            name = diff["field"]
            for value in diff["values"]:
                user = by_display[value["contact"]]
                raw = (user.get("custom_fields") or {}).get(name.split(".", 1)[1]) if name.startswith(
                    "custom_fields.") else user.get(name)
                assert value["value"] == field_fill.shown(name, raw), (record["email"], name, value)
                checked += 1
    assert checked > 20
    first = {d["field"]: d for d in preview["sets"][0]["field_differences"]}
    assert {"description", "phone_numbers", "tags"} <= set(first)
    assert first["phone_numbers"]["values"][0] == {"contact": preview["sets"][0]["primary"]["display_id"],
                                                   "role": "primary", "value": None}
    assert preview["totals"]["sets_with_differences"] >= 2 and preview["totals"]["sets_filled"] == 0
    assert run.run() == 0      # without --fill-blanks no contact field but the reference is written
    written = {k for e in run.sandbox.write_attempts() if e["endpoint"] == "rev-users.update" for k in e["body"]}
    assert written <= {"id", "external_ref", "external_refs"}


@pytest.mark.slow
def test_fill_blanks_all_then_a_restore_leaves_every_contacts_fields_as_before(tmp_path, monkeypatch, make_sandbox):
    import restore_contacts
    from test_restore import expected_after_restore, recreated
    run = _demo(tmp_path, monkeypatch, make_sandbox)
    before = normalized(run.sandbox.dump())
    assert run.preview() == 0
    assert run.run("--fill-blanks", "all") == 2                    # the preview did not show the fills
    assert run.preview("--fill-blanks", "all") == 0
    fills = {s["email"]: s["fills"] for s in run.latest_report("preview")["sets"] if s.get("fills")}
    assert len(fills) == 2
    assert run.run("--fill-blanks", "all") == 0
    report = run.latest_report()
    assert {s["email"]: s["fields_filled"] for s in report["sets"] if s.get("fields_filled")} == fills
    after_merge = normalized(run.sandbox.dump())
    first = run.latest_report("preview")["sets"][0]["primary"]["id"]
    assert after_merge["rev_users"][first]["phone_numbers"] == ["+14155550123"]
    assert after_merge["rev_users"][first]["description"] == "Imported from the helpdesk; prefers email"
    assert len(after_merge["rev_users"][first]["tags"]) == 2
    second = run.latest_report("preview")["sets"][1]["primary"]["id"]
    assert after_merge["rev_users"][second]["custom_fields"] == {"tnt__account_tier": "gold"}   # no opt-out taken
    paths = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
             "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "savepoints" / "r.sqlite3"),
             "--merge-savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]
    assert restore_contacts.main(paths + ["--preview"]) == 0
    assert restore_contacts.main(paths) == 0
    import glob
    import json
    import os
    with open(max(glob.glob(str(tmp_path / "reports" / "restore_report_*.json")), key=os.path.getmtime),
              encoding="utf-8") as fh:
        restore = json.load(fh)
    after = normalized(run.sandbox.dump())
    assert after == expected_after_restore(before, after, recreated(restore))   # every contact's fields as before


def test_a_tenant_refusing_a_contacts_other_fields_on_create_gets_it_back_without_them(tmp_path, monkeypatch,
                                                                                     make_sandbox):
    """[I] rev-users.create may refuse custom fields without their schema (400): nothing was
    created, so the restore creates the contact again with its email, name, workspace and
    reference only, and the set is restored."""
    import json

    import restore_contacts
    from devrev_sandbox.faults import Scripted
    run = _demo(tmp_path, monkeypatch, make_sandbox)
    ben = "ben@customer1.example"
    assert run.preview("--only", ben) == 0 and run.run("--only", ben) == 0
    run.sandbox.script("rev-users.create", Scripted(400, {"type": "bad_request", "message": "custom field schema "
                                                          "required"}))
    paths = ["--backup-dir", str(tmp_path / "backups"), "--report-dir", str(tmp_path / "reports"),
             "--log-dir", str(tmp_path / "logs"), "--savepoint", str(tmp_path / "savepoints" / "r.sqlite3"),
             "--merge-savepoint", str(tmp_path / "savepoints" / "j.sqlite3")]
    assert restore_contacts.main(paths + ["--preview"]) == 0 and restore_contacts.main(paths) == 0
    creates = [e for e in run.sandbox.write_attempts() if e["endpoint"] == "rev-users.create"]
    assert len(creates) == 2 and "custom_fields" in creates[0]["body"] and "custom_fields" not in creates[1]["body"]
    report = max((tmp_path / "reports").glob("restore_report_*.json"), key=lambda p: p.stat().st_mtime)
    assert [s["status"] for s in json.loads(report.read_text(encoding="utf-8"))["sets"]] == ["restored"]


def test_a_re_run_never_fills_what_no_preview_showed_and_a_narrower_list_runs(tmp_path, monkeypatch, make_sandbox,
                                                                              capsys):
    """The trial's findings: a value changed after the preview failed the set once, then a plain
    re-run filled it; a run filling fewer fields than the preview showed failed for no reason."""
    run = _demo(tmp_path, monkeypatch, make_sandbox)
    ana = "ana@customer0.example"
    assert run.preview("--only", ana, "--fill-blanks", "tags,description") == 0
    newest = next(d for d in run.latest_report("preview")["sets"][0]["duplicates"])["id"]
    with run.sandbox.state.lock:                   # the newest duplicate's description changes after the preview
        run.sandbox.state.users[newest]["description"] = "changed after the preview"
    for _ in range(2):                             # the first run, and a re-run of the same command
        assert run.run("--only", ana, "--fill-blanks", "tags,description") == 1
        assert "changed since the preview (description)" in run.latest_report()["sets"][0]["error"]
    primary = run.latest_report("preview")["sets"][0]["primary"]["id"]
    assert "description" not in run.sandbox.dump()["rev_users"][primary]
    # a narrower list than the preview's: the tags alone, as that preview showed them
    assert run.run("--only", ana, "--fill-blanks", "tags") == 0
    line = run.latest_report()["sets"][0]
    assert line["status"] == "merged" and set(line["fields_filled"]) == {"tags"}
    assert line["fields_filled"]["tags"] == ["vip", "imported"]      # in the order written, the primary's first
    assert "description" not in run.sandbox.dump()["rev_users"][primary]


def test_repeating_fill_blanks_fills_the_fields_of_every_one(tmp_path, monkeypatch):
    import merge_contacts
    args = merge_contacts.build_parser().parse_args(["--sandbox", "--fill-blanks", "tags", "--fill-blanks",
                                                     "description"])
    assert merge_contacts._checked(args).fill_blanks == ("description", "tags")
    with pytest.raises(UsageError, match="full_name cannot be written"):
        merge_contacts.build_parser().parse_args(["--sandbox", "--fill-blanks", "full_name"])


def test_a_consent_value_held_only_by_a_duplicate_is_said_on_screen(tmp_path, monkeypatch, make_sandbox, capsys):
    run = _demo(tmp_path, monkeypatch, make_sandbox)
    capsys.readouterr()
    assert run.preview() == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 merge set: a consent or opt-out custom field is set on a duplicate only" in out
    assert run.latest_report("preview")["totals"]["consent_only_on_duplicates"] == 1
