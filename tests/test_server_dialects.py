"""How each dialect's fields land in the GenerateRequest, and the finer points of rendering:
defaults, stop strings, logprobs, logit_bias, cached tokens, Gemini snake_case and sessionId,
completions, Ollama load-only requests, /metrics and /api/queue/status."""

from __future__ import annotations

import json

import pytest

from fake_backend import DEFAULT_REPLY, FakeLLM
from lanner.server.structured import schema_errors
from lanner.text.output_hermes import HermesParser
from lanner.text.output_parse import parse_all
from server_helpers import make_client

MODEL = "fake-model.Q4_0"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fx():
    llm = FakeLLM()
    return make_client(llm), llm


def sse(text):
    return [json.loads(l[6:]) for l in text.split("\n") if l.startswith("data: {")]


# ---- defaults (the spec's tables) ----

def test_defaults_per_dialect(fx):
    c, llm = fx
    c.simulate_post("/v1/chat/completions", json={"messages": USER})
    c.simulate_post("/api/generate", json={"prompt": "hi", "stream": False})
    c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": "hi"})
    oa, ol, ge = llm.engine.submitted[-3:]
    for r in (oa, ol):
        s = r.sampling
        assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.seed) == \
            (0.0, 0, 1.0, 0.0, 1.0, None)
        assert r.max_tokens == 200 and r.stop == []
    # Gemini's maxOutputTokens defaults to 8192, clamped to the context left (n_ctx 2048 here)
    assert (ge.sampling.temperature, ge.sampling.top_k) == (1.0, 1)
    assert ge.max_tokens == llm.n_ctx - len(ge.prompt_tokens) > 200


def test_gemini_default_budget_is_8192_when_the_context_allows():
    llm = FakeLLM(n_ctx=32768)
    c = make_client(llm)
    c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": "hi"})
    assert llm.engine.submitted[-1].max_tokens == 8192
    c = make_client(llm, max_tokens=64)  # --max-tokens overrides every dialect
    c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": "hi"})
    assert llm.engine.submitted[-1].max_tokens == 64


SEEDED = {  # (path, body with a seed of `s` and sampling on) per dialect
    "openai": lambda s: ("/v1/chat/completions", {"messages": USER, "temperature": 0.7, "seed": s}),
    "ollama": lambda s: ("/api/chat", {"messages": USER, "stream": False,
                                       "options": {"temperature": 0.7, "seed": s}}),
    "gemini": lambda s: (f"/v1beta/models/{MODEL}:generateContent",
                         {"contents": "hi", "generationConfig": {"temperature": 0.7, "seed": s}}),
}


@pytest.mark.parametrize("dialect", ["openai", "ollama", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_seed_minus_one_means_random(fx, dialect, stream):
    c, llm = fx
    for seed, want in ((-1, None), (-7, None), (1234, 1234)):
        path, body = SEEDED[dialect](seed)
        if stream:
            path = path.replace("generateContent", "streamGenerateContent")
            body = {**body, "stream": True}
        r = c.simulate_post(path, json=body)
        assert r.status_code == 200, r.text
        assert llm.engine.submitted[-1].sampling.seed == want


def test_openai_fields_map(fx):
    c, llm = fx
    r = c.simulate_post("/v1/chat/completions", json={
        "messages": [{"role": "developer", "content": "be nice"}, *USER],
        "temperature": 1.2, "top_p": 0.5, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "seed": 42, "stop": "sky", "max_completion_tokens": 30, "max_tokens": 99,
        "logit_bias": {"50256": -100, "7": 2.5}, "top_k": 5, "min_p": 0.1})
    req = llm.engine.submitted[-1]
    s = req.sampling
    assert (s.temperature, s.top_p, s.presence_penalty, s.frequency_penalty, s.seed) == \
        (1.2, 0.5, 0.5, -0.5, 42)
    assert s.logit_bias == {50256: -100.0, 7: 2.5} and (s.top_k, s.min_p) == (5, 0.1)
    assert req.max_tokens == 30 and req.stop == ["sky"]  # max_completion_tokens wins
    assert llm.calls[-1]["messages"][0]["role"] == "system"
    assert r.json["choices"][0]["message"]["content"] == "The "  # stopped before "sky"
    assert r.json["choices"][0]["finish_reason"] == "stop"
    c.simulate_post("/v1/chat/completions", json={"messages": USER, "seed": -1, "stop": ["a", "b"]})
    assert llm.engine.submitted[-1].sampling.seed is None
    assert llm.engine.submitted[-1].stop == ["a", "b"]


def test_openai_logprobs(fx):
    c, llm = fx
    r = c.simulate_post("/v1/chat/completions", json={
        "messages": USER, "max_tokens": 3, "logprobs": True, "top_logprobs": 2})
    assert llm.engine.submitted[-1].sampling.logprobs == 2
    content = r.json["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["", "The", " sky"]  # the fake releases one late
    assert content[1]["logprob"] == -0.25 and content[1]["bytes"] == list(b"The")
    assert [t["token"] for t in content[1]["top_logprobs"]] == ["The", "<alt>"]
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "max_tokens": 3,
                                                      "logprobs": True, "stream": True})
    chunks = sse(r.text)
    assert sum(1 for ch in chunks if ch["choices"] and ch["choices"][0]["logprobs"]) == 3
    r = c.simulate_post("/v1/chat/completions", json={"messages": USER, "max_tokens": 3})
    assert r.json["choices"][0]["logprobs"] is None
    assert llm.engine.submitted[-1].sampling.logprobs is None


def test_openai_stream_usage_only_with_include_usage(fx):
    c, _ = fx
    chunks = sse(c.simulate_post("/v1/chat/completions",
                                 json={"messages": USER, "stream": True}).text)
    assert all(ch["choices"] for ch in chunks)  # no usage-only chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    chunks = sse(c.simulate_post("/v1/chat/completions", json={
        "messages": USER, "stream": True, "stream_options": {"include_usage": True}}).text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 13


def test_openai_cached_tokens(fx):
    c, _ = fx
    body = {"messages": [{"role": "user", "content": "a long shared prefix " * 5}], "max_tokens": 2}
    first = c.simulate_post("/v1/chat/completions", json=body).json
    second = c.simulate_post("/v1/chat/completions", json=body).json
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 20


def test_openai_completions(fx):
    c, llm = fx
    r = c.simulate_post("/v1/completions", json={"prompt": "Once", "max_tokens": 2, "echo": True,
                                                 "logprobs": 1})
    ch = r.json["choices"][0]
    assert r.json["object"] == "text_completion" and ch["text"] == "OnceThe sky"
    assert ch["finish_reason"] == "length" and ch["logprobs"]["text_offset"][0] == 4
    assert llm.engine.submitted[-1].prompt_tokens == llm.tokenize("Once")
    r = c.simulate_post("/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 2})
    assert llm.engine.submitted[-1].prompt_tokens == [5, 6, 7]
    r = c.simulate_post("/v1/completions", json={"prompt": ["a", "b"]})
    assert r.status_code == 400 and r.json["error"]["param"] == "prompt"
    chunks = sse(c.simulate_post("/v1/completions", json={"prompt": "x", "stream": True}).text)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == DEFAULT_REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# ---- Ollama ----

def test_ollama_options_map(fx):
    c, llm = fx
    c.simulate_post("/api/generate", json={
        "prompt": "hi", "stream": False, "system": "sys", "keep_alive": "5m", "options": {
            "num_predict": 9, "temperature": 0.3, "top_k": 4, "top_p": 0.8, "min_p": 0.02,
            "repeat_penalty": 1.3, "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "seed": 7, "stop": ["\n\n"], "num_ctx": 4096}})
    req = llm.engine.submitted[-1]
    s = req.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.presence_penalty,
            s.frequency_penalty, s.seed) == (0.3, 4, 0.8, 0.02, 1.3, 0.1, 0.2, 7)
    assert req.max_tokens == 9 and req.stop == ["\n\n"]
    assert llm.calls[-1]["messages"] == [{"role": "system", "content": "sys"},
                                         {"role": "user", "content": "hi"}]
    c.simulate_post("/api/generate", json={"prompt": "hi", "options": {"seed": -1, "num_predict": -1}})
    req = llm.engine.submitted[-1]
    assert req.sampling.seed is None and req.max_tokens == llm.n_ctx - len(req.prompt_tokens)


def test_ollama_raw_skips_template(fx):
    c, llm = fx
    n_calls = len(llm.calls)
    c.simulate_post("/api/generate", json={"prompt": "<|im_start|>user\nhi", "raw": True, "stream": False})
    assert len(llm.calls) == n_calls
    assert llm.engine.submitted[-1].prompt_tokens == llm.tokenize("<|im_start|>user\nhi")


def test_ollama_load_only_and_durations(fx):
    c, llm = fx
    r = c.simulate_post("/api/generate", json={"model": MODEL})
    assert r.json["done"] and r.json["done_reason"] == "load" and not llm.engine.submitted
    r = c.simulate_post("/api/chat", json={"model": MODEL, "messages": []})
    assert r.json["done_reason"] == "load" and r.json["message"]["content"] == ""
    body = c.simulate_post("/api/chat", json={"messages": USER, "stream": False}).json
    assert body["total_duration"] >= body["prompt_eval_duration"] + body["eval_duration"]
    assert body["load_duration"] >= 0 and body["prompt_eval_count"] > 0
    assert body["created_at"].endswith("Z")


def test_ollama_logprobs_and_format_json(fx):
    c, llm = fx
    r = c.simulate_post("/api/chat", json={"messages": USER, "stream": False, "logprobs": True,
                                           "top_logprobs": 1, "options": {"num_predict": 2}})
    assert [lp["token"] for lp in r.json["logprobs"]] == ["", "The"]
    llm.reply = '{"a": 1}'
    r = c.simulate_post("/api/generate", json={"prompt": "x", "format": "json", "stream": False})
    assert json.loads(r.json["response"]) == {"a": 1}
    lines = [json.loads(l) for l in c.simulate_post(
        "/api/generate", json={"prompt": "x", "format": {"type": "object", "required": ["a"]}}).text.splitlines()]
    # JSON mode streams piece by piece (the grammar makes it valid; nothing is buffered)
    assert len(lines) == 3 and lines[-1]["done"]
    assert json.loads("".join(l["response"] for l in lines)) == {"a": 1}
    assert llm.engine.submitted[-1].grammar.kind == "json_schema"
    # a backend whose output is not JSON (the fake does not follow the grammar): the last check
    llm.reply = "not json"
    r = c.simulate_post("/api/generate", json={"prompt": "x", "format": "json", "stream": False})
    assert r.status_code == 422 and "not valid JSON" in r.json["error"]


# ---- Gemini ----

def test_gemini_fields_and_snake_case(fx):
    c, llm = fx
    r = c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                     {"role": "model", "parts": [{"text": "c"}]}, {"parts": [{"text": "d"}]}],
        "generation_config": {"temperature": 0.5, "top_p": 0.7, "top_k": 3, "max_output_tokens": 4,
                              "stop_sequences": ["zzz"], "seed": 3, "candidate_count": 1},
        "sessionId": "s-1"})
    assert r.status_code == 200, r.text
    req = llm.engine.submitted[-1]
    assert (req.sampling.temperature, req.sampling.top_p, req.sampling.top_k, req.sampling.seed) == \
        (0.5, 0.7, 3, 3)
    assert req.max_tokens == 4 and req.stop == ["zzz"] and req.session_id == "s-1"
    assert llm.calls[-1]["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    assert r.json["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_gemini_count_tokens_and_model_get(fx):
    c, llm = fx
    r = c.simulate_post(f"/v1beta/models/{MODEL}:countTokens",
                        json={"contents": [{"parts": [{"text": "hello"}]}]})
    expected = len(llm.chat_tokens([{"role": "user", "content": "hello"}]))
    assert r.json == {"totalTokens": expected}
    r = c.simulate_post(f"/v1beta/models/{MODEL}:countTokens", json={
        "generateContentRequest": {"contents": [{"parts": [{"text": "hello"}]}]}})
    assert r.json == {"totalTokens": expected}
    g = c.simulate_get(f"/v1beta/models/{MODEL}").json
    assert g["name"] == f"models/{MODEL}" and "generateContent" in g["supportedGenerationMethods"]
    assert c.simulate_get(f"/v1beta/models/models%2F{MODEL}").status_code in (200, 404)


def test_gemini_json_mime(fx):
    c, llm = fx
    llm.reply = '{"city": "Paris"}'
    r = c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={
        "contents": "x", "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}})
    assert json.loads(r.json["candidates"][0]["content"]["parts"][0]["text"]) == {"city": "Paris"}


# ---- utility ----

def test_queue_status_and_metrics(fx):
    c, llm = fx
    for _ in range(3):
        c.simulate_post("/v1/chat/completions", json={"messages": USER})
    q = c.simulate_get("/api/queue/status").json
    assert q["busy"] is False and q["pending_requests"] == 0 and q["total_processed"] == 3
    assert q["running"] == 0
    c.simulate_get("/nope")
    m = c.simulate_get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    t = m.text
    assert 'lanner_requests_total{dialect="openai"} 3' in t
    assert 'lanner_requests_finished_total{reason="stop"} 3' in t
    assert f"lanner_completion_tokens_total {3 * 13}" in t
    assert "lanner_time_to_first_token_seconds_count 3" in t
    assert "lanner_time_per_output_token_seconds_count 3" in t
    assert 'lanner_queue_pending 0' in t and "lanner_model_ready 1" in t
    assert 'route="/v1/chat/completions",status="200"} 3' in t
    assert 'route="unmatched",status="404"} 1' in t
    assert c.simulate_get("/api/version").json["version"]


# ---- text post-processing ----

@pytest.mark.parametrize("text", [
    "<think>plan it</think>\nThe answer.",
    "Hello <tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call> bye",
    "no tags at all",
    "<think>a</think>b<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"y\\\": 2}\"}</tool_call>",
    "<thin not a tag",
    "a <tool_call>not json</tool_call>",
])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_hermes_parser_matches_whole_text(text, step):
    p = HermesParser()
    parts = []
    for i in range(0, len(text), step):
        parts += p.feed(text[i:i + step])
    parts += p.finish()
    thinking = "".join(x.text for x in parts if x.kind == "thinking")
    content = "".join(x.text for x in parts if x.kind == "content")
    calls = [{"name": n.name, "arguments": e.arguments} for n, e in zip(
        [x for x in parts if x.kind == "call_start"], [x for x in parts if x.kind == "call_end"])]
    assert (thinking.strip(), content.strip() if calls else content, calls) == \
        parse_all(HermesParser(), text)


def test_schema_errors():
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"a": {"type": "integer"}, "b": {"type": ["string", "null"]},
                             "c": {"type": "array", "items": {"enum": [1, 2]}}}}
    assert schema_errors({"a": 1, "b": None, "c": [1, 2]}, schema) == []
    assert schema_errors({"a": True}, schema) == ["$.a: expected integer, got bool"]
    assert schema_errors({"b": "x", "d": 1}, schema) == ["$: missing required property 'a'",
                                                         "$: unexpected property 'd'"]
    assert schema_errors({"a": 1, "c": [3]}, schema) == ["$.c[0]: 3 is not one of [1, 2]"]
