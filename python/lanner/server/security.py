"""Who may use the server: the Host header, the browser origin, the API key, the body's type.

Owns: one Falcon middleware that runs before any route. (1) Bound to loopback, only loopback
Host names are served (403 otherwise: DNS rebinding). (2) A request from a browser page of
another origin is refused (403) unless the origin is on the --cors-origin allowlist; allowed
ones get CORS headers (never `*` with credentials), preflights are answered here; the web UI's
mutating endpoints (SAME_ORIGIN_PATHS) refuse every other origin, allowlisted or not. (3) With
--api-key / --api-key-file, every route but /health and the web page needs a key: OpenAI's and
Ollama's `Authorization: Bearer`, Gemini's `x-goog-api-key` or `?key=` (401 missing, 403 wrong;
compared in constant time). (4) A body must be JSON (415 otherwise) except where a route says.
Must not: render error JSON (ApiError goes to dialect.py like any other error).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Optional
from urllib.parse import urlsplit

from .errors import ApiError
from .settings import Settings, load_api_keys

PUBLIC_PATHS = ("/health",)            # answered without a key
PUBLIC_PREFIXES = ("/ui/",)            # the web page's static files
FORM_BODY_PATHS = ("/api/upload",)     # routes that take multipart bodies
SAME_ORIGIN_PATHS = ("/api/upload", "/api/models/load")  # mutating: no other page, allowlisted or not
JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")  # curl -d sends the latter
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_MAX_AGE_S = "600"


def is_loopback_name(host: str) -> bool:
    """'localhost', 127.0.0.0/8 or ::1 (a Host header's name, port and brackets removed)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name of a Host header: 'a.b:8080' -> 'a.b', '[::1]:80' -> '::1'."""
    return (urlsplit("//" + header).hostname or "").lower()


class Guard:
    """Falcon middleware enforcing the four rules in this module's docstring."""

    def __init__(self, settings: Settings):
        self.loopback_only = is_loopback_name(host_name(settings.host) or settings.host)
        origins = [o.strip().rstrip("/") for o in (settings.cors_origins or "").split(",")]
        self.origins = frozenset(o for o in origins if o)
        self.keys = load_api_keys(settings)

    # ---- the rules ----

    def _check_host(self, req) -> None:
        header = req.get_header("Host") or ""
        if self.loopback_only and header and not is_loopback_name(host_name(header)):
            raise ApiError(403, f"host {header!r} is not served: this server listens on "
                                "loopback only (a DNS-rebinding guard)", code="forbidden_host")

    def _origin(self, req) -> Optional[str]:
        """The browser origin to answer with CORS headers: None for a request from no page or
        from this server's own page (same host and port); ApiError 403 for a page elsewhere
        that the allowlist does not name."""
        origin = req.get_header("Origin")
        if not origin:
            return None
        if urlsplit(origin).netloc.lower() == (req.get_header("Host") or "").lower():
            return None  # same origin: the web UI
        if req.path in SAME_ORIGIN_PATHS:
            return self._refuse(origin)
        if origin.rstrip("/") in self.origins:
            return origin
        if "*" in self.origins:
            return "*"  # never with Access-Control-Allow-Credentials
        return self._refuse(origin)

    @staticmethod
    def _refuse(origin: str):
        raise ApiError(403, f"origin {origin!r} is not allowed; start the server with "
                            "--cors-origin to allow a web page to call it", code="forbidden_origin")

    def _check_key(self, req) -> None:
        if not self.keys or req.path in PUBLIC_PATHS or req.path == "/" or \
                req.path.startswith(PUBLIC_PREFIXES):
            return
        auth = req.get_header("Authorization") or ""
        given = (auth[7:].strip() if auth[:7].lower() == "bearer " else auth.strip()) or \
            req.get_header("X-Goog-Api-Key") or req.get_param("key")
        if not given:
            raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY' "
                                "(or x-goog-api-key)", code="invalid_api_key")
        if not any(hmac.compare_digest(given.encode(), k.encode()) for k in self.keys):
            raise ApiError(403, "the API key is not valid", code="invalid_api_key")

    @staticmethod
    def _check_body_type(req) -> None:
        if req.method not in ("POST", "PUT", "PATCH") or req.path in FORM_BODY_PATHS:
            return
        ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
        if ctype and ctype not in JSON_TYPES and not ctype.endswith("+json"):
            raise ApiError(415, f"Content-Type {ctype!r} is not supported: send application/json",
                           code="unsupported_media_type")

    # ---- Falcon hooks ----

    def process_request(self, req, resp) -> None:
        self._check_host(req)
        allowed = self._origin(req)
        if allowed is not None:
            resp.set_header("Access-Control-Allow-Origin", allowed)
            resp.set_header("Vary", "Origin")
        if req.method == "OPTIONS":  # a preflight: answered here, no key needed
            if allowed is not None:
                resp.set_header("Access-Control-Allow-Methods", CORS_METHODS)
                resp.set_header("Access-Control-Allow-Headers",
                                req.get_header("Access-Control-Request-Headers") or "Content-Type")
                resp.set_header("Access-Control-Max-Age", CORS_MAX_AGE_S)
            resp.status = 204
            resp.complete = True
            return
        self._check_key(req)
        self._check_body_type(req)
