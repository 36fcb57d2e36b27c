"""Extract, from DevRev's public OpenAPI spec, the request/response schemas of the operations this tool calls.
The result (tests/fixtures/devrev_spec_schemas.json) lets tests/spec_validator.py check every emulated
request and response against DevRev's real contract; rerun this script whenever the spec is updated."""
# OpenAPI 3.0 schemas are rewritten into JSON Schema draft 2020-12: components become top-level "$defs"
# (referenced as "#/$defs/<name>", so recursion is harmless), "nullable" becomes a "null" type, and
# "discriminator" unions become if/then rules selecting exactly the mapped branch (see _discriminate).
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / ".." / "shared" / "devrev-openapi-public.yaml"
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "fixtures" / "devrev_spec_schemas.json"

OPERATIONS = [
    "rev-users.get", "rev-users.list", "rev-users.scan", "rev-users.update", "rev-users.merge", "rev-users.create",
    "works.get", "works.list", "works.update",
    "conversations.get", "conversations.list", "conversations.update",
    "timeline-entries.list", "timeline-entries.get",
    "artifacts.get", "artifacts.locate",
]

SCHEMA_PREFIX = "#/components/schemas/"
RESPONSE_PREFIX = "#/components/responses/"
# Annotation-only OpenAPI keywords (and all "x-*" extensions) are dropped.
DROPPED_KEYS = {"description", "example", "examples", "title", "externalDocs", "xml", "nullable", "discriminator"}
# DevRev uses "id", "text", "int32", "int64", "double", "sort-by"; only date-time is a JSON Schema format.
KEPT_FORMATS = {"date-time"}
SUBSCHEMA_KEYS = {"items", "additionalProperties", "not"}
SUBSCHEMA_LIST_KEYS = {"allOf", "oneOf", "anyOf"}


class Converter:
    def __init__(self, spec: dict):
        self.spec = spec
        self.schemas = spec["components"]["schemas"]
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
        if name not in self.defs:
            self.defs[name] = {}  # placeholder first: recursive references terminate here
            self.defs[name] = self.convert(self.schemas[name])
        return {"$ref": f"#/$defs/{name}"}

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


def extract(spec_path: Path) -> dict:
    raw = spec_path.read_bytes()
    spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~10x faster
    conv = Converter(spec)
    operations = {}
    for op in OPERATIONS:
        post = spec["paths"][f"/{op}"]["post"]
        request = post["requestBody"]["content"]["application/json"]["schema"]
        responses = {}
        for status, response in sorted(post["responses"].items()):
            schema = response_schema(spec, response)
            responses[str(status)] = None if schema is None else conv.convert(schema)
        operations[op] = {
            "request": conv.convert(request),
            "request_properties": sorted(conv.field_names(request)),
            "responses": responses,
        }
    return {
        "source": {
            "file": spec_path.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "info_version": spec["info"]["version"],
            "openapi": spec["openapi"],
        },
        "$defs": conv.defs,
        "operations": operations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="DevRev OpenAPI YAML")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="fixture JSON to write")
    args = parser.parse_args(argv)
    doc = extract(args.spec)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    for op, entry in doc["operations"].items():
        print(f"{op}: request + responses {', '.join(entry['responses'])}")
    print(f"wrote {len(doc['operations'])} operations, {len(doc['$defs'])} $defs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
