"""The vendors' own SDKs (openai, ollama, google-genai) against the server on a loopback port,
with the fake backend: the wire formats must be what those clients parse."""

from __future__ import annotations

import pytest

from fake_backend import DEFAULT_REPLY, FakeLLM
from server_helpers import live_server, make_app

MODEL = "fake-model.Q4_0"


@pytest.fixture(scope="module")
def server():
    llm = FakeLLM()
    with live_server(make_app(llm)) as url:
        yield url, llm


# ---- openai ----

def test_openai_chat(server):
    openai = pytest.importorskip("openai")
    url, llm = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0)
    r = client.chat.completions.create(
        model=MODEL + ".gguf",
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is 2+3?"}],
        max_tokens=50, temperature=0.7)
    assert r.choices[0].message.content == DEFAULT_REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(DEFAULT_REPLY.split())
    assert r.usage.prompt_tokens > 0
    assert r.model == MODEL + ".gguf"
    assert llm.engine.submitted[-1].sampling.temperature == 0.7


def test_openai_chat_stream_and_usage(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about Python."}],
        max_tokens=4, stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == " ".join(DEFAULT_REPLY.split()[:4])
    assert finish == "length"
    assert usage.completion_tokens == 4


def test_openai_completions_and_models(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3)
    assert r.choices[0].text == " ".join(DEFAULT_REPLY.split()[:3])
    assert r.choices[0].finish_reason == "length"
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_openai_errors_raise_typed(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["param"] == "n"


# ---- ollama ----

def test_ollama_generate_chat_list_show(server):
    ollama = pytest.importorskip("ollama")
    url, _ = server
    client = ollama.Client(host=url)
    r = client.generate(model=MODEL + ".gguf", prompt="What is 1+1?", options={"num_predict": 50})
    assert r.response == DEFAULT_REPLY and r.done and r.done_reason == "stop"
    assert r.eval_count == len(DEFAULT_REPLY.split()) and r.total_duration > 0
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                    options={"num_predict": 2})
    assert r.message.role == "assistant" and r.message.content == "The sky"
    assert r.done_reason == "length"
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert "".join(p.message.content for p in parts) == DEFAULT_REPLY
    assert parts[-1].done and parts[-1].eval_count == len(DEFAULT_REPLY.split())
    parts = list(client.generate(model=MODEL, prompt="Hi", stream=True, options={"num_predict": 3}))
    assert "".join(p.response for p in parts) == "The sky is"
    listed = client.list()
    assert listed.models[0].model == MODEL + ".gguf"
    shown = client.show(MODEL)
    assert shown.details.format == "gguf" and shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities
    assert client.ps().models[0].name == MODEL


def test_ollama_error_raises(server):
    ollama = pytest.importorskip("ollama")
    url, _ = server
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as ei:
        client.generate(model="llama3", prompt="hi")
    assert ei.value.status_code == 404 and "not found" in ei.value.error


# ---- google-genai ----

def _genai_client(url):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    return genai.Client(api_key="not-needed",
                        http_options=types.HttpOptions(base_url=url, api_version="v1beta")), types


def test_genai_generate_content(server):
    url, llm = server
    client, types = _genai_client(url)
    r = client.models.generate_content(
        model=MODEL, contents="Why is the sky blue?",
        config=types.GenerateContentConfig(temperature=0.9, top_k=1, max_output_tokens=1024,
                                           system_instruction="Be brief."))
    assert r.text == DEFAULT_REPLY
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.candidates_token_count == len(DEFAULT_REPLY.split())
    assert llm.calls[-1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_genai_generate_content_stream(server):
    url, _ = server
    client, types = _genai_client(url)
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents="Tell me a story",
        config=types.GenerateContentConfig(max_output_tokens=5)))
    assert "".join(c.text or "" for c in chunks) == " ".join(DEFAULT_REPLY.split()[:5])
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.candidates_token_count == 5


def test_genai_multi_turn_chat_list_count(server):
    url, llm = server
    client, types = _genai_client(url)
    chat = client.chats.create(model=MODEL)
    chat.send_message("Hi, my name is Alice")
    r = chat.send_message("What is my name?")
    assert r.text == DEFAULT_REPLY
    roles = [m["role"] for m in llm.calls[-1]["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert r.usage_metadata.cached_content_token_count > 0  # prefix reused from turn one
    models = list(client.models.list())
    assert models[0].name == f"models/{MODEL}"
    assert client.models.get(model=MODEL).name == f"models/{MODEL}"
    assert client.models.count_tokens(model=MODEL, contents="hello").total_tokens > 5


def test_genai_default_api_version_v1(server):
    """Without api_version the SDK calls Gemini's stable /v1 paths; they share /v1/models with
    OpenAI and are told apart by the ':action' suffix and the SDK's x-goog-* headers."""
    genai = pytest.importorskip("google.genai")
    from google.genai import errors, types

    url, _ = server
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=url))
    assert client.models.generate_content(model=MODEL, contents="hi").text == DEFAULT_REPLY
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert "".join(c.text or "" for c in chunks) == DEFAULT_REPLY
    assert [m.name for m in client.models.list()] == [f"models/{MODEL}"]
    assert client.models.get(model=MODEL).name == f"models/{MODEL}"
    with pytest.raises(errors.ClientError) as ei:
        client.models.generate_content(model="gemini-pro", contents="hi")
    assert ei.value.code == 404 and ei.value.status == "NOT_FOUND"


def test_genai_error_raises(server):
    url, _ = server
    client, types = _genai_client(url)
    from google.genai import errors

    with pytest.raises(errors.ClientError) as ei:
        client.models.generate_content(model="gemini-2.5-pro", contents="hi")
    assert ei.value.code == 404
    with pytest.raises(errors.ClientError) as ei:
        client.models.generate_content(
            model=MODEL, contents="hi", config=types.GenerateContentConfig(candidate_count=2))
    assert ei.value.code == 400 and "candidateCount" in ei.value.message
