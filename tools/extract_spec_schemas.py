"""Extract, from DevRev's public OpenAPI spec, the request/response schemas of the operations this tool calls.
The result (tests/fixtures/devrev_spec_schemas.json) lets tests/spec_validator.py check every emulated
request and response against DevRev's real contract; rerun this script whenever the spec is updated.

The public 2026 spec is the source of truth. The few parts it lacks are taken from DevRev's beta spec,
and only those listed in OVERRIDES; the fixture's "source" block names both files (with their sha256)
and the overrides actually applied, so a reader sees which operation validates against which file."""
# OpenAPI 3.0 schemas are rewritten into JSON Schema draft 2020-12: components become top-level "$defs"
# (referenced as "#/$defs/<name>", so recursion is harmless), "nullable" becomes a "null" type, and
# "discriminator" unions become if/then rules selecting exactly the mapped branch (see _discriminate).
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / ".." / "shared" / "devrev-openapi-public-2026.yaml"
DEFAULT_BETA_SPEC = REPO_ROOT / ".." / "shared" / "devrev-openapi-beta-2026.yaml"
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "fixtures" / "devrev_spec_schemas.json"

OPERATIONS = [
    "dev-users.self", "rev-users.get", "rev-users.list", "rev-users.scan", "rev-users.update", "rev-users.merge",
    "rev-users.create",
    "works.get", "works.list", "works.update",
    "conversations.get", "conversations.list", "conversations.update",
    "timeline-entries.list", "timeline-entries.get",
    "artifacts.get", "artifacts.locate",
    "jobs.get", "jobs.list", "timeline-entries.create", "works.count",
    "artifacts.prepare",
]


@dataclass(frozen=True)
class Override:
    """One part of one operation taken from another spec than the public one.

    spec: the other spec ("beta", the only one today); part: "request" (the request schema and its
    declared fields; the responses stay the public spec's, which is what the emulator answers with);
    fields: the request fields that justify it. The override applies only while the public spec lacks
    one of them (so it retires itself once DevRev publishes them), and extraction fails if the other
    spec does not declare them all (so a stale entry cannot go unnoticed).
    """

    spec: str
    part: str
    fields: tuple[str, ...]


# operation -> where its request schema comes from instead of the public spec, and why.
OVERRIDES = {
    # The public spec's rev-users-update-request has only the single external_ref; the beta one
    # accepts external_refs (a contact's list of external identifiers).
    "rev-users.update": Override(spec="beta", part="request", fields=("external_refs",)),
    # The public rev-users-create-request has no tags or custom_fields; the beta one (S16/S17) has
    # both: a restore creates a merged duplicate again with the tags and custom fields it had.
    "rev-users.create": Override(spec="beta", part="request", fields=("tags", "custom_fields")),
    # The public spec's works-list-request has no custom_fields filter; the beta one (and DevRev's
    # SDK types, S17) has it: the tool asks for tickets naming a contact only in a custom field.
    "works.list": Override(spec="beta", part="request", fields=("custom_fields",)),
}
# $defs taken from the beta spec are named "beta:<component>", so they never shadow a public one.
OVERRIDE_DEF_PREFIX = {"beta": "beta:"}

SCHEMA_PREFIX = "#/components/schemas/"
RESPONSE_PREFIX = "#/components/responses/"
# Annotation-only OpenAPI keywords (and all "x-*" extensions) are dropped.
DROPPED_KEYS = {"description", "example", "examples", "title", "externalDocs", "xml", "nullable", "discriminator"}
# DevRev uses "id", "text", "int32", "int64", "double", "sort-by"; only date-time is a JSON Schema format.
KEPT_FORMATS = {"date-time"}
SUBSCHEMA_KEYS = {"items", "additionalProperties", "not"}
SUBSCHEMA_LIST_KEYS = {"allOf", "oneOf", "anyOf"}


class Converter:
    def __init__(self, spec: dict, def_prefix: str = ""):
        self.spec = spec
        self.schemas = spec["components"]["schemas"]
        self.def_prefix = def_prefix
        self.defs: dict[str, dict] = {}

    # -- helpers over the original OpenAPI nodes -------------------------------------------------
    def deref(self, node: dict) -> dict:
        while "$ref" in node:
            node = self.schemas[node["$ref"].removeprefix(SCHEMA_PREFIX)]
        return node

    def field_names(self, node: dict) -> set[str]:
        """Top-level property names a schema declares, through $ref, allOf and every union branch."""
        node = self.deref(node)
        names = set(node.get("properties", {}))
        for key in SUBSCHEMA_LIST_KEYS:
            for sub in node.get(key, []):
                names |= self.field_names(sub)
        return names

    @staticmethod
    def is_empty_marker(node: dict) -> bool:
        # DevRev marks "this variant adds no fields" as {type: object, additionalProperties: false}.
        return node.get("additionalProperties") is False and not node.get("properties") and "allOf" not in node

    # -- conversion --------------------------------------------------------------------------------
    def ref(self, ref: str) -> dict:
        if not ref.startswith(SCHEMA_PREFIX):
            raise ValueError(f"unsupported $ref {ref}")
        name = ref.removeprefix(SCHEMA_PREFIX)
        def_name = self.def_prefix + name
        if def_name not in self.defs:
            self.defs[def_name] = {}  # placeholder first: recursive references terminate here
            self.defs[def_name] = self.convert(self.schemas[name])
        return {"$ref": f"#/$defs/{def_name}"}

    def convert(self, node: dict) -> dict:
        if "$ref" in node:  # OpenAPI 3.0 ignores $ref siblings
            return self.ref(node["$ref"])
        out: dict = {}
        for key, value in node.items():
            if key in DROPPED_KEYS or key.startswith("x-"):
                continue
            if key == "format":
                if value in KEPT_FORMATS:
                    out[key] = value
            elif key == "properties":
                out[key] = {name: self.convert(sub) for name, sub in value.items()}
            elif key in SUBSCHEMA_KEYS and isinstance(value, dict):
                out[key] = self.convert(value)
            elif key in SUBSCHEMA_LIST_KEYS:
                # A plain oneOf (no discriminator) stays oneOf: none of the in-scope schemas has one
                # today; if overlapping branches ever appear, turn it into anyOf here.
                out[key] = [self.convert(sub) for sub in value]
            else:
                out[key] = value
        if node.get("discriminator", {}).get("mapping"):
            out = self._discriminate(node, out)
        if node.get("nullable"):
            if isinstance(out.get("type"), str):
                out["type"] = [out["type"], "null"]
                if "enum" in out:
                    out["enum"] = out["enum"] + [None]
            else:
                out = {"anyOf": [out, {"type": "null"}]}
        return out

    def _discriminate(self, node: dict, out: dict) -> dict:
        """Replace a discriminated oneOf/anyOf with rules that pick the branch by the property value.

        Plain oneOf would fail here: DevRev's branches overlap (dev/sys/rev user summaries are all
        user-base-summary) and "empty" branches ({additionalProperties: false}) either match anything
        or, read literally, reject every object. Instead: the discriminator must hold a mapped value,
        value X applies branch X, and an empty branch forbids the fields only other branches declare.
        A mapping key "none" (works-update-request) is the branch used when the property is absent.
        """
        prop = node["discriminator"]["propertyName"]
        mapping = node["discriminator"]["mapping"]
        branch_refs = [sub["$ref"] for sub in node.get("oneOf", node.get("anyOf", []))]
        if set(branch_refs) - set(mapping.values()):
            raise ValueError(f"discriminator on {prop!r}: oneOf branches missing from mapping")
        out.pop("oneOf", None)
        out.pop("anyOf", None)
        values = sorted(v for v in mapping if v != "none")
        rules: list[dict] = [{"properties": {prop: {"enum": values}}}]
        own_fields = set(node.get("properties", {}))
        variant_fields = set().union(*(self.field_names({"$ref": r}) for r in mapping.values())) - own_fields
        for value, ref in sorted(mapping.items()):
            if self.is_empty_marker(self.deref({"$ref": ref})):
                if not variant_fields:
                    continue  # single-variant union (e.g. error-not-found): nothing to forbid
                # {"not": {}} rather than false: jsonschema drops the instance path of boolean-schema errors.
                then = {"properties": {f: {"not": {}} for f in sorted(variant_fields)}}
            else:
                then = self.ref(ref)
            if value == "none":
                cond = {"not": {"required": [prop]}}
            else:
                cond = {"properties": {prop: {"const": value}}, "required": [prop]}
            rules.append({"if": cond, "then": then})
        if "none" not in mapping:
            out["required"] = sorted(set(out.get("required", [])) | {prop})
        out["allOf"] = out.get("allOf", []) + rules
        return out


def response_schema(spec: dict, response: dict) -> dict | None:
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].removeprefix(RESPONSE_PREFIX)]
    return response.get("content", {}).get("application/json", {}).get("schema")


def load_spec(path: Path) -> tuple[dict, dict]:
    """The parsed spec and its "source" description (file name, sha256, versions)."""
    raw = path.read_bytes()
    spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~10x faster
    source = {
        "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "info_version": spec["info"]["version"],
        "openapi": spec["openapi"],
    }
    return spec, source


def request_schema(spec: dict, op: str) -> dict:
    return spec["paths"][f"/{op}"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def extract(spec_path: Path, beta_path: Path) -> dict:
    spec, public_source = load_spec(spec_path)
    beta, beta_source = load_spec(beta_path)
    conv = Converter(spec)
    others = {"beta": Converter(beta, OVERRIDE_DEF_PREFIX["beta"])}
    applied: dict[str, dict] = {}
    operations = {}
    for op in OPERATIONS:
        post = spec["paths"][f"/{op}"]["post"]
        request, request_conv = request_schema(spec, op), conv
        override = OVERRIDES.get(op)
        if override is not None:
            if override.part != "request" or override.spec not in others:
                raise ValueError(f"{op}: unsupported override {override}")
            other = others[override.spec]
            other_request = request_schema(other.spec, op)
            missing = set(override.fields) - other.field_names(other_request)
            if missing:
                raise ValueError(f"{op}: the {override.spec} spec does not declare {sorted(missing)}: "
                                 f"remove or correct its entry in OVERRIDES")
            if set(override.fields) - conv.field_names(request):
                request, request_conv = other_request, other
                applied[op] = {override.part: override.spec, "fields": list(override.fields)}
            else:
                print(f"note: the public spec now declares {list(override.fields)} on {op}: "
                      f"its OVERRIDES entry is no longer needed")
        responses = {}
        for status, response in sorted(post["responses"].items()):
            schema = response_schema(spec, response)
            responses[str(status)] = None if schema is None else conv.convert(schema)
        operations[op] = {
            "request": request_conv.convert(request),
            "request_properties": sorted(request_conv.field_names(request)),
            "responses": responses,
        }
    defs = dict(conv.defs)
    for other in others.values():
        defs.update(other.defs)
    return {
        # file/sha256/info_version/openapi: the public spec, the source of every schema but the parts
        # named in "overrides" (operation -> {part: the spec it comes from, "fields": why}); "beta": that spec.
        "source": {**public_source, "beta": beta_source, "overrides": applied},
        "$defs": defs,
        "operations": operations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="DevRev's public OpenAPI YAML")
    parser.add_argument("--beta-spec", type=Path, default=DEFAULT_BETA_SPEC,
                        help="DevRev's beta OpenAPI YAML (the source of the parts listed in OVERRIDES)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="fixture JSON to write")
    args = parser.parse_args(argv)
    doc = extract(args.spec, args.beta_spec)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    overrides = doc["source"]["overrides"]
    for op, entry in doc["operations"].items():
        origin = f" (request from the {overrides[op]['request']} spec)" if op in overrides else ""
        print(f"{op}: request + responses {', '.join(entry['responses'])}{origin}")
    print(f"wrote {len(doc['operations'])} operations, {len(doc['$defs'])} $defs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
