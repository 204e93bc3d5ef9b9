"""Web UI dialect: POST /api/chat as SSE frames (when `wants_webui`), GET /api/models,
POST /api/upload, POST /api/models/load.

parse_chat: request JSON (camelCase: messages, sessionId, newChat, imagePaths, maxTokens,
temperature, topP, topK, ..., think, tools) -> Call. stream_chat: events -> SSE frames
`{"queue": {"position", "pending"}}` while it waits for a slot, `{"token"}`, `{"thinking"}`, `{"tool_calls"}`, `{"error", "status"}`, and always a last
`{"done": true, ...stats}`. render_*: the JSON of the other three endpoints.
Errors: Ollama's {"error": "message"} (the /api paths' shape).
Must not: submit to the engine or touch HTTP objects (routes_webui.py and routes.py do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from ...types import FinishEvent, GenerateRequest
from .. import reply
from ..errors import ApiError, bad_request
from ..reply import Ending, Piece
from ..request import (Call, chat_prompt, completion_budget, make_sampling, opt_bool, opt_int,
                       opt_list, opt_number, opt_seed, opt_str, read_messages, require_object)
from ..streaming import sse
from ..uploads import MAX_TEXT_FILE_CHARS, Upload
from .ollama import render_error  # noqa: F401  (the web UI's errors are Ollama's shape)

WEBUI_FIELDS = ("sessionId", "newChat", "imagePaths", "maxTokens")
ROLES = {r: r for r in ("system", "user", "assistant", "tool")}
# web UI field -> (SamplingParams field, reader, lo, hi)
SAMPLING = {
    "temperature": ("temperature", opt_number, 0, 2),
    "topP": ("top_p", opt_number, 0, 1),
    "topK": ("top_k", opt_int, 0, 1 << 20),
    "minP": ("min_p", opt_number, 0, 1),
    "repeatPenalty": ("repeat_penalty", opt_number, 0, 10),
    "presencePenalty": ("presence_penalty", opt_number, -2, 2),
    "frequencyPenalty": ("frequency_penalty", opt_number, -2, 2),
}


def wants_webui(body, accept: Optional[str]) -> bool:
    """An /api/chat request is the web UI's when it carries one of its fields or asks for SSE;
    anything else stays Ollama's (NDJSON or one JSON object)."""
    if accept and "text/event-stream" in accept.lower():
        return True
    return isinstance(body, dict) and any(k in body for k in WEBUI_FIELDS)


def has_vision(backend) -> bool:
    """Whether the hosted model takes images (a backend with a vision projector says so)."""
    return bool(getattr(backend, "supports_images", False))


# ---- parse ----

def _sampling(body: dict, base):
    values = {name: read(body, key, key, lo, hi) for key, (name, read, lo, hi) in SAMPLING.items()}
    values["seed"] = opt_seed(body, "seed", "seed")
    names = {name: key for key, (name, *_rest) in SAMPLING.items()}
    names["seed"] = "seed"
    return make_sampling(base, values, names)


def _image_ids(items: list, path: str, ctx) -> list[str]:
    for i, uid in enumerate(items):
        if ctx.uploads.path(uid) is None:
            raise bad_request(f"{path}[{i}]", f"unknown upload id {uid!r}; upload the file first "
                                              "(POST /api/upload)")
    if items and not has_vision(ctx.backend):
        raise bad_request(path, "this model does not support images (it takes text only)")
    return items


def _message_reader(ctx):
    def read(m: dict, path: str) -> dict:
        msg = {"content": opt_str(m, "content", f"{path}.content", default="")}
        images = _image_ids(opt_list(m, "images", f"{path}.images"), f"{path}.images", ctx)
        if images:
            msg["images"] = [str(ctx.uploads.path(uid)) for uid in images]
        return msg
    return read


def parse_chat(body, ctx) -> Call:
    body = require_object(body)
    model = ctx.check_model(opt_str(body, "model", "model"))
    session = opt_str(body, "sessionId", "sessionId")
    opt_bool(body, "newChat", "newChat")  # accepted: every request carries its whole conversation
    think = opt_bool(body, "think", "think", default=False)
    sampling = _sampling(body, ctx.settings.sampling_defaults("ollama"))
    max_tokens = opt_int(body, "maxTokens", "maxTokens", 1)
    raw = opt_list(body, "messages", "messages")
    if not raw:
        raise bad_request("messages", "must be a non-empty array of messages")
    messages = read_messages(raw, "messages", ROLES, _message_reader(ctx))
    extra = _image_ids(opt_list(body, "imagePaths", "imagePaths"), "imagePaths", ctx)
    if extra:
        messages[-1].setdefault("images", []).extend(str(ctx.uploads.path(u)) for u in extra)
    tools = opt_list(body, "tools", "tools")
    prompt = chat_prompt(ctx.backend, messages, tools=tools, think=think)
    req = GenerateRequest(prompt_tokens=prompt, sampling=sampling, session_id=session or None,
                          max_tokens=completion_budget(max_tokens, len(prompt), ctx.n_ctx,
                                                       ctx.settings.max_tokens),
                          report_queue=True)
    return Call(request=req, model=model, stream=True, think=think, tools=bool(tools),
                options={"session": session})


# ---- stream ----

def stats(ev: FinishEvent, reason: str) -> dict:
    """The done frame's numbers: tokens, rates and times (seconds), cached prompt tokens."""
    t, u = ev.timings, ev.usage
    eval_s = t.eval_ns / 1e9
    decoded = max(0, u.completion_tokens - 1)  # the first token's time is in the TTFT
    return {"tokenCount": u.completion_tokens, "promptTokens": u.prompt_tokens,
            "cachedTokens": u.cached_tokens, "kvReusedTokens": u.cached_tokens,
            "kvReusePercent": 100.0 * u.cached_tokens / u.prompt_tokens if u.prompt_tokens else 0.0,
            "elapsed": t.total_ns / 1e9, "ttft": (t.queue_ns + t.prompt_eval_ns) / 1e9,
            "tokPerSec": decoded / eval_s if eval_s > 0 and decoded else 0.0,
            "finishReason": reason}


class _Stream(reply.StreamRenderer):
    FIELD = {"content": "token", "thinking": "thinking"}

    def __init__(self, call: Call):
        super().__init__(call)
        self.last = {"done": True, "aborted": False, "error": None,
                     "sessionId": call.options.get("session"), "model": call.model}

    def queued(self, q):
        yield sse({"queue": {"position": q.position, "pending": q.pending}})

    def piece(self, p: Piece):
        if p.text:
            yield sse({self.FIELD[p.kind]: p.text})

    def end(self, e: Ending):
        for p in e.pieces:
            yield from self.piece(p)
        if e.tool_calls:
            yield sse({"tool_calls": [{"name": c["name"], "arguments": c["arguments"]}
                                      for c in e.tool_calls]})
        self.last.update(stats(e.finish, e.reason))

    def error(self, err: ApiError):
        self.last["error"] = err.message
        yield sse({"error": err.message, "status": err.status})

    def done(self):
        yield sse(self.last)


def stream_chat(call: Call, events) -> Iterator[bytes]:
    return reply.stream(call, events, _Stream(call))


# ---- models, uploads, loads ----

def render_models(ctx, base: dict) -> dict:
    """GET /api/models: `base` (the keys /api/models always had) plus the spec's web UI fields."""
    f = ctx.model_facts()
    mmproj = (f["metadata"].get("vision") or {}).get("path")  # a loaded vision projector
    return {**base,
            "models": [f["file"]], "mmProjModels": [Path(mmproj).name] if mmproj else [],
            "loadedModel": f["file"], "loadedMmProj": Path(mmproj).name if mmproj else None,
            "loadedBackend": base["backend"],
            "defaultBackend": base["backend"], "supportedBackends": supported_backends(ctx),
            "hostedModelPath": f["path"], "hostedMmProjPath": mmproj,
            "defaultMaxTokens": ctx.settings.max_tokens, "modelName": f["name"],
            "family": f["architecture"], "contextSize": f["n_ctx"],
            "trainedContextSize": f["context_length"], "vision": has_vision(ctx.backend),
            "maxUploadBytes": ctx.settings.max_upload_bytes,
            "state": "reloading" if ctx.reloading else "ready"}


def render_upload(u: Upload) -> dict:
    out = {"ok": True, "id": u.id, "mediaType": u.kind, "mimeType": u.mime, "size": u.size}
    if u.kind == "text":
        out.update({"textContent": u.text[:MAX_TEXT_FILE_CHARS],
                    "truncated": len(u.text) > MAX_TEXT_FILE_CHARS,
                    "truncateLimit": MAX_TEXT_FILE_CHARS, "truncateUnit": "chars"})
    return out


def parse_load(body, ctx) -> Optional[int]:
    """The context size a POST /api/models/load asks for (None = keep); 400 for a file that is
    not the hosted one, or a projector / backend this server does not have."""
    body = require_object(body)
    name = opt_str(body, "model", "model")
    try:
        ctx.check_model(name)
    except ApiError:
        raise bad_request("model", f"{name!r} is not the hosted model; this server can only "
                                   f"re-load '{ctx.model_name}'") from None
    if opt_str(body, "mmproj", "mmproj"):
        raise bad_request("mmproj", "this server hosts no projector")
    backend = opt_str(body, "backend", "backend")
    current = backend_name(ctx)
    if backend and backend != current:
        raise bad_request("backend", f"only {current!r} is available, got {backend!r}")
    return opt_int(body, "ctxSize", "ctxSize", 64, 1 << 20)


def backend_name(ctx) -> str:
    """The --backend name the model runs on ('cpu', 'cuda', 'metal'): LLM.backend_name."""
    name = getattr(ctx.backend, "backend_name", None)
    return name or (ctx.backend.metadata or {}).get("device") or "ggml"


def supported_backends(ctx) -> list[str]:
    """The backends this build has (ggml's registry), the one in use first."""
    current = backend_name(ctx)
    try:
        from ...backends import available_backends
        others = [b for b in available_backends() if b != current]
    except Exception:  # a test double without the native core
        others = []
    return [current] + others


def render_load(ctx) -> dict:
    f = ctx.model_facts()
    return {"ok": True, "model": f["file"], "loadedMmProj": None, "architecture": f["architecture"],
            "contextSize": f["n_ctx"]}
