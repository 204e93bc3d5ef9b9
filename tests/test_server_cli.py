"""`lanner serve` argument handling: flags over LANNER_* variables over defaults, the gunicorn
configuration it builds (one gthread worker, no preload), and the subparser hook for the CLI."""

from __future__ import annotations

import argparse

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

    monkeypatch.setattr(main.LannerServer, "run", fake_run)
    monkeypatch.delenv("LANNER_MODEL", raising=False)
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


def test_serve_main_missing_model(tmp_path, capsys):
    assert main.serve_main(["--model", str(tmp_path / "none.gguf")]) == 2
    assert "model file not found" in capsys.readouterr().err
