"""What an HTTP error is: one exception type for every failure a response can report.

Owns: ApiError (status + message + the field at fault + extra headers + a machine-readable
code), bad_request, and the mapping of the engine's typed errors and of Falcon's own errors
(404, 405, ...) onto ApiError.
Must not: know any dialect: each adapter's render_error shows an ApiError in its dialect, and
dialect.py picks the adapter for a route. A leaf: imports nothing of the server.
"""

from __future__ import annotations

import logging
from typing import Optional

import falcon

from ..types import (ContextOverflowError, EngineClosedError, FinishEvent, OverloadedError,
                     ValidationError)

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


def unavailable(message: str, code: Optional[str] = None) -> ApiError:
    """503 with Retry-After: try again shortly."""
    return ApiError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)}, code=code)


def engine_error(ev: FinishEvent) -> ApiError:
    """The 500 for a generation the engine ended with FinishReason.ERROR."""
    return ApiError(500, f"generation failed: {ev.error or 'engine error'}", code="engine_error")


def from_exception(e: BaseException, prompt_param: str = "messages") -> ApiError:
    """The ApiError for any exception a responder let escape. `prompt_param` is the field a
    context overflow is blamed on (the route's prompt field)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ValidationError):
        return ApiError(400, str(e), param=e.field)
    if isinstance(e, ContextOverflowError):
        return ApiError(400, str(e), param=prompt_param, code="context_length_exceeded")
    if isinstance(e, OverloadedError):
        return unavailable(f"server is overloaded: {e}" if str(e) else "server is overloaded",
                           code="overloaded")
    if isinstance(e, EngineClosedError):
        return unavailable("the engine is shutting down")
    if isinstance(e, falcon.HTTPError):
        status = e.status_code
        message = e.description or e.title or falcon.code_to_http_status(status)
        if status == 404 and not e.description:
            message = "not found"
        if status == 405 and not e.description:
            message = "method not allowed"
        return ApiError(status, message, headers=dict(e.headers or {}))
    log.exception("unhandled error")
    return ApiError(500, f"internal error: {type(e).__name__}: {e}")
