"""Structured output through the vendors' SDKs (openai, ollama, google-genai) against the server
on the real SmolLM2: a subset of tests/data/json_schemas.json per dialect, greedy and sampled,
each reply parsed and validated with jsonschema (no 422 anywhere); then the hostile catalogue:
each schema is a 400 answered quickly, and the server keeps serving after it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

jsonschema = pytest.importorskip("jsonschema")

from lanner.default_model import smollm2_path  # noqa: E402
from lanner.server.app import create_app  # noqa: E402
from lanner.server.context import load_backend  # noqa: E402
from lanner.server.settings import Settings  # noqa: E402
from server_helpers import live_server  # noqa: E402

pytestmark = pytest.mark.slow
SMOL = str(smollm2_path())
NAME = Path(SMOL).stem
CORPUS = {e["name"]: e for e in json.loads((Path(__file__).parent / "data" / "json_schemas.json").read_text())}
SUBSET = ["object_simple", "object_nested", "array_objects", "anyof_objects", "ref_defs",
          "pattern_code", "format_date", "classification", "enum_strings", "recipe"]
HOSTILE_BOUND_S = 5.0  # a regression guard only (they take milliseconds); timings: bench/


@pytest.fixture(scope="module")
def url():
    settings = Settings(model=SMOL, ctx_size=4096, parallel=4, max_queue=16, max_tokens=160, threads=1)
    llm = load_backend(settings)
    llm.warm_grammar()
    with live_server(create_app(llm, settings)) as base:
        yield base
    llm.close()


def _valid(text: str, name: str):
    value = json.loads(text)
    jsonschema.validate(value, CORPUS[name]["schema"])
    return value


def _user(name: str) -> str:
    return CORPUS[name]["prompt"]


def test_openai_sdk(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    for i, name in enumerate(SUBSET):
        rf = {"type": "json_schema", "json_schema": {"name": name, "strict": True,
                                                     "schema": CORPUS[name]["schema"]}}
        r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": _user(name)}],
                                           response_format=rf, max_tokens=160,
                                           temperature=0 if i % 2 else 1.0, seed=i)
        assert r.choices[0].finish_reason == "stop", name
        _valid(r.choices[0].message.content, name)
    # streamed: token by token, the concatenation valid
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": _user("recipe")}], stream=True, max_tokens=160,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": CORPUS["recipe"]["schema"]}})
    parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(parts) > 5
    _valid("".join(parts), "recipe")
    # /v1/completions with response_format (no chat template, no instruction)
    r = client.completions.create(model=NAME, prompt="A JSON object describing a cat:", max_tokens=120,
                                  extra_body={"response_format": {"type": "json_object"}})
    assert isinstance(json.loads(r.choices[0].text), dict)


def test_ollama_sdk(url):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=url)
    for i, name in enumerate(SUBSET[:5]):
        r = client.chat(model=NAME, messages=[{"role": "user", "content": _user(name)}],
                        format=CORPUS[name]["schema"],
                        options={"num_predict": 160, "temperature": 1.0 if i % 2 else 0, "seed": i})
        assert r.done_reason == "stop", name
        _valid(r.message.content, name)
    r = client.generate(model=NAME, prompt="Describe a dog.", format="json", options={"num_predict": 120})
    assert isinstance(json.loads(r.response), dict)


def test_genai_sdk(url):
    pytest.importorskip("google.genai")
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))
    for name in SUBSET[5:]:  # JSON Schema as given
        r = client.models.generate_content(model=NAME, contents=_user(name), config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=CORPUS[name]["schema"],
            max_output_tokens=160, temperature=0))
        assert r.candidates[0].finish_reason == types.FinishReason.STOP, name
        _valid(r.text, name)
    # Gemini's own Schema (OpenAPI subset: uppercase types, nullable, propertyOrdering)
    schema = types.Schema(type=types.Type.OBJECT, required=["city", "population"],
                          property_ordering=["city", "population"], properties={
                              "city": types.Schema(type=types.Type.STRING, max_length=30),
                              "population": types.Schema(type=types.Type.INTEGER, minimum=0, maximum=10**9),
                              "motto": types.Schema(type=types.Type.STRING, nullable=True, max_length=30)})
    chunks = list(client.models.generate_content_stream(
        model=NAME, contents="A city and its population.", config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=schema, max_output_tokens=120)))
    value = json.loads("".join(c.text or "" for c in chunks))
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert list(value)[:2] == ["city", "population"]
    r = client.models.generate_content(model=NAME, contents="Pick a color.", config=types.GenerateContentConfig(
        response_mime_type="text/x.enum",
        response_schema=types.Schema(type=types.Type.STRING, format="enum", enum=["red", "green", "blue"])))
    assert r.text in ("red", "green", "blue")


def _deep_array_schema(n: int) -> str:
    """JSON text of arrays nested n deep (json.dumps cannot encode 10k levels)."""
    return '{"type": "array", "items": ' * n + '{"type": "string"}' + "}" * n


HOSTILE = {  # JSON text, or a value to encode
    "10k-deep nesting": _deep_array_schema(10_000),
    "70-deep nesting": _deep_array_schema(70),
    "self-referencing $ref": {"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"},
    "mutually referencing $ref": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                                  "$ref": "#/$defs/a"},
    "5,000 properties": {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(5000)}},
    "nested counted repetition": {"type": "string", "pattern": "^(a{1000}){1000}$"},
    "look-behind": {"type": "string", "pattern": "(?<=a)b"},
    "bad $ref": {"type": "object", "properties": {"a": {"$ref": "#/definitions/none"}}},
    "unsupported keyword (strict)": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "unsatisfiable": {"type": "string", "minLength": 5, "maxLength": 2},
    "100k-char pattern": {"type": "string", "pattern": "a" * 100_000},
}


def _text(schema) -> str:
    return schema if isinstance(schema, str) else json.dumps(schema)


def _post_schema(url: str, schema) -> requests.Response:
    body = ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, '
            '"response_format": {"type": "json_schema", "json_schema": {"name": "h", "strict": true, '
            '"schema": %s}}}' % (NAME, _text(schema)))
    return requests.post(url + "/v1/chat/completions", data=body.encode(),
                         headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_schema_is_a_quick_400(url, name):
    t0 = time.perf_counter()
    r = _post_schema(url, HOSTILE[name])
    elapsed = time.perf_counter() - t0
    assert r.status_code == 400, (name, r.text[:300])
    assert elapsed < HOSTILE_BOUND_S, (name, elapsed)
    ok = _post_schema(url, CORPUS["object_simple"]["schema"])  # the server keeps serving
    assert ok.status_code == 200
    _valid(ok.json()["choices"][0]["message"]["content"], "object_simple")


@pytest.mark.parametrize("path,wrap", [
    ("/api/chat", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stream": false, '
                  '"format": %%s}' % NAME),
    (f"/v1beta/models/{NAME}:generateContent",
     '{"contents": "hi", "generationConfig": {"responseMimeType": "application/json", '
     '"responseJsonSchema": %s}}'),
])
def test_hostile_schemas_in_other_dialects(url, path, wrap):
    for name in ("10k-deep nesting", "self-referencing $ref", "5,000 properties", "nested counted repetition"):
        r = requests.post(url + path, data=(wrap % _text(HOSTILE[name])).encode(),
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (path, name, r.text[:300])


def test_redos_shaped_pattern_is_served(url):
    """(a+)+$ backtracks catastrophically in a backtracking engine; llguidance's lexer has no
    backtracking, so the pattern is accepted, compiled in microseconds, and honoured."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$", "maxLength": 12}},
              "required": ["s"], "additionalProperties": False}
    r = _post_schema(url, schema)
    assert r.status_code == 200
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), schema)


def test_openai_forced_tool_call(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "unit": {"enum": ["celsius", "fahrenheit"]}},
              "required": ["city", "unit"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}},
             {"type": "function", "function": {"name": "get_time", "parameters": {
                 "type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                 "required": ["zone"], "additionalProperties": False}}}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(model=NAME, max_tokens=160, tools=tools, tool_choice=choice,
                                           messages=[{"role": "user", "content": "Weather in Paris?"}])
        call = r.choices[0].message.tool_calls[0].function
        assert r.choices[0].finish_reason == "tool_calls"
        if choice != "required":
            assert call.name == "get_weather"
        schema = params if call.name == "get_weather" else tools[1]["function"]["parameters"]
        jsonschema.validate(json.loads(call.arguments), schema)
