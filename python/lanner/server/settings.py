"""Server settings: one dataclass filled from `lanner serve` flags or LANNER_* environment variables.

Owns: every knob of the server (model, names, socket, engine sizes, request limits) and the
sampling defaults the HTTP dialects start from (the spec's option tables).
Must not: load the model or touch HTTP; app.py and main.py read these values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Optional

from ..types import SamplingParams

# Environment variable -> Settings field. `gunicorn 'lanner.server.app:create_app()'` reads these;
# `lanner serve` flags override them.
ENV_VARS = {
    "LANNER_MODEL": "model",              # GGUF path; default: the embedded SmolLM2
    "LANNER_MODEL_NAME": "model_name",    # alias the API reports; default: the file's stem
    "LANNER_HOST": "host",
    "LANNER_PORT": "port",
    "LANNER_THREADS": "threads",          # CPU threads for the model; 0 = engine default
    "LANNER_PARALLEL": "parallel",        # sequences decoded together (continuous batching)
    "LANNER_CTX_SIZE": "ctx_size",        # KV cells (tokens); 0 = the engine's default
    "LANNER_MAX_TOKENS": "max_tokens",    # default completion tokens when a request sets none
    "LANNER_MAX_QUEUE": "max_queue",      # requests waiting beyond `parallel` before 503
    "LANNER_MAX_BODY": "max_body_bytes",  # request bodies over this many bytes get 413
    "LANNER_HTTP_THREADS": "http_threads",  # gunicorn gthread threads; 0 = derived
    "LANNER_API_KEY": "api_key",          # required on every route but /health and the web page
    "LANNER_API_KEY_FILE": "api_key_file",  # a file of keys, one per line (# comments)
    "LANNER_CORS_ORIGINS": "cors_origins",  # comma-separated browser origins allowed to call
    "LANNER_IO_TIMEOUT": "io_timeout",    # seconds one socket read or write may block
    "LANNER_MAX_UPLOAD": "max_upload_bytes",  # web UI uploads over this many bytes get 413
    "LANNER_UPLOAD_DIR": "upload_dir",    # where uploads are kept; default: a private temp dir
}


@dataclass
class Settings:
    model: Optional[str] = None   # None = lanner.default_model.default_model_path()
    model_name: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 0
    parallel: int = 4
    ctx_size: int = 0
    max_tokens: int = 200
    max_queue: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    http_threads: int = 0
    api_key: Optional[str] = None
    api_key_file: Optional[str] = None
    cors_origins: str = ""        # comma-separated; "*" allows every origin (no credentials)
    io_timeout: int = 30          # seconds a client socket read or write may block
    max_upload_bytes: int = 10 * 1024 * 1024
    upload_dir: Optional[str] = None  # None = a fresh private (0700) temp dir per server process

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults <- LANNER_* variables <- non-None keyword overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if types[name] in ("int", int):
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"{var} must be an integer, got {raw!r}") from None
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).check()

    def check(self) -> "Settings":
        for name in ("port", "parallel", "max_tokens", "max_body_bytes", "io_timeout",
                     "max_upload_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "ctx_size", "max_queue", "http_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self

    def gunicorn_threads(self) -> int:
        """HTTP threads: enough for every running and queued request plus a few for /health etc."""
        if self.http_threads:
            return self.http_threads
        return min(256, self.parallel + self.max_queue + 8)


def http_sampling_defaults() -> SamplingParams:
    """The HTTP dialects start from SamplingParams' defaults (the spec's option tables: greedy,
    every filter and penalty off), the same ones the Python API and the CLI use."""
    return SamplingParams()
