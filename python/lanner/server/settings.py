"""Server settings: one dataclass filled from `lanner serve` flags or LANNER_* environment variables.

Owns: every knob of the server (model, names, socket, compute backend, engine sizes, request
limits), the server-wide sampling defaults (`--temperature` ... `--stop`, unset = the spec's
tables), and what each dialect starts from: sampling_defaults(dialect), default_max_tokens(dialect).
Must not: load the model or touch HTTP; app.py, context.py and the adapters read these values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

from ..backends import normalize_backend
from ..types import SamplingParams, ValidationError

# Environment variable -> Settings field. `gunicorn 'lanner.server.app:create_app()'` reads these;
# `lanner serve` flags override them.
ENV_VARS = {
    "LANNER_MODEL": "model",              # GGUF path; default: the embedded SmolLM2
    "LANNER_MODEL_NAME": "model_name",    # alias the API reports; default: the file's stem
    "LANNER_MMPROJ": "mmproj",            # vision projector GGUF; default: mmproj*.gguf beside the model
    "LANNER_MAX_IMAGES": "max_images",    # images per request
    "LANNER_MAX_IMAGE_BYTES": "max_image_bytes",    # encoded bytes per image
    "LANNER_MAX_IMAGE_PIXELS": "max_image_pixels",  # width * height per image
    "LANNER_HOST": "host",
    "LANNER_PORT": "port",
    "LANNER_BACKEND": "backend",          # auto | cpu | cuda | metal
    "LANNER_THREADS": "threads",          # CPU threads for the model; 0 = engine default
    "LANNER_PARALLEL": "parallel",        # sequences decoded together (continuous batching)
    "LANNER_CTX_SIZE": "ctx_size",        # KV cells (tokens); 0 = the engine's default
    "LANNER_MAX_TOKENS": "max_tokens",    # completion tokens when a request sets none (all dialects)
    "LANNER_MAX_QUEUE": "max_queue",      # requests waiting when every slot is busy; 0 = no waiting
    "LANNER_MAX_BODY": "max_body_bytes",  # request bodies over this many bytes get 413
    "LANNER_HTTP_THREADS": "http_threads",  # gunicorn gthread threads; 0 = derived
    "LANNER_API_KEY": "api_key",          # required on every route but /health and the web page
    "LANNER_API_KEY_FILE": "api_key_file",  # a file of keys, one per line (# comments)
    "LANNER_CORS_ORIGINS": "cors_origins",  # comma-separated browser origins allowed to call
    "LANNER_IO_TIMEOUT": "io_timeout",    # seconds one socket read or write may block
    "LANNER_MAX_UPLOAD": "max_upload_bytes",  # web UI uploads over this many bytes get 413
    "LANNER_UPLOAD_DIR": "upload_dir",    # where uploads are kept; default: a private temp dir
    # server-wide sampling defaults, used when a request gives none
    "LANNER_TEMPERATURE": "temperature",
    "LANNER_TOP_K": "top_k",
    "LANNER_TOP_P": "top_p",
    "LANNER_MIN_P": "min_p",
    "LANNER_REPEAT_PENALTY": "repeat_penalty",
    "LANNER_PRESENCE_PENALTY": "presence_penalty",
    "LANNER_FREQUENCY_PENALTY": "frequency_penalty",
    "LANNER_SEED": "seed",
    "LANNER_STOP": "stop",                # one stop string, or a JSON array of them
}

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                   "presence_penalty", "frequency_penalty", "seed")

DEFAULT_MAX_TOKENS = 200  # the TensorSharp tables' num_predict / max_tokens
# What each dialect's spec gives when neither the request nor the server sets a value.
DIALECT_SAMPLING = {"gemini": {"temperature": 1.0, "top_k": 1}}  # gemma.cpp API server: greedy
DIALECT_MAX_TOKENS = {"gemini": 8192}                            # maxOutputTokens


def _parse_stop(raw: str) -> list[str]:
    if raw.lstrip().startswith("["):
        value = json.loads(raw)
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise ValueError("LANNER_STOP must be a string or a JSON array of non-empty strings")
        return value
    return [raw]


_PARSERS = {"int": int, "float": float, "Optional[int]": int, "Optional[float]": float,
            "Optional[list[str]]": _parse_stop}


@dataclass
class Settings:
    model: Optional[str] = None   # None = lanner.default_model.default_model_path()
    model_name: Optional[str] = None
    mmproj: Optional[str] = None  # None = an mmproj*.gguf next to the model, if there is one
    no_mmproj: bool = False       # never load a vision projector
    max_images: int = 16
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "auto"
    threads: int = 0
    parallel: int = 4
    ctx_size: int = 0
    max_tokens: Optional[int] = None  # None: per dialect (DIALECT_MAX_TOKENS, else 200); see below
    max_queue: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    http_threads: int = 0
    api_key: Optional[str] = None
    api_key_file: Optional[str] = None
    cors_origins: str = ""        # comma-separated; "*" allows every origin (no credentials)
    io_timeout: int = 30          # seconds a client socket read or write may block
    max_upload_bytes: int = 10 * 1024 * 1024
    upload_dir: Optional[str] = None  # None = a fresh private (0700) temp dir per server process
    # server-wide sampling defaults; None = the dialect's spec default
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    repeat_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: Optional[list[str]] = None
    # True when max_tokens was given (flag, variable, argument): it then overrides every dialect
    max_tokens_explicit: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        # max_tokens stays an int for readers that want "the" default (200 unless given)
        self.max_tokens_explicit = self.max_tokens is not None
        if self.max_tokens is None:
            self.max_tokens = DEFAULT_MAX_TOKENS

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults <- LANNER_* variables <- non-None keyword overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        types = {f.name: str(f.type) for f in fields(cls)}
        values = {}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            parse = _PARSERS.get(types[name], str)
            try:
                values[name] = parse(raw)
            except ValueError as e:
                kind = {int: "an integer", float: "a number"}.get(parse)
                raise ValueError(f"{var} must be {kind}, got {raw!r}" if kind else str(e)) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).check()

    def check(self) -> "Settings":
        for name in ("port", "parallel", "max_tokens", "max_body_bytes", "io_timeout",
                     "max_upload_bytes", "max_images", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "ctx_size", "max_queue", "http_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.backend = normalize_backend(self.backend)
        try:
            replace(SamplingParams(), **self._set_sampling()).validate()
        except ValidationError as e:
            flag = e.field.replace("_", "-")
            raise ValueError(f"--{flag} (LANNER_{e.field.upper()}): {str(e).split(': ', 1)[-1]}") from None
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty, got {self.stop!r}")
        return self

    def mmproj_path(self, model_path: str) -> Optional[str]:
        """The vision projector to load with `model_path`: --mmproj, else the one mmproj*.gguf
        beside the model (with several, the one whose name contains the model's stem), else
        None; always None with --no-mmproj."""
        if self.no_mmproj:
            return None
        if self.mmproj:
            return self.mmproj
        model = Path(model_path)
        found = sorted(p for p in model.parent.glob("mmproj*.gguf") if p.is_file())
        if len(found) > 1:
            found = [p for p in found if model.stem.lower() in p.name.lower()]
        return str(found[0]) if len(found) == 1 else None

    def image_limits(self):
        from ..vision.image import ImageLimits

        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels,
                           max_images=self.max_images)

    def _set_sampling(self) -> dict:
        return {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}

    def sampling_defaults(self, dialect: str = "") -> SamplingParams:
        """What a request of `dialect` ("gemini", "ollama", "openai") starts from: SamplingParams'
        defaults (greedy, filters off) with the server's flags, or, when the server sets none,
        the dialect spec's own defaults (Gemini: temperature 1.0 with topK 1, also greedy).
        The server's flags replace the spec's set whole: `--temperature 0.7` alone must sample
        in every dialect, not stay greedy under Gemini's topK 1."""
        own = self._set_sampling()
        return replace(SamplingParams(), **(own or DIALECT_SAMPLING.get(dialect, {})))

    def default_stop(self) -> list[str]:
        """Stop strings for a request that gives none (--stop)."""
        return list(self.stop or [])

    def default_max_tokens(self, dialect: str = "") -> int:
        """Completion budget for a request that sets none: --max-tokens when given, else the
        dialect spec's (Gemini 8192), else 200. Callers still clamp it to the context left."""
        if self.max_tokens_explicit:
            return self.max_tokens
        return DIALECT_MAX_TOKENS.get(dialect, DEFAULT_MAX_TOKENS)

    def gunicorn_threads(self) -> int:
        """HTTP threads: enough for every running and queued request plus a few for /health etc."""
        if self.http_threads:
            return self.http_threads
        return min(256, self.parallel + self.max_queue + 8)


def load_api_keys(settings: Settings) -> frozenset[str]:
    """--api-key plus the non-empty, non-comment lines of --api-key-file (here, not in
    security.py, so `lanner serve` checks the file before forking without importing falcon)."""
    keys = set()
    if settings.api_key:
        keys.add(settings.api_key)
    if settings.api_key_file:
        try:
            lines = Path(settings.api_key_file).read_text().splitlines()
        except OSError as e:
            raise ValueError(f"cannot read the API key file {settings.api_key_file!r}: {e}") from None
        keys |= {ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}
    return frozenset(keys)
