"""HTTP errors: one exception type for every failure, rendered in the dialect of the route.

Owns: ApiError (status + message + the field at fault), the mapping of the engine's typed errors
(ValidationError, ContextOverflowError, OverloadedError) and of Falcon's own errors (404, 405,
413) onto it, and the choice of dialect by path prefix.
Must not: build a dialect's JSON itself; each adapter's render_error does that.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import falcon

from ..types import ContextOverflowError, OverloadedError, ValidationError

log = logging.getLogger("lanner.server")

RETRY_AFTER_S = 1  # seconds, sent with every 503


class ApiError(Exception):
    """A request failed with `status`. `param` names the request field at fault, if any."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 headers: Optional[dict] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.headers = dict(headers or {})
        self.code = code  # machine-readable reason (OpenAI "code"): model_not_found, ...


def bad_request(param: str, message: str) -> ApiError:
    """400 naming the field: 'generationConfig.topK: must be an integer'."""
    return ApiError(400, f"{param}: {message}", param=param)


def from_exception(e: BaseException) -> ApiError:
    """The ApiError for any exception a responder let escape."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ValidationError):
        return ApiError(400, str(e), param=e.field)
    if isinstance(e, ContextOverflowError):
        return ApiError(400, str(e), param="messages", code="context_length_exceeded")
    if isinstance(e, OverloadedError):
        return ApiError(503, f"server is overloaded: {e}" if str(e) else "server is overloaded",
                        headers={"Retry-After": str(RETRY_AFTER_S)}, code="overloaded")
    if isinstance(e, falcon.HTTPError):
        status = e.status_code
        message = e.description or e.title or falcon.code_to_http_status(status)
        headers = dict(e.headers or {})
        if status == 404 and not e.description:
            message = "not found"
        if status == 405 and not e.description:
            message = "method not allowed"
        return ApiError(status, message, headers=headers)
    log.exception("unhandled error")
    return ApiError(500, f"internal error: {type(e).__name__}: {e}")


GOOGLE_CLIENT_HEADERS = ("X-GOOG-API-CLIENT", "X-GOOG-API-KEY")


def is_google_client(req: falcon.Request) -> bool:
    """The google-genai SDK (which says so in its headers) talking to a /v1 path."""
    return any(req.get_header(h) for h in GOOGLE_CLIENT_HEADERS)


def dialect_of(req: falcon.Request) -> str:
    """'gemini' | 'openai' | 'ollama': whose error shape a request's errors take.
    /v1/models/{m}:{action} and /v1 requests from Google's SDK are Gemini's stable v1 API."""
    path = req.path
    if path.startswith("/v1beta"):
        return "gemini"
    if path.startswith("/v1/") or path == "/v1":
        if (path.startswith("/v1/models/") and ":" in path) or is_google_client(req):
            return "gemini"
        return "openai"
    return "ollama"  # /api/*, /health, /metrics and unknown paths: {"error": "..."}


def error_body(dialect: str, err: ApiError) -> dict:
    from .adapters import gemini, ollama, openai

    renderer = {"gemini": gemini, "openai": openai, "ollama": ollama}[dialect]
    return renderer.render_error(err)


def write_error(req: falcon.Request, resp: falcon.Response, err: ApiError) -> None:
    resp.status = err.status
    resp.content_type = "application/json"
    resp.text = json.dumps(error_body(dialect_of(req), err))
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
