"""create_app: the Falcon WSGI app serving the Gemini, Ollama and OpenAI dialects and the web UI.

Owns: assembling settings, the ServerContext (model handle), middleware (security.Guard: hosts,
origins, API keys, body types), routes and error handling. With backend=None the model loads in
a background thread of the process that calls create_app (the gunicorn worker), so /health
answers 503 until it is ready.
Also `gunicorn 'lanner.server.app:create_app()'`, configured by LANNER_* variables (settings.py).
Must not: parse or render dialect JSON (adapters) or call _core.
"""

from __future__ import annotations

import logging
from typing import Optional

import falcon

from . import dialect, routes_webui
from .context import ServerContext
from .routes import add_routes
from .security import Guard
from .settings import Settings

log = logging.getLogger("lanner.server")


class _Count:
    """HTTP responses by route template and status, for /metrics."""

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx

    def process_response(self, req, resp, resource, req_succeeded):
        route = req.uri_template or "unmatched"
        self.ctx.metrics.http_response(req.method, route, resp.status_code)


class LannerApp(falcon.App):
    """falcon.App with the server context attached as `.lanner` (hooks and tests read it)."""

    lanner: ServerContext


def _ensure_logging() -> None:
    """Under a bare `gunicorn lanner.server.app:create_app()` nobody configured logging: make
    the server's INFO lines (model loaded, ...) visible on stderr."""
    if not logging.getLogger().handlers and not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)


def create_app(backend=None, settings: Optional[Settings] = None) -> LannerApp:
    """The WSGI app. `backend` is a loaded lanner.LLM (or a test double); None = load the model
    named by `settings` (default: Settings.from_env()) in the background."""
    _ensure_logging()
    settings = settings or Settings.from_env()
    ctx = ServerContext(settings, backend)
    app = LannerApp(middleware=[_Count(ctx), Guard(settings)])
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    add_routes(app, ctx)
    for path, resource in routes_webui.ROUTES:
        app.add_route(path, resource(ctx))
    dialect.install(app)
    app.lanner = ctx
    return app
