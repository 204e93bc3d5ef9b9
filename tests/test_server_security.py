"""Who may use the server: Host names (DNS rebinding), browser origins (CORS), API keys, body
types; and request bounds that used to cost memory or a 500 (stop strings, odd roles, the
completions' context error)."""

from __future__ import annotations

import json

import pytest

from fake_backend import FakeLLM
from server_helpers import make_client

MODEL = "fake-model.Q4_0"
USER = [{"role": "user", "content": "hi"}]
CHAT = ("/v1/chat/completions", {"messages": USER})
ROUTES = {  # a generate request per dialect
    "openai": CHAT,
    "ollama": ("/api/chat", {"messages": USER, "stream": False}),
    "gemini": (f"/v1beta/models/{MODEL}:generateContent", {"contents": "hi"}),
}


def post(c, route, headers=None, **kw):
    path, body = route
    return c.simulate_post(path, json=body, headers=headers or {}, **kw)


def error_message(dialect: str, body: dict) -> str:
    return body["error"] if dialect == "ollama" else body["error"]["message"]


# ---- Host ----

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "10.0.0.1", "127.0.0.1.evil.example"])
@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
def test_loopback_server_refuses_foreign_host_names(host, dialect):
    r = post(make_client(), ROUTES[dialect], {"Host": host})
    assert r.status_code == 403 and "loopback" in error_message(dialect, r.json)
    assert make_client().simulate_get("/api/tags", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:8080", "127.1.2.3", "[::1]:8080",
                                  "app.localhost"])
def test_loopback_names_are_served(host):
    assert post(make_client(), CHAT, {"Host": host}).status_code == 200


def test_any_host_when_bound_to_all_interfaces():
    assert post(make_client(host="0.0.0.0"), CHAT, {"Host": "lanner.lan:8080"}).status_code == 200


# ---- CORS ----

def test_foreign_origin_is_refused_even_for_simple_requests():
    c = make_client()
    r = c.simulate_post("/api/chat", body='{"messages": [{"role": "user", "content": "hi"}]}',
                        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    assert FakeLLM().engine.submitted == [] and c.app.lanner.backend.engine.submitted == []
    pre = c.simulate_options("/v1/chat/completions", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    for path in ("/api/show", "/api/models"):  # the model's path is not readable by other pages
        r = c.simulate_request("POST" if path == "/api/show" else "GET", path,
                               json={"model": MODEL} if path == "/api/show" else None,
                               headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "path" not in r.text.lower().replace("loopback", "")


def test_same_origin_page_is_served_without_cors_headers():
    r = post(make_client(), CHAT, {"Origin": "http://localhost:8080", "Host": "localhost:8080"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_allowlisted_origin_gets_cors_headers_and_preflight():
    c = make_client(cors_origins="https://app.example, http://localhost:3000")
    r = post(c, CHAT, {"Origin": "https://app.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "origin" in r.headers["vary"].lower()
    assert "access-control-allow-credentials" not in r.headers
    pre = c.simulate_options("/v1/chat/completions", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type"
    assert post(c, CHAT, {"Origin": "https://other.example"}).status_code == 403


def test_wildcard_origin_never_with_credentials():
    r = post(make_client(cors_origins="*"), CHAT, {"Origin": "https://any.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers


# ---- body type ----

@pytest.mark.parametrize("ctype,status", [("text/plain", 415), ("multipart/form-data; boundary=x", 415),
                                          ("application/json", 200), ("application/json; charset=utf-8", 200),
                                          ("application/x-www-form-urlencoded", 200)])
def test_json_routes_need_a_json_body_type(ctype, status):
    c = make_client()
    r = c.simulate_post("/v1/chat/completions", body='{"messages": [{"role": "user", "content": "hi"}]}',
                        headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json["error"]["type"] == "invalid_request_error" or r.json["error"]["message"]


# ---- API key ----

@pytest.fixture
def keyed(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# team keys\nk-file-1\n\n  k-file-2  \n")
    return make_client(api_key="k-main", api_key_file=str(f))


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
def test_api_key_missing_401_wrong_403_in_dialect_shape(keyed, dialect):
    r = post(keyed, ROUTES[dialect])
    assert r.status_code == 401 and "API key" in error_message(dialect, r.json)
    r = post(keyed, ROUTES[dialect], {"Authorization": "Bearer nope"})
    assert r.status_code == 403 and "not valid" in error_message(dialect, r.json)
    if dialect == "openai":
        assert r.json["error"]["code"] == "invalid_api_key"
    if dialect == "gemini":
        assert r.json["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("headers,params", [
    ({"Authorization": "Bearer k-main"}, None), ({"Authorization": "Bearer k-file-2"}, None),
    ({"x-goog-api-key": "k-file-1"}, None), ({}, {"key": "k-main"})])
def test_api_key_accepted_in_each_dialects_convention(keyed, headers, params):
    path, body = ROUTES["gemini"]
    assert keyed.simulate_post(path, json=body, headers=headers, params=params).status_code == 200
    assert post(keyed, ROUTES["ollama"], headers, params=params).status_code == 200


def test_health_needs_no_key_but_everything_else_does(keyed):
    assert keyed.simulate_get("/health").status_code == 200
    for path in ("/v1/models", "/api/tags", "/api/queue/status", "/metrics", "/v1beta/models"):
        assert keyed.simulate_get(path).status_code == 401, path


def test_unreadable_key_file_is_a_startup_error(tmp_path):
    from lanner.server.main import serve_main

    assert serve_main(["--api-key-file", str(tmp_path / "missing"), "--port", "1"]) == 2


# ---- bounds and odd values that used to be 500s or memory ----

@pytest.mark.parametrize("dialect,patch", [
    ("openai", {"stop": ["x" * 5000]}), ("openai", {"stop": ["a", "b", "c", "d", "e"]}),
    ("ollama", {"options": {"stop": [str(i) for i in range(17)]}}),
    ("gemini", {"generationConfig": {"stopSequences": ["y" * 4097]}}),
])
def test_stop_strings_are_bounded(dialect, patch):
    path, body = ROUTES[dialect]
    r = make_client().simulate_post(path, json={**body, **patch})
    assert r.status_code == 400 and "stop" in error_message(dialect, r.json).lower()


@pytest.mark.parametrize("role", [["user"], {}, 3, None])
@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_unhashable_or_missing_role_is_400(dialect, role):
    path, body = ROUTES[dialect]
    r = make_client().simulate_post(path, json={**body, "messages": [{"role": role, "content": "x"}]})
    assert r.status_code == 400 and "messages[0].role" in error_message(dialect, r.json)


def test_completions_context_error_names_prompt():
    r = make_client().simulate_post("/v1/completions", json={"prompt": "hi", "max_tokens": 100000})
    assert r.status_code == 400 and r.json["error"]["param"] == "prompt"
    assert r.json["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini", "completions", "raw"])
def test_prompt_too_long_by_its_characters_is_400_before_tokenizing(dialect):
    llm = FakeLLM()  # n_ctx 2048
    llm.metadata["max_token_bytes"] = 4
    c = make_client(llm)
    text = "x" * (2048 * 4 + 1)
    path, body = {"completions": ("/v1/completions", {"prompt": text}),
                  "raw": ("/api/generate", {"prompt": text, "raw": True, "stream": False})}.get(
        dialect, ROUTES.get(dialect, (None, None)))
    if dialect in ROUTES:
        body = ({"contents": text} if dialect == "gemini"
                else {**body, "messages": [{"role": "user", "content": text}]})
    r = c.simulate_post(path, json=body)
    assert r.status_code == 400 and "more than the context size" in r.text
    assert llm.calls == [] and llm.engine.submitted == []


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
def test_more_messages_than_the_context_has_tokens_is_400_before_templating(dialect):
    llm = FakeLLM(n_ctx=512)
    c = make_client(llm)
    path, body = ROUTES[dialect]
    if dialect == "gemini":
        body = {"contents": [{"role": ("user", "model")[i % 2], "parts": [{"text": ""}]}
                             for i in range(513)]}
    else:
        body = {**body, "messages": [{"role": ("user", "assistant")[i % 2], "content": ""}
                                     for i in range(513)]}
    r = c.simulate_post(path, json=body)
    assert r.status_code == 400 and "513 messages cannot fit" in r.text, r.text
    assert llm.calls == [] and llm.engine.submitted == []


def test_more_tools_than_the_context_has_tokens_is_400():
    c = make_client(FakeLLM(n_ctx=512))
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
             for i in range(513)]
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "tools": tools})
    assert r.status_code == 400 and r.json["error"]["param"] == "tools", r.text


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
@pytest.mark.parametrize("depth", [150, 950, 100_000])
def test_deeply_nested_bodies_are_400(dialect, depth):
    """Nesting past 100 levels anywhere in a body is refused before any field is read (a
    900-deep Gemini responseSchema used to be a RecursionError 500)."""
    path, body = ROUTES[dialect]
    deep = "[" * depth + "]" * depth
    text = json.dumps(body)[:-1] + ', "generationConfig": {"responseMimeType": "application/json", ' \
        '"responseSchema": {"items": ' + deep + '}}}'
    r = make_client().simulate_post(path, body=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested more than 100 levels" in r.text


def test_nesting_within_the_limit_is_read():
    deep = "[" * 95 + "]" * 95  # 96 levels with the body itself: under the limit of 100
    text = '{"messages": [{"role": "user", "content": "hi"}], "unused": ' + deep + "}"
    r = make_client().simulate_post(ROUTES["openai"][0], body=text,
                                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
