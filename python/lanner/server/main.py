"""`lanner serve`: the Falcon app under gunicorn (an embedded BaseApplication).

One worker process (gthread) holds the model: create_app runs in the worker after fork, so the
model is never loaded in the arbiter; HTTP requests run on the worker's threads, the engine's
model thread decodes. Entry points: serve_main(argv), or add_serve_parser(subparsers) +
run_serve(args) for the `lanner` CLI.
Must not: load the model itself (the worker's create_app does, in the background).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from gunicorn.app.base import BaseApplication

from .settings import ENV_VARS, Settings, load_api_keys

log = logging.getLogger("lanner.server")

_FLAGS = [  # (flag, Settings field, type, help)
    ("--model", "model", str, "GGUF file to serve (default: $LANNER_MODEL or the embedded SmolLM2)"),
    ("--model-name", "model_name", str, "name the API reports (default: the file's stem)"),
    ("--mmproj", "mmproj", str, "vision projector GGUF (llama.cpp mmproj) for the model (default: "
                                "an mmproj*.gguf in the model's folder, if there is one)"),
    ("--max-images", "max_images", int, "images per request (default 16)"),
    ("--max-image-bytes", "max_image_bytes", int, "encoded bytes per image (default 20 MiB)"),
    ("--max-image-pixels", "max_image_pixels", int, "width x height per image (default 50,000,000)"),
    ("--host", "host", str, "interface to listen on (default 127.0.0.1)"),
    ("--port", "port", int, "TCP port (default 8080)"),
    ("--backend", "backend", str, "compute backend: auto (a GPU if this build of ggml has one, "
                                  "else the CPU), cpu, cuda or metal; not in this build = "
                                  "startup error (default auto)"),
    ("--threads", "threads", int, "CPU threads for the model (default: all CPUs, fewer while fewer are faster)"),
    ("--parallel", "parallel", int, "sequences decoded together (default 4)"),
    ("--ctx-size", "ctx_size", int, "KV cache size in tokens (default: the engine's, 4096 capped at the model's)"),
    ("--max-tokens", "max_tokens", int, "completion tokens when a request sets none (default 200)"),
    ("--max-queue", "max_queue", int, "requests that may wait when every slot is busy; 0 = no "
                                      "waiting: run if a slot is free, else 503 (default 64)"),
    ("--max-body-bytes", "max_body_bytes", int, "larger request bodies get 413 (default 8 MiB)"),
    ("--http-threads", "http_threads", int, "gunicorn request threads (default parallel+max-queue+8)"),
    ("--io-timeout", "io_timeout", int, "seconds a client socket read or write may block (default 30)"),
    ("--api-key", "api_key", str, "require this key (Authorization: Bearer / x-goog-api-key)"),
    ("--api-key-file", "api_key_file", str, "require one of the keys in this file (one per line)"),
    ("--max-upload-bytes", "max_upload_bytes", int, "larger web UI uploads get 413 (default 10 MiB)"),
    ("--upload-dir", "upload_dir", str, "where web UI uploads are kept (default: a private temp dir)"),
    # server-wide sampling defaults: used when a request sets none (unset = the spec's tables)
    ("--temperature", "temperature", float, "default temperature (spec default 0 = greedy)"),
    ("--top-k", "top_k", int, "default top-k (0 = off)"),
    ("--top-p", "top_p", float, "default top-p (1.0 = off)"),
    ("--min-p", "min_p", float, "default min-p (0 = off)"),
    ("--repeat-penalty", "repeat_penalty", float, "default repeat penalty (1.0 = off)"),
    ("--presence-penalty", "presence_penalty", float, "default presence penalty (0 = off)"),
    ("--frequency-penalty", "frequency_penalty", float, "default frequency penalty (0 = off)"),
    ("--seed", "seed", int, "default seed: with a temperature, the same request gives the same "
                            "output (default: random)"),
]
_STOP_HELP = "default stop string, repeatable (a request's own stop strings replace these)"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    for flag, dest, typ, help_ in _FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--cors-origin", dest="cors_origin", action="append", default=None,
                   help="a browser origin allowed to call the API (repeatable; default: none but "
                        "the server's own page)")
    p.add_argument("--stop", dest="stop", action="append", default=None, help=_STOP_HELP)
    p.add_argument("--no-mmproj", dest="no_mmproj", action="store_true", default=None,
                   help="serve text only: do not load a vision projector found beside the model")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    env = ", ".join(ENV_VARS)
    p = subparsers.add_parser("serve", help="serve the Gemini, Ollama and OpenAI REST APIs",
                              description="Serve one GGUF model over HTTP (gunicorn, one worker). "
                                          f"Flags override the environment variables {env}.")
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)
    return p


class LannerServer(BaseApplication):
    """gunicorn application: 1 gthread worker; the app (and the model) is built in the worker."""

    def __init__(self, settings: Settings, log_level: str = "info"):
        self.settings = settings
        self.options = {
            "bind": f"{settings.host}:{settings.port}",
            "workers": 1,                 # one process holds the model
            "worker_class": "lanner.server.worker.LannerWorker",  # gthread + I/O limits + drain
            "threads": settings.gunicorn_threads(),
            "timeout": 120,               # heartbeat; model loading runs in a background thread
            "graceful_timeout": 10,       # SIGTERM: running requests get 8 s, then an error event
            "keepalive": 5,
            "preload_app": False,         # never load the model before fork
            "loglevel": log_level,
            "proc_name": "lanner-serve",
            "when_ready": self._when_ready,
            "control_socket_disable": True,  # gunicorn>=24: one shared ctl path would collide
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # skip settings this gunicorn version lacks
                self.cfg.set(key, value)

    def load(self):  # in the worker, after fork
        from ..heap import server_heap_options
        from .app import create_app

        server_heap_options()  # before the model loads and the HTTP threads start
        return create_app(settings=self.settings)

    def _when_ready(self, server) -> None:
        s = self.settings
        server.log.info("lanner: serving %s on http://%s:%d (Gemini /v1beta, Ollama /api, "
                        "OpenAI /v1; backend %s); GET /health answers 200 once the model is loaded",
                        s.model, s.host, s.port, s.backend)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")


def check_backend(settings: Settings) -> None:
    """ValueError when --backend names a backend this build of ggml lacks (asked in a child
    process: a GPU runtime must not be initialised in the arbiter before it forks the worker)."""
    if settings.backend != "auto":
        from lanner.backends import device_for, probe_devices

        device_for(settings.backend, probe_devices())


def run_serve(args: argparse.Namespace) -> int:
    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _FLAGS}
    overrides["stop"] = getattr(args, "stop", None)
    overrides["no_mmproj"] = getattr(args, "no_mmproj", None)
    if getattr(args, "cors_origin", None):
        overrides["cors_origins"] = ",".join(args.cors_origin)
    try:
        settings = Settings.from_env(**overrides)
        load_api_keys(settings)  # an unreadable key file is a startup error
        check_backend(settings)
        if settings.model is None:
            from lanner.default_model import default_model_path

            settings.model = str(default_model_path())
        if not Path(settings.model).is_file():
            raise FileNotFoundError(f"model file not found: {settings.model}")
        if settings.mmproj and not settings.no_mmproj and not Path(settings.mmproj).is_file():
            raise FileNotFoundError(f"vision projector file not found: {settings.mmproj}")
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"lanner serve: {e}", file=sys.stderr)
        return 2
    _configure_logging(getattr(args, "log_level", "info"))
    # lanner does no BLAS work: numpy's OpenBLAS need not start a thread pool in the worker
    # (which imports numpy after fork, so it reads this); a value already set is kept
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    LannerServer(settings, getattr(args, "log_level", "info")).run()
    return 0


def serve_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lanner serve", description="Serve one GGUF model over HTTP.")
    add_serve_arguments(p)
    return run_serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(serve_main())
