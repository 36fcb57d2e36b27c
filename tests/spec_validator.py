"""Check DevRev request/response bodies against the schemas of DevRev's published OpenAPI spec.
Used by the test suite so the emulated API (and the requests our client sends) stay spec-conformant;
the schemas come from tests/fixtures/devrev_spec_schemas.json (built by tools/extract_spec_schemas.py)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator

DEFAULT_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "devrev_spec_schemas.json"
_MAX_MESSAGE = 300
_CACHE_SIZE = 4096  # validation results memoised per (operation, kind, canonical JSON body)
_SCHEMA_KEYS = {"items", "additionalProperties", "not", "if", "then", "else"}
_SCHEMA_LIST_KEYS = {"allOf", "anyOf", "oneOf"}
_DEFS_PREFIX = "#/$defs/"


def _format_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<body>"


class SpecValidator:
    def __init__(self, fixture_path=DEFAULT_FIXTURE):
        doc = json.loads(Path(fixture_path).read_text(encoding="utf-8"))
        self.source = doc["source"]
        self._defs = doc["$defs"]
        self._ops = doc["operations"]
        self._inlined: dict[str, object] = {}
        self._validators: dict[tuple, Draft202012Validator] = {}
        self._results: dict[tuple, tuple[str, ...]] = {}

    def operations(self) -> set[str]:
        return set(self._ops)

    def _inline(self, schema, stack=()):
        """Replace "#/$defs/X" refs by the (shared) definition: noticeably faster than jsonschema's ref lookups.
        A recursive reference, should the spec ever grow one, is left as a $ref (resolved via $defs)."""
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref", "")
        if ref.startswith(_DEFS_PREFIX) and len(schema) == 1:
            name = ref.removeprefix(_DEFS_PREFIX)
            if name in stack:
                return schema
            if name not in self._inlined:
                self._inlined[name] = self._inline(self._defs[name], stack + (name,))
            return self._inlined[name]
        out = {}
        for key, value in schema.items():
            if key == "properties":
                out[key] = {prop: self._inline(sub, stack) for prop, sub in value.items()}
            elif key in _SCHEMA_KEYS:
                out[key] = self._inline(value, stack)
            elif key in _SCHEMA_LIST_KEYS:
                out[key] = [self._inline(sub, stack) for sub in value]
            else:
                out[key] = value
        return out

    def _problems(self, key: tuple, prefix: str, schema: dict, body) -> list[str]:
        try:
            cache_key = key + (json.dumps(body, sort_keys=True),)
        except (TypeError, ValueError):
            cache_key = None
        if cache_key in self._results:
            return list(self._results[cache_key])
        validator = self._validators.get(key)
        if validator is None:
            root = {"$defs": self._defs, "allOf": [self._inline(schema)]}
            validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[key] = validator
        problems = set()
        for error in validator.iter_errors(body):
            message = error.message
            if error.validator == "not" and error.validator_value == {}:
                message = "not allowed for this discriminator value (only other variants declare it)"
            elif len(message) > _MAX_MESSAGE:
                message = message[:_MAX_MESSAGE] + "..."
            problems.add(f"{prefix}: {_format_path(error.absolute_path)}: {message}")
        result = sorted(problems)
        if cache_key is not None and len(self._results) < _CACHE_SIZE:
            self._results[cache_key] = tuple(result)
        return result

    def validate_request(self, operation: str, body) -> list[str]:
        spec = self._ops.get(operation)
        if spec is None:
            return [f"unknown operation {operation!r} (not in the DevRev spec fixture)"]
        prefix = f"{operation} request"
        problems = self._problems((operation, "request"), prefix, spec["request"], body)
        if isinstance(body, dict):
            problems += [
                f"{prefix}: {name}: unknown field (the spec does not declare it for {operation})"
                for name in sorted(set(body) - set(spec["request_properties"]))
            ]
        return problems

    def validate_response(self, operation: str, status: int, body) -> list[str]:
        spec = self._ops.get(operation)
        if spec is None:
            return [f"unknown operation {operation!r} (not in the DevRev spec fixture)"]
        prefix = f"{operation} response {status}"
        schema = spec["responses"].get(str(status), False)
        if schema is False:
            declared = ", ".join(sorted(spec["responses"]))
            return [f"{prefix}: status {status} is not declared by the spec (declared: {declared})"]
        if schema is None:  # declared without a JSON body
            return [] if body in (None, b"", "") else [f"{prefix}: the spec declares no body for this status"]
        return self._problems((operation, str(status)), prefix, schema, body)


@functools.lru_cache(maxsize=None)
def default_validator() -> SpecValidator:
    """A shared instance, so a whole test session builds each jsonschema validator only once."""
    return SpecValidator()
