"""`lanner serve` for real: serve_main -> gunicorn arbiter -> one gthread worker that builds the
app (and loads the model, here the fake backend with a slow load) after fork. Checks /health
503 -> 200, the startup log line, concurrent streaming, and disconnect -> abort over gunicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from server_helpers import free_port, stop_server

ROOT = Path(__file__).resolve().parents[1]

LAUNCHER = r"""
import os, sys, time
sys.path[:0] = [{tests!r}, {python!r}]
import lanner.server.context as context
from fake_backend import FakeLLM

def load(settings):  # runs in the gunicorn worker (the arbiter never calls it)
    time.sleep(1.0)
    llm = FakeLLM(model_path=settings.model)
    llm.engine.delay_s = 0.01
    llm.engine.loop = True
    with open({marker!r}, "w") as f:
        f.write(str(os.getpid()))
    return llm

context.load_backend = load
from lanner.server.main import serve_main
sys.exit(serve_main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    model = tmp / "tiny-model.Q8_0.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    marker = tmp / "loaded_in_pid"
    script = tmp / "launch.py"
    script.write_text(LAUNCHER.format(tests=str(ROOT / "tests"), python=str(ROOT / "python"),
                                      marker=str(marker)))
    port = free_port()
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, str(script), "--model", str(model), "--port", str(port),
                             "--model-name", "tiny", "--parallel", "2", "--max-queue", "2",
                             "--max-tokens", "20", "--io-timeout", "2"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp))
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc, tmp / "server.log", marker
    finally:
        stop_server(proc, log, timeout=15)


def wait_health(url: str, timeout: float = 20) -> list[int]:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(url + "/health", timeout=2)
            if not seen or seen[-1] != r.status_code:
                seen.append(r.status_code)
            if r.status_code == 200:
                return seen
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not healthy in {timeout}s: {seen}")


def test_serve_under_gunicorn(served):
    url, proc, log_path, marker = served
    seen = wait_health(url)
    assert seen[-1] == 200 and 503 in seen  # answered 503 while the worker was loading
    # the model was loaded in the worker process, not in the arbiter (the launcher's pid)
    assert int(marker.read_text()) != proc.pid
    log = log_path.read_text()
    assert f"on {url.replace('http://', 'http://')}" in log and "LannerWorker" in log
    assert requests.get(url + "/health").json() == {"status": "ok", "model": "tiny"}
    for name in ("tiny", "tiny-model.Q8_0", "tiny-model.Q8_0.gguf"):
        r = requests.post(url + "/v1/chat/completions", json={
            "model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert requests.post(url + "/api/generate", json={"model": "other", "prompt": "x"}).status_code == 404
    # the default budget is --max-tokens
    r = requests.post(url + "/api/generate", json={"prompt": "x", "stream": False})
    assert r.json()["eval_count"] == 20


def test_chunked_request_bodies_are_read_and_bounded(served):
    """Transfer-Encoding: chunked bodies (no Content-Length) are read through gunicorn's
    de-chunking stream: a valid one is served, one over --max-body-bytes is 413, not 400."""
    url = served[0]
    wait_health(url)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    parts = lambda data, n: (data[i:i + n] for i in range(0, len(data), n))  # noqa: E731
    r = requests.post(url + "/v1/chat/completions", data=parts(body, 7),
                      headers={"Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (8 * 2 ** 20 + 4096) + b'"}]}'
    r = requests.post(url + "/v1/chat/completions", data=parts(big, 2 ** 20),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_concurrent_streams_and_disconnect(served):
    url, _, _, _ = served
    wait_health(url)
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    results = []

    def one():
        text = ""
        for ch in client.chat.completions.create(model="tiny", stream=True, max_tokens=15,
                                                 messages=[{"role": "user", "content": "go"}]):
            if ch.choices:
                text += ch.choices[0].delta.content or ""
        results.append(text)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and len(set(results)) == 1 and results[0]

    # a client that leaves mid-stream: the worker aborts the request; the queue drains
    body = json.dumps({"model": "tiny", "stream": True, "max_tokens": 1500,
                       "messages": [{"role": "user", "content": "go"}]}).encode()
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while got.count(b"data: ") < 5:
        chunk = s.recv(4096)
        assert chunk, got  # the server closed the connection early
        got += chunk
    q = requests.get(url + "/api/queue/status").json()
    assert q["busy"] and q["running"] == 1
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        q = requests.get(url + "/api/queue/status").json()
        if not q["busy"]:
            break
        time.sleep(0.05)
    assert q["busy"] is False and q["pending_requests"] == 0 and q["running"] == 0
    m = requests.get(url + "/metrics").text
    assert "lanner_client_disconnects_total 1" in m


def _queue_when(url: str, cond, timeout: float = 10.0) -> dict:
    deadline = time.time() + timeout
    while True:
        q = requests.get(url + "/api/queue/status").json()
        if cond(q) or time.time() > deadline:
            return q
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True])
def test_client_gone_while_nothing_is_written_aborts(served, stream):
    """A client that leaves while its reply is not being written (a non-streamed request, a
    request waiting in the queue) is noticed by polling its socket: the engine drops it."""
    url = served[0]
    wait_health(url)
    port = int(url.rsplit(":", 1)[1])
    before = _queue_when(url, lambda q: not q["busy"])["total_processed"]
    body = json.dumps({"model": "tiny", "max_tokens": 1500, "stream": stream,
                       "messages": [{"role": "user", "content": "go"}]}).encode()
    socks = []
    for _ in range(3):  # parallel 2: the third waits in the queue
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        socks.append(s)
    q = _queue_when(url, lambda q: q["running"] == 2 and q["pending_requests"] == 1)
    assert (q["running"], q["pending_requests"]) == (2, 1)
    socks[2].close()  # the queued one leaves first: dropped before it starts
    q = _queue_when(url, lambda q: q["pending_requests"] == 0)
    assert (q["running"], q["pending_requests"]) == (2, 0)
    for s in socks[:2]:
        s.close()
    q = _queue_when(url, lambda q: not q["busy"], timeout=5)  # 1500 tokens would take 15 s
    assert (q["busy"], q["running"], q["total_processed"]) == (False, 0, before + 3)


def test_idle_and_stalled_clients_do_not_take_the_server_down(served):
    """100 idle connections (connected, nothing sent) hold no request thread: /health answers
    at once. Connections that send half a request and stall are cut after --io-timeout (2 s
    here), freeing their threads."""
    url = served[0]
    wait_health(url)
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    stalled = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: local")  # ... and nothing more
        s.settimeout(15)
        stalled.append(s)
    t0 = time.time()
    for _ in range(5):
        assert requests.get(url + "/health", timeout=5).status_code == 200
        assert requests.get(url + "/api/queue/status", timeout=5).status_code == 200
    assert time.time() - t0 < 3
    for s in stalled:
        while s.recv(4096):  # the server may answer 400 first; then it closes
            pass
    assert time.time() - t0 < 12  # 2 s of --io-timeout, the error reply, a graceful close
    r = requests.post(url + "/v1/chat/completions", timeout=10, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200
    for s in idle + stalled:
        s.close()


def test_a_client_trickling_its_headers_is_cut_at_the_head_deadline(served):
    """A byte every second never trips the per-read limit (--io-timeout 2 s), but the whole
    head must arrive within 2 s of its thread starting on it: the server closes the connection
    while most of the head is still unsent (without the deadline it reads all of it and
    answers)."""
    url = served[0]
    wait_health(url)
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port))
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10 + b"\r\n\r\n"
    cut_at = None  # bytes sent when the server closed the connection
    try:
        for i in range(len(head)):
            s.sendall(head[i:i + 1])
            time.sleep(1.0 if i > 0 else 0)  # the first byte wakes a thread; then one a second
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    cut_at = i + 1
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
    except OSError:  # reset while sending: cut
        cut_at = i + 1
    finally:
        s.close()
    assert cut_at is not None and cut_at < len(head) // 2, (cut_at, len(head))
    assert requests.get(url + "/health", timeout=5).status_code == 200


def test_sigterm_drains_then_ends_streams_with_an_error_event(tmp_path):
    """SIGTERM with two live streams: new requests get 503 + Retry-After while the worker
    drains; when the drain time is over each stream ends with an error event and [DONE];
    the server exits 0."""
    model = tmp_path / "tiny-model.Q8_0.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(tests=str(ROOT / "tests"), python=str(ROOT / "python"),
                                      marker=str(tmp_path / "pid")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, str(script), "--model", str(model), "--port", str(port),
                             "--parallel", "2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_health(url)
        bodies: dict[int, bytes] = {}

        def stream(i):
            r = requests.post(url + "/v1/chat/completions", timeout=30, json={
                "stream": True, "max_tokens": 1500, "messages": [{"role": "user", "content": "go"}]})
            bodies[i] = r.content  # 1500 tokens at 10 ms would take 15 s: longer than the drain

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        assert _queue_when(url, lambda q: q["running"] == 2)["running"] == 2
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        r = requests.post(url + "/v1/chat/completions", timeout=5,
                          json={"messages": [{"role": "user", "content": "late"}]})
        assert r.status_code == 503 and r.headers["Retry-After"] and "shutting down" in r.text
        assert requests.get(url + "/health", timeout=5).json()["status"] == "draining"
        for t in threads:
            t.join(20)
        for i in range(2):
            events = [l[6:] for l in bodies[i].decode().split("\n") if l.startswith("data: ")]
            assert events[-1] == "[DONE]", events[-3:]
            err = json.loads(events[-2])["error"]
            assert "shutting down" in err["message"]
        assert proc.wait(15) == 0
        assert time.time() - t0 < 12  # within gunicorn's graceful timeout (10 s) and exit
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_gunicorns_own_errors_are_json(served):
    url = served[0]
    wait_health(url)
    r = requests.get(url + "/v1/models/" + "x" * 9000)
    assert r.status_code == 414 and r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], (str, dict))
    r = requests.post(url + "/v1/chat/completions", headers={"X-Big": "y" * 9000}, json={})
    assert r.status_code == 431 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]  # the path is not known when the headers cannot be read: {"error": "..."}
    assert "header" in (err if isinstance(err, str) else err["message"]).lower()


def test_serve_rejects_missing_model(tmp_path):
    sys.path[:0] = [str(ROOT / "python")]
    r = subprocess.run([sys.executable, "-m", "lanner.server.main", "--model", str(tmp_path / "no.gguf")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "python")},
                       timeout=60)
    assert r.returncode == 2 and "model file not found" in r.stderr
