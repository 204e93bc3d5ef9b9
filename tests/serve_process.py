"""A real `lanner serve` in a subprocess (gunicorn, the embedded SmolLM2, one model thread) for
tests that drive it from outside: start with flags, wait for /health, stop with SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BASE_FLAGS = ["--threads", "1", "--parallel", "2", "--ctx-size", "1024", "--max-tokens", "24"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lanner serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"lanner serve not healthy in {timeout}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def lanner_serve(tmp: Path, *flags: str, env: dict | None = None):
    """Yields (base URL, log path) of `lanner serve BASE_FLAGS + flags` on a free port."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lanner.cli", "serve", "--port", str(port),
                                 *BASE_FLAGS, *flags], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=str(tmp))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_health(url, proc, log_path)
            yield url, log_path
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
