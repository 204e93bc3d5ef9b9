"""The server's handle on the one hosted model: loading it in the worker, naming it, submitting.

Owns: the backend (lanner.LLM or a test double) and its lazy load in a background thread (so
/health can answer 503 while loading), its re-load (the old backend serves until the new one
is ready, then retires once idle), the names a request may use for the model, the facts the
model-listing endpoints report, the upload store, and submit() with its metrics.
Must not: parse or render any dialect; call _core (it uses only the backend's public API).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from ..types import GenerateRequest
from .disconnect import DisconnectWatcher
from .errors import ApiError, unavailable
from .metrics import Metrics
from .settings import Settings
from .uploads import UploadStore

log = logging.getLogger("lanner.server")


def load_backend(settings: Settings):
    """Build lanner.LLM from settings (runs in the gunicorn worker, after fork)."""
    from lanner import LLM
    from lanner.default_model import default_model_path

    path = str(settings.model or default_model_path())
    kwargs = {"n_ctx": settings.ctx_size or None, "n_threads": settings.threads or None,
              "n_parallel": settings.parallel, "max_queue": settings.max_queue,
              "backend": settings.backend, "mmproj": settings.mmproj_path(path),
              "image_limits": settings.image_limits()}
    return LLM(path, **{k: v for k, v in kwargs.items() if v is not None})


class ServerContext:
    def __init__(self, settings: Settings, backend=None, load_now: bool = True):
        self.settings = settings
        self.metrics = Metrics()
        self.disconnects = DisconnectWatcher()
        self.draining = False  # SIGTERM: new requests get 503 while running ones finish
        self.started = time.time()
        self._backend = backend
        self._load_error: Optional[str] = None
        self._lock = threading.Lock()
        self._loader: Optional[threading.Thread] = None
        self._reload_lock = threading.Lock()
        self._retiring: set = set()  # replaced backends still finishing their requests
        self.uploads = UploadStore(settings.upload_dir, settings.max_upload_bytes)
        if backend is None and load_now:
            self.start_loading()

    # ---- loading ----

    def start_loading(self) -> None:
        with self._lock:
            if self._backend is not None or self._loader is not None:
                return
            self._loader = threading.Thread(target=self._load, name="lanner-model-load", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            backend = load_backend(self.settings)
        except BaseException as e:  # reported by /health and every request
            log.exception("loading the model failed")
            self._load_error = f"{type(e).__name__}: {e}"
            return
        warm = getattr(backend, "warm_grammar", None)
        if warm is not None:  # llguidance's view of the vocabulary, before the first schema
            warm()
        self._backend = backend
        log.info("model %s loaded in %.1f s (%s)", self.model_name,
                 time.perf_counter() - t0, backend.model_path)

    @property
    def reloading(self) -> bool:
        return self._reload_lock.locked()

    def reload(self, ctx_size: Optional[int] = None):
        """Load the hosted model again (optionally with another context size) while the current
        backend keeps serving; swap when the new one is ready and retire the old one once its
        requests are done. 409 while a load runs; a failed load (500) leaves the old one serving."""
        if self.state == "loading" or not self._reload_lock.acquire(blocking=False):
            raise ApiError(409, "a model load is already running; retry when it has finished")
        try:
            old = self.backend
            settings = dataclasses.replace(self.settings, ctx_size=ctx_size or self.settings.ctx_size)
            t0 = time.perf_counter()
            try:
                new = load_backend(settings)
            except Exception as e:
                log.exception("re-loading the model failed; the loaded one keeps serving")
                raise ApiError(500, f"loading the model failed ({type(e).__name__}: {e}); the "
                                    "loaded model keeps serving", code="load_failed") from None
            self.settings, self._backend = settings, new
            log.info("model %s re-loaded in %.1f s", self.model_name, time.perf_counter() - t0)
        finally:
            self._reload_lock.release()
        self._retiring.add(old)
        threading.Thread(target=self._retire, args=(old,), name="lanner-model-retire",
                         daemon=True).start()
        return new

    def _retire(self, backend, timeout_s: float = 600.0) -> None:
        """Close a replaced backend once its engine has no request left (or after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        try:
            while backend.engine.stats().busy and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception:  # a test double without stats: nothing to wait for
            pass
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        self._retiring.discard(backend)

    def wait_loaded(self, timeout: Optional[float] = None) -> bool:
        if self._loader is not None:
            self._loader.join(timeout)
        return self._backend is not None

    @property
    def state(self) -> str:
        """'ready' | 'loading' | 'error'."""
        if self._backend is not None:
            return "ready"
        return "error" if self._load_error else "loading"

    @property
    def load_error(self) -> Optional[str]:
        return self._load_error

    @property
    def backend(self):
        """The loaded backend, or ApiError 503 (loading) / 500 (load failed)."""
        b = self._backend
        if b is not None:
            return b
        if self._load_error:
            raise ApiError(500, f"the model failed to load: {self._load_error}")
        raise unavailable("the model is still loading; retry shortly")

    # ---- names ----

    @property
    def model_name(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        b = self._backend
        if b is not None:
            return b.model_name
        return Path(str(self.settings.model or "model")).stem

    def model_names(self) -> set[str]:
        b = self.backend
        path = Path(b.model_path)
        return {b.model_name, path.stem, path.name, self.model_name}

    def check_model(self, requested: Optional[str], param: str = "model") -> str:
        """The name to echo back; ApiError 404 when `requested` names another model.
        A missing or empty name means the hosted model."""
        if not requested:
            return self.model_name
        name = requested
        if name.startswith("models/"):
            name = name[len("models/"):]
        names = self.model_names()
        if name in names or (name.endswith(":latest") and name[: -len(":latest")] in names):
            return requested
        raise ApiError(404, f"model '{requested}' not found; this server hosts "
                            f"'{self.model_name}'", param=param, code="model_not_found")

    # ---- facts for the model-listing endpoints ----

    def model_facts(self) -> dict:
        b = self.backend
        meta = dict(b.metadata or {})
        path = Path(b.model_path)
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime
        except OSError:
            size, mtime = 0, self.started
        digest = hashlib.sha256(f"{path.resolve()}:{size}:{mtime}".encode()).hexdigest()
        return {
            "name": self.model_name, "file": path.name, "path": str(path), "size": size,
            "modified": mtime, "digest": digest, "metadata": meta,
            "architecture": meta.get("architecture", "unknown"),
            "context_length": int(meta.get("context_length") or 0),
            "n_ctx": int(getattr(b, "n_ctx", 0) or 0),
        }

    # ---- tokens and submission ----

    @property
    def n_ctx(self) -> int:
        return int(getattr(self.backend, "n_ctx", 0) or 0)

    def submit(self, req: GenerateRequest, dialect: str):
        """engine.submit with metrics; the engine's typed errors (OverloadedError,
        ContextOverflowError, ValidationError, EngineClosedError) pass unchanged to
        errors.from_exception, which gives each its status. A request without stop strings
        gets the server's (--stop)."""
        if self.draining:
            raise unavailable("the server is shutting down; retry shortly")
        if not req.stop and self.settings.stop:
            req.stop = self.settings.default_stop()
        try:
            stream = self.backend.engine.submit(req)
        except Exception as e:
            self.metrics.rejected(dialect, type(e).__name__)
            raise
        self.metrics.submitted(dialect)
        return stream

    def stats(self):
        return self.backend.engine.stats()

    def busy(self) -> bool:
        """Any request running or waiting (False before the model is loaded)."""
        backends = [b for b in (self._backend, *list(self._retiring)) if b is not None]
        return any(b.engine.stats().busy for b in backends)

    def end_all(self, message: str) -> None:
        """End every running and waiting request with an error (streams get their dialect's
        terminal error event); the engine takes no more requests."""
        for b in (self._backend, *list(self._retiring)):
            if b is not None:
                b.engine.close(error=message)
