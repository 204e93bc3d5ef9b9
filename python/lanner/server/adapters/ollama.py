"""Ollama dialect: /api/generate, /api/chat (and the spec's /api/chat/ollama), /api/tags,
/api/show, /api/ps, /api/version.

parse: request JSON -> Call. render: a Collected generation -> one JSON object, or events ->
NDJSON lines (`stream` defaults to true) whose last line has done=true, done_reason and the
engine's measured durations in nanoseconds.
Errors: {"error": "message"}.
Must not: submit to the engine or touch HTTP objects (routes.py does both).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator, Optional

from ... import __version__
from ...types import FinishEvent, FinishReason, GenerateRequest, TokenEvent
from ..common import (Call, engine_error, final_text, TextRouter, add_system_instruction,
                      chat_tokens, json_instruction, make_sampling, message_text, opt_bool,
                      opt_dict, opt_int, opt_list, opt_number, opt_stop, opt_str, require_object,
                      seed_or_none)
from ..errors import ApiError, bad_request
from ..settings import http_sampling_defaults
from ..streaming import Collected, gather, ndjson

ROLES = {"system", "user", "assistant", "tool"}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- parse ----

def _options(body: dict):
    """(SamplingParams, num_predict or None, stop) from body.options (the spec's table)."""
    o = opt_dict(body, "options", "options")
    p = lambda k: f"options.{k}"  # noqa: E731
    values = {
        "temperature": opt_number(o, "temperature", p("temperature"), 0),
        "top_k": opt_int(o, "top_k", p("top_k"), 0),
        "top_p": opt_number(o, "top_p", p("top_p"), 0, 1),
        "min_p": opt_number(o, "min_p", p("min_p"), 0, 1),
        "repeat_penalty": opt_number(o, "repeat_penalty", p("repeat_penalty"), 0),
        "repeat_last_n": opt_int(o, "repeat_last_n", p("repeat_last_n"), -1),
        "presence_penalty": opt_number(o, "presence_penalty", p("presence_penalty"), -2, 2),
        "frequency_penalty": opt_number(o, "frequency_penalty", p("frequency_penalty"), -2, 2),
        "seed": seed_or_none(opt_int(o, "seed", p("seed"))),
    }
    top = opt_int(body, "top_logprobs", "top_logprobs", 0, 20)
    if opt_bool(body, "logprobs", "logprobs", default=False):
        values["logprobs"] = top or 0
    names = {k: p(k) for k in values}
    names["logprobs"] = "top_logprobs"
    sampling = make_sampling(http_sampling_defaults(), values, names)
    num_predict = opt_int(o, "num_predict", p("num_predict"), -2)
    if num_predict == 0:
        raise bad_request(p("num_predict"), "must be >= 1, or -1 / -2 for 'until the context is full'")
    for k in ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep"):
        opt_int(o, k, p(k))  # accepted (the server's own settings decide), type-checked
    return sampling, num_predict, opt_stop(o, "stop", p("stop"))


def _max_tokens(num_predict: Optional[int], n_prompt: int, n_ctx: int, default: int) -> int:
    if num_predict is None:
        return max(1, min(default, n_ctx - n_prompt)) if n_ctx > 0 else default
    if num_predict < 0:  # -1 infinite, -2 fill the context: both stop when the context is full
        return max(1, n_ctx - n_prompt)
    return num_predict


def _format(body: dict) -> tuple[bool, Optional[dict]]:
    fmt = body.get("format")
    if fmt is None or fmt == "":
        return False, None
    if fmt == "json":
        return True, None
    if isinstance(fmt, dict):
        return True, fmt
    raise bad_request("format", f"must be \"json\" or a JSON schema object, got {fmt!r}")


def _think(body: dict) -> Optional[bool]:
    t = body.get("think")
    if t is None:
        return None
    if isinstance(t, bool):
        return t
    if t in ("low", "medium", "high"):
        return True
    raise bad_request("think", f"must be a boolean or low/medium/high, got {t!r}")


def _no_images(obj: dict, path: str) -> None:
    if obj.get("images"):
        raise bad_request(path, "this model does not support images (it takes text only)")


def _keep_alive(body: dict) -> None:
    ka = body.get("keep_alive")
    if ka is not None and (isinstance(ka, bool) or not isinstance(ka, (int, float, str))):
        raise bad_request("keep_alive", "must be a duration string or a number of seconds")


def _finish_call(body: dict, ctx, default_max: int, prompt: list[int], kind: str,
                 think: Optional[bool], tools: list, json_mode: bool, schema, sampling,
                 num_predict, stop, model: str) -> Call:
    req = GenerateRequest(prompt_tokens=prompt,
                          max_tokens=_max_tokens(num_predict, len(prompt), ctx.n_ctx, default_max),
                          sampling=sampling, stop=stop)
    return Call(request=req, model=model, stream=opt_bool(body, "stream", "stream", default=True),
                think=bool(think), tools=bool(tools),
                options={"kind": kind, "json": json_mode, "schema": schema,
                         "logprobs": sampling.logprobs is not None})


def parse_generate(body, ctx, default_max: int) -> Optional[Call]:
    """None when the request only asks to load the model (no prompt)."""
    body = require_object(body)
    model = ctx.check_model(opt_str(body, "model", "model"))
    prompt = opt_str(body, "prompt", "prompt", default="")
    system = opt_str(body, "system", "system", default="")
    opt_str(body, "template", "template")
    if opt_str(body, "suffix", "suffix"):
        raise bad_request("suffix", "suffix (fill-in-the-middle) is not supported by this model")
    _no_images(body, "images")
    _keep_alive(body)
    raw = opt_bool(body, "raw", "raw", default=False)
    think = _think(body)
    json_mode, schema = _format(body)
    sampling, num_predict, stop = _options(body)
    opt_bool(body, "stream", "stream")
    if not prompt:
        return None
    if raw:
        tokens = list(ctx.backend.tokenize(prompt, add_special=True, parse_special=True))
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": prompt}]
        if json_mode:
            messages = add_system_instruction(messages, json_instruction(schema))
        kwargs = {} if think is None else {"enable_thinking": think}
        tokens = chat_tokens(ctx.backend, messages, None, kwargs, param="prompt")
    return _finish_call(body, ctx, default_max, tokens, "generate", think, [], json_mode, schema,
                        sampling, num_predict, stop, model)


def parse_chat(body, ctx, default_max: int) -> Optional[Call]:
    """None when the request only asks to load the model (no messages)."""
    body = require_object(body)
    model = ctx.check_model(opt_str(body, "model", "model"))
    raw_messages = opt_list(body, "messages", "messages")
    tools = opt_list(body, "tools", "tools")
    _keep_alive(body)
    think = _think(body)
    json_mode, schema = _format(body)
    sampling, num_predict, stop = _options(body)
    opt_bool(body, "stream", "stream")
    if not raw_messages:
        return None
    messages = []
    for i, m in enumerate(raw_messages):
        path = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(path, "must be an object")
        if m.get("role") not in ROLES:
            raise bad_request(f"{path}.role", f"must be one of {sorted(ROLES)}, got {m.get('role')!r}")
        _no_images(m, f"{path}.images")
        msg = {"role": m["role"], "content": message_text(m.get("content"), f"{path}.content")}
        if isinstance(m.get("tool_calls"), list):
            msg["tool_calls"] = [{"type": "function", "function": tc.get("function", {})}
                                 for tc in m["tool_calls"] if isinstance(tc, dict)]
        for key in ("tool_name", "thinking"):
            if isinstance(m.get(key), str):
                msg[key] = m[key]
        messages.append(msg)
    if json_mode:
        messages = add_system_instruction(messages, json_instruction(schema))
    kwargs = {} if think is None else {"enable_thinking": think}
    tokens = chat_tokens(ctx.backend, messages, tools, kwargs)
    return _finish_call(body, ctx, default_max, tokens, "chat", think, tools, json_mode, schema,
                        sampling, num_predict, stop, model)


# ---- render ----

def _done_reason(ev: FinishEvent, tool_calls: bool = False) -> str:
    if ev.reason is FinishReason.LENGTH:
        return "length"
    return "tool_calls" if tool_calls else "stop"


def _stats(ev: FinishEvent) -> dict:
    t, u = ev.timings, ev.usage
    return {"total_duration": t.total_ns, "load_duration": t.queue_ns,
            "prompt_eval_count": u.prompt_tokens, "prompt_eval_duration": t.prompt_eval_ns,
            "eval_count": u.completion_tokens, "eval_duration": t.eval_ns}


def _logprob(ev: TokenEvent) -> dict:
    text = next((t.text for t in ev.top_logprobs or () if t.token_id == ev.token_id), ev.text)
    return {"token": text, "logprob": ev.logprob if ev.logprob is not None else 0.0,
            "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in ev.top_logprobs or ()]}


def _tool_calls(calls: list[dict]) -> list[dict]:
    return [{"function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(calls)]



def render_load(model: str, kind: str) -> dict:
    """The reply to a generate/chat request without a prompt: the model is (already) loaded."""
    out = {"model": model, "created_at": now_rfc3339(), "done": True, "done_reason": "load"}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return out


def render(call: Call, out: Collected) -> dict:
    ev = out.finish
    thinking, text, calls = final_text(call, out.text, ev)
    body = {"model": call.model, "created_at": now_rfc3339()}
    if call.options["kind"] == "chat":
        msg = {"role": "assistant", "content": text}
        if thinking:
            msg["thinking"] = thinking
        if calls:
            msg["tool_calls"] = _tool_calls(calls)
        body["message"] = msg
    else:
        body["response"] = text
        if thinking:
            body["thinking"] = thinking
    body.update({"done": True, "done_reason": _done_reason(ev, bool(calls)), **_stats(ev)})
    if call.options.get("logprobs"):
        body["logprobs"] = [_logprob(t) for t in out.tokens]
    return body


def stream(call: Call, events) -> Iterator[bytes]:
    chat = call.options["kind"] == "chat"
    if call.options.get("json"):  # validated before anything is sent
        yield from _stream_buffered(call, events)
        return

    def line(content: str = "", thinking: str = "", done: bool = False, **extra) -> bytes:
        obj = {"model": call.model, "created_at": now_rfc3339()}
        if chat:
            msg = {"role": "assistant", "content": content}
            if thinking:
                msg["thinking"] = thinking
            if "tool_calls" in extra:
                msg["tool_calls"] = extra.pop("tool_calls")
            obj["message"] = msg
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = done
        obj.update(extra)
        return ndjson(obj)

    def emit(pieces, lp=None) -> Iterator[bytes]:
        for i, (kind, text) in enumerate(pieces):
            extra = {"logprobs": lp} if lp and i == 0 else {}
            if kind == "thinking":
                yield line(thinking=text, **extra)
            else:
                yield line(content=text, **extra)

    router = TextRouter(think=call.think, tools=call.tools)
    for ev in events:
        if isinstance(ev, FinishEvent):
            if ev.reason is FinishReason.ERROR:
                yield ndjson(render_error(engine_error(ev)))
                return
            pieces = router.feed(ev.text) if ev.text else []
            more, calls = router.finish()
            yield from emit(pieces + more)
            if calls:
                yield line(tool_calls=_tool_calls(calls))
            yield line(done=True, done_reason=_done_reason(ev, bool(calls)), **_stats(ev))
            return
        lp = [_logprob(ev)] if call.options.get("logprobs") else None
        pieces = router.feed(ev.text)
        if not pieces and lp:
            pieces = [("content", "")]
        yield from emit(pieces, lp)


def _stream_buffered(call: Call, events) -> Iterator[bytes]:
    out = gather(events)
    try:
        final = render(call, out)
    except ApiError as e:
        yield ndjson(render_error(e))
        return
    first = {"model": call.model, "created_at": final["created_at"], "done": False}
    if "message" in final:
        first["message"] = final["message"]
        final["message"] = {"role": "assistant", "content": ""}
    else:
        first["response"] = final["response"]
        final["response"] = ""
    yield ndjson(first)
    yield ndjson(final)


# ---- models ----

def _param_size(n: Optional[int]) -> str:
    if not n:
        return "unknown"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{suffix}" if v < 10 and not v.is_integer() else f"{v:.0f}{suffix}"
    return str(n)


def _details(f: dict) -> dict:
    m = f["metadata"]
    return {"parent_model": "", "format": "gguf", "family": f["architecture"],
            "families": [f["architecture"]], "parameter_size": _param_size(m.get("n_params")),
            "quantization_level": str(m.get("quantization") or m.get("file_type") or "unknown")}


def _modified(f: dict) -> str:
    return datetime.fromtimestamp(f["modified"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render_tags(ctx) -> dict:
    f = ctx.model_facts()
    return {"models": [{"name": f["name"], "model": f["file"], "size": f["size"],
                        "digest": f["digest"], "modified_at": _modified(f),
                        "details": _details(f)}]}


def capabilities(meta: dict) -> list[str]:
    caps = ["completion"]
    tmpl = meta.get("chat_template") or ""
    if "tools" in tmpl:
        caps.append("tools")
    if "<think>" in tmpl or "enable_thinking" in tmpl:
        caps.append("thinking")
    return caps


def render_show(ctx, body) -> dict:
    body = require_object(body)
    requested = opt_str(body, "model", "model") or opt_str(body, "name", "name")
    ctx.check_model(requested)
    f = ctx.model_facts()
    m = f["metadata"]
    arch = f["architecture"]
    info = {"general.architecture": arch, "general.name": f["name"],
            "general.parameter_count": m.get("n_params") or 0,
            f"{arch}.context_length": f["context_length"],
            "general.file_type": m.get("file_type"), "tokenizer.ggml.bos_token": m.get("bos_token"),
            "tokenizer.ggml.eos_token": m.get("eos_token"), "vocab_size": m.get("n_vocab")}
    params = "\n".join(f"{k:<16}{v}" for k, v in (("temperature", 0), ("top_k", 0), ("top_p", 1),
                                                   ("num_ctx", f["n_ctx"]),
                                                   ("num_predict", ctx.settings.max_tokens)))
    return {"license": "", "modelfile": f"# Modelfile generated by lanner\nFROM {f['path']}\n",
            "parameters": params, "template": m.get("chat_template") or "",
            "details": _details(f), "model_info": {k: v for k, v in info.items() if v is not None},
            "capabilities": capabilities(m), "modified_at": _modified(f)}


def render_ps(ctx) -> dict:
    f = ctx.model_facts()
    return {"models": [{"name": f["name"], "model": f["file"], "size": f["size"],
                        "digest": f["digest"], "details": _details(f),
                        "expires_at": "2318-01-01T00:00:00Z",  # held for the server's lifetime
                        "size_vram": 0, "context_length": f["n_ctx"]}]}


def render_version() -> dict:
    return {"version": __version__}


def render_error(err: ApiError) -> dict:
    return {"error": err.message}
