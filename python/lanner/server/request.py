"""The request side every dialect shares: JSON fields -> typed records, each validated once.

Owns: typed field readers (each 400 names the field by its dotted path, as the dialect spells
it), the seed convention (negative = random), the sampling merge, the message-array walk, the
one template call (JSON-mode instruction, thinking switch, tools and tool turns included), the
model's output format (prepare_output: its parser, markers kept, an open reasoning block), the
completion budget, and Call: the parsed request (GenerateRequest + what the reply side needs).
Must not: know a dialect's field names (adapters pass paths in), render replies, or submit.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..text import tool_prompt
from ..text.output_format import PARSERS, choose_format
from ..types import GenerateRequest, SamplingParams, ValidationError
from .errors import ApiError, bad_request
from .images import decode_messages
from .structured import JsonFormat, with_instruction

_MISSING = object()
FILL_CONTEXT = -1  # a completion budget meaning "until the context is full" (Ollama num_predict < 0)
MAX_STOPS = 16          # stop strings per request, in a dialect that sets no lower count
MAX_STOP_CHARS = 4096   # characters per stop string


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


def _typed(obj: dict, key: str, path: str, kind: type, what: str, default, show_value=False):
    v = _get(obj, key)
    if v is _MISSING:
        return default
    if not isinstance(v, kind):
        got = repr(v) if show_value else type(v).__name__
        raise bad_request(path, f"must be {what}, got {got}")
    return v


def opt_bool(obj: dict, key: str, path: str, default=None):
    return _typed(obj, key, path, bool, "a boolean", default, show_value=True)


def opt_str(obj: dict, key: str, path: str, default=None):
    return _typed(obj, key, path, str, "a string", default)


def opt_dict(obj: dict, key: str, path: str) -> dict:
    return _typed(obj, key, path, dict, "an object", {})


def opt_list(obj: dict, key: str, path: str) -> list:
    return _typed(obj, key, path, list, "an array", [])


def opt_stop(obj: dict, key: str, path: str, max_n: int = MAX_STOPS) -> list[str]:
    """A stop string or a list of them (empty strings dropped): at most `max_n` of at most
    MAX_STOP_CHARS characters each."""
    v = _get(obj, key)
    if v is _MISSING:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request(path, "must be a string or an array of strings")
    if len(items) > max_n:
        raise bad_request(path, f"at most {max_n} stop sequences, got {len(items)}")
    longest = max((len(s) for s in items), default=0)
    if longest > MAX_STOP_CHARS:
        raise bad_request(path, f"a stop sequence may have at most {MAX_STOP_CHARS} characters, "
                                f"got {longest}")
    return [s for s in items if s]


def opt_seed(obj: dict, key: str, path: str) -> Optional[int]:
    """A sampling seed; -1 (any negative) means 'not set' (a random seed), in every dialect."""
    seed = opt_int(obj, key, path)
    return None if seed is None or seed < 0 else seed


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


# ---- records ----

def make_sampling(base: SamplingParams, values: dict[str, Any], names: dict[str, str]) -> SamplingParams:
    """base with the non-None `values` set (validated as it is built); an invalid value is a
    400 naming the dialect's field (`names` maps SamplingParams fields to it)."""
    try:
        return dataclasses.replace(base, **{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        name = names.get(e.field, e.field)
        raise ApiError(400, f"{name}: {str(e).split(': ', 1)[-1]}", param=name) from None


def read_messages(items: list, path: str, roles: dict[str, str],
                  read: Callable[[dict, str], dict]) -> list[dict]:
    """A messages array as template messages: each item must be an object whose role is a key
    of `roles` (mapped to the template's role); `read(item, item_path)` gives the other keys."""
    out = []
    for i, m in enumerate(items):
        p = f"{path}[{i}]"
        if not isinstance(m, dict):
            raise bad_request(p, "must be an object")
        role = m.get("role")
        if not isinstance(role, str) or role not in roles:
            raise bad_request(f"{p}.role", f"must be one of {sorted(roles)}, got {role!r}")
        out.append({"role": roles[role], **read(m, p)})
    return out


def check_prompt_chars(backend, n_chars: int, param: str) -> None:
    """400 before tokenizing a text whose length alone proves it cannot fit the context: a
    token spells at most `max_token_bytes` bytes, so n chars are >= n / that many tokens."""
    per_token = int((getattr(backend, "metadata", None) or {}).get("max_token_bytes") or 0)
    n_ctx = int(getattr(backend, "n_ctx", 0) or 0)
    if per_token and n_ctx and n_chars > n_ctx * per_token:
        raise ApiError(400, f"{param}: {n_chars} characters are at least {n_chars // per_token} "
                            f"tokens, more than the context size of {n_ctx} tokens",
                       param=param, code="context_length_exceeded")


def text_chars(messages: list[dict]) -> int:
    """Characters of text in template messages (string contents and text parts)."""
    n = 0
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            n += sum(len(p.get("text") or "") for p in c if isinstance(p, dict))
    return n


def chat_prompt(backend, messages: list[dict], *, tools: Optional[list] = None,
                think: Optional[bool] = None, json: Optional[JsonFormat] = None,
                param: str = "messages", effort: Optional[str] = None) -> list[int]:
    """Prompt token ids: the JSON-mode instruction added, the thinking switch passed to the
    template (None = the template's default; `effort`: Harmony's reasoning effort), tools and
    tool turns as the template expects them (or, for a template without tool support, as text
    in the model's own format), the model's chat template rendered and tokenized.
    A template that rejects the messages (e.g. a role it does not support) is the client's 400.
    Counts are bounded before rendering: every message and tool costs at least one token, so
    more of them than the context has tokens can never fit."""
    n_ctx = int(getattr(backend, "n_ctx", 0) or 0)
    for items, what, field_ in ((messages, "messages", param), (tools or [], "tools", "tools")):
        if n_ctx and len(items) > n_ctx:
            raise ApiError(400, f"{field_}: {len(items)} {what} cannot fit a context of {n_ctx} "
                                f"tokens (each takes at least one)", param=field_,
                           code="context_length_exceeded")
    check_prompt_chars(backend, text_chars(messages), param)
    messages = decode_messages(backend, messages, param)  # images: 400s naming the part
    if json is not None:
        messages = with_instruction(messages, json)
    messages = tool_prompt.tool_names(messages)
    has_turns = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
    if (tools or has_turns) and not tool_prompt.handles_tools(
            str((getattr(backend, "metadata", None) or {}).get("chat_template") or "")):
        messages = tool_prompt.fallback(output_format(backend), messages, tools)
    kwargs = {} if think is None else {"enable_thinking": think}
    if effort is not None:
        kwargs["reasoning_effort"] = effort
    try:
        ids = backend.chat_tokens(messages, tools=tools or None, add_generation_prompt=True, **kwargs)
        return ids if isinstance(ids, list) else list(ids)  # a PromptIds carries its images
    except ValueError as e:  # ChatTemplateError
        raise bad_request(param, f"the chat template rejected the messages: {e}") from None


def raw_prompt(backend, parts: list, param: str = "prompt") -> list[int]:
    """Prompt token ids of a raw prompt (no template) given as text and image parts in order
    (images.raw_parts): the images checked and decoded as a chat's are, then tokenized by the
    backend with each image's tokens at its place."""
    parts = decode_messages(backend, [{"role": "user", "content": parts}], param)[0]["content"]
    try:
        return backend.raw_tokens(parts)  # a PromptIds: a list carrying its images
    except ValueError as e:
        raise bad_request(param, str(e)) from None


def output_format(backend) -> str:
    """The model's output format (a key of text.output_format.PARSERS)."""
    meta = getattr(backend, "metadata", None) or {}
    tok = getattr(backend, "tokenizer", None)
    has = (lambda t: tok.token_id(t) is not None) if hasattr(tok, "token_id") else None
    return choose_format(str(meta.get("architecture") or ""), str(meta.get("chat_template") or ""),
                         has)


def prepare_output(call: "Call", backend) -> None:
    """Before submitting: the reply's parser (the model's format), whether the prompt left a
    reasoning block open, and the format's special tokens kept in the generated text."""
    call.output = output_format(backend)
    cls = PARSERS[call.output]
    tok = getattr(backend, "tokenizer", None)
    if hasattr(tok, "token_id") and hasattr(tok, "is_special"):
        ids = (tok.token_id(t) for t in cls.tags)
        call.request.keep_special = frozenset(i for i in ids if i is not None and tok.is_special(i))
    opener = getattr(cls, "think_tags", None) or (("<think>",) if call.output == "hermes" else None)
    if call.think and opener and call.request.prompt_tokens:
        try:
            tail = backend.detokenize(call.request.prompt_tokens[-16:], skip_special=False)
        except TypeError:
            tail = backend.detokenize(call.request.prompt_tokens[-16:])
        call.thinking_open = tail.rstrip().endswith(opener[0])


def completion_budget(requested: Optional[int], n_prompt: int, n_ctx: int, default: int) -> int:
    """max_tokens in tokens. An explicit count is kept (the engine rejects what does not fit:
    400); None = `default` (--max-tokens) clamped to what is left of the context;
    FILL_CONTEXT = all that is left of the context."""
    room = n_ctx - n_prompt
    if requested is None:
        return max(1, min(default, room)) if n_ctx > 0 else default
    if requested == FILL_CONTEXT:
        return max(1, room)
    return requested


@dataclass
class Call:
    """One parsed generate request: what the engine gets and what the reply side needs."""

    request: GenerateRequest
    model: str                      # the model name to echo back
    stream: bool = False
    think: bool = False             # split <think>...</think> into a separate field
    tools: bool = False             # parse <tool_call> blocks into structured calls
    json: Optional[JsonFormat] = None  # JSON mode: the reply must be JSON (matching a schema)
    grammar_param: Optional[str] = None  # the field whose schema became request.grammar (a 400
                                         # for a grammar the engine refuses names it)
    logprobs: bool = False          # render per-token logprobs
    prompt_param: str = "messages"  # the field a context overflow is blamed on
    options: dict = field(default_factory=dict)  # the dialect's own rendering switches
    output: str = "hermes"          # the model's output format (set by prepare_output)
    max_calls: Optional[int] = None  # tool calls kept per reply (OpenAI parallel_tool_calls=false: 1)
    thinking_open: bool = False     # the prompt ends inside a reasoning block
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
