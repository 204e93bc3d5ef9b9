"""Structured output (JSON mode, JSON schema) by instruction and validation.

Owns: JsonFormat (JSON mode on, with an optional schema and the request field that asked for
it), the instruction added to the system message, a small JSON-Schema check, and the check of a
finished reply (422 naming the field when the output is not the JSON asked for).
Must not: know a dialect beyond the field path it is handed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ApiError


@dataclass(frozen=True)
class JsonFormat:
    schema: Optional[dict] = None   # None = any JSON object
    param: str = "response_format"  # the request field that asked for JSON (named in a 422)


def instruction(fmt: JsonFormat) -> str:
    if fmt.schema is None:
        return "Respond with a single valid JSON object and nothing else."
    return ("Respond with a single valid JSON value and nothing else. It must conform to this "
            "JSON Schema:\n" + json.dumps(fmt.schema, separators=(",", ":")))


def with_instruction(messages: list[dict], fmt: JsonFormat) -> list[dict]:
    """messages with the JSON instruction appended to the system message (one is added first
    if none)."""
    text = instruction(fmt)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = (first.get("content") or "") + "\n\n" + text
        return [first] + messages[1:]
    return [{"role": "system", "content": text}] + messages


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(value: Any, schema: Any, path: str = "$") -> list[str]:
    """A small JSON Schema check (type, enum, const, properties, required,
    additionalProperties, items); returns the violations found."""
    if not isinstance(schema, dict):
        return []
    errs: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)

        def is_type(t: str) -> bool:
            if t == "integer":
                return isinstance(value, int) and not isinstance(value, bool)
            if t == "number":
                return isinstance(value, (int, float)) and not isinstance(value, bool)
            return isinstance(value, _JSON_TYPES.get(t, object)) and not (
                t != "boolean" and isinstance(value, bool))

        if not any(is_type(t) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                errs.append(f"{path}: missing required property {key!r}")
        for key, v in value.items():
            if key in props:
                errs += schema_errors(v, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected property {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += schema_errors(v, schema["additionalProperties"], f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errs += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errs


def check_output(text: str, fmt: JsonFormat) -> str:
    """The model's JSON reply (code fences stripped); ApiError 422 if it is not valid JSON or
    does not satisfy the schema."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0].strip()
    try:
        value = json.loads(s)
    except ValueError as e:
        raise ApiError(422, f"the model's output is not valid JSON ({e})",
                       param=fmt.param, code="invalid_model_output") from None
    if fmt.schema is not None:
        errs = schema_errors(value, fmt.schema)
        if errs:
            raise ApiError(422, "the model's output does not match the schema: " + "; ".join(errs[:5]),
                           param=fmt.param, code="invalid_model_output")
    elif not isinstance(value, dict):
        raise ApiError(422, "the model's output is not a JSON object", param=fmt.param,
                       code="invalid_model_output")
    return s
