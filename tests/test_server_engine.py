"""The server over the real Engine (scheduler, RequestStream, prefix cache, abort) with the fake
native core from fake_core.py: streamed == whole, cached tokens, a full queue -> 503, and a
client disconnect cancelling the engine's request and draining its queue."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from fake_backend import FakeLLM
from fake_core import FakeContext, FakeDetokenizer, FakeModel, FakeSampler, FakeTokenizer
from lanner.engine import Engine
from server_helpers import live_server, make_app

N_VOCAB = 4096  # end-of-generation (id 1) is then rare: long generations
MODEL = "fake-model.Q4_0"


class SlowContext(FakeContext):
    def decode(self, *a, **kw):
        time.sleep(0.002)
        return super().decode(*a, **kw)


class EngineLLM(FakeLLM):
    """FakeLLM's surface, the real Engine behind it; token ids are bytes folded into the vocab."""

    def __init__(self, gated: bool = False, **engine_kw):
        super().__init__()
        self.metadata["n_vocab"] = N_VOCAB
        self.ctx = SlowContext(FakeModel(N_VOCAB), n_ctx=2048, n_seq_max=8)
        if gated:
            self.ctx.gate = threading.Semaphore(0)
        self.n_ctx = self.ctx.n_ctx
        self.engine = Engine(self.ctx, FakeTokenizer(N_VOCAB), n_vocab=N_VOCAB,
                             sampler_factory=FakeSampler, detokenizer_factory=FakeDetokenizer,
                             **{"n_parallel": 2, "max_queue": 4, "step_token_budget": 64, **engine_kw})

    def tokenize(self, text, add_special=True, parse_special=False):
        return ([0] if add_special else []) + [b + 2 for b in text.encode("utf-8")]


@pytest.fixture
def served():
    made = []

    def start(**kw):
        llm = EngineLLM(**kw)
        app = make_app(llm)
        cm = live_server(app)
        url = cm.__enter__()
        made.append((llm, cm))
        return url, llm, app

    yield start
    for llm, cm in made:
        if llm.ctx.gate is not None:
            llm.ctx.open_gate()
        llm.engine.close()
        cm.__exit__(None, None, None)


def test_stream_equals_whole_and_cache(served):
    url, llm, _ = served()
    body = {"model": MODEL, "max_tokens": 12, "messages": [{"role": "user", "content": "hello there"}]}
    whole = requests.post(url + "/v1/chat/completions", json=body).json()
    text = whole["choices"][0]["message"]["content"]
    assert text and whole["usage"]["completion_tokens"] <= 12
    r = requests.post(url + "/v1/chat/completions", json={**body, "stream": True})
    chunks = [json.loads(l[6:]) for l in r.text.split("\n") if l.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    g = requests.post(url + f"/api/generate", json={"prompt": "hello there", "stream": False,
                                                     "options": {"num_predict": 5}}).json()
    assert g["eval_count"] <= 5 and g["prompt_eval_duration"] > 0 and g["total_duration"] > 0


def test_full_queue_503(served):
    url, llm, _ = served(gated=True, n_parallel=1, max_queue=1)
    body = {"model": MODEL, "max_tokens": 4, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    held = []
    for _ in range(2):
        held.append(requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=30))
    # the two above are accepted (one running, blocked in decode, one waiting); their headers
    # arrived because the stream starts with the role chunk
    deadline = time.time() + 5
    while llm.engine.stats().pending < 1 and time.time() < deadline:
        time.sleep(0.01)
    r = requests.post(url + "/api/chat", json={"model": MODEL, "stream": False,
                                               "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.headers["Retry-After"] and "overloaded" in r.json()["error"]
    llm.ctx.open_gate()
    for h in held:
        assert h.status_code == 200
        h.close()


def test_disconnect_cancels_engine_request(served):
    url, llm, app = served()
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": 1500,
                       "messages": [{"role": "user", "content": "a long one"}]}).encode()
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while got.count(b"data: ") < 6:
        chunk = s.recv(4096)
        assert chunk, got  # the server closed the connection early
        got += chunk
    assert llm.engine.stats().running == 1
    s.close()
    deadline = time.time() + 10
    while llm.engine.stats().busy and time.time() < deadline:
        time.sleep(0.01)
    st = llm.engine.stats()
    assert (st.busy, st.running, st.pending, st.total_processed) == (False, 0, 0, 1)
    assert app.lanner.metrics.client_aborts == 1
    # the engine's own FinishEvent for it said cancelled, long before 1500 tokens
    assert llm.ctx.n_cells_used() < 1500
    # and the queue serves the next request normally
    r = requests.post(url + "/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "next"}]})
    assert r.status_code == 200


VICTIM = {  # a streamed request per dialect, and how its stream must end after an engine error
    "openai": ("/v1/chat/completions",
               {"model": MODEL, "stream": True, "max_tokens": 60,
                "messages": [{"role": "user", "content": "victim"}]}),
    "ollama": ("/api/chat", {"model": MODEL, "options": {"num_predict": 60},
                             "messages": [{"role": "user", "content": "victim"}]}),
    "gemini": (f"/v1beta/models/{MODEL}:streamGenerateContent",
               {"contents": [{"parts": [{"text": "victim"}]}],
                "generationConfig": {"maxOutputTokens": 60}}),
}


def _wait(cond, what: str, llm, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        llm.ctx.step(1)


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
def test_graph_failure_mid_generation_ends_that_request_only(served, dialect):
    """A graph-compute failure (fake core) in a step shared by two streams: the failing one ends
    with its dialect's terminal error event, the other finishes normally, the next is served."""
    url, llm, _ = served(gated=True)
    other_body = {"model": MODEL, "stream": True, "max_tokens": 40,
                  "messages": [{"role": "user", "content": "bystander"}]}
    results = {}

    def post(name, path, body):
        results[name] = requests.post(url + path, json=body, timeout=60).content

    threads = [threading.Thread(target=post, args=("other", "/v1/chat/completions", other_body))]
    threads[0].start()
    _wait(lambda: llm.engine.stats().running == 1, "first request not admitted", llm)
    path, body = VICTIM[dialect]
    threads.append(threading.Thread(target=post, args=("victim", path, body)))
    threads[1].start()
    _wait(lambda: llm.engine.stats().running == 2, "second request not admitted", llm)
    llm.ctx.step(2)  # both are generating
    llm.ctx.fail_seq = llm.engine._running[1].seq_id
    llm.ctx.open_gate()
    for t in threads:
        t.join(30)
    llm.ctx.fail_seq = None

    victim = results["victim"].decode()
    if dialect == "openai":
        events = [l[6:] for l in victim.split("\n") if l.startswith("data: ")]
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["type"] == "server_error" and "graph compute failed" in err["message"]
    elif dialect == "ollama":
        last = json.loads(victim.strip().split("\n")[-1])
        assert set(last) == {"error"} and "graph compute failed" in last["error"]
    else:
        events = [l[6:] for l in victim.split("\n") if l.startswith("data: ")]
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["code"] == 500 and err["status"] == "INTERNAL"
    other = [l[6:] for l in results["other"].decode().split("\n") if l.startswith("data: ")]
    assert other[-1] == "[DONE]"
    finish = json.loads(other[-2])
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    assert finish["usage"]["completion_tokens"] > 0
    r = requests.post(url + "/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "next"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
