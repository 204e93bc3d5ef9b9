"""OpenAI dialect: /v1/chat/completions, /v1/completions, /v1/models.

parse_*: request JSON -> Call (GenerateRequest with templated prompt tokens).
render_*: a Reply -> response JSON; stream_*: events -> SSE chunks ending in `data: [DONE]`.
Errors: {"error": {"message", "type", "param", "code"}}.
Must not: submit to the engine or touch HTTP objects (routes.py does both).
"""

from __future__ import annotations

import json
import uuid
from typing import Iterator, Optional

from ... import __version__
from ...types import FinishEvent, GenerateRequest, TokenEvent
from .. import reply
from ..errors import ApiError, bad_request
from ..images import message_content, openai_image_part
from ..reply import Ending, Piece, Reply, token_text
from ...text.output_parse import CALL_ARGS, CALL_START, Part
from ..request import (Call, chat_prompt, output_format, check_prompt_chars, completion_budget, make_sampling, opt_bool, opt_dict,
                       opt_int, opt_list, opt_number, opt_seed, opt_stop, opt_str, read_messages,
                       require_object)
from ..streaming import SSE_DONE, sse
from ..structured import JsonFormat, grammar_of, tool_call_grammar

FINGERPRINT = f"lanner-{__version__}"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}


# ---- parse ----

def _n_vocab(ctx) -> int:
    try:
        return int(ctx.backend.metadata.get("n_vocab") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0


def _logit_bias(body: dict, n_vocab: int) -> dict[int, float]:
    bias: dict[int, float] = {}
    for k, v in opt_dict(body, "logit_bias", "logit_bias").items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            raise bad_request("logit_bias", f"keys must be token ids, got {k!r}") from None
        if tok < 0 or (n_vocab and tok >= n_vocab):
            raise bad_request("logit_bias", f"token id {tok} is outside the vocabulary [0, {n_vocab})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise bad_request("logit_bias", f"values must be numbers in [-100, 100], got {v!r}")
        bias[tok] = float(v)
    return bias


def _sampling(body: dict, logprobs: Optional[int], ctx):
    values = {
        "temperature": opt_number(body, "temperature", "temperature", 0, 2),
        "top_p": opt_number(body, "top_p", "top_p", 0, 1),
        "presence_penalty": opt_number(body, "presence_penalty", "presence_penalty", -2, 2),
        "frequency_penalty": opt_number(body, "frequency_penalty", "frequency_penalty", -2, 2),
        # common extensions (llama.cpp / vLLM servers accept them too)
        "top_k": opt_int(body, "top_k", "top_k", 0),
        "min_p": opt_number(body, "min_p", "min_p", 0, 1),
        "repeat_penalty": opt_number(body, "repeat_penalty", "repeat_penalty", 0),
        "seed": opt_seed(body, "seed", "seed"),
        "logit_bias": _logit_bias(body, _n_vocab(ctx)) or None,
        "logprobs": logprobs,
    }
    return make_sampling(ctx.settings.sampling_defaults("openai"), values, {})


def _model(body: dict, ctx) -> str:
    return ctx.check_model(opt_str(body, "model", "model"))


def _call(body: dict, ctx, model: str, prompt: list[int], sampling, options: dict,
          **fields) -> Call:
    """The Call from the fields chat and completions share: n, stream, budget, stop, and the
    grammar of fields['json'] (response_format)."""
    n = opt_int(body, "n", "n", default=1)
    if n != 1:
        raise bad_request("n", f"only n=1 is supported, got {n}")
    stream_options = opt_dict(body, "stream_options", "stream_options")
    include_usage = opt_bool(stream_options, "include_usage", "stream_options.include_usage",
                             default=False)
    max_tokens = opt_int(body, "max_completion_tokens", "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = opt_int(body, "max_tokens", "max_tokens", 1)
    fmt = fields.get("json")
    grammar = fields.pop("grammar", None) or grammar_of(fmt)
    req = GenerateRequest(
        prompt_tokens=prompt, sampling=sampling, stop=opt_stop(body, "stop", "stop", max_n=4),
        max_tokens=completion_budget(max_tokens, len(prompt), ctx.n_ctx, ctx.settings.max_tokens),
        grammar=grammar)
    fields.setdefault("grammar_param", fmt.param if fmt is not None else None)
    return Call(request=req, model=model, stream=opt_bool(body, "stream", "stream", default=False),
                options={"include_usage": include_usage, **options}, **fields)


def _content_pieces(content, path: str, take_images: bool) -> list:
    """A message's content in order: text strings and (take_images) ImageParts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(path, "must be a string or an array of content parts")
    pieces: list = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            raise bad_request(f"{path}[{i}]", "must be an object")
        kind = part.get("type", "text")
        if kind in ("text", "input_text"):
            t = part.get("text")
            if not isinstance(t, str):
                raise bad_request(f"{path}[{i}].text", "must be a string")
            pieces.append(t)
        elif kind in ("image_url", "input_image") and take_images:  # server/images.py
            pieces.append(openai_image_part(part, f"{path}[{i}]"))
        elif kind in ("image_url", "input_image", "image", "input_audio", "file"):
            raise bad_request(f"{path}[{i}]", f"content type {kind!r} is not supported: "
                              "this model takes text only")
        else:
            raise bad_request(f"{path}[{i}].type", f"unknown content part type {kind!r}")
    return pieces


def _template_tool_call(call, path: str) -> dict:
    """An OpenAI tool call as chat templates expect it: arguments as an object."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise bad_request(path, "must be an object with a function")
    fn = dict(call["function"])
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args) if args.strip() else {}
        except ValueError:
            raise bad_request(f"{path}.function.arguments", "must be a JSON string") from None
    return {"id": call.get("id"), "type": "function", "function": fn}


def _message(m: dict, path: str) -> dict:
    # a user message's images stay where they stand among its text (other roles: images first)
    msg = message_content(_content_pieces(m.get("content"), f"{path}.content", True),
                          in_place=m.get("role") == "user")
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise bad_request(f"{path}.tool_calls", "must be an array")
        msg["tool_calls"] = [_template_tool_call(c, f"{path}.tool_calls[{j}]")
                             for j, c in enumerate(calls)]
    for key in ("tool_call_id", "name", "reasoning_content"):  # (templates may replay reasoning)
        if isinstance(m.get(key), str):
            msg[key] = m[key]
    return msg


def _response_format(body: dict) -> Optional[JsonFormat]:
    rf = opt_dict(body, "response_format", "response_format")
    kind = rf.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonFormat(None, "response_format")
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise bad_request("response_format.json_schema", "must be an object with a schema")
        strict = opt_bool(js, "strict", "response_format.json_schema.strict", default=False)
        return JsonFormat(js.get("schema") or {}, "response_format.json_schema.schema", strict)
    raise bad_request("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")


def parse_chat(body, ctx) -> Call:
    body = require_object(body)
    model = _model(body, ctx)
    logprobs_on = opt_bool(body, "logprobs", "logprobs", default=False)
    top = opt_int(body, "top_logprobs", "top_logprobs", 0, 20)
    if top is not None and not logprobs_on:
        raise bad_request("top_logprobs", "requires logprobs to be true")
    sampling = _sampling(body, (top or 0) if logprobs_on else None, ctx)
    raw = opt_list(body, "messages", "messages")
    if not raw:
        raise bad_request("messages", "must be a non-empty array of messages")
    messages = read_messages(raw, "messages", ROLES, _message)
    tools = opt_list(body, "tools", "tools")
    forced = _forced_tools(body, tools, output_format(ctx.backend))
    if body.get("tool_choice") == "none":
        tools = []
    parallel = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls", default=True)
    fmt = _response_format(body)
    if fmt is not None and tools:
        raise bad_request("response_format", "cannot be combined with tools: the reply is "
                                             "either JSON or tool calls")
    reasoning = opt_str(body, "reasoning_effort", "reasoning_effort")
    if reasoning is not None and reasoning not in ("none", "minimal", "low", "medium", "high"):
        raise bad_request("reasoning_effort", f"must be none, minimal, low, medium or high, "
                                              f"got {reasoning!r}")
    think = None if reasoning is None else reasoning not in ("none", "minimal")
    if fmt is not None and think:
        raise bad_request("response_format", "cannot be combined with reasoning_effort: the "
                                             "grammar of the JSON reply allows no reasoning")
    prompt = chat_prompt(ctx.backend, messages, tools=tools, think=think, json=fmt,
                         effort=reasoning if think else None)
    extra = {} if forced is None else {"grammar": forced, "grammar_param": "tools"}
    return _call(body, ctx, model, prompt, sampling, {}, think=True, tools=bool(tools), json=fmt,
                 logprobs=logprobs_on, id="chatcmpl-" + uuid.uuid4().hex[:24],
                 max_calls=None if parallel else 1, **extra)


def _forced_tools(body: dict, tools: list, fmt: str):
    """tool_choice: "none" / "auto" (None), or "required" / a named function: the Grammar that
    makes the reply one call of an allowed tool with valid arguments."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return None
    if choice == "required":
        names = None
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        names = [choice["function"]["name"]]
    else:
        raise bad_request("tool_choice", 'must be "none", "auto", "required" or '
                                         '{"type": "function", "function": {"name": ...}}')
    if not tools:
        raise bad_request("tool_choice", "needs tools")
    return tool_call_grammar(tools, names, "tools", fmt)


def _prompt_tokens(body: dict, ctx) -> list[int]:
    """`prompt`: a string (tokenized, special tokens parsed) or token ids (checked against the
    vocabulary by the engine), or a batch of exactly one of those."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        check_prompt_chars(ctx.backend, len(prompt), "prompt")
        tokens = list(ctx.backend.tokenize(prompt, add_special=True, parse_special=True))
    elif isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        tokens = list(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise bad_request("prompt", "only one prompt per request is supported")
    else:
        raise bad_request("prompt", "must be a string or an array of token ids")
    if not tokens:
        raise bad_request("prompt", "must not be empty")
    return tokens


def parse_completion(body, ctx) -> Call:
    body = require_object(body)
    model = _model(body, ctx)
    lp = opt_int(body, "logprobs", "logprobs", 0, 5)
    sampling = _sampling(body, lp, ctx)
    tokens = _prompt_tokens(body, ctx)
    if opt_str(body, "suffix", "suffix"):
        raise bad_request("suffix", "suffix (fill-in-the-middle) is not supported")
    echo = opt_bool(body, "echo", "echo", default=False)
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return _call(body, ctx, model, tokens, sampling,
                 {"echo": prompt if echo and isinstance(prompt, str) else ""},
                 json=_response_format(body), logprobs=lp is not None, prompt_param="prompt", id="cmpl-" + uuid.uuid4().hex[:24])


# ---- render: shared pieces ----

def _usage(ev: FinishEvent, reasoning_tokens: int = 0) -> dict:
    u = ev.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}


def _chat_logprob(ev: TokenEvent) -> dict:
    text = token_text(ev)
    return {"token": text, "logprob": ev.logprob if ev.logprob is not None else 0.0,
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [{"token": t.text, "logprob": t.logprob,
                              "bytes": list(t.text.encode("utf-8"))}
                             for t in (ev.top_logprobs or ())]}


def _completion_logprobs(tokens: list[TokenEvent], offset: int) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for ev in tokens:
        out["tokens"].append(token_text(ev))
        out["token_logprobs"].append(ev.logprob)
        out["top_logprobs"].append({t.text: t.logprob for t in (ev.top_logprobs or ())})
        out["text_offset"].append(offset)
        offset += len(ev.text)
    return out


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _tool_calls(calls: list[dict]) -> list[dict]:
    return [{"id": _call_id(), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"],
                                                                     ensure_ascii=False)}}
            for c in calls]


def _head(call: Call, kind: str) -> dict:
    return {"id": call.id, "object": kind, "created": call.created, "model": call.model,
            "system_fingerprint": FINGERPRINT}


# ---- render: chat ----

def render_chat(call: Call, r: Reply) -> dict:
    message = {"role": "assistant", "content": r.text if (r.text or not r.tool_calls) else None}
    if r.thinking:
        message["reasoning_content"] = r.thinking
    if r.tool_calls:
        message["tool_calls"] = _tool_calls(r.tool_calls)
    logprobs = {"content": [_chat_logprob(t) for t in r.tokens]} if call.logprobs else None
    return {**_head(call, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                         "finish_reason": r.reason}],
            "usage": _usage(r.finish, r.reasoning_tokens)}


class _SseStream(reply.StreamRenderer):
    """OpenAI's SSE streams: errors as an `error` event, `data: [DONE]` last."""

    def error(self, err: ApiError):
        yield sse(render_error(err))

    def done(self):
        yield SSE_DONE


class _ChatStream(_SseStream):
    def _chunk(self, delta: dict, finish: Optional[str] = None, logprobs=None, **extra) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**_head(self.call, "chat.completion.chunk"), "choices": [choice], **extra})

    def head(self):
        yield self._chunk({"role": "assistant", "content": ""})

    def piece(self, p: Piece):
        lp = {"content": [_chat_logprob(t) for t in p.tokens]} if p.tokens else None
        yield self._chunk({"reasoning_content" if p.kind == "thinking" else "content": p.text},
                          logprobs=lp)

    def tool(self, p: Part):
        """A tool call as it is generated: the first delta names it (index, id, type, name),
        the next ones carry its arguments' JSON text in fragments."""
        if p.kind == CALL_START:
            yield self._chunk({"tool_calls": [{"index": p.index, "id": _call_id(), "type": "function",
                                               "function": {"name": p.name, "arguments": ""}}]})
        elif p.kind == CALL_ARGS:
            yield self._chunk({"tool_calls": [{"index": p.index,
                                               "function": {"arguments": p.text}}]})

    def end(self, e: Ending):
        for p in e.pieces:
            yield from self.piece(p)
        usage = _usage(e.finish, e.reasoning_tokens)
        yield self._chunk({}, e.reason, usage=usage)
        if self.call.options["include_usage"]:
            yield sse({**_head(self.call, "chat.completion.chunk"), "choices": [], "usage": usage})


def stream_chat(call: Call, events) -> Iterator[bytes]:
    return reply.stream(call, events, _ChatStream(call))


# ---- render: completions ----

def render_completion(call: Call, r: Reply) -> dict:
    echo = call.options["echo"]
    logprobs = _completion_logprobs(r.tokens, len(echo)) if call.logprobs else None
    return {**_head(call, "text_completion"),
            "choices": [{"text": echo + r.text, "index": 0, "logprobs": logprobs,
                         "finish_reason": r.reason}],
            "usage": _usage(r.finish)}


class _CompletionStream(_SseStream):
    def __init__(self, call: Call):
        super().__init__(call)
        self.offset = 0  # characters of text sent so far (logprobs' text_offset)

    def _chunk(self, text: str, finish: Optional[str] = None, tokens=(), **extra) -> bytes:
        logprobs = _completion_logprobs(list(tokens), self.offset) if tokens else None
        self.offset += len(text)
        return sse({**_head(self.call, "text_completion"),
                    "choices": [{"text": text, "index": 0, "logprobs": logprobs,
                                 "finish_reason": finish}], **extra})

    def head(self):
        if self.call.options["echo"]:
            yield self._chunk(self.call.options["echo"])

    def piece(self, p: Piece):
        yield self._chunk(p.text, tokens=p.tokens)

    def end(self, e: Ending):
        yield self._chunk("".join(p.text for p in e.pieces), e.reason,
                          [t for p in e.pieces for t in p.tokens], usage=_usage(e.finish))
        if self.call.options["include_usage"]:
            yield sse({"id": self.call.id, "object": "text_completion", "created": self.call.created,
                       "model": self.call.model, "choices": [], "usage": _usage(e.finish)})


def stream_completion(call: Call, events) -> Iterator[bytes]:
    return reply.stream(call, events, _CompletionStream(call))


# ---- render: models and errors ----

def render_model(ctx) -> dict:
    f = ctx.model_facts()
    return {"id": f["name"], "object": "model", "created": int(f["modified"]), "owned_by": "local"}


def render_models(ctx) -> dict:
    return {"object": "list", "data": [render_model(ctx)]}


_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


def render_error(err: ApiError) -> dict:
    code = err.code
    if code is None and err.status == 404:
        code = "not_found"
    return {"error": {"message": err.message, "type": _TYPES.get(err.status, "server_error"),
                      "param": err.param, "code": code}}
