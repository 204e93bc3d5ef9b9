"""Every example request of the two specs (shared/spec/gemini-api-server.md and
tensorsharp-server-api.zh.md), sent with `requests` to the server on a loopback port (fake
backend); responses are checked against the shapes the specs show."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from fake_backend import DEFAULT_REPLY, FakeLLM
from server_helpers import live_server, make_app

MODEL = "fake-model.Q4_0"
FILE = MODEL + ".gguf"

TOOL_REPLY = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "units": "c"}}\n</tool_call>'
THINK_REPLY = "<think>17 * 20 = 340. 17 * 3 = 51. 340 + 51 = 391.</think>\n17 * 23 = 391."
JSON_REPLY = '{"answer": 5, "confidence": "high"}'
EXTRACT_REPLY = '{"city": "Paris", "country": "France", "confidence": null}'


def reply_for(prompt: str) -> str:
    if "weather" in prompt:
        return TOOL_REPLY
    if "step by step" in prompt:
        return THINK_REPLY
    if "keys answer and confidence" in prompt:
        return JSON_REPLY
    if "Extract the city" in prompt:
        return EXTRACT_REPLY.replace("Paris", "Tokyo").replace("France", "Japan") \
            if "Tokyo" in prompt else EXTRACT_REPLY
    return DEFAULT_REPLY


@pytest.fixture(scope="module")
def srv():
    llm = FakeLLM(reply=reply_for)
    with live_server(make_app(llm)) as url:
        yield url, llm


def sse_events(resp) -> list[str]:
    return [line[len("data: "):] for line in resp.text.split("\n") if line.startswith("data: ")]


# ================= gemini-api-server.md =================

def test_gemini_generate_content(srv):
    url, llm = srv
    r = requests.post(f"{url}/v1beta/models/{MODEL}:generateContent", json={
        "contents": [{"parts": [{"text": "Hello, how are you?"}]}],
        "generationConfig": {"temperature": 0.9, "topK": 1, "maxOutputTokens": 1024}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body == {
        "candidates": [{"content": {"parts": [{"text": DEFAULT_REPLY}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "promptFeedback": {"safetyRatings": []},
        "usageMetadata": {"promptTokenCount": body["usageMetadata"]["promptTokenCount"],
                          "candidatesTokenCount": len(DEFAULT_REPLY.split()),
                          "totalTokenCount": body["usageMetadata"]["totalTokenCount"]},
        "modelVersion": MODEL}
    u = body["usageMetadata"]
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"]
    req = llm.engine.submitted[-1]
    assert req.sampling.temperature == 0.9 and req.sampling.top_k == 1 and req.max_tokens == 1024


def test_gemini_stream_generate_content_ends_with_done(srv):
    url, _ = srv
    r = requests.post(f"{url}/v1beta/models/{MODEL}:streamGenerateContent", json={
        "contents": [{"parts": [{"text": "Tell me a story"}]}],
        "generationConfig": {"temperature": 0.9, "topK": 1, "maxOutputTokens": 1024}})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0] == {"candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"},
                                         "index": 0}], "promptFeedback": {"safetyRatings": []}}
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == DEFAULT_REPLY
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == len(DEFAULT_REPLY.split())
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])


def test_gemini_stream_alt_sse_has_no_done(srv):
    url, _ = srv
    r = requests.post(f"{url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                      json={"contents": [{"parts": [{"text": "Tell me a story"}]}]})
    events = sse_events(r)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["candidates"][0]["finishReason"] == "STOP"


def test_gemini_list_models(srv):
    url, _ = srv
    r = requests.get(f"{url}/v1beta/models")
    assert r.status_code == 200
    m = r.json()["models"]
    assert len(m) == 1 and m[0]["name"] == f"models/{MODEL}"
    assert {"displayName", "description"} <= set(m[0])


def test_gemini_multi_turn(srv):
    url, llm = srv
    first = requests.post(f"{url}/v1beta/models/{MODEL}:generateContent", json={
        "contents": [{"parts": [{"text": "Hi, my name is Alice"}]}]})
    assert first.status_code == 200
    second = requests.post(f"{url}/v1beta/models/{MODEL}:generateContent", json={
        "contents": [
            {"parts": [{"text": "Hi, my name is Alice"}]},
            {"parts": [{"text": "Hello Alice! Nice to meet you."}]},
            {"parts": [{"text": "What is my name?"}]}]})
    assert second.status_code == 200
    msgs = llm.calls[-1]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # no role: turns alternate
    assert [m["content"] for m in msgs][-1] == "What is my name?"
    # the second prompt extends the first: the engine's prefix cache reuses those cells
    assert second.json()["usageMetadata"]["cachedContentTokenCount"] > 0


def test_gemini_python_example(srv):
    url, _ = srv
    response = requests.post(f"{url}/v1beta/models/{MODEL}:generateContent", json={
        "contents": [{"parts": [{"text": "Explain quantum computing in simple terms"}]}],
        "generationConfig": {"temperature": 0.9, "topK": 1, "maxOutputTokens": 1024}})
    result = response.json()
    assert result["candidates"][0]["content"]["parts"][0]["text"] == DEFAULT_REPLY


# ================= tensorsharp-server-api.zh.md: Ollama =================

def test_ollama_tags(srv):
    url, _ = srv
    r = requests.get(f"{url}/api/tags")
    m = r.json()["models"]
    assert len(m) == 1 and m[0]["name"] == MODEL and m[0]["model"] == FILE
    assert isinstance(m[0]["size"], int) and m[0]["modified_at"].endswith("Z")


def test_ollama_show(srv):
    url, _ = srv
    r = requests.post(f"{url}/api/show", json={"model": FILE})
    assert r.status_code == 200
    body = r.json()
    assert body["details"]["format"] == "gguf" and body["model_info"]["general.architecture"] == "llama"
    assert body["template"].startswith("{% for m in messages %}")


def test_ollama_generate_non_stream(srv):
    url, llm = srv
    r = requests.post(f"{url}/api/generate", json={
        "model": FILE, "prompt": "What is 1+1?", "stream": False,
        "options": {"num_predict": 50, "temperature": 0.7, "top_p": 0.9}})
    body = r.json()
    assert set(body) >= {"model", "created_at", "response", "done", "done_reason", "total_duration",
                         "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}
    assert body["model"] == FILE and body["response"] == DEFAULT_REPLY and body["done"] is True
    assert body["done_reason"] == "stop" and body["eval_count"] == len(DEFAULT_REPLY.split())
    assert body["total_duration"] >= body["eval_duration"] > 0
    s = llm.engine.submitted[-1].sampling
    assert (s.temperature, s.top_p, llm.engine.submitted[-1].max_tokens) == (0.7, 0.9, 50)


def test_ollama_generate_stream(srv):
    url, _ = srv
    r = requests.post(f"{url}/api/generate", json={
        "model": FILE, "prompt": "Tell me a joke.", "stream": True, "options": {"num_predict": 100}})
    assert r.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert lines[0] == {"model": FILE, "created_at": lines[0]["created_at"], "response": "The",
                        "done": False}
    assert all(not x["done"] for x in lines[:-1])
    last = lines[-1]
    assert last["done"] and last["done_reason"] == "stop" and last["eval_count"] == len(DEFAULT_REPLY.split())
    assert "".join(x["response"] for x in lines) == DEFAULT_REPLY


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat/ollama"])
def test_ollama_images_rejected_text_only_model(srv, path):
    url, _ = srv
    img = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    if path == "/api/generate":
        body = {"model": FILE, "prompt": "What is in this image?", "images": [img], "stream": False}
    else:
        body = {"model": FILE, "stream": False,
                "messages": [{"role": "user", "content": "Describe this image.", "images": [img]}]}
    r = requests.post(url + path, json=body)
    assert r.status_code == 400 and "images" in r.json()["error"]


def test_ollama_chat_non_stream(srv):
    url, llm = srv
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "stream": False, "options": {"num_predict": 100},
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}]})
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": DEFAULT_REPLY}
    assert body["done"] and body["done_reason"] == "stop"
    assert body["prompt_eval_count"] == len(llm.engine.submitted[-1].prompt_tokens)


def test_ollama_chat_stream(srv):
    url, _ = srv
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "messages": [{"role": "user", "content": "Hello!"}], "stream": True,
        "options": {"num_predict": 50}})
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert "".join(x["message"]["content"] for x in lines) == DEFAULT_REPLY
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop"


def test_ollama_multi_turn_chat(srv):
    url, llm = srv
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "stream": False, "options": {"num_predict": 50},
        "messages": [{"role": "user", "content": "My name is Alice."},
                     {"role": "assistant", "content": "Nice to meet you, Alice!"},
                     {"role": "user", "content": "What is my name?"}]})
    assert r.status_code == 200
    assert [m["role"] for m in llm.calls[-1]["messages"]] == ["user", "assistant", "user"]


def test_ollama_chat_think(srv):
    url, llm = srv
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "messages": [{"role": "user", "content": "Solve 17 * 23 step by step."}],
        "think": True, "stream": False, "options": {"num_predict": 200}})
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "17 * 23 = 391.",
                               "thinking": "17 * 20 = 340. 17 * 3 = 51. 340 + 51 = 391."}
    assert body["done"] and body["done_reason"] == "stop"
    assert llm.calls[-1]["kwargs"] == {"enable_thinking": True}
    # streamed: thinking and content arrive in separate fields
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "messages": [{"role": "user", "content": "Solve 17 * 23 step by step."}],
        "think": True, "stream": True})
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert "".join(x["message"].get("thinking", "") for x in lines).strip() == \
        "17 * 20 = 340. 17 * 3 = 51. 340 + 51 = 391."
    assert "".join(x["message"]["content"] for x in lines).strip() == "17 * 23 = 391."


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "获取某城市的当前天气。",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "目标城市"},
        "units": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}


def test_ollama_chat_tools(srv):
    url, llm = srv
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER_TOOL], "stream": False, "options": {"num_predict": 200}})
    body = r.json()
    assert body["message"]["content"] == ""
    calls = body["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert calls[0]["function"]["arguments"] == {"city": "Paris", "units": "c"}
    assert body["done"] and body["done_reason"] == "tool_calls"
    assert llm.calls[-1]["tools"] == [WEATHER_TOOL]
    # streamed: the call arrives whole, the raw <tool_call> text never does
    r = requests.post(f"{url}/api/chat", json={
        "model": FILE, "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER_TOOL]})
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert "tool_call" not in "".join(x["message"]["content"] for x in lines)
    assert [x["message"]["tool_calls"][0]["function"]["name"]
            for x in lines if "tool_calls" in x["message"]] == ["get_weather"]
    # continuing the loop with the tool result is accepted
    r = requests.post(f"{url}/api/chat/ollama", json={
        "model": FILE, "stream": False, "tools": [WEATHER_TOOL], "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": "18 C, sunny"}]})
    assert r.status_code == 200
    # this template has no tool support: the call and its result reach it as text turns
    sent = llm.calls[-1]["messages"]
    assert '"name": "get_weather"' in sent[-2]["content"] and sent[-2]["role"] == "assistant"
    assert sent[-1] == {"role": "user", "content": "<tool_response>\n18 C, sunny\n</tool_response>"}


# ================= tensorsharp-server-api.zh.md: OpenAI =================

def test_openai_list_models(srv):
    url, _ = srv
    assert requests.get(f"{url}/v1/models").json() == {
        "object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "local",
                                    "created": requests.get(f"{url}/v1/models").json()["data"][0]["created"]}]}


def test_openai_chat_non_stream(srv):
    url, _ = srv
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "max_tokens": 50, "temperature": 0.7,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is 2+3?"}]})
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == FILE
    assert body["choices"][0]["index"] == 0
    assert body["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT_REPLY}
    assert body["choices"][0]["finish_reason"] == "stop"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] >= 0


def test_openai_chat_stream(srv):
    url, _ = srv
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 50,
        "stream": True})
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == DEFAULT_REPLY
    last = chunks[-1]
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["completion_tokens"] == len(DEFAULT_REPLY.split())


def test_openai_json_mode(srv):
    url, llm = srv
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "max_tokens": 80, "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content":
                      "Return a JSON object with keys answer and confidence for 2+3."}]})
    body = r.json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": 5, "confidence": "high"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "JSON" in llm.calls[-1]["messages"][0]["content"]  # instruction injected


SCHEMA = {"type": "json_schema", "json_schema": {
    "name": "location_extraction", "strict": True, "schema": {
        "type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                                         "confidence": {"type": ["string", "null"]}},
        "required": ["city", "country", "confidence"], "additionalProperties": False}}}


def test_openai_json_schema(srv):
    url, _ = srv
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "max_tokens": 120, "response_format": SCHEMA,
        "messages": [{"role": "system", "content": "You are a concise extraction assistant."},
                     {"role": "user", "content": "Extract the city and country from: Paris, France."}]})
    assert r.status_code == 200
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == \
        {"city": "Paris", "country": "France", "confidence": None}
    # a schema no output can satisfy is refused before anything runs (400 naming it); so is a
    # malformed response_format
    bad = json.loads(json.dumps(SCHEMA))
    bad["json_schema"]["schema"]["required"].append("population")
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "response_format": bad,
        "messages": [{"role": "user", "content": "Extract the city and country from: Paris, France."}]})
    assert r.status_code == 400 and "population" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "response_format.json_schema.schema"
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "response_format": {"type": "json_schema", "json_schema": "nope"},
        "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema"


def test_openai_image_rejected(srv):
    url, _ = srv
    img = base64.b64encode(b"\x89PNG").decode()
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "max_tokens": 200, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}}]}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[1]"


def test_openai_tools(srv):
    url, llm = srv
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "max_tokens": 200, "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    tc = choice["message"]["tool_calls"][0]
    assert tc["id"].startswith("call_") and tc["type"] == "function"
    assert tc["function"]["name"] == "get_weather"
    assert json.loads(tc["function"]["arguments"]) == {"city": "Paris", "units": "c"}
    # the loop continues with the assistant's tool_calls and a tool message
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "tools": [WEATHER_TOOL], "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [tc]},
            {"role": "tool", "tool_call_id": tc["id"], "content": "18 C"}]})
    assert r.status_code == 200
    sent = llm.calls[-1]["messages"]  # a template without tool support: calls as text turns
    assert sent[0]["role"] == "system" and "get_weather" in sent[0]["content"]
    assert sent[2]["role"] == "assistant" and json.loads(
        sent[2]["content"].split("<tool_call>\n")[1].split("\n</tool_call>")[0]) == \
        {"name": "get_weather", "arguments": {"city": "Paris", "units": "c"}}
    assert sent[3] == {"role": "user", "content": "<tool_response>\n18 C\n</tool_response>"}
    # streamed tool calls: a first delta names the call, the next carry its arguments; then
    # finish_reason tool_calls
    r = requests.post(f"{url}/v1/chat/completions", json={
        "model": FILE, "tools": [WEATHER_TOOL], "stream": True,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
    chunks = [json.loads(e) for e in sse_events(r)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "tool_call" not in "".join(d.get("content") or "" for d in deltas)
    assert [d["tool_calls"][0]["function"].get("name") for d in deltas if "tool_calls" in d][0] == \
        "get_weather"
    assert json.loads("".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas
                              if "tool_calls" in d)) == {"city": "Paris", "units": "c"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ================= utility endpoints =================

def test_utility_endpoints(srv):
    url, _ = srv
    q = requests.get(f"{url}/api/queue/status").json()
    assert isinstance(q["busy"], bool) and isinstance(q["pending_requests"], int)
    assert q["total_processed"] > 0
    assert requests.get(f"{url}/api/version").json()["version"]
    m = requests.get(f"{url}/api/models").json()
    assert m["model"] == MODEL and m["default_max_tokens"] == 200 and m["architecture"] == "llama"


# ================= Python client examples =================

def test_python_requests_examples(srv):
    url, _ = srv
    resp = requests.post(f"{url}/api/generate", json={
        "model": FILE, "prompt": "What is machine learning?", "stream": False,
        "options": {"num_predict": 100, "temperature": 0.7}})
    assert resp.json()["response"] == DEFAULT_REPLY
    out, final = [], None
    with requests.post(f"{url}/api/generate", stream=True, json={
            "model": FILE, "prompt": "Tell me a story.", "stream": True,
            "options": {"num_predict": 200}}) as resp:
        for line in resp.iter_lines():
            if line:
                data = json.loads(line)
                if not data["done"]:
                    out.append(data["response"])
                else:
                    final = data
    assert "".join(out) + final["response"] == DEFAULT_REPLY
    assert final["eval_count"] == len(DEFAULT_REPLY.split())


def test_openai_sdk_structured_output(srv):
    openai = pytest.importorskip("openai")
    url, _ = srv
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    response = client.chat.completions.create(
        model=FILE, response_format=SCHEMA,
        messages=[{"role": "user", "content": "Extract the city and country from: Tokyo, Japan."}])
    payload = json.loads(response.choices[0].message.content)
    assert (payload["city"], payload["country"], payload["confidence"]) == ("Tokyo", "Japan", None)
