"""What the three dialect adapters share: typed field readers, the parsed Call, token budgets,
and the post-processing of generated text (thinking blocks, tool calls).

Owns: reading JSON fields with 400s that name the field; Call (GenerateRequest + what the
renderer needs); max_tokens resolution against --max-tokens and the context; splitting
`<think>` and `<tool_call>` blocks out of model text.
Must not: know a dialect's field names (adapters pass them in) or touch the engine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from ..types import FinishEvent, FinishReason, GenerateRequest, SamplingParams, ValidationError
from .errors import ApiError, bad_request

_MISSING = object()


# ---- typed field readers: each raises a 400 naming the field (its dotted path) ----

def _get(obj: dict, key: str):
    v = obj.get(key, _MISSING)
    return _MISSING if v is None else v


def opt_number(obj: dict, key: str, path: str, lo: float = -math.inf, hi: float = math.inf,
               default=None):
    v = _get(obj, key)
    if v is _MISSING:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad_request(path, f"must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise bad_request(path, f"must be in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def opt_int(obj: dict, key: str, path: str, lo: int = -(2 ** 63), hi: int = 2 ** 63 - 1,
            default=None):
    v = _get(obj, key)
    if v is _MISSING:
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(path, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise bad_request(path, f"must be in [{lo}, {hi}], got {v!r}")
    return v


def opt_bool(obj: dict, key: str, path: str, default=None):
    v = _get(obj, key)
    if v is _MISSING:
        return default
    if not isinstance(v, bool):
        raise bad_request(path, f"must be a boolean, got {v!r}")
    return v


def opt_str(obj: dict, key: str, path: str, default=None):
    v = _get(obj, key)
    if v is _MISSING:
        return default
    if not isinstance(v, str):
        raise bad_request(path, f"must be a string, got {type(v).__name__}")
    return v


def opt_dict(obj: dict, key: str, path: str) -> dict:
    v = _get(obj, key)
    if v is _MISSING:
        return {}
    if not isinstance(v, dict):
        raise bad_request(path, f"must be an object, got {type(v).__name__}")
    return v


def opt_list(obj: dict, key: str, path: str) -> list:
    v = _get(obj, key)
    if v is _MISSING:
        return []
    if not isinstance(v, list):
        raise bad_request(path, f"must be an array, got {type(v).__name__}")
    return v


def opt_stop(obj: dict, key: str, path: str, max_n: Optional[int] = None) -> list[str]:
    """A stop string or a list of them (empty strings dropped)."""
    v = _get(obj, key)
    if v is _MISSING:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request(path, "must be a string or an array of strings")
    if max_n is not None and len(items) > max_n:
        raise bad_request(path, f"at most {max_n} stop sequences, got {len(items)}")
    return [s for s in items if s]


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


# ---- sampling ----

def make_sampling(base: SamplingParams, values: dict[str, Any], names: dict[str, str]) -> SamplingParams:
    """base with the non-None `values` set, validated; errors name the dialect's field (`names`)."""
    params = dataclasses.replace(base, **{k: v for k, v in values.items() if v is not None})
    try:
        return params.validate()
    except ValidationError as e:
        name = names.get(e.field, e.field)
        raise ApiError(400, f"{name}: {str(e).split(': ', 1)[-1]}", param=name) from None


def seed_or_none(seed: Optional[int]) -> Optional[int]:
    """Ollama/OpenAI seed -1 (and any negative) means 'not set'."""
    return None if seed is None or seed < 0 else seed


# ---- the parsed request ----

@dataclass
class Call:
    """One parsed generate request: what the engine gets and what the renderer needs."""

    request: GenerateRequest
    model: str                      # the model name to echo back
    stream: bool = False
    think: bool = False             # split <think>...</think> into a separate field
    tools: bool = False             # parse <tool_call> blocks into structured calls
    options: dict = field(default_factory=dict)  # dialect-specific rendering switches
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    @property
    def n_prompt(self) -> int:
        return len(self.request.prompt_tokens)


def resolve_max_tokens(requested: Optional[int], n_prompt: int, n_ctx: int, default: int) -> int:
    """Completion budget in tokens. An explicit value is kept (the engine rejects what does not
    fit, 400); the server default is clamped to what is left of the context."""
    if requested is not None:
        return requested
    room = n_ctx - n_prompt if n_ctx > 0 else default
    return max(1, min(default, room))


# ---- text post-processing: <think> blocks and <tool_call> blocks ----

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, content). A reply that opens with <think> (or has only a closing </think>,
    when the template opened it) has its reasoning split off."""
    s = text.lstrip()
    if s.startswith(THINK_OPEN):
        s = s[len(THINK_OPEN):]
        if THINK_CLOSE in s:
            thinking, content = s.split(THINK_CLOSE, 1)
            return thinking.strip(), content.lstrip()
        return s.strip(), ""
    if THINK_CLOSE in text and THINK_OPEN not in text:
        thinking, content = text.split(THINK_CLOSE, 1)
        return thinking.strip(), content.lstrip()
    return "", text


_TOOL_RE = re.compile(re.escape(TOOL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CLOSE) + r"|$)", re.S)


def split_tool_calls(text: str) -> tuple[str, list[dict]]:
    """(content, calls): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks
    become {"name", "arguments": dict}; blocks that are not such JSON stay in the content."""
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1).strip())
        except ValueError:
            return m.group(0)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return m.group(0)
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"value": args}
        calls.append({"name": obj["name"], "arguments": args if isinstance(args, dict) else {}})
        return ""

    content = _TOOL_RE.sub(take, text) if TOOL_OPEN in text else text
    return (content.strip() if calls else content), calls


class TextRouter:
    """Streaming split of generated text into ('content' | 'thinking', delta) pieces, holding
    back tool-call blocks (returned whole by finish()). A partial tag at the end of a delta is
    held until the next delta decides it."""

    def __init__(self, think: bool, tools: bool):
        self.think, self.tools = think, tools
        self.mode = "start" if think else "content"  # start | thinking | content | tool
        self.buf = ""
        self.tool_text = ""

    def _tags(self) -> list[str]:
        tags = []
        if self.mode in ("start", "thinking") and self.think:
            tags.append(THINK_CLOSE if self.mode == "thinking" else THINK_OPEN)
            if self.mode == "start":
                tags.append(THINK_CLOSE)
        if self.tools and self.mode in ("content", "start"):
            tags.append(TOOL_OPEN)
        if self.mode == "tool":
            tags.append(TOOL_CLOSE)
        return tags

    def feed(self, delta: str) -> list[tuple[str, str]]:
        self.buf += delta
        out: list[tuple[str, str]] = []
        while self.buf:
            if self.mode == "start":
                stripped = self.buf.lstrip()
                if not stripped:
                    return out
                if THINK_OPEN.startswith(stripped) and len(stripped) < len(THINK_OPEN):
                    return out  # maybe the start of <think>
                if stripped.startswith(THINK_OPEN):
                    self.buf = stripped[len(THINK_OPEN):]
                    self.mode = "thinking"
                    continue
                self.mode = "content"
                # a template that opened <think> itself: text up to a bare </think> is thinking
                if THINK_CLOSE in self.buf:
                    thinking, self.buf = self.buf.split(THINK_CLOSE, 1)
                    out.append(("thinking", thinking))
                    continue
            tags = self._tags()
            hit = min(((self.buf.find(t), t) for t in tags if t in self.buf), default=None)
            if hit is not None:
                i, tag = hit
                self._emit(out, self.buf[:i])
                self.buf = self.buf[i + len(tag):]
                if tag == THINK_CLOSE:
                    self.mode = "content"
                elif tag == TOOL_OPEN:
                    self.mode = "tool"
                    self.tool_text += TOOL_OPEN
                elif tag == TOOL_CLOSE:
                    self.tool_text += TOOL_CLOSE
                    self.mode = "content"
                continue
            keep = max((_partial_suffix(self.buf, t) for t in tags), default=0)
            self._emit(out, self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return out
        return out

    def _emit(self, out: list, text: str) -> None:
        if not text:
            return
        if self.mode == "tool":
            self.tool_text += text
        else:
            out.append(("thinking" if self.mode == "thinking" else "content", text))

    def finish(self) -> tuple[list[tuple[str, str]], list[dict]]:
        """Flush held text; the tool calls parsed from every held-back block."""
        out: list[tuple[str, str]] = []
        rest, self.buf = self.buf, ""
        if self.mode == "start":
            self.mode = "content"
        self._emit(out, rest)
        leftover, calls = split_tool_calls(self.tool_text) if self.tool_text else ("", [])
        if leftover.strip():
            out.append(("content", leftover))
        return out, calls


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


# ---- messages ----

def message_text(content: Any, path: str) -> str:
    """A message's content as text: a string, or OpenAI-style parts [{type:text,text}]."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                raise bad_request(f"{path}[{i}]", "must be an object")
            kind = part.get("type", "text")
            if kind in ("text", "input_text"):
                t = part.get("text")
                if not isinstance(t, str):
                    raise bad_request(f"{path}[{i}].text", "must be a string")
                texts.append(t)
            elif kind in ("image_url", "input_image", "image", "input_audio", "file"):
                raise bad_request(f"{path}[{i}]", f"content type {kind!r} is not supported: "
                                  "this model takes text only")
            else:
                raise bad_request(f"{path}[{i}].type", f"unknown content part type {kind!r}")
        return "".join(texts)
    raise bad_request(path, "must be a string or an array of content parts")


def chat_tokens(backend, messages: list[dict], tools: Optional[list] = None,
                template_kwargs: Optional[dict] = None, param: str = "messages") -> list[int]:
    """Render the model's chat template and tokenize; a template that rejects the messages
    (e.g. a role it does not support) is the client's 400."""
    try:
        return list(backend.chat_tokens(messages, tools=tools or None, add_generation_prompt=True,
                                        **(template_kwargs or {})))
    except (ValueError, TypeError, KeyError, LookupError) as e:
        raise bad_request(param, f"the chat template rejected the messages: {e}") from None
    except Exception as e:  # jinja2 TemplateError and friends
        if type(e).__module__.startswith("jinja2"):
            raise bad_request(param, f"the chat template rejected the messages: {e}") from None
        raise


# ---- structured output (JSON mode / JSON schema), by instruction and validation ----

def json_instruction(schema: Optional[dict]) -> str:
    if schema is None:
        return "Respond with a single valid JSON object and nothing else."
    return ("Respond with a single valid JSON value and nothing else. It must conform to this "
            "JSON Schema:\n" + json.dumps(schema, separators=(",", ":")))


def add_system_instruction(messages: list[dict], text: str) -> list[dict]:
    """messages with `text` appended to the system message (one is added first if none)."""
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


def check_json_output(text: str, schema: Optional[dict]) -> str:
    """The model's JSON reply (code fences stripped); ApiError 422 if it is not valid JSON or
    does not satisfy `schema`."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0].strip()
    try:
        value = json.loads(s)
    except ValueError as e:
        raise ApiError(422, f"the model's output is not valid JSON ({e})",
                       param="response_format", code="invalid_model_output") from None
    if schema is not None:
        errs = schema_errors(value, schema)
        if errs:
            raise ApiError(422, "the model's output does not match the schema: " + "; ".join(errs[:5]),
                           param="response_format", code="invalid_model_output")
    elif not isinstance(value, dict):
        raise ApiError(422, "the model's output is not a JSON object", param="response_format",
                       code="invalid_model_output")
    return s


def engine_error(ev: FinishEvent) -> ApiError:
    """The 500 for a generation the engine ended with FinishReason.ERROR."""
    return ApiError(500, f"generation failed: {ev.error or 'engine error'}", code="engine_error")


def final_text(call: Call, text: str, finish: FinishEvent) -> tuple[str, str, list[dict]]:
    """(thinking, reply text, tool calls) of a finished generation, as the request asked for them:
    `<think>` split off when call.think, tool calls when call.tools, JSON checked in JSON mode.
    Raises ApiError (500 engine failure, 422 output not matching the requested JSON)."""
    if finish.reason is FinishReason.ERROR:
        raise engine_error(finish)
    thinking, text = split_thinking(text) if call.think else ("", text)
    calls: list[dict] = []
    if call.tools:
        text, calls = split_tool_calls(text)
    if call.options.get("json"):
        text = check_json_output(text, call.options.get("schema"))
    return thinking, text, calls
