"""OpenAI dialect: /v1/chat/completions, /v1/completions, /v1/models.

parse: request JSON -> Call (GenerateRequest with templated prompt tokens).
render: a Collected generation -> response JSON, or events -> SSE chunks ending in `data: [DONE]`.
Errors: {"error": {"message", "type", "param", "code"}}.
Must not: submit to the engine or touch HTTP objects (routes.py does both).
"""

from __future__ import annotations

import json
import uuid
from typing import Iterator, Optional

from ... import __version__
from ...types import FinishEvent, FinishReason, GenerateRequest, TokenEvent
from ..common import (Call, engine_error, final_text, TextRouter, add_system_instruction,
                      chat_tokens, json_instruction, make_sampling, message_text, opt_bool,
                      opt_dict, opt_int, opt_list, opt_number, opt_stop, opt_str, require_object,
                      resolve_max_tokens, seed_or_none)
from ..errors import ApiError, bad_request
from ..settings import http_sampling_defaults
from ..streaming import SSE_DONE, Collected, gather, sse

FINGERPRINT = f"lanner-{__version__}"
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


# ---- parse ----

def _sampling(body: dict, logprobs: Optional[int], n_vocab: int = 0):
    bias_raw = opt_dict(body, "logit_bias", "logit_bias")
    bias: dict[int, float] = {}
    for k, v in bias_raw.items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            raise bad_request("logit_bias", f"keys must be token ids, got {k!r}") from None
        if tok < 0 or (n_vocab and tok >= n_vocab):
            raise bad_request("logit_bias", f"token id {tok} is outside the vocabulary [0, {n_vocab})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise bad_request("logit_bias", f"values must be numbers in [-100, 100], got {v!r}")
        bias[tok] = float(v)
    values = {
        "temperature": opt_number(body, "temperature", "temperature", 0, 2),
        "top_p": opt_number(body, "top_p", "top_p", 0, 1),
        "presence_penalty": opt_number(body, "presence_penalty", "presence_penalty", -2, 2),
        "frequency_penalty": opt_number(body, "frequency_penalty", "frequency_penalty", -2, 2),
        # common extensions (llama.cpp / vLLM servers accept them too)
        "top_k": opt_int(body, "top_k", "top_k", 0),
        "min_p": opt_number(body, "min_p", "min_p", 0, 1),
        "repeat_penalty": opt_number(body, "repeat_penalty", "repeat_penalty", 0),
        "seed": seed_or_none(opt_int(body, "seed", "seed")),
        "logit_bias": bias or None,
        "logprobs": logprobs,
    }
    return make_sampling(http_sampling_defaults(), values, {})


def _n_vocab(ctx) -> int:
    try:
        return int(ctx.backend.metadata.get("n_vocab") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0


def _common(body: dict, ctx, n_prompt_fn) -> dict:
    """Fields shared by chat and completions: model, n, stream, max tokens, stop."""
    model = ctx.check_model(opt_str(body, "model", "model"))
    n = opt_int(body, "n", "n", default=1)
    if n != 1:
        raise bad_request("n", f"only n=1 is supported, got {n}")
    stream = opt_bool(body, "stream", "stream", default=False)
    stream_options = opt_dict(body, "stream_options", "stream_options")
    include_usage = opt_bool(stream_options, "include_usage", "stream_options.include_usage",
                             default=False)
    max_tokens = opt_int(body, "max_completion_tokens", "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = opt_int(body, "max_tokens", "max_tokens", 1)
    return {"model": model, "stream": stream, "include_usage": include_usage,
            "max_tokens": max_tokens, "stop": opt_stop(body, "stop", "stop", max_n=4)}


def _messages(body: dict) -> list[dict]:
    raw = opt_list(body, "messages", "messages")
    if not raw:
        raise bad_request("messages", "must be a non-empty array of messages")
    out = []
    for i, m in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(path, "must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"{path}.role", f"must be one of {sorted(ROLES)}, got {role!r}")
        msg = {"role": {"developer": "system", "function": "tool"}.get(role, role),
               "content": message_text(m.get("content"), f"{path}.content")}
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise bad_request(f"{path}.tool_calls", "must be an array")
            msg["tool_calls"] = [_template_tool_call(c, f"{path}.tool_calls[{j}]")
                                 for j, c in enumerate(calls)]
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        out.append(msg)
    return out


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


def _response_format(body: dict) -> tuple[bool, Optional[dict]]:
    """(json mode on, schema or None)."""
    rf = opt_dict(body, "response_format", "response_format")
    kind = rf.get("type", "text")
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
            raise bad_request("response_format.json_schema", "must be an object with a schema")
        return True, js.get("schema") or {}
    raise bad_request("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")


def parse_chat(body, ctx, default_max_tokens: int) -> Call:
    body = require_object(body)
    c = _common(body, ctx, None)
    logprobs_on = opt_bool(body, "logprobs", "logprobs", default=False)
    top = opt_int(body, "top_logprobs", "top_logprobs", 0, 20)
    if top is not None and not logprobs_on:
        raise bad_request("top_logprobs", "requires logprobs to be true")
    sampling = _sampling(body, (top or 0) if logprobs_on else None, _n_vocab(ctx))
    messages = _messages(body)
    tools = opt_list(body, "tools", "tools")
    if opt_str(body, "tool_choice", "tool_choice") == "none":
        tools = []
    json_mode, schema = _response_format(body)
    if json_mode and tools:
        raise bad_request("response_format", "cannot be combined with tools")
    if json_mode:
        messages = add_system_instruction(messages, json_instruction(schema))
    template_kwargs = {}
    reasoning = opt_str(body, "reasoning_effort", "reasoning_effort")
    think = reasoning is not None and reasoning not in ("none", "minimal")
    if reasoning is not None:
        template_kwargs["enable_thinking"] = think
    prompt = chat_tokens(ctx.backend, messages, tools, template_kwargs)
    req = GenerateRequest(
        prompt_tokens=prompt,
        max_tokens=resolve_max_tokens(c["max_tokens"], len(prompt), ctx.n_ctx, default_max_tokens),
        sampling=sampling, stop=c["stop"])
    return Call(request=req, model=c["model"], stream=c["stream"], think=True, tools=bool(tools),
                id="chatcmpl-" + uuid.uuid4().hex[:24],
                options={"include_usage": c["include_usage"], "logprobs": logprobs_on,
                         "json": json_mode, "schema": schema})


def parse_completion(body, ctx, default_max_tokens: int) -> Call:
    body = require_object(body)
    c = _common(body, ctx, None)
    lp = opt_int(body, "logprobs", "logprobs", 0, 5)
    sampling = _sampling(body, lp, _n_vocab(ctx))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        tokens = list(ctx.backend.tokenize(prompt, add_special=True, parse_special=True))
    elif isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
        n_vocab = _n_vocab(ctx)
        if n_vocab and max(prompt) >= n_vocab:
            raise bad_request("prompt", f"token ids must be < {n_vocab} (the vocabulary size)")
        tokens = list(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise bad_request("prompt", "only one prompt per request is supported")
    else:
        raise bad_request("prompt", "must be a string or an array of token ids")
    if not tokens:
        raise bad_request("prompt", "must not be empty")
    if opt_str(body, "suffix", "suffix"):
        raise bad_request("suffix", "suffix (fill-in-the-middle) is not supported")
    echo = opt_bool(body, "echo", "echo", default=False)
    req = GenerateRequest(
        prompt_tokens=tokens,
        max_tokens=resolve_max_tokens(c["max_tokens"], len(tokens), ctx.n_ctx, default_max_tokens),
        sampling=sampling, stop=c["stop"])
    return Call(request=req, model=c["model"], stream=c["stream"],
                id="cmpl-" + uuid.uuid4().hex[:24],
                options={"include_usage": c["include_usage"], "logprobs": lp is not None,
                         "echo": prompt if echo and isinstance(prompt, str) else ""})


# ---- render: shared pieces ----

def _finish_reason(ev: FinishEvent, tool_calls: bool = False) -> str:
    if ev.reason is FinishReason.LENGTH:
        return "length"
    return "tool_calls" if tool_calls else "stop"


def _usage(ev: FinishEvent) -> dict:
    u = ev.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def _token_text(ev: TokenEvent) -> str:
    for t in ev.top_logprobs or ():
        if t.token_id == ev.token_id:
            return t.text
    return ev.text


def _chat_logprob(ev: TokenEvent) -> dict:
    text = _token_text(ev)
    return {"token": text, "logprob": ev.logprob if ev.logprob is not None else 0.0,
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [{"token": t.text, "logprob": t.logprob,
                              "bytes": list(t.text.encode("utf-8"))}
                             for t in (ev.top_logprobs or ())]}


def _completion_logprobs(tokens: list[TokenEvent], offset: int) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for ev in tokens:
        text = _token_text(ev)
        out["tokens"].append(text)
        out["token_logprobs"].append(ev.logprob)
        out["top_logprobs"].append({t.text: t.logprob for t in (ev.top_logprobs or ())})
        out["text_offset"].append(offset)
        offset += len(ev.text)
    return out


def _tool_calls(calls: list[dict]) -> list[dict]:
    return [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in calls]



# ---- render: chat ----

def render_chat(call: Call, out: Collected) -> dict:
    ev = out.finish
    thinking, text, calls = final_text(call, out.text, ev)
    message = {"role": "assistant", "content": text if (text or not calls) else None}
    if thinking:
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = _tool_calls(calls)
    logprobs = ({"content": [_chat_logprob(t) for t in out.tokens]}
                if call.options.get("logprobs") else None)
    return {"id": call.id, "object": "chat.completion", "created": call.created,
            "model": call.model, "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                         "finish_reason": _finish_reason(ev, bool(calls))}],
            "usage": _usage(ev)}


def stream_chat(call: Call, events) -> Iterator[bytes]:
    def chunk(delta: dict, finish: Optional[str] = None, logprobs=None, **extra) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({"id": call.id, "object": "chat.completion.chunk", "created": call.created,
                    "model": call.model, "system_fingerprint": FINGERPRINT,
                    "choices": [choice], **extra})

    if call.options.get("json"):  # structured output is validated before it is sent
        yield from _stream_buffered_chat(call, events, chunk)
        return
    want_lp = call.options.get("logprobs")
    router = TextRouter(think=call.think, tools=call.tools)
    yield chunk({"role": "assistant", "content": ""})
    for ev in events:
        if isinstance(ev, FinishEvent):
            pieces = router.feed(ev.text) if ev.text else []
            more, calls = router.finish()
            pieces += more
            for kind, text in pieces:
                yield chunk({"reasoning_content" if kind == "thinking" else "content": text})
            if ev.reason is FinishReason.ERROR:
                yield sse({"error": render_error(engine_error(ev))["error"]})
                break
            if calls:
                yield chunk({"tool_calls": [dict(tc, index=i)
                                            for i, tc in enumerate(_tool_calls(calls))]})
            yield chunk({}, _finish_reason(ev, bool(calls)), usage=_usage(ev))
            if call.options.get("include_usage"):
                yield sse({"id": call.id, "object": "chat.completion.chunk",
                           "created": call.created, "model": call.model,
                           "system_fingerprint": FINGERPRINT, "choices": [],
                           "usage": _usage(ev)})
            break
        lp = {"content": [_chat_logprob(ev)]} if want_lp else None
        pieces = router.feed(ev.text)
        if not pieces and lp is not None:
            pieces = [("content", "")]
        for i, (kind, text) in enumerate(pieces):
            yield chunk({"reasoning_content" if kind == "thinking" else "content": text},
                        logprobs=lp if i == 0 else None)
    yield SSE_DONE


def _stream_buffered_chat(call: Call, events, chunk) -> Iterator[bytes]:
    out = gather(events)
    try:
        body = render_chat(call, out)
    except ApiError as e:
        yield sse(render_error(e))
        yield SSE_DONE
        return
    choice = body["choices"][0]
    yield chunk({"role": "assistant", "content": ""})
    yield chunk({"content": choice["message"]["content"]}, logprobs=choice["logprobs"])
    yield chunk({}, choice["finish_reason"], usage=body["usage"])
    if call.options.get("include_usage"):
        yield sse({"id": call.id, "object": "chat.completion.chunk", "created": call.created,
                   "model": call.model, "system_fingerprint": FINGERPRINT, "choices": [],
                   "usage": body["usage"]})
    yield SSE_DONE


# ---- render: completions ----

def render_completion(call: Call, out: Collected) -> dict:
    ev = out.finish
    if ev.reason is FinishReason.ERROR:
        raise engine_error(ev)
    echo = call.options.get("echo", "")
    logprobs = (_completion_logprobs(out.tokens, len(echo))
                if call.options.get("logprobs") else None)
    return {"id": call.id, "object": "text_completion", "created": call.created,
            "model": call.model, "system_fingerprint": FINGERPRINT,
            "choices": [{"text": echo + out.text, "index": 0, "logprobs": logprobs,
                         "finish_reason": _finish_reason(ev)}],
            "usage": _usage(ev)}


def stream_completion(call: Call, events) -> Iterator[bytes]:
    def chunk(text: str, finish: Optional[str] = None, logprobs=None, **extra) -> bytes:
        return sse({"id": call.id, "object": "text_completion", "created": call.created,
                    "model": call.model, "system_fingerprint": FINGERPRINT,
                    "choices": [{"text": text, "index": 0, "logprobs": logprobs,
                                 "finish_reason": finish}], **extra})

    offset = 0
    if call.options.get("echo"):
        yield chunk(call.options["echo"])
        offset = len(call.options["echo"])
    for ev in events:
        if isinstance(ev, FinishEvent):
            if ev.reason is FinishReason.ERROR:
                yield sse(render_error(engine_error(ev)))
                break
            yield chunk(ev.text, _finish_reason(ev), usage=_usage(ev))
            if call.options.get("include_usage"):
                yield sse({"id": call.id, "object": "text_completion", "created": call.created,
                           "model": call.model, "choices": [], "usage": _usage(ev)})
            break
        lp = _completion_logprobs([ev], offset) if call.options.get("logprobs") else None
        offset += len(ev.text)
        if ev.text or lp:
            yield chunk(ev.text, logprobs=lp)
    yield SSE_DONE


# ---- render: models and errors ----

def model_entry(ctx) -> dict:
    f = ctx.model_facts()
    return {"id": f["name"], "object": "model", "created": int(f["modified"]), "owned_by": "local"}


def render_models(ctx) -> dict:
    return {"object": "list", "data": [model_entry(ctx)]}


_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


def render_error(err: ApiError) -> dict:
    code = err.code
    if code is None and err.status == 404:
        code = "not_found"
    return {"error": {"message": err.message, "type": _TYPES.get(err.status, "server_error"),
                      "param": err.param, "code": code}}
