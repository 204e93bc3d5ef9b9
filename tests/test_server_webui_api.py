"""The web UI's API on the fake backend: /api/chat's SSE frames and the rule that picks them,
GET /api/models, POST /api/upload (names, sizes, declared types, the upload directory), POST
/api/models/load (wrong file, concurrent loads, failed loads, loads under live streams), the page's
static files, and that the mutating endpoints refuse foreign origins and carry no CORS headers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import falcon.testing
import pytest
import requests

import lanner.server.context as context
from fake_backend import FakeLLM
from server_helpers import live_server, make_app, make_client

USER = [{"role": "user", "content": "hi"}]
PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + bytes(40)


def frames(text: str) -> list[dict]:
    return [json.loads(l[6:]) for l in text.split("\n") if l.startswith("data: ")]


def multipart(data: bytes, filename: str = "a.txt", ctype: str | None = "text/plain",
              name: str = "file") -> tuple[bytes, dict]:
    head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode("utf-8", "surrogateescape")
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n".encode()
    body = b"--BOUND\r\n" + head + b"\r\n" + data + b"\r\n--BOUND--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=BOUND"}


def upload(c, data: bytes, **kw):
    body, headers = multipart(data, **kw)
    return c.simulate_post("/api/upload", body=body, headers=headers)


# ---- /api/chat: which requests get SSE frames ----

@pytest.mark.parametrize("extra", [{"sessionId": "s1"}, {"newChat": True}, {"imagePaths": []},
                                   {"maxTokens": 8}])
def test_webui_field_selects_sse(extra):
    c = make_client()
    r = c.simulate_post("/api/chat", json={"messages": USER, **extra})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    fs = frames(r.text)
    assert fs[-1]["done"] is True and all("done" not in f for f in fs[:-1])
    assert "".join(f.get("token", "") for f in fs).startswith("The sky")


def test_accept_event_stream_selects_sse_and_ollama_stays_ndjson():
    c = make_client()
    r = c.simulate_post("/api/chat", json={"messages": USER}, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream") and frames(r.text)[-1]["done"]
    r = c.simulate_post("/api/chat", json={"messages": USER})  # an Ollama client
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(l) for l in r.text.splitlines()]
    assert lines[-1]["done"] is True and lines[0]["message"]["role"] == "assistant"
    r = c.simulate_post("/api/chat/ollama", json={"messages": USER, "sessionId": "x", "stream": False})
    assert r.json["message"]["content"]  # the spec's Ollama path is always Ollama's


def test_done_frame_stats_and_cached_tokens():
    llm = FakeLLM()
    c = make_client(llm)
    body = {"messages": USER, "sessionId": "conv-1", "maxTokens": 5}
    first = frames(c.simulate_post("/api/chat", json=body).text)[-1]
    assert first["tokenCount"] == 5 and first["finishReason"] == "length"
    assert first["promptTokens"] == len(llm.engine.submitted[-1].prompt_tokens)
    assert first["sessionId"] == "conv-1" and first["error"] is None and first["aborted"] is False
    assert first["ttft"] > 0 and first["elapsed"] >= first["ttft"] and first["tokPerSec"] > 0
    assert llm.engine.submitted[-1].session_id == "conv-1" and llm.engine.submitted[-1].max_tokens == 5
    turn2 = {**body, "messages": USER + [{"role": "assistant", "content": "The sky is blue"},
                                         {"role": "user", "content": "why?"}]}
    second = frames(c.simulate_post("/api/chat", json=turn2).text)[-1]
    assert 0 < second["cachedTokens"] == second["kvReusedTokens"] < second["promptTokens"]
    assert second["kvReusePercent"] == pytest.approx(100 * second["cachedTokens"] / second["promptTokens"])


def test_sampling_fields_land_in_the_request():
    llm = FakeLLM()
    c = make_client(llm)
    c.simulate_post("/api/chat", json={"messages": USER, "maxTokens": 9, "temperature": 0.5,
                                       "topP": 0.8, "topK": 7, "seed": 3})
    r = llm.engine.submitted[-1]
    s = r.sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, r.max_tokens) == (0.5, 0.8, 7, 3, 9)


@pytest.mark.parametrize("body,field", [({"maxTokens": 0}, "maxTokens"), ({"topK": "x"}, "topK"),
                                        ({"temperature": 9}, "temperature"),
                                        ({"sessionId": 5}, "sessionId"), ({"newChat": "y"}, "newChat"),
                                        ({"messages": []}, "messages")])
def test_bad_fields_are_400_naming_them(body, field):
    r = make_client().simulate_post("/api/chat", json={"messages": USER, "sessionId": "s", **body})
    assert r.status_code == 400 and r.json["error"].startswith(field)


def test_thinking_tool_calls_and_error_frames():
    c = make_client(FakeLLM(reply='<think>hmm, sky</think>Blue. <tool_call>{"name": "f", '
                                  '"arguments": {"x": 1}}</tool_call>'))
    fs = frames(c.simulate_post("/api/chat", json={
        "messages": USER, "sessionId": "s", "think": True,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}).text)
    assert "".join(f.get("thinking", "") for f in fs).strip() == "hmm, sky"
    assert "".join(f.get("token", "") for f in fs).strip() == "Blue."
    assert [f["tool_calls"] for f in fs if "tool_calls" in f] == [[{"name": "f", "arguments": {"x": 1}}]]
    assert fs[-1]["finishReason"] == "tool_calls"
    llm = FakeLLM()
    llm.engine.fail_after = 2
    fs = frames(make_client(llm).simulate_post("/api/chat", json={"messages": USER, "sessionId": "s"}).text)
    err = [f for f in fs if "error" in f and not f.get("done")]
    assert err and err[0]["status"] == 500 and "simulated engine failure" in err[0]["error"]
    assert fs[-1]["done"] is True and "simulated engine failure" in fs[-1]["error"]


# ---- /api/models ----

def test_models_has_spec_fields_and_old_keys():
    m = make_client(FakeLLM(n_ctx=1024)).simulate_get("/api/models").json
    for key in ("model", "file", "path", "size", "architecture", "backend", "context_length",
                "n_ctx", "default_max_tokens", "loaded"):
        assert key in m
    assert m["models"] == ["fake-model.Q4_0.gguf"] and m["mmProjModels"] == []
    assert m["loadedBackend"] == m["defaultBackend"] == m["backend"] and m["supportedBackends"]
    assert (m["contextSize"], m["family"], m["vision"], m["defaultMaxTokens"]) == (1024, "llama", False, 200)
    assert m["hostedModelPath"] == "/models/fake-model.Q4_0.gguf" and m["state"] == "ready"


# ---- the page ----

def test_page_and_static_files():
    c = make_client()
    r = c.simulate_get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"] and "<script>" not in r.text
    for name, ctype in (("app.js", "text/javascript"), ("markdown.js", "text/javascript"),
                        ("app.css", "text/css"), ("icon.svg", "image/svg+xml")):
        r = c.simulate_get(f"/ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype) and r.content
    for bad in ("../app.py", "%2e%2e%2fapp.py", "nope.js", "..%2F..%2Fsettings.py"):
        assert c.simulate_get(f"/ui/{bad}").status_code == 404


def test_page_never_assigns_innerhtml():
    from lanner.server import routes_webui
    for name in ("app.js", "markdown.js"):
        src = (routes_webui.PAGE_DIR / name).read_text()
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in src, (name, sink)


# ---- /api/upload ----

@pytest.fixture
def store(tmp_path):
    up = tmp_path / "uploads"
    c = make_client(upload_dir=str(up), max_upload_bytes=2000)
    return c, tmp_path, up


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..\\..\\win.txt", "a\0b.txt",
                                  "/tmp/../../root/.bashrc", ""])
def test_upload_names_are_never_used(store, name):
    c, tmp, up = store
    before = set(Path("/").iterdir()) | set(Path.cwd().iterdir())
    r = upload(c, ("hello " + repr(name)).encode(), filename=name)
    assert r.status_code == 200, r.text
    uid = r.json["id"]
    assert len(uid) == 68 and uid.endswith(".txt") and all(ch in "0123456789abcdef" for ch in uid[:64])
    assert [p.name for p in up.iterdir()] == [uid]  # nothing but the content-addressed file
    assert [p.name for p in tmp.iterdir()] == ["uploads"]  # nothing next to the directory
    assert set(Path("/").iterdir()) | set(Path.cwd().iterdir()) == before


def test_upload_text_inlined_and_truncated(tmp_path):
    c = make_client(upload_dir=str(tmp_path), max_upload_bytes=100_000)
    r = upload(c, ("é" * 9000).encode())
    j = r.json
    assert (j["mediaType"], j["truncated"], j["truncateLimit"]) == ("text", True, 8000)
    assert j["textContent"] == "é" * 8000 and j["size"] == 18000
    again = upload(c, ("é" * 9000).encode(), filename="other.md", ctype="text/markdown").json
    assert again["id"] == j["id"] and len(list(tmp_path.iterdir())) == 1  # content-addressed


def test_upload_over_the_limit_is_413(store):
    c, tmp, up = store
    assert upload(c, b"x" * 2001).status_code == 413            # the part, as read
    assert upload(c, b"x" * 200_000).status_code == 413         # the declared length
    assert upload(c, b"x" * 2000).status_code == 200
    assert len(list(up.iterdir())) == 1


@pytest.mark.parametrize("data,ctype", [(b"just text", "image/png"), (PNG, "text/plain"),
                                        (b"%PDF-1.7 ...", "application/pdf"),
                                        (b"\0\1\2\3binary", "application/octet-stream"),
                                        (PNG, "image/jpeg")])
def test_upload_wrong_declared_type_is_415(store, data, ctype):
    c, tmp, up = store
    r = upload(c, data, ctype=ctype)
    assert r.status_code == 415 and r.json["error"]
    assert not up.exists() or not list(up.iterdir())


def test_upload_image_and_chat_references(store):
    c, tmp, up = store
    r = upload(c, PNG, filename="cat.png", ctype="image/png")
    assert r.status_code == 200 and r.json["mediaType"] == "image" and r.json["id"].endswith(".png")
    uid = r.json["id"]
    body = {"messages": USER, "sessionId": "s"}
    r = c.simulate_post("/api/chat", json={**body, "imagePaths": [uid]})
    assert r.status_code == 400 and "does not support images" in r.json["error"]
    for bad in ("../../etc/passwd", "/etc/passwd", "0" * 64 + ".png"):
        r = c.simulate_post("/api/chat", json={**body, "imagePaths": [bad]})
        assert r.status_code == 400 and "unknown upload id" in r.json["error"]


def test_upload_malformed_requests(store):
    c, _, _ = store
    r = c.simulate_post("/api/upload", json={"file": "x"})
    assert r.status_code == 415
    body, headers = multipart(b"hi", name="other")
    assert c.simulate_post("/api/upload", body=body, headers=headers).status_code == 400
    assert upload(c, b"").status_code == 400


# ---- origins and CORS ----

@pytest.mark.parametrize("path,kw", [("/api/upload", None), ("/api/models/load", {"json": {}})])
def test_mutating_endpoints_refuse_foreign_origins_even_allowlisted(path, kw):
    evil = "http://evil.example"
    c = make_client(cors_origins=evil)  # the allowlist names it: the other endpoints serve it
    body, headers = multipart(b"hi")
    kw = kw or {"body": body, "headers": headers}
    r = c.simulate_post(path, **{**kw, "headers": {**kw.get("headers", {}), "Origin": evil}})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    pre = c.simulate_options(path, headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    assert "access-control-allow-methods" not in pre.headers
    assert c.simulate_get("/api/models", headers={"Origin": evil}).headers[
        "access-control-allow-origin"] == evil
    assert c.simulate_post("/api/chat", json={"messages": USER, "sessionId": "s"},
                           headers={"Origin": evil}).headers["access-control-allow-origin"] == evil


def test_same_origin_upload_is_allowed():
    c = make_client()
    body, headers = multipart(b"hi")
    r = c.simulate_post("/api/upload", body=body, headers={**headers, "Origin": "http://localhost"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_api_key_guards_the_web_ui_api_but_not_the_page():
    c = make_client(api_key="sesame")
    assert c.simulate_get("/").status_code == 200
    assert c.simulate_get("/ui/app.js").status_code == 200
    body, headers = multipart(b"hi")
    assert c.simulate_post("/api/upload", body=body, headers=headers).status_code == 401
    assert c.simulate_post("/api/models/load", json={"model": "fake-model.Q4_0"}).status_code == 401
    assert c.simulate_get("/api/models").status_code == 401
    auth = {"Authorization": "Bearer sesame"}
    assert c.simulate_post("/api/upload", body=body, headers={**headers, **auth}).status_code == 200
    assert c.simulate_post("/api/upload", body=body, headers={
        **headers, "Authorization": "Bearer wrong"}).status_code == 403
    r = c.simulate_post("/api/chat", json={"messages": USER, "sessionId": "s"}, headers=auth)
    assert frames(r.text)[-1]["done"] is True


# ---- /api/models/load ----

def test_load_other_file_is_400():
    c = make_client()
    for name in ("other.gguf", "/etc/passwd", "../fake-model.Q4_0.gguf"):
        r = c.simulate_post("/api/models/load", json={"model": name})
        assert r.status_code == 400 and "not the hosted model" in r.json["error"]
    r = c.simulate_post("/api/models/load", json={"model": "fake-model.Q4_0.gguf", "mmproj": "p.gguf"})
    assert r.status_code == 400


def test_concurrent_loads_409_and_new_context(monkeypatch):
    gate = threading.Event()
    started = threading.Event()

    def slow_load(settings):
        started.set()
        gate.wait(10)
        return FakeLLM(n_ctx=settings.ctx_size or 2048)

    monkeypatch.setattr(context, "load_backend", slow_load)
    c = falcon.testing.TestClient(make_app(), headers={"Host": "localhost"})
    out = {}
    t = threading.Thread(target=lambda: out.update(r=c.simulate_post(
        "/api/models/load", json={"model": "fake-model.Q4_0", "ctxSize": 1024})))
    t.start()
    assert started.wait(5)
    r = c.simulate_post("/api/models/load", json={"model": "fake-model.Q4_0"})
    assert r.status_code == 409
    assert c.simulate_get("/api/models").json["state"] == "reloading"
    assert c.simulate_get("/health").status_code == 200  # the old model keeps serving
    r = c.simulate_post("/api/chat", json={"messages": USER, "sessionId": "s"})
    assert frames(r.text)[-1]["done"]
    gate.set()
    t.join(10)
    assert out["r"].status_code == 200 and out["r"].json["contextSize"] == 1024
    m = c.simulate_get("/api/models").json
    assert (m["contextSize"], m["state"]) == (1024, "ready")


def test_failed_load_keeps_the_old_model(monkeypatch):
    def broken(settings):
        raise RuntimeError("file is corrupt")

    monkeypatch.setattr(context, "load_backend", broken)
    llm = FakeLLM()
    app = make_app(llm)
    c = falcon.testing.TestClient(app, headers={"Host": "localhost"})
    r = c.simulate_post("/api/models/load", json={"model": "fake-model.Q4_0.gguf", "ctxSize": 512})
    assert r.status_code == 500 and "file is corrupt" in r.json["error"]
    assert app.lanner.backend is llm and app.lanner.settings.ctx_size == 0
    fs = frames(c.simulate_post("/api/chat", json={"messages": USER, "sessionId": "s"}).text)
    assert fs[-1]["error"] is None and fs[-1]["tokenCount"] > 0
    assert c.simulate_get("/api/models").json["state"] == "ready"


def test_load_during_live_streams(monkeypatch):
    old = FakeLLM(parallel=4)
    old.engine.delay_s = 0.02
    new = FakeLLM(parallel=4)
    monkeypatch.setattr(context, "load_backend", lambda settings: new)
    app = make_app(old)
    with live_server(app) as url:
        results = [None] * 4

        def chat(i):
            with requests.post(url + "/api/chat", json={"messages": USER, "sessionId": f"s{i}"},
                               stream=True, timeout=30) as r:
                results[i] = frames(r.text)

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 5
        while len(old.engine.active) < 4 and time.time() < deadline:
            time.sleep(0.01)
        assert len(old.engine.active) == 4
        r = requests.post(url + "/api/models/load", json={"model": "fake-model.Q4_0"}, timeout=30)
        assert r.status_code == 200
        for t in threads:
            t.join(30)
        after = requests.post(url + "/api/chat", json={"messages": USER, "sessionId": "z"}, timeout=30)
    for fs in results:  # each one finished: its tokens, then the done frame, nothing cut
        assert fs and fs[-1]["done"] is True and fs[-1]["error"] is None
        assert "".join(f.get("token", "") for f in fs).startswith("The sky is blue")
    assert frames(after.text)[-1]["done"] and len(new.engine.submitted) == 1
    assert len(old.engine.submitted) == 4


def test_replaced_backend_still_counts_for_a_drain(monkeypatch):
    old, new = FakeLLM(), FakeLLM()
    old.engine.loop, old.engine.delay_s = True, 0.01  # a reply that runs until stopped
    monkeypatch.setattr(context, "load_backend", lambda settings: new)
    app = make_app(old)
    ctx = app.lanner
    with live_server(app) as url:
        with requests.post(url + "/api/chat", json={"messages": USER, "sessionId": "s"},
                           stream=True, timeout=30) as r:
            next(r.iter_content(16))  # streaming on the old backend
            assert requests.post(url + "/api/models/load", json={"model": "fake-model.Q4_0"},
                                 timeout=30).status_code == 200
            assert ctx.backend is new and not new.engine.active and ctx.busy()
            ctx.end_all("the server is shutting down")  # SIGTERM's drain reaches both engines
            assert old.engine.closed == new.engine.closed == "the server is shutting down"
