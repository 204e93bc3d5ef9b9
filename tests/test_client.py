"""`lanner client` against a real `lanner serve` (SmolLM2): --prompt, the interactive chat over
scripted stdin and over a pseudo-terminal (Ctrl+C stops a reply, Ctrl+D leaves), the public-API
mode through a recording proxy (the key travels only in x-goog-api-key and is never printed or
logged), and the errors a user sees."""

from __future__ import annotations

import http.client
import http.server
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from serve_process import lanner_serve

pytest.importorskip("google.genai")  # in the test extra; absent only outside it
pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct.Q4_1"
# longer than the default system prompt SmolLM2's template adds when there is none
SYSTEM = "You are a pirate captain. " + "Always answer in rhyming verse, with many nautical words. " * 4
USAGE = re.compile(r"\[(\d+) prompt tokens \((\d+) cached\), (\d+) generated, finish: (\w+)\]")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client_serve")
    with lanner_serve(tmp) as (url, log):
        yield url, log


def client(*args: str, stdin: str = "", env: dict | None = None, timeout: int = 180):
    return subprocess.run([sys.executable, "-m", "lanner.cli", "client", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def test_prompt_prints_the_streamed_reply(server):
    url, _ = server
    p = client("--port", port_of(url), "--prompt", "What is the capital of France?",
               "--max-output-tokens", "16", "--verbose")
    assert p.returncode == 0, p.stderr
    # the same request without streaming gives the same (greedy) text
    r = requests.post(f"{url}/v1beta/models/{MODEL}:generateContent", json={
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
        "generationConfig": {"maxOutputTokens": 16}}).json()
    assert p.stdout == r["candidates"][0]["content"]["parts"][0]["text"] + "\n"
    (n_prompt, _, n_out, finish), = USAGE.findall(p.stderr)
    assert int(n_out) == r["usageMetadata"]["candidatesTokenCount"] and finish == r["candidates"][0]["finishReason"]


def test_generation_flags_reach_the_server(server):
    url, _ = server
    base = ("--port", port_of(url), "--prompt", "Tell me a story.", "--max-output-tokens", "12")
    greedy = client(*base)
    sampled = [client(*base, "--temperature", "1.5", "--top-k", "50", "--top-p", "0.95", "--seed", "7")
               for _ in range(2)]
    assert greedy.returncode == 0 and all(s.returncode == 0 for s in sampled)
    assert sampled[0].stdout == sampled[1].stdout != greedy.stdout  # seeded sampling, reproducible
    short = client("--port", port_of(url), "--prompt", "Tell me a story.", "--max-output-tokens", "3",
                   "--verbose")
    assert USAGE.search(short.stderr).group(3, 4) == ("3", "MAX_TOKENS")
    with_system = client(*base, "--system", SYSTEM, "--verbose")
    without = client(*base, "--verbose")
    assert int(USAGE.search(with_system.stderr).group(1)) > int(USAGE.search(without.stderr).group(1)) + 30


def test_interactive_over_stdin_keeps_history_and_obeys_commands(server):
    url, _ = server
    script = (f"My name is Bob and I like green tea.\nWhat is my name?\n/system {SYSTEM}\n"
              "/foo\n/clear\nHello\n/exit\nnever sent\n")
    p = client("--port", port_of(url), "--interactive", "1", "--max-output-tokens", "20", "--verbose",
               stdin=script)
    assert p.returncode == 0, p.stderr
    turns = [tuple(map(int, u[:3])) for u in USAGE.findall(p.stderr)]
    assert len(turns) == 3, p.stderr  # "never sent" after /exit was not sent
    (p1, c1, g1), (p2, c2, g2), (p3, _, _) = turns
    assert p2 > p1 + g1 - 2   # turn 2 carries turn 1 (question and reply) ...
    assert c2 >= p1 - 1       # ... whose KV cells the server's prefix cache reused
    assert p3 < p2            # /clear dropped the history
    bare = client("--port", port_of(url), "--prompt", "Hello", "--max-output-tokens", "20", "--verbose")
    assert p3 > int(USAGE.search(bare.stderr).group(1)) + 30  # /system added the instruction
    for note in ("[system instruction set]", "unknown command /foo", "[history cleared]"):
        assert note in p.stderr
    # -i and bare --interactive are the same switch; end of input leaves with 0
    assert client("--port", port_of(url), "-i", stdin="").returncode == 0
    assert client("--port", port_of(url), "--interactive", stdin="/exit\n").returncode == 0


class _Pty:
    """The client on a pseudo-terminal: a real tty, so readline, Ctrl+C and Ctrl+D apply."""

    def __init__(self, args: list[str], env: dict):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: Ctrl+C must reach it as on a user's terminal, even when the
            # test run itself ignores SIGINT (a shell starts background jobs with SIGINT ignored,
            # and an ignored SIGINT survives exec: Python would then install no KeyboardInterrupt)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvpe(sys.executable, [sys.executable, "-m", "lanner.cli", "client", *args], env)
        self.buf, self.pos = "", 0  # output so far; where the next expect starts looking

    def expect(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.time() + timeout
        while True:
            m = re.compile(pattern).search(self.buf, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output:\n{self.buf[-2000:]}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    self.buf += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    raise AssertionError(f"client exited; output:\n{self.buf[-2000:]}") from None

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def wait(self, timeout: float = 30) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.buf += os.read(self.fd, 4096).decode("utf-8", "replace")
            except OSError:
                pass
        os.kill(self.pid, 9)
        raise AssertionError(f"client did not exit; output:\n{self.buf[-2000:]}")


def test_interactive_on_a_terminal_ctrl_c_stops_the_reply_ctrl_d_leaves(server, tmp_path):
    url, _ = server
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "dumb"}
    env.pop("GOOGLE_API_KEY", None)
    t = _Pty(["--port", port_of(url), "--interactive", "1", "--max-output-tokens", "900"], env)
    t.expect(r">>> ")
    t.send("Write a long story about a dragon who learns to fly.\n")
    t.expect(r"fly\.\r?\n\S")  # the echoed line, then the reply starts streaming
    assert requests.get(url + "/api/queue/status").json()["running"] == 1
    t.send("\x03")  # Ctrl+C: stops the reply (SmolLM2 would write 900 tokens), not the chat
    t.expect(r"\[reply stopped\]")
    t.expect(r">>> ")
    deadline = time.time() + 10
    while requests.get(url + "/api/queue/status").json()["busy"] and time.time() < deadline:
        time.sleep(0.1)
    assert requests.get(url + "/api/queue/status").json()["busy"] is False  # the server cancelled it
    t.send("\x03")  # Ctrl+C at the prompt: a fresh prompt, still chatting
    t.expect(r">>> ")
    t.send("/exit-not-a-command\n")
    t.expect(r"unknown command")
    # Ctrl+D at the next prompt, as a user types it: sent while the client still writes the
    # message, the terminal is in cooked mode and its EOF can be lost when readline turns raw
    # mode on (the test flaked that way under load)
    t.expect(r">>> ")
    t.send("\x04")  # Ctrl+D: leave
    assert t.wait() == 0
    history = (tmp_path / ".lanner_client_history").read_text()
    assert "Write a long story about a dragon" in history


class _RecordingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream` and records (path, headers) of each."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.seen: list[tuple[str, dict]] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = _forward


@pytest.fixture
def proxy(server):
    url, _ = server
    p = _RecordingProxy(url)
    t = threading.Thread(target=p.serve_forever, daemon=True)
    t.start()
    yield p, f"http://127.0.0.1:{p.server_address[1]}"
    p.shutdown()
    p.server_close()


def test_public_mode_sends_the_key_only_in_its_header(server, proxy):
    url, serve_log = server
    rec, proxy_url = proxy
    env = {"GOOGLE_API_KEY": "", "GOOGLE_GEMINI_BASE_URL": ""}
    key = "AIzaTEST-flag-7f3c9e2b"
    p = client("--api_key", key, "--base-url", proxy_url, "--model", MODEL, "--prompt", "Hi",
               "--max-output-tokens", "8", env=env)
    assert p.returncode == 0 and p.stdout.strip(), p.stderr
    assert [h.get("x-goog-api-key") for _, h in rec.seen] == [key]
    path, _ = rec.seen[0]
    assert path.startswith(f"/v1beta/models/{MODEL}:streamGenerateContent") and key not in path
    assert key not in p.stdout + p.stderr

    # $GOOGLE_API_KEY and $GOOGLE_GEMINI_BASE_URL; the public default model is not on lanner: 404
    env_key = "AIzaTEST-env-51d0aa84"
    p = client("--prompt", "Hi", "--api-key", env_key, env={"GOOGLE_GEMINI_BASE_URL": proxy_url})
    assert p.returncode == 1 and "404" in p.stderr and "gemini-2.5-flash" in p.stderr
    p2 = client("--prompt", "Hi", env={"GOOGLE_API_KEY": env_key, "GOOGLE_GEMINI_BASE_URL": proxy_url})
    assert p2.returncode == 1 and "404" in p2.stderr
    assert [h.get("x-goog-api-key") for _, h in rec.seen[1:]] == [env_key, env_key]
    assert env_key not in p.stdout + p.stderr + p2.stdout + p2.stderr

    # local mode (--host/--port given) never sends $GOOGLE_API_KEY, even to the local server
    n = len(rec.seen)
    p = client("--host", "127.0.0.1", "--port", proxy_url.rsplit(":", 1)[1], "--prompt", "Hi",
               "--max-output-tokens", "4", env={"GOOGLE_API_KEY": env_key})
    assert p.returncode == 0, p.stderr
    assert rec.seen[n][0] == "/v1beta/models" and env_key not in str(rec.seen[n:])
    assert key not in serve_log.read_text() and env_key not in serve_log.read_text()


def test_errors_are_reported_with_exit_codes(server, tmp_path):
    url, _ = server
    p = client("--port", port_of(url), "--model", "no-such-model", "--prompt", "Hi")
    assert p.returncode == 1 and "404" in p.stderr and "no-such-model" in p.stderr
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = str(s.getsockname()[1])
    p = client("--port", dead, "--prompt", "Hi")
    assert p.returncode == 1 and "cannot reach http://localhost:" in p.stderr
    p = client("--port", port_of(url), "--prompt", "Hi", "--top-p", "2")
    assert p.returncode == 2 and "--top-p" in p.stderr
    p = client("--port", port_of(url), "--interactive", "0")
    assert p.returncode == 2 and "nothing to do" in p.stderr
    # without the SDK: a clear message naming the extra
    code = ("import sys; sys.modules['google.genai'] = None; from lanner.cli import main; "
            "sys.exit(main(['client', '--prompt', 'Hi']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'lanner[client]'" in r.stderr


def test_a_key_protected_local_server(tmp_path):
    key = "local-key-0b7e41"
    env = {"GOOGLE_API_KEY": "", "LANNER_API_KEY": ""}
    with lanner_serve(tmp_path, "--api-key", key) as (url, log):
        port = port_of(url)
        p = client("--port", port, "--prompt", "Hi", env=env)  # no key: refused, with the remedy
        assert p.returncode == 1 and "403" in p.stderr and "--api_key KEY or $LANNER_API_KEY" in p.stderr
        p = client("--port", port, "--api_key", key, "--prompt", "Hi", "--max-output-tokens", "4", env=env)
        assert p.returncode == 0 and p.stdout.strip(), p.stderr
        p = client("--port", port, "--prompt", "Hi", "--max-output-tokens", "4",
                   env={**env, "LANNER_API_KEY": key})
        assert p.returncode == 0 and p.stdout.strip(), p.stderr
        p = client("--port", port, "--api_key", "wrong-" + key, "--prompt", "Hi", env=env)
        assert p.returncode == 1 and "403" in p.stderr and key not in p.stderr
        assert key not in log.read_text()
