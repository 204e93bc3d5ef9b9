"""`lanner serve` argument handling: flags over LANNER_* variables over defaults, the gunicorn
configuration it builds (one gthread worker, no preload), and the subparser hook for the CLI."""

from __future__ import annotations

import argparse
import os

import pytest

import lanner.server.main as main
from lanner.server.settings import Settings


def test_settings_env_and_overrides():
    env = {"LANNER_MODEL": "/m.gguf", "LANNER_PORT": "9000", "LANNER_MAX_TOKENS": "33",
           "LANNER_CTX_SIZE": "", "LANNER_MAX_BODY": "1000"}
    s = Settings.from_env(env, port=9100, parallel=None)
    assert (s.model, s.port, s.max_tokens, s.ctx_size, s.max_body_bytes, s.parallel) == \
        ("/m.gguf", 9100, 33, 0, 1000, 4)
    with pytest.raises(ValueError, match="LANNER_PORT"):
        Settings.from_env({"LANNER_PORT": "http"})
    with pytest.raises(ValueError, match="max_tokens"):
        Settings.from_env({}, max_tokens=0)
    assert Settings(parallel=2, max_queue=10).gunicorn_threads() == 20


def test_subparser_and_gunicorn_config(tmp_path, monkeypatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    seen = {}

    def fake_run(self):
        seen["settings"] = self.settings
        seen["cfg"] = {k: self.cfg.settings[k].get() for k in
                       ("bind", "workers", "worker_class", "threads", "preload_app")}
        seen["worker_class"] = self.cfg.worker_class_str
        seen["openblas"] = os.environ.get("OPENBLAS_NUM_THREADS")  # what the forked worker inherits

    monkeypatch.setattr(main.LannerServer, "run", fake_run)
    monkeypatch.delenv("LANNER_MODEL", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")  # records the original, restored after the test
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    p = argparse.ArgumentParser(prog="lanner")
    sub = p.add_subparsers()
    main.add_serve_parser(sub)
    args = p.parse_args(["serve", "--model", str(model), "--model-name", "m", "--host", "0.0.0.0",
                         "--port", "8123", "--threads", "3", "--parallel", "2", "--ctx-size", "512",
                         "--max-tokens", "64", "--max-queue", "6"])
    assert args.func(args) == 0
    s = seen["settings"]
    assert (s.model, s.model_name, s.threads, s.parallel, s.ctx_size, s.max_tokens, s.max_queue) == \
        (str(model), "m", 3, 2, 512, 64, 6)
    assert seen["cfg"] == {"bind": ["0.0.0.0:8123"], "workers": 1, "worker_class": "lanner.server.worker.LannerWorker",
                           "threads": 16, "preload_app": False}
    assert seen["openblas"] == "1"  # no BLAS thread pool in the worker unless the user asks
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert args.func(args) == 0 and seen["openblas"] == "3"


def test_serve_main_missing_model(tmp_path, capsys):
    assert main.serve_main(["--model", str(tmp_path / "none.gguf")]) == 2
    assert "model file not found" in capsys.readouterr().err


ARBITER_PROBE = r"""
import sys
from lanner.server.main import LannerServer, check_backend
from lanner.server.settings import Settings, load_api_keys

settings = Settings.from_env({}, model=sys.argv[1])
load_api_keys(settings)           # what run_serve does before gunicorn starts
check_backend(settings)
server = LannerServer(settings)   # gunicorn's config, as the arbiter builds it
server.cfg.worker_class           # the arbiter imports the worker class before forking it
print(" ".join(sorted(sys.modules)))
"""


def test_the_arbiter_imports_no_app_or_model_code(tmp_path):
    """The gunicorn arbiter never serves: whatever it imports stays resident in it for the
    server's life (copy-on-write sharing with the worker fades as Python touches objects), so it
    must not import numpy, falcon, the engine, the tokenizer libraries or the native core."""
    import subprocess
    import sys

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    out = subprocess.run([sys.executable, "-c", ARBITER_PROBE, str(model)], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert "lanner.server.worker" in out and "gunicorn.arbiter" in out  # the probe did its job
    heavy = ("numpy", "falcon", "jinja2", "PIL", "llguidance", "tokenizers", "lanner._core",
             "lanner.engine", "lanner.text", "lanner.server.app", "lanner.server.dialect")
    assert [m for m in out if m in heavy] == []
