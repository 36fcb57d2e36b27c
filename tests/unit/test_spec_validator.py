"""Prove tests/spec_validator.py is not vacuous: realistic DevRev bodies pass, spec violations fail.
If these break after regenerating the fixture, the spec (or the OpenAPI -> JSON Schema conversion in
tools/extract_spec_schemas.py) changed in a way the emulator and the client must follow."""
import copy
import json
import sys
from pathlib import Path

import pytest

from spec_validator import DEFAULT_FIXTURE, SpecValidator

REPO = Path(__file__).resolve().parents[2]
USER = "don:identity:dvrv-us-1:devo/0:revu/1"
OTHER = "don:identity:dvrv-us-1:devo/0:revu/2"
DEV = "don:identity:dvrv-us-1:devo/0:devu/7"
TICKET = "don:core:dvrv-us-1:devo/0:ticket/12"
TS = "2024-03-01T12:00:00Z"

DEV_SUMMARY = {"type": "dev_user", "id": DEV, "display_id": "DEVU-7", "display_name": "agent", "state": "active"}
ORG_SUMMARY = {"type": "rev_org", "id": "don:identity:dvrv-us-1:devo/0:revo/3", "display_name": "Acme"}
REV_USER = {
    "id": USER,
    "display_id": "REVU-1",
    "display_name": "Jane",
    "full_name": "Jane Doe",
    "email": "jane@acme.com",
    "phone_numbers": ["+15550100"],
    "external_ref": "jane@acme.com",
    "state": "active",
    "created_by": DEV_SUMMARY,
    "modified_by": {"type": "sys_user", "id": "don:identity:dvrv-us-1:devo/0:sysu/1"},
    "created_date": TS,
    "modified_date": TS,
    "rev_org": ORG_SUMMARY,
    "display_picture": {"id": "don:core:dvrv-us-1:devo/0:artifact/5", "file": {"name": "a.png", "size": 10}},
}
COMMENT = {
    "type": "timeline_comment",
    "id": "don:core:dvrv-us-1:devo/0:comment/9",
    "object": TICKET,
    "object_display_id": "TKT-12",
    "object_type": "ticket",
    "body": "hello",
    "body_type": "text",
    "visibility": "external",
    "created_by": {"type": "rev_user", "id": USER, "rev_org": ORG_SUMMARY},
    "created_date": TS,
    "artifacts": [{"id": "don:core:dvrv-us-1:devo/0:artifact/5", "display_id": "ART-5",
                   "file": {"type": "image/png", "name": "a.png", "size": 10}}],
}


@pytest.fixture(scope="module")
def spec():
    return SpecValidator()


def test_fixture_is_current_and_complete(spec):
    assert len(spec.source["sha256"]) == 64 and len(spec.source["beta"]["sha256"]) == 64
    assert spec.source["file"] == "devrev-openapi-public-2026.yaml"
    assert spec.source["beta"]["file"] == "devrev-openapi-beta-2026.yaml"
    assert {"rev-users.merge", "works.update", "artifacts.locate", "timeline-entries.list", "jobs.get", "jobs.list",
            "timeline-entries.create", "works.count"} <= spec.operations()


def test_rev_users_update_request_comes_from_the_beta_spec(spec):
    assert spec.source["overrides"] == {"rev-users.update": {"request": "beta", "fields": ["external_refs"]},
                                        "rev-users.create": {"request": "beta", "fields": ["tags", "custom_fields"]},
                                        "works.list": {"request": "beta", "fields": ["custom_fields"]}}
    assert spec.validate_request("rev-users.update", {"id": USER, "external_refs": ["a@acme.com", "b"]}) == []
    problems = spec.validate_request("rev-users.update", {"id": USER, "external_refs": "a@acme.com"})
    assert problems and "external_refs" in problems[0] and "is not of type 'array'" in problems[0]
    assert spec.validate_request("rev-users.update", {"id": USER, "external_ref": "a@acme.com"}) == []
    # rev-users.create's request is the beta one too (tags and custom_fields: a restore creates a contact
    # again with them); a field neither spec declares is still refused
    assert spec.validate_request("rev-users.create", {"display_name": "x", "tags": [{"id": "TAG-1"}]}) == []
    assert spec.validate_request("rev-users.create", {"display_name": "x", "nickname": "a"}) == [
        "rev-users.create request: nickname: unknown field (the spec does not declare it for rev-users.create)"]


def test_works_list_request_comes_from_the_beta_spec_for_its_custom_fields_filter(spec):
    filtered = {"type": ["ticket"], "custom_fields": {"app_email_integration__members": [USER]}}
    assert spec.validate_request("works.list", filtered) == []
    assert spec.validate_request("works.list", {"custom_fields": ["x"]})   # an object, not a list


def test_rev_users_get_response_valid_and_invalid(spec):
    assert spec.validate_response("rev-users.get", 200, {"rev_user": REV_USER}) == []
    broken = copy.deepcopy(REV_USER)
    del broken["created_by"]["id"]            # user-summary branch requires id
    broken["rev_org"]["type"] = "account"     # not a mapped org-summary type
    problems = spec.validate_response("rev-users.get", 200, {"rev_user": broken})
    assert any("rev_user.created_by" in p and "'id' is a required property" in p for p in problems)
    assert any("rev_user.rev_org.type" in p for p in problems)
    assert spec.validate_response("rev-users.get", 200, {"rev_user": {**REV_USER, "created_date": "yesterday"}})


def test_works_update_reported_by_must_be_set_object(spec):
    bare = spec.validate_request("works.update", {"id": TICKET, "reported_by": [USER]})
    assert bare and "works.update request: reported_by:" in bare[0] and "is not of type 'object'" in bare[0]
    assert spec.validate_request("works.update", {"id": TICKET, "reported_by": {"set": [USER]}}) == []


def test_works_update_discriminator(spec):
    ticket = {"id": TICKET, "type": "ticket", "rev_org": None, "severity": "high", "reported_by": {"set": [OTHER]}}
    assert spec.validate_request("works.update", ticket) == []
    assert spec.validate_request("works.update", {**ticket, "type": "task"})           # unmapped value
    assert spec.validate_request("works.update", {**ticket, "severity": "urgent"})      # ticket branch applies
    untyped = {"id": TICKET, "severity": "high"}                                        # ticket-only field, no type
    assert spec.validate_request("works.update", untyped)
    assert spec.validate_request("works.update", {"reported_by": {"set": []}})           # id is required


def test_unknown_request_field_and_operation(spec):
    problems = spec.validate_request("rev-users.merge", {"primary_user": USER, "secondary_user": OTHER, "force": True})
    assert problems == ["rev-users.merge request: force: unknown field "
                        "(the spec does not declare it for rev-users.merge)"]
    assert spec.validate_request("rev-users.merge", {"primary_user": USER, "secondary_user": OTHER}) == []
    assert spec.validate_request("rev-users.frobnicate", {}) and spec.validate_response("nope", 200, {})


def test_error_bodies(spec):
    assert spec.validate_response("works.get", 404, {"type": "not_found", "message": "x"}) == []
    assert spec.validate_response("works.get", 404, {"message": "x"})                 # type is required
    assert spec.validate_response("works.get", 404, {"type": "bad_request", "message": "x"})
    assert spec.validate_response("rev-users.get", 429, {"type": "too_many_requests", "retry_after": 3}) == []
    assert spec.validate_response("rev-users.get", 429, {"type": "too_many_requests", "retry_after": "3"})
    assert spec.validate_response("rev-users.update", 400, {"type": "invalid_field", "field_name": "email"}) == []
    assert spec.validate_response("rev-users.update", 400, {"type": "invalid_field"})  # field_name required
    assert spec.validate_response("rev-users.merge", 200, {}) == []
    assert spec.validate_response("rev-users.merge", 200, {"rev_user": REV_USER})     # spec: empty object
    wrong_type = {"type": "unexpected_id_type", "field_name": "owned_by"}
    assert spec.validate_response("works.list", 400, wrong_type)                      # 2026: value is required
    assert spec.validate_response("works.list", 400, {**wrong_type, "value": OTHER}) == []


def test_timeline_entries_list_response(spec):
    body = {"timeline_entries": [COMMENT], "next_cursor": "abc"}
    assert spec.validate_response("timeline-entries.list", 200, body) == []
    missing = copy.deepcopy(body)
    del missing["timeline_entries"][0]["object_display_id"]
    problems = spec.validate_response("timeline-entries.list", 200, missing)
    assert problems == ["timeline-entries.list response 200: timeline_entries[0]: "
                        "'object_display_id' is a required property"]


def test_undeclared_status(spec):
    assert spec.validate_response("works.list", 200, {"works": []}) == []
    problems = spec.validate_response("works.list", 404, {"type": "not_found"})
    assert problems and "not declared" in problems[0]
    assert spec.validate_response("works.get", 418, {})


def _extractor():
    sys.path.insert(0, str(REPO / "tools"))
    import extract_spec_schemas

    return extract_spec_schemas


def test_fixture_regeneration_is_deterministic(tmp_path):
    extractor = _extractor()
    if not (extractor.DEFAULT_SPEC.exists() and extractor.DEFAULT_BETA_SPEC.exists()):
        pytest.skip("DevRev OpenAPI specs (public and beta 2026) not available")
    out = tmp_path / "schemas.json"
    assert extractor.main(["--output", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_FIXTURE.read_bytes()
    assert json.loads(out.read_text())["source"]["file"] == "devrev-openapi-public-2026.yaml"


def _tiny_spec(path: Path, update_fields: dict) -> Path:
    """A minimal OpenAPI spec with one operation, x.update, whose request declares update_fields."""
    request = {"type": "object", "properties": update_fields, "required": ["id"]}
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/x-update-request"}}}}
    spec = {"openapi": "3.0.3", "info": {"version": "t"},
            "components": {"schemas": {"x-update-request": request}},
            "paths": {"/x.update": {"post": {
                "requestBody": body,
                "responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}}}}}
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return path


def test_override_applies_only_while_the_public_spec_lacks_its_fields(tmp_path, monkeypatch):
    extractor = _extractor()
    monkeypatch.setattr(extractor, "OPERATIONS", ["x.update"])
    monkeypatch.setattr(extractor, "OVERRIDES", {"x.update": extractor.Override("beta", "request", ("refs",))})
    ident = {"id": {"type": "string"}}
    refs = {"refs": {"type": "array", "items": {"type": "string"}}}
    beta = _tiny_spec(tmp_path / "beta.yaml", {**ident, **refs})

    doc = extractor.extract(_tiny_spec(tmp_path / "public.yaml", ident), beta)
    assert doc["source"]["overrides"] == {"x.update": {"request": "beta", "fields": ["refs"]}}
    assert doc["operations"]["x.update"]["request"] == {"$ref": "#/$defs/beta:x-update-request"}
    assert doc["operations"]["x.update"]["request_properties"] == ["id", "refs"]
    assert doc["source"]["beta"]["file"] == "beta.yaml" and doc["source"]["file"] == "public.yaml"

    doc = extractor.extract(_tiny_spec(tmp_path / "public.yaml", {**ident, **refs}), beta)
    assert doc["source"]["overrides"] == {}                      # published: the public schema is used
    assert doc["operations"]["x.update"]["request"] == {"$ref": "#/$defs/x-update-request"}

    with pytest.raises(ValueError, match="does not declare"):   # a stale entry fails loudly
        extractor.extract(_tiny_spec(tmp_path / "public.yaml", ident), _tiny_spec(tmp_path / "b2.yaml", ident))
