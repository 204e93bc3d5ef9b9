"""Structured output at the server's edge (fake backend, whose engine compiles grammars like the
real one): each dialect's JSON fields become the request's Grammar, a schema that cannot be
compiled is a 400 naming the dialect's field before anything is queued, JSON mode streams
unbuffered, Gemini's OpenAPI schemas are converted, and a body nested 10^5 deep is a 400 (never
a RecursionError) on every route."""

from __future__ import annotations

import json

import pytest

from server_helpers import make_client
from fake_backend import FakeLLM
from lanner.server.routes import MAX_JSON_DEPTH as MAX_BODY_DEPTH
from lanner.server.structured import from_gemini_schema
from lanner.server.errors import ApiError

MODEL = "fake-model.Q4_0"
USER = [{"role": "user", "content": "hi"}]
GEN = f"/v1beta/models/{MODEL}:generateContent"
OBJ = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture
def fx():
    llm = FakeLLM(reply='{"a": 1}')
    return make_client(llm), llm


def _grammar(llm):
    g = llm.engine.submitted[-1].grammar
    return None if g is None else (g.kind, json.loads(g.source) if g.kind == "json_schema" else g.source, g.strict)


def test_every_dialect_sends_a_grammar(fx):
    c, llm = fx
    cases = [
        ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "json_object"}},
         ("json_schema", {"type": "object"}, True)),
        ("/v1/chat/completions", {"messages": USER, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": OBJ}}},
         ("json_schema", OBJ, True)),
        ("/v1/chat/completions", {"messages": USER, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": OBJ}}},
         ("json_schema", OBJ, False)),
        ("/v1/completions", {"prompt": "x", "response_format": {"type": "json_object"}},
         ("json_schema", {"type": "object"}, True)),
        ("/api/chat", {"messages": USER, "format": "json", "stream": False},
         ("json_schema", {"type": "object"}, True)),
        ("/api/generate", {"prompt": "x", "format": OBJ, "stream": False}, ("json_schema", OBJ, False)),
        (GEN, {"contents": "x", "generationConfig": {"responseMimeType": "application/json"}},
         ("json_schema", {"type": "object"}, True)),
        (GEN, {"contents": "x", "generationConfig": {"responseMimeType": "application/json",
                                                     "responseJsonSchema": OBJ}},
         ("json_schema", OBJ, False)),
        (GEN, {"contents": "x", "generationConfig": {"responseMimeType": "application/json",
                                                     "responseSchema": {"type": "OBJECT", "properties": {
                                                         "a": {"type": "INTEGER"}}, "required": ["a"]}}},
         ("json_schema", {**OBJ, "additionalProperties": False}, True)),
    ]
    for path, body, want in cases:
        r = c.simulate_post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert _grammar(llm) == want, path
    c.simulate_post("/v1/chat/completions", json={"messages": USER})
    assert _grammar(llm) is None


def test_gemini_enum_mime_is_a_choice_grammar(fx):
    c, llm = fx
    llm.reply = "blue"
    r = c.simulate_post(GEN, json={"contents": "x", "generationConfig": {
        "responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "format": "enum",
                                                              "enum": ["red", "blue"]}}})
    assert r.status_code == 200 and r.json["candidates"][0]["content"]["parts"][0]["text"] == "blue"
    assert _grammar(llm) == ("lark", 'start: "red" | "blue"', True)
    r = c.simulate_post(GEN, json={"contents": "x", "generationConfig": {"responseMimeType": "text/x.enum"}})
    assert r.status_code == 400 and "enum" in r.json["error"]["message"]


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": USER, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "strict": True, "schema": {"type": "array", "uniqueItems": True}}}},
     "response_format.json_schema.schema"),
    ("/v1/completions", {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$ref": "#/$defs/nope"}}}}, "response_format.json_schema.schema"),
    ("/api/chat", {"messages": USER, "format": {"type": "string", "pattern": "(?<=a)b"}}, "format"),
    ("/api/generate", {"prompt": "x", "format": {"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}},
     "format"),
    (GEN, {"contents": "x", "generationConfig": {"responseMimeType": "application/json",
                                                 "responseJsonSchema": {"type": "bogus"}}},
     "generationConfig.responseJsonSchema"),
])
def test_bad_schema_is_a_400_naming_the_field(fx, path, body, param):
    c, llm = fx
    n = len(llm.engine.submitted)
    r = c.simulate_post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json["error"]
    message = err if isinstance(err, str) else err["message"]
    assert message.startswith(param + ": the schema cannot be used"), message
    if isinstance(err, dict) and "param" in err:
        assert err["param"] == param
    assert len(llm.engine.submitted) == n  # nothing was queued


def test_gemini_schema_conversion():
    s = from_gemini_schema({
        "type": "OBJECT", "property_ordering": ["b", "a"], "required": ["a"],
        "properties": {"a": {"type": "STRING", "nullable": True, "format": "date-time", "maxLength": "30"},
                       "b": {"type": "ARRAY", "items": {"type": "INTEGER", "format": "int64"},
                             "min_items": "1", "maxItems": 3},
                       "c": {"type": "STRING", "format": "enum", "enum": ["x", "y"], "nullable": True},
                       "d": {"anyOf": [{"type": "NUMBER"}, {"type": "BOOLEAN"}], "nullable": True}},
        "description": "a thing", "example": {"a": "b"}}, "responseSchema")
    assert s == {"type": "object", "required": ["a"], "description": "a thing",
                 "additionalProperties": False, "properties": {
        "b": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        "a": {"type": ["string", "null"], "format": "date-time", "maxLength": 30},
        "c": {"type": ["string", "null"], "enum": ["x", "y", None]},
        "d": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "null"}]}}}
    assert list(s["properties"]) == ["b", "a", "c", "d"]
    for bad, where in [({"type": "STRNG"}, "responseSchema.type"),
                       ({"properties": {"a": {"oneOf": []}}}, "responseSchema.properties.a.oneOf"),
                       ({"minItems": -1}, "responseSchema.minItems")]:
        with pytest.raises(ApiError) as ei:
            from_gemini_schema(bad, "responseSchema")
        assert ei.value.param == where


def _sse_contents(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        if line.startswith("data: {"):
            choice = json.loads(line[6:])["choices"]
            if choice and choice[0]["delta"].get("content"):
                out.append(choice[0]["delta"]["content"])
    return out


def test_json_mode_streams_unbuffered(fx):
    c, llm = fx
    llm.reply = '{"a": 1, "b": [true, false], "c": "x y z"}'
    r = c.simulate_post("/v1/chat/completions", json={
        "messages": USER, "stream": True, "response_format": {"type": "json_object"}})
    parts = _sse_contents(r.text)
    assert len(parts) >= 4 and json.loads("".join(parts))["c"] == "x y z"
    r = c.simulate_post(GEN.replace("generateContent", "streamGenerateContent") + "?alt=sse", json={
        "contents": "x", "generationConfig": {"responseMimeType": "application/json"}})
    events = [json.loads(l[6:]) for l in r.text.split("\n") if l.startswith("data: {")]
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in events]
    assert len(texts) >= 4 and json.loads("".join(texts))["a"] == 1


ROUTES = ["/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate", "/api/show",
          GEN, f"/v1beta/models/{MODEL}:countTokens", f"/v1beta/models/{MODEL}:streamGenerateContent"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("depth", [MAX_BODY_DEPTH + 1, 100_000])
def test_deep_body_is_a_400(fx, path, depth):
    c, llm = fx
    deep = "[" * depth + "]" * depth
    r = c.simulate_post(path, body='{"messages": ' + deep + ', "contents": ' + deep + "}",
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert f"nested more than {MAX_BODY_DEPTH} levels" in r.text
    assert c.simulate_post("/v1/chat/completions", json={"messages": USER}).status_code == 200


def test_body_at_the_depth_limit_is_parsed(fx):
    c, _ = fx
    deep: object = 1
    for _ in range(MAX_BODY_DEPTH - 1):
        deep = [deep]
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "metadata": deep})
    assert r.status_code == 200


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


def test_tool_choice_required_or_named_is_a_grammar(fx):
    c, llm = fx
    llm.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "tool_choice": "required"})
    assert r.status_code == 200, r.text
    assert r.json["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    kind, source, _ = _grammar(llm)
    assert kind == "lark" and '"get_weather"' in source and '"get_time"' in source
    r = c.simulate_post("/v1/chat/completions", json={
        "messages": USER, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    assert r.status_code == 200
    assert '"get_time"' in _grammar(llm)[1] and '"get_weather"' not in _grammar(llm)[1]
    c.simulate_post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "tool_choice": "auto"})
    assert _grammar(llm) is None
    for choice, param in [({"type": "function", "function": {"name": "nope"}}, "tool_choice"),
                          ("sometimes", "tool_choice")]:
        r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "tool_choice": choice})
        assert r.status_code == 400 and r.json["error"]["param"] == param
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/nope"}}}]
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "tools": bad, "tool_choice": "required"})
    assert r.status_code == 400 and r.json["error"]["param"] == "tools", r.text
