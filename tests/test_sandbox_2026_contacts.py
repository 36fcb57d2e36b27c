"""The emulator's 2026 shapes (devrev-api.md S15): a contact's own page (timeline entries and
files), what a merge does with it (mode contact_timeline_on_merge), uploads (artifacts.prepare,
then a presigned multipart POST to the file host) and attaching them to a comment, custom fields
written with their schema named (works.update, conversations.update), the works.list
custom_fields filter (mode works_custom_fields_filter), and the demo data that has them all."""
from __future__ import annotations

import base64
import json

import pytest
import requests

from devrev_sandbox.dataset import DEMO_CSV, DEMO_SEED, EMAIL_MEMBERS_FIELD, build_demo
from devrev_sandbox.modes import BehaviourModes
from devrev_sandbox.validation import schema_names_field
from helpers import DUP_REF, TEST_TOKEN, call, ok

NOTES = b"Call notes: prefers email.\r\nBilling address changes in March.\n"
CARD = b"BEGIN:VCARD\nFN:Jane Roe\nEND:VCARD\n"
MEMBERS = EMAIL_MEMBERS_FIELD


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def page_seed() -> dict:
    """Jane and her duplicate; the duplicate has a contact page: a note with a file, a note
    without, a file on the record, and a file (9003) a ticket's comment holds too."""
    shared = {"number": 9003, "name": "shared.txt", "type": "text/plain", "content_b64": b64(b"shared")}
    return {
        "workspaces": [{"key": "acme", "display_name": "Acme Inc"}],
        "dev_users": [{"key": "agent1", "email": "agent1@support.example"}],
        "rev_users": [
            {"key": "jane", "email": "jane@acme.example", "workspace": "acme",
             "comments": [{"by": "agent1", "body": "primary's own note", "visibility": "internal",
                           "created_date": "2024-01-01T00:00:00.000Z"}]},
            {"key": "jane-dup", "email": "jane@acme.example", "workspace": "acme", "external_ref": DUP_REF,
             "comments": [
                 {"by": "agent1", "body": "call with Jane", "visibility": "internal",
                  "created_date": "2024-02-01T00:00:00.000Z",
                  "artifacts": [{"number": 9001, "name": "call-notes.txt", "type": "text/plain",
                                 "content_b64": b64(NOTES)}, shared]},
                 {"by": "agent1", "body": "no file here", "visibility": "internal",
                  "created_date": "2024-02-02T00:00:00.000Z"}],
             "artifacts": [{"number": 9002, "name": "card.vcf", "type": "text/vcard", "content_b64": b64(CARD)}]},
            {"key": "bob", "email": "bob@acme.example", "workspace": "acme"},
        ],
        "tickets": [
            {"key": "t1", "reported_by": ["jane-dup"], "owned_by": ["agent1"], "workspace": "acme",
             "subtype": "email", "custom_schema_fragments": ["don:core:dvrv-us-1:devo/DEVO1x:custom_type_fragment/1"],
             "custom_fields": {MEMBERS: ["jane", "jane-dup"], "tnt__region": "emea", "ctype__mailbox": "support"},
             "comments": [{"by": "agent1", "body": "holds the shared file", "artifacts": [shared]}]},
            {"key": "t2", "reported_by": ["jane"], "owned_by": ["agent1"], "workspace": "acme",
             "custom_fields": {MEMBERS: ["jane"]}},
            {"key": "t3", "reported_by": ["bob"], "owned_by": ["agent1"], "workspace": "acme"},
        ],
        "conversations": [{"key": "c1", "members": ["jane-dup", "agent1"], "owned_by": ["agent1"],
                           "custom_fields": {MEMBERS: ["jane-dup"]}}],
    }


def timeline(sb, object_id: str) -> list[dict]:
    return ok(call(sb, "timeline-entries.list", {"object": object_id}))["timeline_entries"]


def download(sb, art_id: str) -> bytes:
    url = ok(call(sb, "artifacts.locate", {"id": art_id}))["url"]
    got = requests.get(url, timeout=10)
    assert got.status_code == 200
    return got.content


def merge_and_retire(sb, primary: str, secondary: str) -> None:
    """rev-users.merge, then the read that retires the secondary (merge_retire_after_gets=1)."""
    ok(call(sb, "rev-users.merge", {"primary_user": primary, "secondary_user": secondary}))
    call(sb, "rev-users.get", {"id": secondary})
    assert sb.dump()["rev_users"][secondary]["_retired"]


# ----------------------------------------------------------------------------- contact pages
def test_a_contact_page_lists_its_notes_and_the_contact_carries_its_files(make_sandbox):
    sb = make_sandbox(page_seed())
    dup = sb.key_id("jane-dup")
    entries = timeline(sb, dup)
    assert sorted(e["body"] for e in entries) == ["call with Jane", "no file here"]
    assert {e["object"] for e in entries} == {dup} and {e["object_type"] for e in entries} == {"rev_user"}
    with_file = next(e for e in entries if e["body"] == "call with Jane")
    assert [a["file"]["name"] for a in with_file["artifacts"]] == ["call-notes.txt", "shared.txt"]
    assert "artifacts" not in next(e for e in entries if e["body"] == "no file here")
    assert download(sb, with_file["artifacts"][0]["id"]) == NOTES

    contact = ok(call(sb, "rev-users.get", {"id": dup}))["rev_user"]
    assert [(a["display_id"], a["file"]["name"], a["file"]["size"]) for a in contact["artifacts"]] == [
        ("artifact-9002", "card.vcf", len(CARD))]
    assert download(sb, contact["artifacts"][0]["id"]) == CARD
    for endpoint in ("rev-users.list", "rev-users.scan"):
        listed = {u["id"]: u for u in ok(call(sb, endpoint, {}))["rev_users"]}
        assert listed[dup]["artifacts"] == contact["artifacts"]
        assert "artifacts" not in listed[sb.key_id("bob")]   # no files: no field
    assert sb.dump()["rev_users"][dup]["artifacts"] == contact["artifacts"]
    updated = ok(call(sb, "rev-users.update", {"id": dup, "display_name": "Jane (copy)"}))["rev_user"]
    assert updated["artifacts"] == contact["artifacts"]


@pytest.mark.parametrize("outcome", ["deleted", "404", "primary_identity"])
def test_merge_deletes_the_secondarys_page_by_default(make_sandbox, outcome):
    sb = make_sandbox(page_seed(), merge_retire_after_gets=1, merge_outcome=outcome)
    assert sb.modes.contact_timeline_on_merge == "deleted"
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    arts = {a["display_id"]: a["id"] for a in sb.dump()["artifacts"].values()}
    merge_and_retire(sb, jane, dup)

    dump = sb.dump()
    assert dup not in dump["timeline_entries"]
    assert "artifacts" not in dump["rev_users"][dup]
    for gone in ("artifact-9001", "artifact-9002"):   # the note's file and the contact's
        assert arts[gone] not in dump["artifacts"]
        for endpoint in ("artifacts.get", "artifacts.locate"):
            assert call(sb, endpoint, {"id": arts[gone]}).status_code == 404
    assert download(sb, arts["artifact-9003"]) == b"shared"   # a ticket's comment still holds it
    assert [e["body"] for e in timeline(sb, jane)] == ["primary's own note"]
    assert "artifacts" not in ok(call(sb, "rev-users.get", {"id": jane}))["rev_user"]
    answer = call(sb, "timeline-entries.list", {"object": dup})
    if outcome == "404":
        assert answer.status_code == 404
    else:
        assert ok(answer)["timeline_entries"] == []


@pytest.mark.parametrize("outcome", ["deleted", "404"])
def test_merge_can_move_the_secondarys_page_to_the_primary(make_sandbox, outcome):
    sb = make_sandbox(page_seed(), merge_retire_after_gets=1, merge_outcome=outcome,
                      contact_timeline_on_merge="moved")
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    moved_ids = [e["id"] for e in sb.dump()["timeline_entries"][dup]]
    merge_and_retire(sb, jane, dup)

    dump = sb.dump()
    assert dup not in dump["timeline_entries"]
    stored = dump["timeline_entries"][jane]
    assert [e["body"] for e in stored] == ["primary's own note", "call with Jane", "no file here"]  # at the end
    assert [e["id"] for e in stored[1:]] == moved_ids and {e["object"] for e in stored} == {jane}
    assert {e["id"] for e in timeline(sb, jane)} == {e["id"] for e in stored}
    moved = ok(call(sb, "timeline-entries.get", {"id": moved_ids[0]}))["timeline_entry"]
    assert moved["object"] == jane and moved["object_type"] == "rev_user"
    assert download(sb, moved["artifacts"][0]["id"]) == NOTES
    primary = ok(call(sb, "rev-users.get", {"id": jane}))["rev_user"]
    assert [a["display_id"] for a in primary["artifacts"]] == ["artifact-9002"]
    assert download(sb, primary["artifacts"][0]["id"]) == CARD


def test_the_contact_page_mode_is_checked_and_parsed():
    with pytest.raises(ValueError, match="contact_timeline_on_merge"):
        BehaviourModes(contact_timeline_on_merge="kept")
    with pytest.raises(ValueError, match="works_custom_fields_filter"):
        BehaviourModes(works_custom_fields_filter="ignored")
    modes = BehaviourModes().with_pairs(["contact_timeline_on_merge=moved", "works_custom_fields_filter=accepted"])
    assert (modes.contact_timeline_on_merge, modes.works_custom_fields_filter) == ("moved", "accepted")


# ----------------------------------------------------------------------------- uploads
def upload(prepared: dict, data: bytes, *, name: str = "notes.txt", fields: dict | None = None,
           **kwargs) -> requests.Response:
    """The presigned POST: every form_data field (or `fields`), then the file part."""
    form = fields if fields is not None else {f["key"]: f["value"] for f in prepared["form_data"]}
    return requests.post(prepared["url"], data=form, files={"file": (name, data, "text/plain")}, timeout=10,
                         **kwargs)


def test_prepare_upload_then_attach_to_a_contact_note(make_sandbox, tmp_path):
    state_file = str(tmp_path / "state.json")
    sb = make_sandbox(page_seed(), state_file=state_file)
    dup = sb.key_id("jane-dup")
    prepared = ok(call(sb, "artifacts.prepare", {"file_name": "restored notes.txt", "file_type": "text/plain"}))
    assert set(prepared) == {"id", "url", "form_data"}
    assert prepared["url"].startswith(sb.files_base_url + "/upload/")
    assert {f["key"] for f in prepared["form_data"]} == {"key", "Content-Type", "policy", "x-amz-signature"}

    pending = ok(call(sb, "artifacts.get", {"id": prepared["id"]}))["artifact"]
    assert pending["file"] == {"name": "restored notes.txt", "type": "text/plain"}   # no size before the upload
    refused = call(sb, "artifacts.locate", {"id": prepared["id"]})
    assert refused.status_code == 404
    early = call(sb, "timeline-entries.create", {"object": dup, "type": "timeline_comment", "body": "x",
                                                 "artifacts": [prepared["id"]]})
    assert early.status_code == 400 and early.json()["field_name"] == "artifacts"

    sent = upload(prepared, NOTES)
    assert sent.status_code == 204 and sent.content == b""
    uploaded = ok(call(sb, "artifacts.get", {"id": prepared["id"]}))["artifact"]
    assert uploaded["file"] == {"name": "restored notes.txt", "type": "text/plain", "size": len(NOTES)}
    assert download(sb, prepared["id"]) == NOTES
    assert [(e["endpoint"], e["path"]) for e in sb.writes() if e["server"] == "files"] == [
        ("upload", "/upload/" + prepared["url"].rsplit("/", 1)[1])]

    created = call(sb, "timeline-entries.create", {"object": dup, "type": "timeline_comment", "body": "restored",
                                                   "visibility": "internal", "artifacts": [prepared["id"]]})
    assert created.status_code == 201
    entry = created.json()["timeline_entry"]
    assert entry["artifacts"] == [{"id": prepared["id"], "display_id": uploaded["display_id"],
                                   "file": uploaded["file"]}]
    assert [e["artifacts"] for e in timeline(sb, dup) if e["id"] == entry["id"]] == [entry["artifacts"]]

    sb.stop()   # the bytes are kept with the rest of the state
    again = make_sandbox(None, state_file=state_file)
    assert download(again, prepared["id"]) == NOTES


def test_a_second_upload_of_the_same_form_replaces_the_bytes(make_sandbox):
    sb = make_sandbox(page_seed())
    prepared = ok(call(sb, "artifacts.prepare", {"file_name": "a.txt"}))
    assert upload(prepared, b"first").status_code == 204
    assert upload(prepared, b"second try").status_code == 204   # an object store overwrites the key
    assert download(sb, prepared["id"]) == b"second try"
    art = ok(call(sb, "artifacts.get", {"id": prepared["id"]}))["artifact"]
    assert art["file"] == {"name": "a.txt", "type": "text/plain", "size": 10}   # no file_type: the part's


def test_the_file_host_refuses_uploads_that_break_the_form(make_sandbox):
    clock = [1_700_000_000.0]
    sb = make_sandbox(page_seed(), file_auth_expected=True, clock=lambda: clock[0], url_ttl=60)
    prepared = ok(call(sb, "artifacts.prepare", {"file_name": "a.txt", "configuration_set": "default"}))
    form = {f["key"]: f["value"] for f in prepared["form_data"]}

    assert upload(prepared, b"x", fields={k: v for k, v in form.items() if k != "policy"}).status_code == 403
    assert upload(prepared, b"x", fields=dict(form, key="elsewhere/a.txt")).status_code == 403
    no_file = requests.post(prepared["url"], files={k: (None, v) for k, v in form.items()}, timeout=10)
    assert no_file.status_code == 400
    after_file = requests.post(prepared["url"], files=[("file", ("a.txt", b"x"))] + [
        (k, (None, v)) for k, v in form.items()], timeout=10)   # fields after the file do not count
    assert after_file.status_code == 403
    not_a_form = requests.post(prepared["url"], data=b"raw bytes", timeout=10)
    assert not_a_form.status_code == 400
    with_token = upload(prepared, b"x", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    assert with_token.status_code == 400
    elsewhere = dict(prepared, url=prepared["url"].rsplit("/", 1)[0] + "/999999")
    assert upload(elsewhere, b"x").status_code == 404
    seeded = dict(prepared, url=prepared["url"].rsplit("/", 1)[0] + "/9001")   # never prepared: no form
    assert upload(seeded, b"x").status_code == 403
    clock[0] += 61
    assert upload(prepared, b"x").status_code == 403   # the form expired
    assert call(sb, "artifacts.locate", {"id": prepared["id"]}).status_code == 404
    assert not [e for e in sb.writes() if e["server"] == "files"]
    assert download(sb, sb.key_id("artifact-9001")) == NOTES   # the seeded file is untouched


def test_prepare_and_attach_refusals(make_sandbox):
    sb = make_sandbox(page_seed(), spec_requests=False)
    dup = sb.key_id("jane-dup")
    for body, field in (({}, "file_name"), ({"file_name": " "}, "file_name"),
                        ({"file_name": "a", "configuration_set": "nope"}, "configuration_set"),
                        ({"file_name": "a", "file_type": 3}, "file_type")):
        refused = call(sb, "artifacts.prepare", body)
        assert refused.status_code == 400 and refused.json()["field_name"] == field
    note = {"object": dup, "type": "timeline_comment", "body": "x"}
    known = sb.key_id("artifact-9001")
    for artifacts in ([known] * 2, [known] * 51, ["don:core:dvrv-us-1:devo/DEVO1x:artifact/424242"], known, [7]):
        refused = call(sb, "timeline-entries.create", dict(note, artifacts=artifacts))
        assert refused.status_code == 400 and refused.json()["field_name"] == "artifacts"
    by_display = call(sb, "timeline-entries.create", dict(note, artifacts=["artifact-9001"]))
    assert by_display.status_code == 400 and by_display.json() == {   # a reference: DONs only, as elsewhere
        "type": "invalid_id", "field_name": "artifacts", "message": by_display.json()["message"]}
    assert call(sb, "timeline-entries.create", dict(note, artifacts=[known])).status_code == 201
    assert call(sb, "timeline-entries.create", dict(note, body_type="snap_kit")).status_code == 400

    read_only = make_sandbox(page_seed(), token_permissions="read_only")
    assert call(read_only, "artifacts.prepare", {"file_name": "a.txt"}).status_code == 403
    assert set(read_only.dump()["artifacts"]) == set(make_sandbox(page_seed()).dump()["artifacts"])


# ----------------------------------------------------------------------------- custom fields
@pytest.mark.parametrize("name, spec, named", [
    ("app_email_integration__members", {"apps": ["app_email_integration"]}, True),
    ("app_email_integration__members", {"apps": ["other_app"]}, False),
    ("app_email_integration__members", {}, False),
    ("tnt__region", {"tenant_fragment": True}, True),
    ("tnt__region", {"tenant_fragment": False, "apps": ["tnt"]}, False),
    ("ctype__mailbox", {"subtype": "email"}, True),
    ("ctype__mailbox", {"subtype": "other"}, False),
    ("members", {"apps": ["members"], "tenant_fragment": True}, False),
    ("__x", {"apps": [""]}, False),
])
def test_the_schema_naming_rule(name, spec, named):
    assert schema_names_field(name, spec, "email") is named


def test_works_update_changes_only_the_custom_fields_named_with_their_schema(make_sandbox):
    sb = make_sandbox(page_seed())
    t1, jane, bob = sb.key_id("t1"), sb.key_id("jane"), sb.key_id("bob")
    work = ok(call(sb, "works.get", {"id": t1}))["work"]
    assert work["subtype"] == "email" and work["custom_fields"][MEMBERS] == [jane, sb.key_id("jane-dup")]
    assert work["custom_schema_fragments"] == ["don:core:dvrv-us-1:devo/DEVO1x:custom_type_fragment/1"]

    answer = ok(call(sb, "works.update", {"id": t1, "type": "ticket", "custom_fields": {MEMBERS: [jane, bob]},
                                          "custom_schema_spec": {"apps": ["app_email_integration"]}}))["work"]
    assert answer["custom_fields"] == {MEMBERS: [jane, bob], "tnt__region": "emea", "ctype__mailbox": "support"}
    both = ok(call(sb, "works.update", {
        "id": t1, "custom_fields": {"tnt__region": "apac", "ctype__mailbox": None},
        "custom_schema_spec": {"tenant_fragment": True, "subtype": "email", "validate_required_fields": True},
        "custom_schema_fragments": ["don:core:dvrv-us-1:devo/DEVO1x:custom_type_fragment/2"]}))["work"]
    assert both["custom_fields"] == {MEMBERS: [jane, bob], "tnt__region": "apac"}   # null clears a field
    assert both["custom_schema_fragments"] == ["don:core:dvrv-us-1:devo/DEVO1x:custom_type_fragment/2"]
    assert sb.dump()["works"][t1]["custom_fields"] == both["custom_fields"]


@pytest.mark.parametrize("fields, spec", [
    ({MEMBERS: ["x"]}, None),                                           # no spec at all
    ({MEMBERS: ["x"]}, {"apps": ["app_other"]}),
    ({"tnt__region": "x"}, {"apps": ["tnt"]}),
    ({"ctype__mailbox": "x"}, {"subtype": "chat"}),                     # not the ticket's subtype
    ({"members": "x"}, {"apps": ["members"], "tenant_fragment": True}),  # no prefix: no schema
    ({MEMBERS: ["don:identity:dvrv-us-1:devo/DEVO1x:revu/nobody"]}, {"apps": ["app_email_integration"]}),
])
def test_a_custom_field_without_its_schema_named_or_naming_no_contact_is_refused(make_sandbox, fields, spec):
    sb = make_sandbox(page_seed())
    t1 = sb.key_id("t1")
    before = sb.dump()
    body = {"id": t1, "custom_fields": fields, **({"custom_schema_spec": spec} if spec else {})}
    refused = call(sb, "works.update", body)
    assert refused.status_code == 400
    assert refused.json()["type"] == "invalid_field" and refused.json()["field_name"] == "custom_fields"
    assert sb.dump() == before and sb.writes() == []


def test_custom_fields_cannot_name_a_retired_contact(make_sandbox):
    sb = make_sandbox(page_seed(), merge_retire_after_gets=1)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    merge_and_retire(sb, jane, dup)
    refused = call(sb, "works.update", {"id": sb.key_id("t2"), "custom_fields": {MEMBERS: [jane, dup]},
                                        "custom_schema_spec": {"apps": ["app_email_integration"]}})
    assert refused.status_code == 400 and refused.json()["field_name"] == "custom_fields"


def test_conversations_update_takes_custom_fields_the_same_way(make_sandbox):
    sb = make_sandbox(page_seed(), spec_requests=False)
    c1, jane = sb.key_id("c1"), sb.key_id("jane")
    assert ok(call(sb, "conversations.get", {"id": c1}))["conversation"]["custom_fields"] == {
        MEMBERS: [sb.key_id("jane-dup")]}
    refused = call(sb, "conversations.update", {"id": c1, "custom_fields": {MEMBERS: [jane]}})
    assert refused.status_code == 400 and refused.json()["field_name"] == "custom_fields"
    answer = ok(call(sb, "conversations.update", {"id": c1, "custom_fields": {MEMBERS: [jane]},
                                                  "custom_schema_spec": {"apps": ["app_email_integration"]}}))
    assert answer["conversation"]["custom_fields"] == {MEMBERS: [jane]}
    assert call(sb, "conversations.update", {"id": c1, "custom_schema_fragments": []}).status_code == 400


def test_a_merge_that_moves_references_moves_them_in_conversations_custom_fields_too(make_sandbox):
    sb = make_sandbox(page_seed(), merge_retire_after_gets=1, merge_moves_references=True)
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    merge_and_retire(sb, jane, dup)
    dump = sb.dump()
    assert dump["conversations"][sb.key_id("c1")]["custom_fields"] == {MEMBERS: [jane]}
    assert dump["works"][sb.key_id("t1")]["custom_fields"][MEMBERS] == [jane]


# ----------------------------------------------------------------------------- works.list custom_fields
def titles(sb, body: dict) -> list[str]:
    return sorted(w["display_id"] for w in ok(call(sb, "works.list", body))["works"])


def test_the_works_list_custom_fields_filter_is_refused_by_default(make_sandbox):
    sb = make_sandbox(page_seed())
    refused = call(sb, "works.list", {"type": ["ticket"], "custom_fields": {MEMBERS: [sb.key_id("jane")]}})
    assert refused.status_code == 400
    assert refused.json()["type"] == "bad_request" and "custom_fields" in refused.json()["message"]


def test_the_works_list_custom_fields_filter_where_the_tenant_accepts_it(make_sandbox):
    sb = make_sandbox(page_seed(), works_custom_fields_filter="accepted")
    jane, dup = sb.key_id("jane"), sb.key_id("jane-dup")
    assert titles(sb, {"custom_fields": {MEMBERS: [jane]}}) == ["TKT-1", "TKT-2"]   # a list holding it
    assert titles(sb, {"custom_fields": {MEMBERS: [dup]}}) == ["TKT-1"]
    assert titles(sb, {"custom_fields": {MEMBERS: [dup, sb.key_id("bob")]}}) == ["TKT-1"]   # any of them
    assert titles(sb, {"custom_fields": {MEMBERS: dup}}) == ["TKT-1"]                      # one value
    assert titles(sb, {"custom_fields": {"tnt__region": "emea"}}) == ["TKT-1"]             # equal
    assert titles(sb, {"custom_fields": {"tnt__region": "apac"}}) == []
    assert titles(sb, {"custom_fields": {MEMBERS: [jane], "tnt__region": "emea"}}) == ["TKT-1"]   # AND
    assert titles(sb, {"custom_fields": {MEMBERS: [jane]}, "reported_by": [jane]}) == ["TKT-2"]
    assert titles(sb, {"custom_fields": {MEMBERS: [jane]}, "type": ["issue"]}) == []
    first = ok(call(sb, "works.list", {"custom_fields": {MEMBERS: [jane]}, "limit": 1}))
    rest = ok(call(sb, "works.list", {"custom_fields": {MEMBERS: [jane]}, "cursor": first["next_cursor"]}))
    assert len(first["works"]) == 1 and len(rest["works"]) == 1 and "next_cursor" not in rest


# ----------------------------------------------------------------------------- the demo
def test_the_demo_files_are_what_the_generator_builds():
    demo = build_demo()
    with open(DEMO_SEED, encoding="utf-8") as fh:
        assert json.load(fh) == json.loads(json.dumps(demo.seed))
    with open(DEMO_CSV, encoding="utf-8", newline="") as fh:
        assert fh.read() == demo.csv_text()


def test_the_demo_has_a_duplicates_contact_page_and_email_tickets_naming_it(make_sandbox):
    demo = build_demo()
    ms = demo.merge_sets[0]
    sb = make_sandbox(demo.seed)
    primary, dup = sb.key_id(ms["primary"]), sb.key_id(ms["duplicates"][0])
    notes = timeline(sb, dup)
    assert len(notes) == 2 and {e["visibility"] for e in notes} == {"internal"}
    assert {e["created_by"]["type"] for e in notes} == {"dev_user"}
    files = [a for e in notes for a in e.get("artifacts", [])]
    assert [a["file"]["name"] for a in files] == ["call-notes.txt"] and 200 <= files[0]["file"]["size"] <= 1000
    assert download(sb, files[0]["id"]).startswith(b"Call notes")
    contact = ok(call(sb, "rev-users.get", {"id": dup}))["rev_user"]
    assert len(contact["artifacts"]) == 1
    email = [w for w in ok(call(sb, "works.list", {"type": ["ticket"], "limit": 100}))["works"]
             if w.get("custom_fields", {}).get(MEMBERS)]
    by_reporter = {w["reported_by"][0]["id"]: w for w in email}
    assert set(by_reporter) == {primary, dup}
    assert by_reporter[primary]["custom_fields"][MEMBERS] == [primary, dup]
    assert by_reporter[dup]["custom_fields"][MEMBERS] == [dup]
    assert {(w["subtype"], w["source_channel"]) for w in email} == {("email", "email")}
