"""Ollama dialect: /api/generate, /api/chat (and the spec's /api/chat/ollama), /api/tags,
/api/show, /api/ps, /api/version.

parse_*: request JSON -> Call (None for a load-only request). render_reply: a Reply -> one JSON
object; stream_reply: events -> NDJSON lines (`stream` defaults to true) whose last line has
done=true, done_reason and the engine's measured durations in nanoseconds.
Errors: {"error": "message"}.
Must not: submit to the engine or touch HTTP objects (routes.py does both).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator, Optional

from ... import __version__
from ...types import FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from .. import reply
from ..errors import ApiError, bad_request
from ..images import ollama_images, raw_parts
from ..reply import Ending, Piece, Reply, token_text
from ...text.output_parse import CALL_END, CALL_START, Part
from ..request import (FILL_CONTEXT, Call, chat_prompt, check_prompt_chars, completion_budget,
                       make_sampling, raw_prompt, opt_bool, opt_dict, opt_int, opt_list, opt_number, opt_seed,
                       opt_stop, opt_str, read_messages, require_object)
from ..streaming import ndjson
from ..structured import JsonFormat, grammar_of

ROLES = {r: r for r in ("system", "user", "assistant", "tool")}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- parse ----

def _options(body: dict, base: SamplingParams):
    """(SamplingParams, requested completion tokens or None, stop) from body.options (the
    spec's table) and the logprobs fields."""
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
        "seed": opt_seed(o, "seed", p("seed")),
    }
    top = opt_int(body, "top_logprobs", "top_logprobs", 0, 20)
    if opt_bool(body, "logprobs", "logprobs", default=False):
        values["logprobs"] = top or 0
    names = {k: p(k) for k in values}
    names["logprobs"] = "top_logprobs"
    sampling = make_sampling(base, values, names)
    num_predict = opt_int(o, "num_predict", p("num_predict"), -2)
    if num_predict == 0:
        raise bad_request(p("num_predict"), "must be >= 1, or -1 / -2 for 'until the context is full'")
    for k in ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep"):
        opt_int(o, k, p(k))  # accepted (the server's own settings decide), type-checked
    requested = FILL_CONTEXT if num_predict is not None and num_predict < 0 else num_predict
    return sampling, requested, opt_stop(o, "stop", p("stop"))


def _format(body: dict) -> Optional[JsonFormat]:
    fmt = body.get("format")
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return JsonFormat(None, "format")
    if isinstance(fmt, dict):
        return JsonFormat(fmt, "format", strict=False)  # like llama.cpp: unknown keywords ignored
    raise bad_request("format", f"must be \"json\" or a JSON schema object, got {fmt!r}")


def _think(body: dict) -> Optional[bool]:
    t = body.get("think")
    if t is None:
        return None
    if isinstance(t, bool):
        return t
    if t in ("low", "medium", "high"):
        return True  # the level goes to the template as the reasoning effort
    raise bad_request("think", f"must be a boolean or low/medium/high, got {t!r}")


def _keep_alive(body: dict) -> None:
    ka = body.get("keep_alive")
    if ka is not None and (isinstance(ka, bool) or not isinstance(ka, (int, float, str))):
        raise bad_request("keep_alive", "must be a duration string or a number of seconds")


class _Fields:
    """What /api/generate and /api/chat share, read once, in the order errors are reported."""

    def __init__(self, body, ctx):
        self.body = body = require_object(body)
        self.model = ctx.check_model(opt_str(body, "model", "model"))
        _keep_alive(body)
        self.think = _think(body)
        self.effort = body["think"] if isinstance(body.get("think"), str) else None
        self.json = _format(body)
        if self.json is not None and self.think:
            raise bad_request("format", "cannot be combined with think: the grammar of the JSON "
                                        "reply allows no reasoning")
        self.sampling, self.requested, self.stop = _options(
            body, ctx.settings.sampling_defaults("ollama"))
        self.stream = opt_bool(body, "stream", "stream", default=True)

    def call(self, ctx, prompt: list[int], kind: str, tools: bool) -> Call:
        req = GenerateRequest(prompt_tokens=prompt, sampling=self.sampling, stop=self.stop,
                              max_tokens=completion_budget(self.requested, len(prompt), ctx.n_ctx,
                                                           ctx.settings.max_tokens),
                              grammar=grammar_of(self.json))
        return Call(request=req, model=self.model, stream=self.stream, think=self.think is not False,
                    tools=tools, json=self.json, logprobs=self.sampling.logprobs is not None,
                    grammar_param=self.json.param if self.json is not None else None,
                    prompt_param="prompt" if kind == "generate" else "messages",
                    options={"kind": kind})


def parse_generate(body, ctx) -> Optional[Call]:
    """None when the request only asks to load the model (no prompt)."""
    f = _Fields(body, ctx)
    body = f.body
    prompt = opt_str(body, "prompt", "prompt", default="")
    system = opt_str(body, "system", "system", default="")
    opt_str(body, "template", "template")
    if opt_str(body, "suffix", "suffix"):
        raise bad_request("suffix", "suffix (fill-in-the-middle) is not supported by this model")
    images = ollama_images(body, "images")  # server/images.py
    raw = opt_bool(body, "raw", "raw", default=False)
    if not prompt:
        return None
    if raw:
        check_prompt_chars(ctx.backend, len(prompt), "prompt")
        if images:  # at the prompt's [img-N] tags, untagged ones first (as Ollama does)
            tokens = raw_prompt(ctx.backend, raw_parts(prompt, images))
        else:
            tokens = list(ctx.backend.tokenize(prompt, add_special=True, parse_special=True))
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": prompt, **({"images": images} if images else {})}]
        tokens = chat_prompt(ctx.backend, messages, think=f.think, json=f.json, param="prompt",
                             effort=f.effort)
    return f.call(ctx, tokens, "generate", tools=False)


def _message(m: dict, path: str) -> dict:
    msg = {"content": opt_str(m, "content", f"{path}.content", default="")}
    if m.get("images"):
        msg["images"] = ollama_images(m, f"{path}.images")
    calls = opt_list(m, "tool_calls", f"{path}.tool_calls")
    if calls:
        msg["tool_calls"] = [{"type": "function", "function": tc.get("function", {})}
                             for tc in calls if isinstance(tc, dict)]
    for key in ("tool_name", "thinking"):
        if isinstance(m.get(key), str):
            msg[key] = m[key]
    return msg


def parse_chat(body, ctx) -> Optional[Call]:
    """None when the request only asks to load the model (no messages)."""
    f = _Fields(body, ctx)
    raw_messages = opt_list(f.body, "messages", "messages")
    tools = opt_list(f.body, "tools", "tools")
    if not raw_messages:
        return None
    messages = read_messages(raw_messages, "messages", ROLES, _message)
    if f.json is not None and tools:
        raise bad_request("format", "cannot be combined with tools: the reply is either JSON or "
                                    "tool calls")
    tokens = chat_prompt(ctx.backend, messages, tools=tools, think=f.think, json=f.json,
                         effort=f.effort)
    return f.call(ctx, tokens, "chat", tools=bool(tools))


# ---- render ----

def _stats(ev: FinishEvent) -> dict:
    t, u = ev.timings, ev.usage
    return {"total_duration": t.total_ns, "load_duration": t.queue_ns,
            "prompt_eval_count": u.prompt_tokens, "prompt_eval_duration": t.prompt_eval_ns,
            "eval_count": u.completion_tokens, "eval_duration": t.eval_ns}


def _logprob(ev: TokenEvent) -> dict:
    return {"token": token_text(ev), "logprob": ev.logprob if ev.logprob is not None else 0.0,
            "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in ev.top_logprobs or ()]}


def _tool_calls(calls: list[dict]) -> list[dict]:
    return [{"function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(calls)]


def _body(call: Call, content: str = "", thinking: str = "",
          tool_calls: Optional[list[dict]] = None) -> dict:
    """The start of every reply object: model, time, and the text in the route's shape."""
    obj = {"model": call.model, "created_at": now_rfc3339()}
    if call.options["kind"] == "chat":
        msg = {"role": "assistant", "content": content}
        if thinking:
            msg["thinking"] = thinking
        if tool_calls:
            msg["tool_calls"] = _tool_calls(tool_calls)
        obj["message"] = msg
    else:
        obj["response"] = content
        if thinking:
            obj["thinking"] = thinking
    return obj


def render_load(model: str, kind: str) -> dict:
    """The reply to a generate/chat request without a prompt: the model is (already) loaded."""
    out = {"model": model, "created_at": now_rfc3339(), "done": True, "done_reason": "load"}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return out


def render_reply(call: Call, r: Reply) -> dict:
    body = _body(call, r.text, r.thinking, r.tool_calls)
    body.update({"done": True, "done_reason": r.reason, **_stats(r.finish)})
    if call.logprobs:
        body["logprobs"] = [_logprob(t) for t in r.tokens]
    return body


class _Stream(reply.StreamRenderer):
    def __init__(self, call: Call):
        super().__init__(call)
        self.names: dict[int, str] = {}
        self.sent = 0  # tool calls sent so far

    def tool(self, p: Part):
        """A tool call goes out whole, in a chunk of its own, as soon as it is complete."""
        if p.kind == CALL_START:
            self.names[p.index] = p.name
        elif p.kind == CALL_END:
            call = {"name": self.names.get(p.index, ""), "arguments": p.arguments or {}}
            body = _body(self.call, tool_calls=[call])
            body["message"]["tool_calls"][0]["function"]["index"] = p.index
            self.sent += 1
            yield ndjson({**body, "done": False})

    def piece(self, p: Piece):
        obj = _body(self.call, **{p.kind: p.text})
        obj["done"] = False
        if p.tokens:
            obj["logprobs"] = [_logprob(t) for t in p.tokens]
        yield ndjson(obj)

    def end(self, e: Ending):
        for p in e.pieces:
            yield from self.piece(p)
        if e.tool_calls[self.sent:]:
            yield ndjson({**_body(self.call, tool_calls=e.tool_calls[self.sent:]), "done": False})
        yield ndjson({**_body(self.call), "done": True, "done_reason": e.reason,
                      **_stats(e.finish)})

    def error(self, err: ApiError):
        yield ndjson(render_error(err))


def stream_reply(call: Call, events) -> Iterator[bytes]:
    return reply.stream(call, events, _Stream(call))


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
    if meta.get("vision"):  # a vision projector (mmproj) is loaded
        caps.append("vision")
    return caps


def parse_show(body, ctx) -> str:
    """The model /api/show asks about (`model`, or the older `name`); 404 if not hosted."""
    body = require_object(body)
    return ctx.check_model(opt_str(body, "model", "model") or opt_str(body, "name", "name"))


def render_show(ctx) -> dict:
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
