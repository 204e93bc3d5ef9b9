"""The server on the real SmolLM2-135M (lanner.LLM + the native core): the three dialects end to
end, determinism between streamed and whole responses, the prefix cache across Gemini turns,
a disconnect cancelling a real engine request, and `lanner serve` / plain gunicorn subprocesses.
Skipped where lanner.LLM or the native core is not built yet."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]

try:
    from lanner import LLM  # noqa: F401
    import lanner._core  # noqa: F401
    from lanner.default_model import smollm2_path

    SMOL = str(smollm2_path())
except Exception as e:  # noqa: BLE001 - any missing piece means: not built here
    pytest.skip(f"real backend unavailable: {type(e).__name__}: {e}", allow_module_level=True)

from lanner.server.app import create_app  # noqa: E402
from lanner.server.context import load_backend  # noqa: E402
from lanner.server.settings import Settings  # noqa: E402
from server_helpers import free_port, live_server, serve_subprocess, stop_server  # noqa: E402

pytestmark = pytest.mark.slow
NAME = Path(SMOL).stem
SETTINGS = dict(model=SMOL, ctx_size=2048, parallel=2, max_queue=4, max_tokens=24,
                threads=1)  # one thread: spin barriers crawl on a shared, oversubscribed CPU


@pytest.fixture(scope="module")
def real():
    settings = Settings(**SETTINGS)
    llm = load_backend(settings)
    app = create_app(llm, settings)
    with live_server(app) as url:
        yield url, llm, app
    close = getattr(llm, "close", None) or getattr(llm.engine, "close", None)
    if close:
        close()


def test_openai_chat_real_and_stream_matches(real):
    url, llm, _ = real
    body = {"model": NAME, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    whole = requests.post(url + "/v1/chat/completions", json=body).json()
    text = whole["choices"][0]["message"]["content"]
    assert text.strip() and whole["choices"][0]["finish_reason"] in ("stop", "length")
    u = whole["usage"]
    prompt = llm.chat_tokens(body["messages"])
    assert u["prompt_tokens"] == len(prompt) and 0 < u["completion_tokens"] <= 16
    r = requests.post(url + "/v1/chat/completions", json={**body, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    events = [l[6:] for l in r.text.split("\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == text  # greedy by default: the same tokens either way
    assert chunks[-1]["usage"]["completion_tokens"] == u["completion_tokens"]
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # same prompt again


def test_openai_sdk_real(real):
    openai = pytest.importorskip("openai")
    url, _, _ = real
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model=NAME + ".gguf", max_tokens=8,
                                       messages=[{"role": "user", "content": "Say hello."}])
    assert r.choices[0].message.content and r.usage.completion_tokens <= 8
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=NAME, max_tokens=8, stream=True, messages=[{"role": "user", "content": "Say hello."}])
        if c.choices)
    assert text == r.choices[0].message.content


def test_ollama_real(real):
    ollama = pytest.importorskip("ollama")
    url, _, _ = real
    client = ollama.Client(host=url)
    r = client.generate(model=NAME, prompt="Name a color.", options={"num_predict": 8})
    assert r.response.strip() and r.done and r.eval_count <= 8
    assert r.prompt_eval_duration > 0 and r.eval_duration > 0 and r.total_duration >= r.eval_duration
    parts = list(client.chat(model=NAME, stream=True, options={"num_predict": 8},
                             messages=[{"role": "user", "content": "Name a color."}]))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert "".join(p.message.content for p in parts).strip()
    assert client.show(NAME).modelinfo["general.architecture"] == "llama"
    assert client.list().models[0].model == NAME + ".gguf"


def test_gemini_real_multi_turn_reuses_cache(real):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    url, _, _ = real
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=url))
    cfg = types.GenerateContentConfig(max_output_tokens=12)
    chat = client.chats.create(model=NAME, config=cfg)
    first = chat.send_message("Hi, my name is Alice.")
    assert first.text
    second = chat.send_message("What is my name?")
    assert second.text
    assert second.usage_metadata.cached_content_token_count > 0
    chunks = list(client.models.generate_content_stream(model=NAME, contents="Count to three.",
                                                        config=cfg))
    assert chunks[-1].candidates[0].finish_reason in (types.FinishReason.STOP,
                                                      types.FinishReason.MAX_TOKENS)


def test_models_reports_the_backend_in_use(real):
    url, llm, _ = real
    m = requests.get(url + "/api/models").json()
    assert m["backend"] == m["loadedBackend"] == llm.backend_name  # 'cpu' on the pinned ggml
    assert m["supportedBackends"][0] == llm.backend_name and "cpu" in m["supportedBackends"]


def test_context_overflow_real(real):
    url, _, _ = real
    r = requests.post(url + "/v1/chat/completions", json={
        "model": NAME, "max_tokens": 4000, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "context size of 2048" in r.json()["error"]["message"]


def test_disconnect_cancels_real_request(real):
    url, llm, app = real
    body = json.dumps({"model": NAME, "stream": True, "max_tokens": 1500,
                       "messages": [{"role": "user", "content": "Write a very long story."}]}).encode()
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while got.count(b"data: ") < 4:
        chunk = s.recv(4096)
        assert chunk, got  # the server closed the connection early
        got += chunk
    before = llm.engine.stats()
    assert before.running == 1
    s.close()
    deadline = time.time() + 20
    while time.time() < deadline and llm.engine.stats().busy:
        time.sleep(0.05)
    after = llm.engine.stats()
    assert (after.busy, after.running, after.pending) == (False, 0, 0)
    assert after.total_processed == before.total_processed + 1
    assert app.lanner.metrics.finished.get("cancelled", 0) + app.lanner.metrics.client_aborts >= 1


# ---- subprocesses: lanner serve, and plain gunicorn with LANNER_* variables ----

def test_lanner_serve_subprocess(tmp_path):
    port = free_port()
    proc, url, statuses, log = serve_subprocess(
        [sys.executable, "-m", "lanner.server.main", "--port", str(port), "--ctx-size", "1024",
         "--parallel", "2", "--max-tokens", "8", "--threads", "1"], {"LANNER_MODEL": ""}, port, tmp_path / "serve.log")
    try:
        assert statuses and statuses[-1] == 200, (tmp_path / "serve.log").read_text()[-3000:]
        assert f"http://127.0.0.1:{port}" in (tmp_path / "serve.log").read_text()
        r = requests.post(url + "/api/generate", json={"model": NAME, "prompt": "Hi", "stream": False})
        assert r.status_code == 200 and r.json()["eval_count"] <= 8
        r = requests.post(url + "/v1/chat/completions", json={
            "model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200
    finally:
        stop_server(proc, log)


def test_plain_gunicorn_with_env(tmp_path):
    port = free_port()
    proc, url, statuses, log = serve_subprocess(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
         "-b", f"127.0.0.1:{port}", "lanner.server.app:create_app()"],
        {"LANNER_MODEL": SMOL, "LANNER_MODEL_NAME": "smol", "LANNER_CTX_SIZE": "1024",
         "LANNER_MAX_TOKENS": "6", "LANNER_THREADS": "1"}, port, tmp_path / "gunicorn.log")
    try:
        assert statuses and statuses[-1] == 200, (tmp_path / "gunicorn.log").read_text()[-3000:]
        r = requests.post(url + "/v1beta/models/smol:generateContent",
                          json={"contents": [{"parts": [{"text": "Hi"}]}]})
        assert r.status_code == 200 and r.json()["usageMetadata"]["candidatesTokenCount"] <= 6
        assert requests.get(url + "/v1/models").json()["data"][0]["id"] == "smol"
    finally:
        stop_server(proc, log)
