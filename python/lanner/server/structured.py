"""Structured output (JSON mode, JSON schema): the grammar that guarantees it, the instruction
that helps a small model fill it sensibly, and the last check of a finished reply.

Owns: JsonFormat (JSON mode on, with an optional schema, the request field that asked for it,
and whether unsupported schema keywords are an error), its Grammar (the engine constrains every
token with it: output is valid by construction), Gemini's OpenAPI Schema -> JSON Schema, the
instruction added to the system message, and check_output: a finished reply is still parsed;
only text cut short by a stop string can fail it (422). Keywords llguidance does not implement
are a 400 with strict schemas and are ignored (not enforced) otherwise.
Must not: know a dialect beyond the field path it is handed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..engine.grammar import JSON_STYLE
from ..types import Grammar
from .errors import ApiError, bad_request

ANY_OBJECT = {"type": "object"}  # JSON mode without a schema: any JSON object


@dataclass(frozen=True)
class JsonFormat:
    schema: Optional[dict] = None   # None = any JSON object
    param: str = "response_format"  # the request field that asked for JSON (named in a 400/422)
    strict: bool = True             # unsupported schema keywords: 400 (False: ignored)

    @property
    def grammar(self) -> Grammar:
        return Grammar.json_schema(ANY_OBJECT if self.schema is None else self.schema, self.strict)


def grammar_of(fmt: Optional[JsonFormat]) -> Optional[Grammar]:
    return None if fmt is None else fmt.grammar


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


# ---- a forced tool call (OpenAI tool_choice "required" or a named function) ----

def tool_call_grammar(tools: list, names: Optional[list[str]], path: str,
                      fmt: str = "hermes") -> Grammar:
    """The reply is one call, in the model's output format `fmt` (the one its parser reads),
    of one of `names` (None = any of `tools`) with arguments that satisfy its parameters
    schema: hermes `<tool_call>{"name", "arguments"}</tool_call>`, llama3 `{"name",
    "parameters"}`, mistral `[TOOL_CALLS][{"name", "arguments"}]`, harmony a commentary message
    to=functions.NAME, generic `{"name", "arguments"}`."""
    by_name: dict[str, Any] = {}
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request(f"{path}[{i}].function", "must be an object with a name")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, (dict, bool)):
            raise bad_request(f"{path}[{i}].function.parameters", "must be a JSON Schema object")
        by_name[fn["name"]] = params
    for n in names or ():
        if n not in by_name:
            raise bad_request("tool_choice", f"names no tool of the request: {n!r}")
    chosen = names or list(by_name)
    if fmt == "harmony":
        rules = [f"c{i}: " + json.dumps(f"<|channel|>commentary to=functions.{n} <|constrain|>json"
                                        "<|message|>") + " %json " + _dumps(by_name[n])
                 for i, n in enumerate(chosen)]
        return Grammar("lark", "start: " + " | ".join(f"c{i}" for i in range(len(chosen))) +
                       "\n" + "\n".join(rules))
    key = "parameters" if fmt == "llama3" else "arguments"
    calls = [{"type": "object", "properties": {"name": {"const": n}, key: by_name[n]},
              "required": ["name", key], "additionalProperties": False} for n in chosen]
    schema = _dumps({"anyOf": calls})
    if fmt == "hermes":
        return Grammar("lark", 'start: "<tool_call>\\n" call "\\n</tool_call>"\ncall: %json ' + schema)
    if fmt == "mistral":
        return Grammar("lark", 'start: "[TOOL_CALLS][" call "]"\ncall: %json ' + schema)
    return Grammar("lark", "start: call\ncall: %json " + schema)


def _dumps(schema: Any) -> str:
    """A schema for llguidance's %json, in the compact JSON style its output takes."""
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": JSON_STYLE}
    return json.dumps(schema, separators=(",", ":"))


# ---- Gemini's Schema (an OpenAPI 3.0 subset) -> JSON Schema ----

_GEMINI_TYPES = {"STRING": "string", "NUMBER": "number", "INTEGER": "integer", "BOOLEAN": "boolean",
                 "ARRAY": "array", "OBJECT": "object", "NULL": "null"}
_GEMINI_COUNTS = ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength")
_GEMINI_KEEP = ("title", "description", "enum", "pattern", "minimum", "maximum", "default")
_STRING_FORMATS = {"date-time", "date", "time", "duration", "email", "hostname", "ipv4", "ipv6",
                   "uri", "uuid"}  # others (int32, int64, float, double, enum) only describe


def from_gemini_schema(schema: Any, path: str) -> dict:
    """A Gemini Schema object (uppercase types, nullable, propertyOrdering, counts as strings;
    field names in camelCase or snake_case) as JSON Schema; an object with properties has no
    others (Gemini's meaning). 400 naming the field for what is not a Schema field."""
    if not isinstance(schema, dict):
        raise bad_request(path, "must be a Schema object")
    schema = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in schema.items()}
    out: dict = {}
    for key, v in schema.items():
        p = f"{path}.{key}"
        if key == "type":
            t = _GEMINI_TYPES.get(str(v).upper()) if isinstance(v, str) else None
            if t is None and v != "TYPE_UNSPECIFIED":
                raise bad_request(p, f"must be one of {sorted(_GEMINI_TYPES)}, got {v!r}")
            if t is not None:
                out["type"] = t
        elif key in _GEMINI_COUNTS:
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad_request(p, f"must be a non-negative integer, got {v!r}")
            out[key] = v
        elif key == "properties":
            if not isinstance(v, dict):
                raise bad_request(p, "must be an object of Schemas")
            out[key] = {k: from_gemini_schema(s, f"{p}.{k}") for k, s in v.items()}
        elif key == "items":
            out[key] = from_gemini_schema(v, p)
        elif key == "anyOf":
            if not isinstance(v, list):
                raise bad_request(p, "must be an array of Schemas")
            out[key] = [from_gemini_schema(s, f"{p}[{i}]") for i, s in enumerate(v)]
        elif key == "required":
            if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
                raise bad_request(p, "must be an array of property names")
            out[key] = list(v)
        elif key == "format":
            if v in _STRING_FORMATS:
                out[key] = v
        elif key in _GEMINI_KEEP:
            out[key] = v
        elif key not in ("nullable", "propertyOrdering", "example"):
            raise bad_request(p, "is not a field of Schema")
    order = schema.get("propertyOrdering")
    if isinstance(order, list) and isinstance(out.get("properties"), dict):
        props = out["properties"]
        out["properties"] = {**{k: props[k] for k in order if k in props}, **props}
    if "properties" in out:  # Gemini answers with the declared properties only
        out["additionalProperties"] = False
    if schema.get("nullable") is True:
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = out["anyOf"] + [{"type": "null"}]
    return out


# ---- the finished reply ----

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
    does not satisfy the schema. Under the grammar this fails only for a reply a stop string
    cut short (or a backend that does not constrain its output)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0].strip()
    try:
        value = json.loads(s)
    except RecursionError:  # JSON nested past Python's parser: the grammar made it, it is valid
        return s
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
