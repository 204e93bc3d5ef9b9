"""Tool calls and reasoning end to end, per model family and dialect, through the vendors' SDKs.

A tiny random model of each family supplies the real tokenizer and chat template (its own, one
written for the test, or lanner's built-in fallback); a scripted core (ScriptedContext) makes
the engine generate a known text: the family's native reasoning + tool-call markup, its
markers as the family's special tokens.
Each dialect's SDK must then see the reasoning, the call (streamed incrementally where the
dialect does) with valid JSON arguments, and, after a tool result goes back through the
template, the final answer. A forced call (OpenAI tool_choice, Gemini ANY) is produced under
the family's grammar.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fake_core import FakeContext, FakeModel
from lanner.engine import Engine
from lanner.llm import LLM
from server_helpers import live_server, make_app
from tiny_gguf import write_tiny_arch, write_tiny_family

# A Qwen-style template with tools (written for this test): tools listed in the system turn,
# calls as <tool_call> blocks, results as <tool_response> user turns, the thinking switch.
QWEN_TEMPLATE = """\
{%- if tools -%}
<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}You may call functions:
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
Answer a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|im_end|>
{% elif messages[0].role == 'system' -%}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif -%}
{%- for m in messages -%}
{%- if m.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.role == 'assistant' -%}
<|im_start|>assistant
{{ m.content or '' }}{% for c in m.tool_calls or [] %}<tool_call>
{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role != 'system' -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% endif -%}
{%- endif -%}
"""

# A Mistral-style template (written for this test): [AVAILABLE_TOOLS] before the last user
# turn, [TOOL_CALLS] JSON arrays, [TOOL_RESULTS].
MISTRAL_TEMPLATE = """\
{{- bos_token -}}
{%- for m in messages -%}
{%- if m.role == 'user' -%}
{%- if tools and loop.last -%}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif -%}
[INST]{{ m.content }}[/INST]
{%- elif m.role == 'assistant' -%}
{{ m.content or '' }}
{%- if m.tool_calls -%}[TOOL_CALLS][{%- for c in m.tool_calls -%}{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}{{ ', ' if not loop.last }}{%- endfor -%}]{%- endif -%}
{{ eos_token }}
{%- elif m.role == 'tool' -%}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]
{%- elif m.role == 'system' -%}[INST]{{ m.content }}[/INST]
{%- endif -%}
{%- endfor -%}
"""

ARGS = {"city": "Paris", "unit": "celsius"}
CALL = json.dumps({"name": "get_weather", "arguments": ARGS})
ANSWER = "It is 21 degrees in Paris."
RESULT = {"temperature": 21}

# family -> (writer, output format, reasoning, the call turn, the final turn)
FAMILIES = {
    "qwen3": (lambda p: write_tiny_arch(p, "qwen3", chat_template=QWEN_TEMPLATE), "hermes",
              "The user wants the weather.",
              f"<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{CALL}\n</tool_call>",
              f"<think>\nThe tool answered.\n</think>\n\n{ANSWER}"),
    "gpt-oss": (lambda p: write_tiny_arch(p, "gpt-oss"), "harmony", "The user wants the weather.",
                "<|channel|>analysis<|message|>The user wants the weather.<|end|><|start|>assistant"
                "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                + json.dumps(ARGS) + "<|call|>",
                "<|channel|>analysis<|message|>The tool answered.<|end|><|start|>assistant"
                f"<|channel|>final<|message|>{ANSWER}<|return|>"),
    "llama3": (lambda p: write_tiny_family(p, "llama3"), "llama3", None,
               json.dumps({"name": "get_weather", "parameters": ARGS}), ANSWER),
    "mistral": (lambda p: write_tiny_family(p, "mistral", chat_template=MISTRAL_TEMPLATE), "mistral",
                "The user wants the weather.",
                f"[THINK]The user wants the weather.[/THINK][TOOL_CALLS][{CALL}]", ANSWER),
    "phi3": (lambda p: write_tiny_family(p, "phi3"), "generic", None, CALL, ANSWER),
    "gemma2": (lambda p: write_tiny_family(p, "gemma2"), "generic", None, f"[{CALL}]", ANSWER),
}

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
QUESTION = "What is the weather in Paris?"


class ScriptedContext(FakeContext):
    """FakeContext whose logits spell `target` (text): after the prompt, every token whose
    bytes continue the generated text along `target` is likely, the longest most (so a
    grammar's mask that forbids one still leaves a shorter one), and end-of-generation once
    the text is complete. `prompts` records each request's prompt ids."""

    def __init__(self, model, tokenizer, **kw):
        super().__init__(model, **kw)
        self.tok = tokenizer
        self.pieces = [tokenizer.token_bytes(i) for i in range(tokenizer.n_vocab)]
        self.target = b""
        self.prompts: list[list[int]] = []
        self._req: dict[int, tuple] = {}  # seq -> (its request's prompt ids, history length)

    def _logits(self, s: int, p: int) -> np.ndarray:
        c = self._holds[:, s] & (self._pos <= p) & (self._pos >= 0)
        hist = self._tok[c][np.argsort(self._pos[c], kind="stable")].tolist()
        prompt, last = self._req.get(s, (None, -1))
        if prompt is None or len(hist) != last + 1:  # not one sampled token more: a new request
            prompt = hist
            self.prompts.append(hist)
        self._req[s] = (prompt, len(hist))
        done = b"".join(self.pieces[i] for i in hist[len(prompt):])
        rest = self.target[len(done):] if self.target.startswith(done) else b""
        row = np.zeros(self.model.n_vocab, np.float32)
        if not rest:
            row[self.tok.eos_id] = 100.0
            return row
        for i, b in enumerate(self.pieces):
            if b and rest.startswith(b):
                row[i] = 50.0 + len(b)
        return row


class Family:
    def __init__(self, name: str, tmp):
        write, self.fmt, self.thinking, self.call_text, self.final_text = FAMILIES[name]
        self.name = name
        self.llm = LLM(write(tmp / f"{name}.gguf"), n_ctx=2048, n_threads=1, n_parallel=2)
        self.llm.engine.close()
        tok = self.llm.tokenizer
        n_vocab = self.llm.model.n_vocab
        self.ctx = ScriptedContext(FakeModel(n_vocab), tok, n_ctx=2048, n_seq_max=8)
        self.llm.engine = Engine(self.ctx, tok, n_parallel=2, n_vocab=n_vocab)

    def say(self, text: str) -> None:
        """The model's next reply is `text` (markers as the family's special tokens)."""
        self.ctx.target = text.encode("utf-8")

    def last_prompt(self) -> str:
        return self.llm.detokenize(self.ctx.prompts[-1], skip_special=False)


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request, tmp_path_factory):
    f = Family(request.param, tmp_path_factory.mktemp(request.param))
    with live_server(make_app(f.llm)) as url:
        f.url = url
        yield f
    f.llm.close()


def test_grammar_spells_forced_text_without_the_dummy_space(fam):
    """llguidance tokenizes the text a grammar forces with our encoder: on a SentencePiece
    vocabulary that adds a dummy-prefix space, the forced "[" must not become the token " ["."""
    from lanner.types import Grammar

    m = fam.llm.engine.grammar.compile(Grammar("lark", 'start: "[" "x" "]"'))
    tok = fam.llm.tokenizer
    assert {tok.token_bytes(int(i)) for i in m.allowed_ids()} <= {b"[", b"[x", b"[x]"}


def test_family_format(fam):
    from lanner.server.request import output_format

    assert output_format(fam.llm) == fam.fmt


# ---- OpenAI ----

def _openai(fam):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=fam.url + "/v1", api_key="x", max_retries=0)


def test_openai_tool_round_trip_streamed(fam):
    client = _openai(fam)
    messages = [{"role": "user", "content": QUESTION}]
    fam.say(fam.call_text)
    stream = client.chat.completions.create(model=fam.name, messages=messages, tools=[TOOL], stream=True,
                                            stream_options={"include_usage": True})
    calls: dict[int, dict] = {}
    reasoning, content, finish, usage = "", "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        reasoning += getattr(d, "reasoning_content", None) or ""
        content += d.content or ""
        finish = chunk.choices[0].finish_reason or finish
        for tc in d.tool_calls or ():
            if tc.index not in calls:  # the first delta of a call names it
                assert tc.id and tc.type == "function" and tc.function.name
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and not tc.function.name
            calls[tc.index]["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == ARGS
    assert content == ""
    assert reasoning.strip() == (fam.thinking or "")
    assert (usage.completion_tokens_details.reasoning_tokens > 0) == bool(fam.thinking)
    # the result goes back through the template; the model answers
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": calls[0]["id"], "type": "function",
                      "function": {"name": "get_weather", "arguments": calls[0]["arguments"]}}]},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": json.dumps(RESULT)}]
    fam.say(fam.final_text)
    r = client.chat.completions.create(model=fam.name, messages=messages, tools=[TOOL])
    prompt = fam.last_prompt()
    assert '"temperature": 21' in prompt and "get_weather" in prompt and "Paris" in prompt
    assert r.choices[0].message.content.strip() == ANSWER and r.choices[0].finish_reason == "stop"
    assert not r.choices[0].message.tool_calls


def test_openai_tool_call_whole(fam):
    fam.say(fam.call_text)
    r = _openai(fam).chat.completions.create(
        model=fam.name, messages=[{"role": "user", "content": QUESTION}], tools=[TOOL])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == \
        [("get_weather", ARGS)]
    assert (getattr(msg, "reasoning_content", None) or "") == (fam.thinking or "")


def test_openai_forced_call_by_grammar(fam):
    """tool_choice names the function: the engine's grammar admits only that call, in the
    family's format; the scripted text is such a call, so it comes out whole."""
    fmt_args = json.dumps(ARGS)
    forced = {"hermes": f"<tool_call>\n{CALL}\n</tool_call>",
              "llama3": json.dumps({"name": "get_weather", "parameters": ARGS}),
              "mistral": f"[TOOL_CALLS][{CALL}]", "generic": CALL,
              "harmony": "<|channel|>commentary to=functions.get_weather <|constrain|>json"
                         f"<|message|>{fmt_args}"}[fam.fmt]
    other = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
    for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        fam.say(forced)
        r = _openai(fam).chat.completions.create(
            model=fam.name, messages=[{"role": "user", "content": QUESTION}],
            tools=[TOOL, other], tool_choice=choice, max_tokens=200)
        assert r.choices[0].finish_reason == "tool_calls", r
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGS
    # the model "wants" an argument outside the schema: the grammar holds it to the enum
    fam.say(forced.replace("celsius", "kelvin"))
    r = _openai(fam).chat.completions.create(
        model=fam.name, messages=[{"role": "user", "content": QUESTION}], tools=[TOOL],
        tool_choice="required", max_tokens=200)
    args = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
    assert args["city"] == "Paris" and args["unit"] in ("celsius", "fahrenheit"), args


# ---- Ollama ----

def test_ollama_tool_round_trip(fam):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=fam.url)
    messages = [{"role": "user", "content": QUESTION}]
    fam.say(fam.call_text)
    r = client.chat(model=fam.name, messages=messages, tools=[TOOL], think=True, stream=False)
    assert r.done_reason == "tool_calls" or r.done_reason == "stop"
    assert [(c.function.name, dict(c.function.arguments)) for c in r.message.tool_calls] == \
        [("get_weather", ARGS)]
    assert (r.message.thinking or "").strip() == (fam.thinking or "")
    # streamed: the call arrives whole, the thinking in pieces
    fam.say(fam.call_text)
    thinking, calls = "", []
    for chunk in client.chat(model=fam.name, messages=messages, tools=[TOOL], think=True, stream=True):
        thinking += chunk.message.thinking or ""
        calls += chunk.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"] and thinking.strip() == (fam.thinking or "")
    messages += [r.message, {"role": "tool", "content": json.dumps(RESULT), "tool_name": "get_weather"}]
    fam.say(fam.final_text)
    r = client.chat(model=fam.name, messages=messages, tools=[TOOL], stream=False)
    assert '"temperature": 21' in fam.last_prompt()
    assert r.message.content.strip() == ANSWER and not r.message.tool_calls


# ---- Gemini ----

def _genai(fam):
    pytest.importorskip("google.genai")
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=fam.url,
                                                                      api_version="v1beta"))
    decl = types.FunctionDeclaration(
        name="get_weather", description="The weather in a city now",
        parameters=types.Schema(type="OBJECT", properties={
            "city": types.Schema(type="STRING"),
            "unit": types.Schema(type="STRING", enum=["celsius", "fahrenheit"])},
            required=["city", "unit"]))
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[decl])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        thinking_config=types.ThinkingConfig(include_thoughts=True))
    return client, types, config


def test_genai_tool_round_trip(fam):
    client, types, config = _genai(fam)
    fam.say(fam.call_text)
    first = types.Content(role="user", parts=[types.Part(text=QUESTION)])
    r = client.models.generate_content(model=fam.name, contents=[first], config=config)
    assert [(c.name, c.args) for c in r.function_calls] == [("get_weather", ARGS)]
    thoughts = [p.text for p in r.candidates[0].content.parts if p.thought]
    assert [t.strip() for t in thoughts] == ([fam.thinking] if fam.thinking else [])
    assert bool(r.usage_metadata.thoughts_token_count) == bool(fam.thinking)
    # streamed
    fam.say(fam.call_text)
    calls, thought_text = [], ""
    for chunk in client.models.generate_content_stream(model=fam.name, contents=[first], config=config):
        calls += chunk.function_calls or []
        for p in (chunk.candidates[0].content.parts or []) if chunk.candidates else []:
            thought_text += p.text if p.thought else ""
    assert [(c.name, c.args) for c in calls] == [("get_weather", ARGS)]
    assert thought_text.strip() == (fam.thinking or "")
    # the function's response goes back as a functionResponse part
    fam.say(fam.final_text)
    reply = types.Content(role="user", parts=[types.Part.from_function_response(
        name="get_weather", response=RESULT)])
    r = client.models.generate_content(model=fam.name, contents=[first, r.candidates[0].content, reply],
                                       config=config)
    assert '"temperature": 21' in fam.last_prompt()
    assert r.text.strip() == ANSWER and not r.function_calls


def test_genai_mode_any_forces_a_call(fam):
    client, types, config = _genai(fam)
    if fam.fmt == "harmony":
        forced = ("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                  + json.dumps(ARGS))
    else:
        forced = {"hermes": f"<tool_call>\n{CALL}\n</tool_call>",
                  "llama3": json.dumps({"name": "get_weather", "parameters": ARGS}),
                  "mistral": f"[TOOL_CALLS][{CALL}]", "generic": CALL}[fam.fmt]
    fam.say(forced)
    config.tool_config = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode="ANY", allowed_function_names=["get_weather"]))
    config.thinking_config = None
    r = client.models.generate_content(model=fam.name, contents=QUESTION, config=config)
    assert [(c.name, c.args) for c in r.function_calls] == [("get_weather", ARGS)]


# ---- request checks and prompt safety (no SDK needed) ----

def test_tool_text_stays_text(fam):
    """A special token's spelling inside tool arguments, results or definitions never becomes
    that control token in the prompt."""
    llm = fam.llm
    marker = {"qwen3": "<|im_end|>", "gpt-oss": "<|end|>", "llama3": "<|eot_id|>",
              "mistral": "</s>", "phi3": "<|end|>", "gemma2": "<end_of_turn>"}[fam.name]
    mid = llm.tokenizer.token_id(marker)

    def prompt(text):
        tool = json.loads(json.dumps(TOOL))
        tool["function"]["description"] = text
        msgs = [{"role": "user", "content": QUESTION},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": text}}}]},
                {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": text}]
        from lanner.server.request import chat_prompt
        return chat_prompt(llm, msgs, tools=[tool])

    assert mid is not None
    assert prompt(marker).count(mid) == prompt("plain").count(mid)


def test_request_checks(fam):
    import requests

    u, name = fam.url, fam.name
    msgs = [{"role": "user", "content": QUESTION}]
    jf = {"type": "json_object"}
    r = requests.post(f"{u}/v1/chat/completions", json={"model": name, "messages": msgs,
                                                        "tools": [TOOL], "response_format": jf})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = requests.post(f"{u}/v1/chat/completions", json={"model": name, "messages": msgs,
                                                        "reasoning_effort": "high", "response_format": jf})
    assert r.status_code == 400 and "reasoning" in r.json()["error"]["message"]
    r = requests.post(f"{u}/v1/chat/completions", json={"model": name, "messages": msgs,
                                                        "tools": [TOOL], "tool_choice": {
                                                            "type": "function", "function": {"name": "nope"}}})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = requests.post(f"{u}/api/chat", json={"model": name, "messages": msgs, "stream": False,
                                             "format": "json", "think": True})
    assert r.status_code == 400
    g = f"{u}/v1beta/models/{name}:generateContent"
    decl = {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}
    for body, field in [
            ({"tools": [decl], "toolConfig": {"functionCallingConfig": {
                "mode": "ANY", "allowedFunctionNames": ["nope"]}}}, "allowedFunctionNames"),
            ({"tools": [decl], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, "mode"),
            ({"tools": [{"googleSearch": {}}]}, "googleSearch"),
            ({"tools": [decl], "generationConfig": {"responseMimeType": "application/json"}}, "tools")]:
        r = requests.post(g, json={"contents": QUESTION, **body})
        assert r.status_code == 400 and field in r.json()["error"]["message"], (body, r.text)


def test_openai_single_call_and_tool_choice_none(fam):
    two = {"hermes": f"<tool_call>\n{CALL}\n</tool_call>\n<tool_call>\n{CALL}\n</tool_call>",
           "llama3": json.dumps({"name": "get_weather", "parameters": ARGS}) + "; " +
           json.dumps({"name": "get_weather", "parameters": ARGS}),
           "mistral": f"[TOOL_CALLS][{CALL}, {CALL}]", "generic": f"[{CALL}, {CALL}]",
           "harmony": None}[fam.fmt]
    if fam.fmt == "harmony":  # a second commentary message before the first one's <|call|>
        c = fam.call_text
        two = c.replace("<|call|>", "") + "<|start|>assistant" + c[c.index("<|channel|>commentary"):]
    client = _openai(fam)
    msgs = [{"role": "user", "content": QUESTION}]
    fam.say(two)
    r = client.chat.completions.create(model=fam.name, messages=msgs, tools=[TOOL])
    assert len(r.choices[0].message.tool_calls) == 2
    fam.say(two)
    r = client.chat.completions.create(model=fam.name, messages=msgs, tools=[TOOL],
                                       parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls) == 1
    fam.say(fam.call_text)
    r = client.chat.completions.create(model=fam.name, messages=msgs, tools=[TOOL], tool_choice="none")
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason == "stop"
    assert "get_weather" not in fam.last_prompt()  # no tools in the prompt


def test_gemini_parameters_json_schema_and_mode_none(fam):
    import requests

    g = f"{fam.url}/v1beta/models/{fam.name}:generateContent"
    decl = {"functionDeclarations": [{"name": "get_weather", "description": "weather",
                                      "parametersJsonSchema": TOOL["function"]["parameters"]}]}
    fam.say(fam.call_text)
    r = requests.post(g, json={"contents": QUESTION, "tools": [decl]}).json()
    parts = r["candidates"][0]["content"]["parts"]
    assert [p["functionCall"] for p in parts if "functionCall" in p] == \
        [{"name": "get_weather", "args": ARGS}]
    assert not any(p.get("thought") for p in parts)  # reasoning is not returned unless asked
    assert '"unit"' in fam.last_prompt()  # the JSON Schema reached the prompt
    fam.say(ANSWER)
    r = requests.post(g, json={"contents": QUESTION, "tools": [decl], "toolConfig": {
        "functionCallingConfig": {"mode": "NONE"}}}).json()
    assert r["candidates"][0]["content"]["parts"][0]["text"].strip() == ANSWER
    assert "get_weather" not in fam.last_prompt()
