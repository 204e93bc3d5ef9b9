"""Falcon resources: the HTTP glue between a dialect adapter and the engine.

Owns: reading the JSON body (size limit -> 413, bad JSON -> 400), calling the adapter's parse,
submitting to the engine, and handing the adapter's rendering to Falcon (a JSON body, or a
ResponseBody stream whose close aborts the request), plus the utility endpoints.
Must not: build dialect JSON (adapters do) or call _core (the backend's public API only).
"""

from __future__ import annotations

import json
from typing import Callable

import falcon

from ..types import ContextOverflowError, ValidationError
from .adapters import gemini, ollama, openai, webui
from .context import ServerContext
from .dialect import is_google_client
from .errors import RETRY_AFTER_S, ApiError, from_exception
from .reply import whole_reply
from .request import Call, prepare_output
from .streaming import ResponseBody, TrackedEvents, collect, dumps

MAX_JSON_DEPTH = 100  # nesting levels of a request body (objects and arrays; a schema may use 64)
SSE = "text/event-stream; charset=utf-8"  # SSE is UTF-8; say so for clients that default text/* to latin-1
NDJSON = "application/x-ndjson; charset=utf-8"


def read_json(req: falcon.Request, ctx: ServerContext):
    """The body as JSON: 413 over --max-body (by its declared length, or as read; a chunked
    body is read from the server's de-chunking stream), 400 if empty, malformed or nested deeper
    than MAX_JSON_DEPTH (never a RecursionError)."""
    limit = ctx.settings.max_body_bytes
    if req.content_length is not None and req.content_length > limit:
        raise ApiError(413, f"request body is {req.content_length} bytes; the limit is {limit} bytes")
    chunked = "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
    stream = req.stream if chunked and req.content_length is None else req.bounded_stream
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
    if not data.strip():
        raise ApiError(400, "request body is empty; expected a JSON object")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON in request body: {e}") from None
    except RecursionError:  # the parser's own limit (~1000 levels)
        body = None
    if body is None and data.strip() != b"null" or json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return body


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def send_json(resp: falcon.Response, obj, status: int = 200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = dumps(obj)


def run_call(req: falcon.Request, resp: falcon.Response, ctx: ServerContext, call: Call,
             dialect: str, render: Callable, stream: Callable, content_type: str) -> None:
    """Submit one parsed call and answer with the whole reply or a stream of it. Until the
    reply is over, a client that closes its connection aborts the request."""
    prepare_output(call, ctx.backend)
    try:
        rs = ctx.submit(call.request, dialect)
    except ContextOverflowError as e:
        raise from_exception(e, call.prompt_param) from None
    except ValidationError as e:
        if e.field != "grammar" or call.grammar_param is None:
            raise
        param = call.grammar_param  # the schema the dialect's field gave: rejected before queueing
        raise ApiError(400, f"{param}: the schema cannot be used: {str(e).split(': ', 1)[-1]}",
                       param=param, code="invalid_schema") from None
    events = TrackedEvents(rs, on_finish=ctx.metrics.finish)

    def client_gone() -> None:
        if events.abort_if_unfinished():
            ctx.metrics.client_abort()

    unwatch = ctx.disconnects.watch(req.env.get("gunicorn.socket"), client_gone)
    if call.stream:
        resp.content_type = content_type
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = ResponseBody(events, stream(call, events), on_abort=ctx.metrics.client_abort,
                                   on_close=unwatch)
        return
    try:
        out = collect(events, on_abort=ctx.metrics.client_abort)
    finally:
        unwatch()
    send_json(resp, render(call, whole_reply(call, out)))


class _Resource:
    def __init__(self, ctx: ServerContext):
        self.ctx = ctx


# ---- OpenAI ----

class OpenAIChat(_Resource):
    def on_post(self, req, resp):
        call = openai.parse_chat(read_json(req, self.ctx), self.ctx)
        run_call(req, resp, self.ctx, call, "openai", openai.render_chat, openai.stream_chat, SSE)


class OpenAICompletions(_Resource):
    def on_post(self, req, resp):
        call = openai.parse_completion(read_json(req, self.ctx), self.ctx)
        run_call(req, resp, self.ctx, call, "openai", openai.render_completion,
                 openai.stream_completion, SSE)


class OpenAIModels(_Resource):
    """/v1/models: OpenAI's list, or Gemini's when Google's SDK asks (its stable v1 API)."""

    def on_get(self, req, resp):
        if is_google_client(req):
            send_json(resp, gemini.render_models(self.ctx))
            return
        send_json(resp, openai.render_models(self.ctx))


class OpenAIModel(_Resource):
    """/v1/models/{name}: OpenAI's retrieve; Gemini v1's model get and {model}:{action}."""

    def __init__(self, ctx: ServerContext):
        super().__init__(ctx)
        self.gemini = GeminiModel(ctx)

    def on_get(self, req, resp, name):
        if ":" in name or is_google_client(req):
            self.gemini.on_get(req, resp, name)
            return
        self.ctx.check_model(name)
        send_json(resp, openai.render_model(self.ctx))

    def on_post(self, req, resp, name):
        if ":" not in name and not is_google_client(req):
            raise falcon.HTTPMethodNotAllowed(["GET"])
        self.gemini.on_post(req, resp, name)


# ---- Gemini ----

class GeminiModels(_Resource):
    def on_get(self, req, resp):
        send_json(resp, gemini.render_models(self.ctx))


class GeminiModel(_Resource):
    """/v1beta/models/{name}: GET the model; POST {model}:{action}."""

    def on_get(self, req, resp, name):
        if ":" in name:
            raise falcon.HTTPMethodNotAllowed(["POST"])
        self.ctx.check_model(name)
        send_json(resp, gemini.render_model(self.ctx))

    def on_post(self, req, resp, name):
        model, _, action = name.rpartition(":")
        if not model or action not in gemini.ACTIONS:
            raise ApiError(404, f"unknown method {action or name!r}; expected one of "
                                f"{', '.join(gemini.ACTIONS)}")
        body = read_json(req, self.ctx)
        if action == "countTokens":
            send_json(resp, gemini.render_count_tokens(
                gemini.parse_count_tokens(body, self.ctx, model)))
            return
        alt_sse = req.get_param("alt") == "sse"
        call = gemini.parse_generate(body, self.ctx, model, action == "streamGenerateContent",
                                     alt_sse)
        run_call(req, resp, self.ctx, call, "gemini", gemini.render_reply, gemini.stream_reply, SSE)


# ---- Ollama ----

class OllamaGenerate(_Resource):
    """/api/generate and /api/chat: a request without a prompt only loads the model."""

    kind = "generate"
    parse = staticmethod(ollama.parse_generate)

    def on_post(self, req, resp):
        self.answer(req, resp, read_json(req, self.ctx))

    def answer(self, req, resp, body):
        call = self.parse(body, self.ctx)
        if call is None:
            send_json(resp, ollama.render_load(self.ctx.check_model(body.get("model")), self.kind))
            return
        run_call(req, resp, self.ctx, call, "ollama", ollama.render_reply, ollama.stream_reply, NDJSON)


class OllamaChat(OllamaGenerate):
    """/api/chat: Ollama's, or the web UI's SSE chat when the request says so (webui.wants_webui)."""

    kind = "chat"
    parse = staticmethod(ollama.parse_chat)

    def on_post(self, req, resp):
        body = read_json(req, self.ctx)
        if req.path == "/api/chat" and webui.wants_webui(body, req.get_header("Accept")):
            run_call(req, resp, self.ctx, webui.parse_chat(body, self.ctx), "webui", None,
                     webui.stream_chat, SSE)
            return
        self.answer(req, resp, body)


class OllamaTags(_Resource):
    def on_get(self, req, resp):
        send_json(resp, ollama.render_tags(self.ctx))


class OllamaShow(_Resource):
    def on_post(self, req, resp):
        ollama.parse_show(read_json(req, self.ctx), self.ctx)
        send_json(resp, ollama.render_show(self.ctx))


class OllamaPs(_Resource):
    def on_get(self, req, resp):
        send_json(resp, ollama.render_ps(self.ctx))


# ---- utility ----

class Version(_Resource):
    def on_get(self, req, resp):
        send_json(resp, ollama.render_version())


class Health(_Resource):
    def on_get(self, req, resp):
        state = "draining" if self.ctx.draining else self.ctx.state
        if state == "ready":
            send_json(resp, {"status": "ok", "model": self.ctx.model_name})
            return
        body = {"status": state}
        if state == "error":
            body["error"] = self.ctx.load_error
        send_json(resp, body, 503)
        resp.set_header("Retry-After", str(RETRY_AFTER_S))


class QueueStatus(_Resource):
    def on_get(self, req, resp):
        s = self.ctx.stats()
        send_json(resp, {"busy": s.busy, "pending_requests": s.pending,
                         "total_processed": s.total_processed, "running": s.running,
                         "parallel": self.ctx.settings.parallel,
                         "max_queue": self.ctx.settings.max_queue,
                         "kv_cells_used": s.kv_cells_used, "n_ctx": s.n_ctx})


class Metrics(_Resource):
    def on_get(self, req, resp):
        stats = self.ctx.stats() if self.ctx.state == "ready" else None
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.text = self.ctx.metrics.render(stats, self.ctx.state)


class HostedModel(_Resource):
    """/api/models: the one hosted model and the server's defaults (the web UI extends this)."""

    def on_get(self, req, resp):
        f = self.ctx.model_facts()
        base = {"model": f["name"], "file": f["file"], "path": f["path"], "size": f["size"],
                "architecture": f["architecture"], "backend": webui.backend_name(self.ctx),
                "context_length": f["context_length"], "n_ctx": f["n_ctx"],
                "default_max_tokens": self.ctx.settings.max_tokens, "loaded": True}
        send_json(resp, webui.render_models(self.ctx, base))


def add_routes(app: falcon.App, ctx: ServerContext) -> None:
    table = [
        ("/v1/chat/completions", OpenAIChat), ("/v1/completions", OpenAICompletions),
        ("/v1/models", OpenAIModels), ("/v1/models/{name}", OpenAIModel),
        ("/v1beta/models", GeminiModels), ("/v1beta/models/{name}", GeminiModel),
        ("/api/generate", OllamaGenerate), ("/api/chat", OllamaChat),
        ("/api/chat/ollama", OllamaChat), ("/api/tags", OllamaTags), ("/api/show", OllamaShow),
        ("/api/ps", OllamaPs), ("/api/version", Version), ("/api/queue/status", QueueStatus),
        ("/api/models", HostedModel), ("/health", Health), ("/metrics", Metrics),
    ]
    for path, resource in table:
        app.add_route(path, resource(ctx))
