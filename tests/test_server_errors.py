"""Every error status in each dialect's error shape, readiness (/health), overload, context
overflow, body limits, engine failures mid-stream, and client disconnects aborting the request."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from fake_backend import FakeLLM
from lanner.server.app import create_app
from lanner.server.settings import Settings
from lanner.types import ValidationError
from server_helpers import live_server, make_app, make_client

MODEL = "fake-model.Q4_0"
GEN = {
    "openai": ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    "ollama": ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                             "stream": False}),
    "gemini": (f"/v1beta/models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}),
}


def check_shape(dialect: str, body: dict, status: int) -> str:
    """Assert the dialect's error shape; return the message."""
    if dialect == "openai":
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert isinstance(err["message"], str) and err["type"]
        return err["message"]
    if dialect == "gemini":
        err = body["error"]
        assert set(err) == {"code", "message", "status"} and err["code"] == status
        return err["message"]
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


@pytest.fixture
def client():
    return make_client(FakeLLM())


# ---- 400: malformed JSON, wrong types, out-of-range values ----

@pytest.mark.parametrize("dialect", list(GEN))
def test_malformed_json_400(client, dialect):
    path, _ = GEN[dialect]
    r = client.simulate_post(path, body='{"model": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in check_shape(dialect, r.json, 400)
    r = client.simulate_post(path, body="[1, 2]")
    assert r.status_code == 400 and "JSON object" in check_shape(dialect, r.json, 400)
    r = client.simulate_post(path, body="")
    assert r.status_code == 400


@pytest.mark.parametrize("dialect,patch,field", [
    ("openai", {"temperature": "hot"}, "temperature"),
    ("openai", {"temperature": 3}, "temperature"),
    ("openai", {"top_p": 1.5}, "top_p"),
    ("openai", {"max_tokens": 0}, "max_tokens"),
    ("openai", {"max_completion_tokens": "9"}, "max_completion_tokens"),
    ("openai", {"n": 2}, "n"),
    ("openai", {"stop": [1, 2]}, "stop"),
    ("openai", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("openai", {"stream": "yes"}, "stream"),
    ("openai", {"logit_bias": {"abc": 1}}, "logit_bias"),
    ("openai", {"logit_bias": {"5": 101}}, "logit_bias"),
    ("openai", {"logit_bias": {"70000": 1}}, "logit_bias"),
    ("openai", {"seed": 1.5}, "seed"),
    ("openai", {"presence_penalty": -3}, "presence_penalty"),
    ("openai", {"top_logprobs": 3}, "top_logprobs"),
    ("openai", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("openai", {"messages": []}, "messages"),
    ("openai", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ("openai", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("ollama", {"options": {"temperature": "x"}}, "options.temperature"),
    ("ollama", {"options": {"top_k": -1}}, "options.top_k"),
    ("ollama", {"options": {"top_p": 2}}, "options.top_p"),
    ("ollama", {"options": {"min_p": -0.1}}, "options.min_p"),
    ("ollama", {"options": {"num_predict": 1.5}}, "options.num_predict"),
    ("ollama", {"options": {"repeat_penalty": -1}}, "options.repeat_penalty"),
    ("ollama", {"options": {"seed": "s"}}, "options.seed"),
    ("ollama", {"options": {"stop": 7}}, "options.stop"),
    ("ollama", {"options": "fast"}, "options"),
    ("ollama", {"stream": "no"}, "stream"),
    ("ollama", {"think": "maybe"}, "think"),
    ("ollama", {"format": 5}, "format"),
    ("ollama", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ("gemini", {"generationConfig": {"temperature": -1}}, "generationConfig.temperature"),
    ("gemini", {"generationConfig": {"topK": "one"}}, "generationConfig.topK"),
    ("gemini", {"generationConfig": {"topP": 9}}, "generationConfig.topP"),
    ("gemini", {"generationConfig": {"maxOutputTokens": 0}}, "generationConfig.maxOutputTokens"),
    ("gemini", {"generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
    ("gemini", {"generationConfig": {"stopSequences": 3}}, "generationConfig.stopSequences"),
    ("gemini", {"contents": []}, "contents"),
    ("gemini", {"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ("gemini", {"contents": [{"parts": [{"text": 1}]}]}, "contents[0].parts[0].text"),
    ("gemini", {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}]},
     "contents[0].parts[0]"),
])
def test_bad_field_400_names_field(client, dialect, patch, field):
    path, base = GEN[dialect]
    r = client.simulate_post(path, json={**base, **patch})
    assert r.status_code == 400, r.text
    msg = check_shape(dialect, r.json, 400)
    assert msg.startswith(field + ":"), msg
    if dialect == "openai":
        assert r.json["error"]["param"] == field
        assert r.json["error"]["type"] == "invalid_request_error"
    if dialect == "gemini":
        assert r.json["error"]["status"] == "INVALID_ARGUMENT"


def test_engine_validation_error_is_400_naming_the_field(client):
    def refuse(req):
        raise ValidationError("prompt", "token ids must be in [0, 10) (the vocabulary)")

    client.app.lanner.backend.engine.submit = refuse
    r = client.simulate_post("/v1/completions", json={"prompt": [1, 2]})
    assert r.status_code == 400 and "vocabulary" in r.json["error"]["message"]
    assert r.json["error"]["param"] == "prompt"


# ---- 404 / 405 ----

@pytest.mark.parametrize("dialect,path", [
    ("openai", "/v1/nothing"), ("gemini", f"/v1/models/{MODEL}:summarize"), ("gemini", "/v1beta/nothing"), ("ollama", "/api/nothing"),
    ("ollama", "/nothing"), ("gemini", f"/v1beta/models/{MODEL}:summarize")])
def test_unknown_route_404(client, dialect, path):
    r = client.simulate_post(path, json={})
    assert r.status_code == 404
    check_shape(dialect, r.json, 404)


@pytest.mark.parametrize("dialect,method,path", [
    ("openai", "GET", "/v1/chat/completions"), ("openai", "POST", "/v1/models"),
    ("gemini", "DELETE", "/v1beta/models"), ("gemini", "GET", f"/v1beta/models/{MODEL}:generateContent"),
    ("ollama", "GET", "/api/generate"), ("ollama", "POST", "/api/tags"),
    ("ollama", "POST", "/health"), ("openai", "POST", f"/v1/models/{MODEL}"),
    ("gemini", "GET", f"/v1/models/{MODEL}:generateContent")])
def test_wrong_method_405(client, dialect, method, path):
    r = client.simulate_request(method, path)
    assert r.status_code == 405
    check_shape(dialect, r.json, 405)
    assert r.headers.get("allow")


@pytest.mark.parametrize("dialect", list(GEN))
def test_unknown_model_404(client, dialect):
    path, body = GEN[dialect]
    if dialect == "gemini":
        path = path.replace(MODEL, "gemini-1.5-pro")
    else:
        body = {**body, "model": "gpt-4"}
    r = client.simulate_post(path, json=body)
    assert r.status_code == 404
    assert "not found" in check_shape(dialect, r.json, 404)
    if dialect == "openai":
        assert r.json["error"]["code"] == "model_not_found"
    if dialect == "gemini":
        assert r.json["error"]["status"] == "NOT_FOUND"


def test_model_names_accepted():
    llm = FakeLLM()
    c = make_client(llm, model_name="my-alias")
    for name in ("my-alias", MODEL, MODEL + ".gguf", "my-alias:latest", "", None):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        if name is not None:
            body["model"] = name
        assert c.simulate_post("/v1/chat/completions", json=body).status_code == 200, name
    assert c.simulate_get("/v1/models").json["data"][0]["id"] == "my-alias"
    assert c.simulate_get("/api/tags").json["models"][0]["name"] == "my-alias"
    assert c.simulate_get("/v1beta/models/my-alias").json["name"] == "models/my-alias"
    assert c.simulate_get("/v1beta/models/other").status_code == 404
    assert c.simulate_post("/api/show", json={"model": "other"}).status_code == 404


# ---- 413 ----

@pytest.mark.parametrize("dialect", list(GEN))
def test_body_too_large_413(dialect):
    c = make_client(FakeLLM(), max_body_bytes=200)
    path, body = GEN[dialect]
    big = {**body, "padding": "x" * 500}
    r = c.simulate_post(path, json=big)
    assert r.status_code == 413
    assert "limit" in check_shape(dialect, r.json, 413)
    assert c.simulate_post(path, json=body).status_code == 200


# ---- 503 overload, 400 context overflow ----

@pytest.mark.parametrize("dialect", list(GEN))
def test_overloaded_503_retry_after(dialect):
    llm = FakeLLM()
    llm.engine.overloaded = True
    c = make_client(llm)
    path, body = GEN[dialect]
    r = c.simulate_post(path, json=body)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    check_shape(dialect, r.json, 503)
    if dialect == "gemini":
        assert r.json["error"]["status"] == "UNAVAILABLE"


def test_queue_full_503_from_real_queue():
    llm = FakeLLM(parallel=1, max_queue=1)
    llm.engine.loop, llm.engine.delay_s = True, 0.01
    with live_server(make_app(llm)) as url:
        import requests

        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 10_000 // 8, "stream": True}
        held = [requests.post(url + "/v1/chat/completions", json=body, stream=True) for _ in range(2)]
        r = requests.post(url + "/v1/chat/completions", json=body)
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json()["error"]["code"] == "overloaded"
        for h in held:
            h.close()


@pytest.mark.parametrize("dialect", list(GEN))
def test_context_overflow_400(dialect):
    c = make_client(FakeLLM(n_ctx=100))
    path, body = GEN[dialect]
    big = {"openai": {"max_tokens": 90}, "ollama": {"options": {"num_predict": 90}},
           "gemini": {"generationConfig": {"maxOutputTokens": 90}}}[dialect]
    r = c.simulate_post(path, json={**body, **big})
    assert r.status_code == 400
    msg = check_shape(dialect, r.json, 400)
    assert "prompt has" in msg and "max_tokens is 90" in msg and "context size of 100" in msg
    if dialect == "openai":
        assert r.json["error"]["code"] == "context_length_exceeded"
    # no explicit budget: the server default is clamped to the room left, no error
    assert c.simulate_post(path, json=body).status_code == 200


def test_default_max_tokens_from_settings():
    llm = FakeLLM()
    llm.engine.loop = True
    c = make_client(llm, max_tokens=7)
    for dialect, (path, body) in GEN.items():
        r = c.simulate_post(path, json=body)
        assert r.status_code == 200
        assert llm.engine.submitted[-1].max_tokens == 7, dialect
    assert c.simulate_post("/api/generate", json={"prompt": "x", "stream": False}).json["eval_count"] == 7
    assert c.simulate_post("/v1/completions", json={"prompt": "x"}).json["usage"]["completion_tokens"] == 7


# ---- readiness ----

def test_health_503_while_loading_then_200(monkeypatch):
    import lanner.server.context as context

    gate = threading.Event()

    def slow_load(settings):
        gate.wait(5)
        return FakeLLM()

    monkeypatch.setattr(context, "load_backend", slow_load)
    import falcon.testing

    app = create_app(None, Settings())
    c = falcon.testing.TestClient(app, headers={"Host": "localhost"})
    r = c.simulate_get("/health")
    assert r.status_code == 503 and r.json["status"] == "loading" and r.headers["retry-after"]
    r = c.simulate_post(*GEN["openai"][:1], json=GEN["openai"][1])
    assert r.status_code == 503 and "loading" in r.json["error"]["message"]
    assert c.simulate_get("/metrics").status_code == 200  # scrapable while loading
    gate.set()
    assert app.lanner.wait_loaded(5)
    r = c.simulate_get("/health")
    assert r.status_code == 200 and r.json == {"status": "ok", "model": MODEL}


def test_health_reports_load_failure(monkeypatch):
    import lanner.server.context as context

    def broken(settings):
        raise FileNotFoundError("no such model: /x.gguf")

    monkeypatch.setattr(context, "load_backend", broken)
    import falcon.testing

    app = create_app(None, Settings())
    app.lanner.wait_loaded(5)
    c = falcon.testing.TestClient(app, headers={"Host": "localhost"})
    r = c.simulate_get("/health")
    assert r.status_code == 503 and r.json["status"] == "error" and "/x.gguf" in r.json["error"]
    r = c.simulate_post("/api/generate", json={"prompt": "hi"})
    assert r.status_code == 500 and "failed to load" in r.json["error"]


# ---- engine failure mid-stream ----

def test_engine_error_in_stream_and_non_stream():
    llm = FakeLLM()
    llm.engine.fail_after = 2
    c = make_client(llm)
    r = c.simulate_post("/v1/chat/completions", json={**GEN["openai"][1], "stream": True})
    events = [l[6:] for l in r.text.split("\n") if l.startswith("data: ")]
    assert "simulated engine failure" in json.loads(events[-2])["error"]["message"]
    assert events[-1] == "[DONE]"
    r = c.simulate_post(*GEN["ollama"][:1], json={**GEN["ollama"][1], "stream": True})
    assert "simulated engine failure" in json.loads(r.text.splitlines()[-1])["error"]
    r = c.simulate_post(*GEN["gemini"][:1], json=GEN["gemini"][1])
    assert r.status_code == 500 and r.json["error"]["status"] == "INTERNAL"


# ---- client disconnect ----

def _open_stream(port: int, path: str, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


@pytest.mark.parametrize("dialect", list(GEN))
def test_client_disconnect_aborts_request(dialect):
    llm = FakeLLM()
    eng = llm.engine
    eng.loop, eng.delay_s = True, 0.005
    app = make_app(llm)
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        path, body = GEN[dialect]
        if dialect == "gemini":
            path = path.replace("generateContent", "streamGenerateContent") + "?alt=sse"
        body = {**body, "stream": True, "max_tokens": 1000,
                "options": {"num_predict": 1000}} if dialect != "gemini" else body
        s = _open_stream(port, path, body)
        got = b""
        while got.count(b"\n") < 12:  # headers and a few events arrived
            chunk = s.recv(4096)
            assert chunk, got  # the server closed the connection early
            got += chunk
        assert b"200" in got.split(b"\r\n", 1)[0]
        assert len(eng.active) == 1
        s.close()
        deadline = time.time() + 5
        while eng.active and time.time() < deadline:
            time.sleep(0.01)
        assert eng.active == {}                      # nothing running
        assert eng.aborted == [eng.submitted[-1].id]  # ... because it was cancelled
        s = eng.stats()
        assert (s.running, s.pending, s.busy) == (0, 0, False)
        assert app.lanner.metrics.client_aborts == 1


def test_stream_closed_before_first_chunk_aborts():
    """The WSGI server may close the body without iterating it (client gone at once)."""
    llm = FakeLLM()
    c = make_client(llm)
    from lanner.server.routes import run_call
    from lanner.server.adapters import openai

    class Req:
        env: dict = {}

    class Resp:
        def set_header(self, *a):
            pass

    app_ctx = c.app.lanner
    call = openai.parse_chat({"messages": [{"role": "user", "content": "x"}], "stream": True},
                             app_ctx)
    resp = Resp()
    run_call(Req(), resp, app_ctx, call, "openai", openai.render_chat, openai.stream_chat,
             "text/event-stream")
    assert len(llm.engine.active) == 1
    resp.stream.close()
    assert llm.engine.active == {} and llm.engine.aborted == [call.request.id]
