"""Which dialect a request speaks, and its errors rendered in that dialect.

Owns: the choice of dialect by path (and by Google's SDK headers on /v1 paths), the Falcon
error handler that turns every exception (Falcon's own 404/405 included) into the dialect's
error JSON with the right status and headers.
Must not: build error JSON itself (each adapter's render_error does).
"""

from __future__ import annotations

import json

import falcon

from .adapters import gemini, ollama, openai
from .errors import ApiError, from_exception

GOOGLE_CLIENT_HEADERS = ("X-GOOG-API-CLIENT", "X-GOOG-API-KEY")
RENDER_ERROR = {"gemini": gemini.render_error, "openai": openai.render_error,
                "ollama": ollama.render_error}


def is_google_client(req: falcon.Request) -> bool:
    """The google-genai SDK (which says so in its headers) talking to a /v1 path."""
    return any(req.get_header(h) for h in GOOGLE_CLIENT_HEADERS)


def dialect_of(req: falcon.Request) -> str:
    """'gemini' | 'openai' | 'ollama': whose error shape a request's errors take."""
    return dialect_of_path(req.path, is_google_client(req))


def dialect_of_path(path: str, google_client: bool = False) -> str:
    """/v1beta is Gemini; /v1/models/{m}:{action} and /v1 requests from Google's SDK are
    Gemini's stable v1 API; other /v1 paths OpenAI; the rest Ollama's {"error": "..."}."""
    if path.startswith("/v1beta"):
        return "gemini"
    if path.startswith("/v1/") or path == "/v1":
        if (path.startswith("/v1/models/") and ":" in path) or google_client:
            return "gemini"
        return "openai"
    return "ollama"  # /api/*, /health, /metrics and unknown paths


def error_body(path: str, err: ApiError) -> bytes:
    """An error as the JSON body of the dialect `path` speaks."""
    return json.dumps(RENDER_ERROR[dialect_of_path(path)](err)).encode()


def write_error(req: falcon.Request, resp: falcon.Response, err: ApiError) -> None:
    resp.status = err.status
    resp.content_type = "application/json"
    resp.text = json.dumps(RENDER_ERROR[dialect_of(req)](err))
    for k, v in err.headers.items():
        if k.lower() not in ("content-type", "content-length"):
            resp.set_header(k, v)
    resp.stream = None


def install(app: falcon.App) -> None:
    """Route every error, Falcon's included, through write_error."""

    def handle(req, resp, ex, params):
        write_error(req, resp, from_exception(ex))

    app.add_error_handler(Exception, handle)
    app.add_error_handler(falcon.HTTPError, handle)  # Falcon's own 404/405/... come here too
