"""Falcon resources of the web UI: the page and its static files, uploads, model re-loads.

Owns: serving python/lanner/server/webui/ (GET / and /ui/{file}, a fixed set of files) and
reading a multipart upload (falcon's parser, with our own size limit -> 413). Who may call the
mutating endpoints (same origin only, the API key) is security.Guard's, before these run.
Must not: build the endpoints' JSON (adapters/webui.py does) or touch files outside the
upload store.
"""

from __future__ import annotations

from pathlib import Path

import falcon
from falcon.media.multipart import MultipartParseError

from .adapters import webui
from .context import ServerContext
from .errors import ApiError
from .routes import read_json, send_json

PAGE_DIR = Path(__file__).resolve().parent / "webui"
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8",
              "app.js": "text/javascript; charset=utf-8",
              "markdown.js": "text/javascript; charset=utf-8",
              "icon.svg": "image/svg+xml"}
# The page's own policy: no inline script, nothing loaded from elsewhere, images only from
# the page itself and the blob: URLs of local previews.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")
MULTIPART_OVERHEAD = 64 * 1024  # bytes of headers and boundaries allowed beyond the file itself


class _Resource:
    def __init__(self, ctx: ServerContext):
        self.ctx = ctx


class Page(_Resource):
    """GET / (index.html) and GET /ui/{name} (a file of the page)."""

    def on_get(self, req, resp, name: str = "index.html"):
        ctype = PAGE_FILES.get(name)
        if ctype is None:
            raise falcon.HTTPNotFound()
        resp.content_type = ctype
        resp.data = (PAGE_DIR / name).read_bytes()
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Content-Type-Options", "nosniff")
        if name == "index.html":
            resp.set_header("Content-Security-Policy", CSP)
            resp.set_header("X-Frame-Options", "DENY")


class Upload(_Resource):
    """POST /api/upload: one multipart file part (`file`) -> an id the chat can reference."""

    def on_post(self, req, resp):
        store = self.ctx.uploads
        if req.content_length is not None and req.content_length > store.max_bytes + MULTIPART_OVERHEAD:
            raise ApiError(413, f"the upload is {req.content_length} bytes; the limit is "
                                f"{store.max_bytes} bytes")
        if (req.content_type or "").split(";")[0].strip().lower() != "multipart/form-data":
            raise ApiError(415, "expected multipart/form-data with a `file` part")
        send_json(resp, webui.render_upload(store.put(*self._file_part(req, store.max_bytes))))

    @staticmethod
    def _file_part(req, limit: int):
        try:
            for part in req.get_media():
                if part.name != "file":
                    while part.stream.read(64 * 1024):  # skip other fields, never held whole
                        pass
                    continue
                data = part.stream.read(limit + 1)
                if len(data) > limit:
                    raise ApiError(413, f"the file exceeds the limit of {limit} bytes")
                return data, part.content_type
        except MultipartParseError as e:
            raise ApiError(400, f"malformed multipart body: {e.description or e}") from None
        raise ApiError(400, "file: the multipart body has no `file` part", param="file")


class ModelsLoad(_Resource):
    """POST /api/models/load: re-load the hosted model (409 while one runs)."""

    def on_post(self, req, resp):
        ctx_size = webui.parse_load(read_json(req, self.ctx), self.ctx)
        self.ctx.reload(ctx_size)
        send_json(resp, webui.render_load(self.ctx))


ROUTES = [("/", Page), ("/ui/{name}", Page), ("/api/upload", Upload),
          ("/api/models/load", ModelsLoad)]
