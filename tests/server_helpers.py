"""Helpers for the server tests: a Falcon TestClient over a fake backend, the app served on a
loopback port (wsgiref, one thread per request) for clients that need a real socket, and a
server subprocess (`lanner serve`, gunicorn) started until /health says 200 and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon.testing
import requests

from fake_backend import FakeLLM
from lanner.server.app import create_app
from lanner.server.settings import Settings


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def make_app(llm=None, **settings):
    llm = llm if llm is not None else FakeLLM()
    return create_app(llm, Settings(**settings))


def make_client(llm=None, **settings) -> falcon.testing.TestClient:
    """A test client whose requests name a loopback host, as a local client's do (Falcon's
    default Host, falconframework.org, is refused by a loopback-bound server)."""
    return falcon.testing.TestClient(make_app(llm, **settings), headers={"Host": "localhost"})


@contextlib.contextmanager
def live_server(app):
    """Serve `app` on 127.0.0.1:<free port>; yields the base URL."""
    httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                        handler_class=_QuietHandler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_subprocess(cmd: list[str], env: dict, port: int, log_path: Path, timeout: float = 120):
    """Start a server process and wait for /health 200 (or its exit, or timeout seconds).
    Returns (proc, url, the /health statuses seen in order, the open log file)."""
    log = open(log_path, "w+")
    proc = subprocess.Popen(cmd, env={**os.environ, **env},  # the installed lanner, with its _core
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    statuses = []
    while time.time() < deadline:
        try:
            code = requests.get(url + "/health", timeout=2).status_code
            if not statuses or statuses[-1] != code:
                statuses.append(code)
            if code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    return proc, url, statuses, log


def stop_server(proc, log, timeout: float = 20) -> None:
    """SIGTERM a server subprocess (it drains), SIGKILL it if it has not exited in `timeout`
    seconds, and close its log file."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
