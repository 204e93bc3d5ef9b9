"""Google Gemini v1beta dialect: models/{model}:generateContent, :streamGenerateContent,
:countTokens, GET models and models/{model}.

parse_*: request JSON (camelCase, or the snake_case the REST API also accepts) -> Call.
render_reply: a Reply -> GenerateContentResponse JSON; stream_reply: events -> SSE `data:`
events whose last carries finishReason + usageMetadata; `data: [DONE]` ends the stream unless
the client asked for `?alt=sse` (the google-genai SDK does, and rejects a [DONE] line).
Errors: {"error": {"code", "message", "status"}}.
Must not: submit to the engine or touch HTTP objects (routes.py does both).
"""

from __future__ import annotations

import json
import re
from typing import Iterator, Optional

from ...types import FinishEvent, FinishReason, GenerateRequest, Grammar, SamplingParams
from .. import reply
from ..errors import ApiError, bad_request
from ..images import gemini_inline_part, message_content
from ..reply import Ending, Piece, Reply
from ...text.output_parse import CALL_END, CALL_START, Part
from ..request import (Call, chat_prompt, completion_budget, make_sampling, opt_bool, opt_int,
                       opt_number, opt_seed, opt_stop, opt_str, require_object)
from ..streaming import SSE_DONE, sse
from ..structured import JsonFormat, from_gemini_schema, grammar_of
from .gemini_tools import (function_call_parts, parse_tools, thinking_config, tool_turns,
                           has_call_parts)

ACTIONS = ("generateContent", "streamGenerateContent", "countTokens")


def _camel(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


def _norm(obj) -> dict:
    """Keys in camelCase (the REST API accepts snake_case too)."""
    return {_camel(k): v for k, v in obj.items()} if isinstance(obj, dict) else obj


# ---- parse ----

def _text_of(content, path: str) -> str:
    """The text of a Content ({parts: [{text}]}), a bare string, or a list of parts."""
    return "".join(_pieces_of(content, path, False))


def _pieces_of(content, path: str, take_images: bool) -> list:
    """A Content's parts in order: text strings and (take_images) ImageParts."""
    if isinstance(content, str):
        return [content]
    content = _norm(content)
    parts = content.get("parts") if isinstance(content, dict) else content
    if not isinstance(parts, list):
        raise bad_request(f"{path}.parts", "must be an array of parts")
    pieces: list = []
    for i, part in enumerate(parts):
        part = _norm(part)
        if not isinstance(part, dict):
            raise bad_request(f"{path}.parts[{i}]", "must be an object")
        if part.get("thought"):
            continue  # earlier reasoning is not replayed
        if "text" in part:
            if not isinstance(part["text"], str):
                raise bad_request(f"{path}.parts[{i}].text", "must be a string")
            pieces.append(part["text"])
        elif "inlineData" in part and take_images:  # server/images.py
            pieces.append(gemini_inline_part(part, f"{path}.parts[{i}]"))
        elif "inlineData" in part or "fileData" in part:
            raise bad_request(f"{path}.parts[{i}]", "this model takes text only (no inline or file data)")
        else:
            raise bad_request(f"{path}.parts[{i}]", "unsupported part: only text parts are accepted")
    return pieces


def _messages(body: dict) -> list[dict]:
    contents = body.get("contents")
    if isinstance(contents, (dict, str)):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise bad_request("contents", "must be a non-empty array of Content objects")
    messages = []
    system = body.get("systemInstruction")
    if system is not None:
        text = _text_of(system, "systemInstruction")
        if text:
            messages.append({"role": "system", "content": text})
    prev = "model"  # a turn without a role alternates with the one before (gemma.cpp's rule)
    for i, c in enumerate(contents):
        c = _norm(c) if isinstance(c, dict) else c
        role = (c.get("role") if isinstance(c, dict) else None) or \
            ("user" if prev == "model" else "model")
        prev = role
        if role not in ("user", "model", "function", "tool"):
            raise bad_request(f"contents[{i}].role", f"must be 'user' or 'model', got {role!r}")
        if isinstance(c, dict) and has_call_parts(c):
            messages += tool_turns(c, role, f"contents[{i}]")
            continue
        user = role != "model"  # a user turn's images stay where they stand among its text
        messages.append({"role": "user" if user else "assistant",
                         **message_content(_pieces_of(c, f"contents[{i}]", True), in_place=user)})
    return messages


def _config(body: dict, base: SamplingParams):
    """(SamplingParams, maxOutputTokens or None, stop, JsonFormat or None, Grammar or None)."""
    cfg = _norm(body.get("generationConfig") or {})
    if not isinstance(cfg, dict):
        raise bad_request("generationConfig", "must be an object")
    p = lambda k: f"generationConfig.{k}"  # noqa: E731
    n = opt_int(cfg, "candidateCount", p("candidateCount"), default=1)
    if n != 1:
        raise bad_request(p("candidateCount"), f"only 1 candidate is supported, got {n}")
    values = {
        "temperature": opt_number(cfg, "temperature", p("temperature"), 0, 2),
        "top_p": opt_number(cfg, "topP", p("topP"), 0, 1),
        "top_k": opt_int(cfg, "topK", p("topK"), 0),
        "presence_penalty": opt_number(cfg, "presencePenalty", p("presencePenalty"), -2, 2),
        "frequency_penalty": opt_number(cfg, "frequencyPenalty", p("frequencyPenalty"), -2, 2),
        "seed": opt_seed(cfg, "seed", p("seed")),
    }
    if opt_bool(cfg, "responseLogprobs", p("responseLogprobs"), default=False):
        values["logprobs"] = opt_int(cfg, "logprobs", p("logprobs"), 0, 20, default=0)
    names = {"temperature": p("temperature"), "top_p": p("topP"), "top_k": p("topK"),
             "presence_penalty": p("presencePenalty"), "frequency_penalty": p("frequencyPenalty"),
             "seed": p("seed"), "logprobs": p("logprobs")}
    sampling = make_sampling(base, values, names)  # spec: temperature 1.0, topK 1, or the server's
    max_out = opt_int(cfg, "maxOutputTokens", p("maxOutputTokens"), 1)
    stop = opt_stop(cfg, "stopSequences", p("stopSequences"), max_n=5)
    mime = opt_str(cfg, "responseMimeType", p("responseMimeType"), default="text/plain")
    if mime not in ("text/plain", "application/json", "text/x.enum"):
        raise bad_request(p("responseMimeType"), f"unsupported mime type {mime!r}")
    if mime == "text/x.enum":
        return sampling, max_out, stop, None, _enum_grammar(cfg, p)
    fmt = _format(cfg, mime, p)
    return sampling, max_out, stop, fmt, grammar_of(fmt)


def _enum_grammar(cfg: dict, p) -> Grammar:
    """text/x.enum: the reply is exactly one of responseSchema.enum, as plain text."""
    schema = cfg.get("responseSchema")
    enum = schema.get("enum") if isinstance(schema, dict) else None
    if not isinstance(enum, list) or not enum or not all(isinstance(e, str) and e for e in enum):
        raise bad_request(p("responseSchema.enum"), "text/x.enum needs a non-empty array of strings")
    return Grammar("lark", "start: " + " | ".join(json.dumps(e) for e in enum))


def _format(cfg: dict, mime: str, p) -> Optional[JsonFormat]:
    """JSON mode: responseJsonSchema (JSON Schema; keywords the grammar lacks are ignored) or
    responseSchema (Gemini's OpenAPI subset, converted; every field known)."""
    js, schema = cfg.get("responseJsonSchema"), cfg.get("responseSchema")
    if js is not None and schema is not None:
        raise bad_request(p("responseSchema"), "cannot be combined with responseJsonSchema")
    if mime != "application/json":
        if js is not None or schema is not None:
            raise bad_request(p("responseMimeType"), "a response schema needs application/json")
        return None
    if js is not None:
        if not isinstance(js, (dict, bool)):
            raise bad_request(p("responseJsonSchema"), "must be a JSON Schema object")
        return JsonFormat(js, p("responseJsonSchema"), strict=False)
    if schema is not None:
        return JsonFormat(from_gemini_schema(schema, p("responseSchema")), p("responseSchema"))
    return JsonFormat(None, p("responseMimeType"))


def parse_generate(body, ctx, model: str, stream: bool, alt_sse: bool) -> Call:
    body = _norm(require_object(body))
    name = ctx.check_model(model)
    sampling, max_out, stop, fmt, grammar = _config(body, ctx.settings.sampling_defaults("gemini"))
    tools, forced = parse_tools(body, ctx)
    think, include_thoughts, effort = thinking_config(body)
    if fmt is not None and tools:
        raise bad_request("tools", "cannot be combined with a JSON response (responseMimeType "
                                   "application/json): the reply is either JSON or calls")
    if fmt is not None and (include_thoughts or think):
        raise bad_request("generationConfig.thinkingConfig",
                          "cannot be combined with a JSON response: the grammar allows no reasoning")
    if forced is not None:
        grammar = forced
    tokens = chat_prompt(ctx.backend, _messages(body), json=fmt, param="contents", tools=tools,
                         think=think, effort=effort)
    session = opt_str(body, "sessionId", "sessionId")
    req = GenerateRequest(prompt_tokens=tokens, sampling=sampling, stop=stop,
                          max_tokens=completion_budget(max_out, len(tokens), ctx.n_ctx,
                                                       ctx.settings.default_max_tokens("gemini")),
                          session_id=session or None, grammar=grammar)
    return Call(request=req, model=name[len("models/"):] if name.startswith("models/") else name,
                stream=stream, json=fmt, prompt_param="contents",
                options={"alt_sse": alt_sse, "include_thoughts": include_thoughts},
                think=fmt is None, tools=bool(tools),
                grammar_param=fmt.param if fmt is not None else "tools" if forced is not None else
                ("generationConfig.responseSchema" if grammar is not None else None))


def parse_count_tokens(body, ctx, model: str) -> list[int]:
    """The prompt tokens a generateContent request (given bare or as generateContentRequest)
    would have."""
    body = _norm(require_object(body))
    ctx.check_model(model)
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict):
        body = _norm(inner)
    return chat_prompt(ctx.backend, _messages(body), param="contents",
                       tools=parse_tools(body, ctx)[0])


def render_count_tokens(tokens: list[int]) -> dict:
    return {"totalTokens": len(tokens)}


# ---- render ----

def _finish_reason(ev: FinishEvent) -> str:
    return "MAX_TOKENS" if ev.reason is FinishReason.LENGTH else "STOP"


def _usage(ev: FinishEvent, thoughts: int = 0) -> dict:
    u = ev.usage
    out = {"promptTokenCount": u.prompt_tokens, "candidatesTokenCount": u.completion_tokens - thoughts,
           "totalTokenCount": u.total_tokens}
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    if u.cached_tokens:
        out["cachedContentTokenCount"] = u.cached_tokens
    return out


def _candidate(parts: list[dict], finish: Optional[FinishEvent]) -> dict:
    cand = {"content": {"parts": parts or [{"text": ""}], "role": "model"}}
    if finish is not None:
        cand["finishReason"] = _finish_reason(finish)
    cand["index"] = 0
    return cand


def _parts(call: Call, thinking: str, text: str, calls: list[dict]) -> list[dict]:
    """A reply's parts: its thoughts (when asked for), its text, its function calls."""
    parts = []
    if thinking and call.options.get("include_thoughts"):
        parts.append({"text": thinking, "thought": True})
    if text or not calls:
        parts.append({"text": text})
    return parts + function_call_parts(calls)


def _response(call: Call, parts: list[dict], finish: FinishEvent, thoughts: int = 0) -> dict:
    return {"candidates": [_candidate(parts, finish)], "promptFeedback": {"safetyRatings": []},
            "usageMetadata": _usage(finish, thoughts), "modelVersion": call.model}


def render_reply(call: Call, r: Reply) -> dict:
    return _response(call, _parts(call, r.thinking, r.text, r.tool_calls), r.finish,
                     r.reasoning_tokens)


class _Stream(reply.StreamRenderer):
    def __init__(self, call: Call):
        super().__init__(call)
        self.names: dict[int, str] = {}
        self.sent = 0  # function calls sent so far

    def tool(self, p: Part):
        """A function call goes out whole, in an event of its own, as soon as it is complete."""
        if p.kind == CALL_START:
            self.names[p.index] = p.name
        elif p.kind == CALL_END:
            self.sent += 1
            yield sse({"candidates": [_candidate(function_call_parts(
                [{"name": self.names.get(p.index, ""), "arguments": p.arguments or {}}]), None)],
                "promptFeedback": {"safetyRatings": []}})

    def piece(self, p: Piece):
        if not p.text:
            return
        if p.kind == "content":
            yield sse({"candidates": [_candidate([{"text": p.text}], None)],
                       "promptFeedback": {"safetyRatings": []}})
        elif self.call.options.get("include_thoughts"):
            yield sse({"candidates": [_candidate([{"text": p.text, "thought": True}], None)],
                       "promptFeedback": {"safetyRatings": []}})

    def end(self, e: Ending):
        for p in e.pieces:
            if p.kind == "thinking":
                yield from self.piece(p)
        text = "".join(p.text for p in e.pieces if p.kind == "content")
        rest = e.tool_calls[self.sent:]
        parts = ([{"text": text}] if text or not rest else []) + function_call_parts(rest)
        yield sse(_response(self.call, parts, e.finish, e.reasoning_tokens))

    def error(self, err: ApiError):
        yield sse(render_error(err))

    def done(self):
        if not self.call.options["alt_sse"]:
            yield SSE_DONE


def stream_reply(call: Call, events) -> Iterator[bytes]:
    return reply.stream(call, events, _Stream(call))


def render_model(ctx) -> dict:
    f = ctx.model_facts()
    n_ctx = f["n_ctx"] or f["context_length"]
    return {"name": f"models/{f['name']}", "baseModelId": f["name"], "version": "001",
            "displayName": f["name"],
            "description": f"{f['name']} ({f['architecture']}, {f['file']}) running locally on lanner",
            "inputTokenLimit": n_ctx, "outputTokenLimit": n_ctx,
            "supportedGenerationMethods": list(ACTIONS),
            "temperature": 1.0, "topK": 1, "topP": 1.0, "maxTemperature": 2.0}


def render_models(ctx) -> dict:
    return {"models": [render_model(ctx)]}


_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT",
           422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def render_error(err: ApiError) -> dict:
    return {"error": {"code": err.status, "message": err.message,
                      "status": _STATUS.get(err.status, "UNKNOWN")}}
