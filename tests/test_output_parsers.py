"""The model-output parsers (lanner.text.output_*): each real-format transcript gives the
expected reasoning, content and tool calls, whole and fed in pieces - one character at a time,
cut at every split point, and in random splits - with identical results; streamed argument
fragments always join into the JSON object of the call. Malformed output never raises."""

from __future__ import annotations

import json
import random

import pytest

from lanner.text.output_format import PARSERS, choose_format
from lanner.text.output_parse import JsonScan, parse_all


def _summary(parts):
    """(thinking, content, [(name, arguments)]), checking the parts' own contracts."""
    calls: dict[int, list] = {}
    for p in parts:
        if p.kind == "call_start":
            assert p.index == len(calls) and p.name
            calls[p.index] = [p.name, "", None]
        elif p.kind == "call_args":
            assert calls[p.index][2] is None, "arguments after the call ended"
            calls[p.index][1] += p.text
        elif p.kind == "call_end":
            calls[p.index][2] = p.arguments
    for name, frags, args in calls.values():
        assert args is not None, f"call {name} never ended"
        assert json.loads(frags) == args, (frags, args)  # the fragments join into the object
    return ("".join(p.text for p in parts if p.kind == "thinking"),
            "".join(p.text for p in parts if p.kind == "content"),
            [(n, a) for n, _, a in calls.values()])


def _run(fmt, chunks, **kw):
    p = PARSERS[fmt](**kw)
    parts = []
    for c in chunks:
        parts += p.feed(c)
    return _summary(parts + p.finish())


W = {"city": "Paris", "unit": "celsius"}
CASES = [
    # (format, transcript, thinking, content, calls)
    ("hermes", "<think>\nThe user wants weather.\n</think>\n\nLet me check.\n<tool_call>\n"
               '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
               "</tool_call>", "\nThe user wants weather.\n", "Let me check.", [("get_weather", W)]),
    ("hermes", '<tool_call>\n{"name": "a", "arguments": {"q": "x}y\\"<"}}\n</tool_call>\n'
               '<tool_call>\n{"arguments": {}, "name": "b"}\n</tool_call>', "", "",
     [("a", {"q": 'x}y"<'}), ("b", {})]),
    ("hermes", "<think>reasoning that never closes", "reasoning that never closes", "", []),
    ("hermes", "a <tool_call>not json</tool_call> b", "", "a <tool_call>not json</tool_call> b", []),
    ("hermes", '<tool_call>{"name": "g", "arguments": "{\\"y\\": 2}"}</tool_call>', "", "",
     [("g", {"y": 2})]),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1,, }}</tool_call> x', "",
     ", }}</tool_call> x", [("f", {"a": 1, "": None})]),
    ("hermes", "<thin is not a tag", "", "<thin is not a tag", []),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
     "", "", [("get_weather", W)]),
    ("llama3", '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}',
     "", "", [("a", {"x": 1}), ("b", {})]),
    ("llama3", '{"answer": 42}', "", '{"answer": 42}', []),
    ("llama3", "[1] Introduction", "", "[1] Introduction", []),
    ("mistral", '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": '
                '{"y": "z"}}]', "", "", [("a", {"x": 1}), ("b", {"y": "z"})]),
    ("mistral", 'Sure. [TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}'
                '[TOOL_CALLS]f[ARGS]{}', "", "Sure.", [("get_weather", W), ("f", {})]),
    ("mistral", "[THINK]plan[/THINK]ok", "plan", "ok", []),
    ("mistral", "[TOOL_CALLS]oops, nothing", "", "[TOOL_CALLS]oops, nothing", []),
    ("mistral", '[TOOL_CALLS]f[ARGS]{"a": [1, 2', "", "", [("f", {"a": [1, 2]})]),
    ("harmony", "<|channel|>analysis<|message|>Think first.<|end|><|start|>assistant<|channel|>"
                "final<|message|>The answer.", "Think first.", "The answer.", []),
    ("harmony", "<|channel|>analysis<|message|>need a tool<|end|><|start|>assistant<|channel|>"
                "commentary to=functions.get_weather <|constrain|>json<|message|>"
                '{"city": "Paris", "unit": "celsius"}<|call|>', "need a tool", "",
     [("get_weather", W)]),
    ("harmony", "<|start|>assistant to=functions.g<|channel|>commentary json<|message|>not json",
     "", "", [("g", {})]),
    ("harmony", "<|channel|>analysis<|message|>unfinished", "unfinished", "", []),
    ("harmony", "plain text", "", "plain text", []),
    ("generic", '{"name": "f", "arguments": {"a": 1}}', "", "", [("f", {"a": 1})]),
    ("generic", '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": "}"}}]', "", "",
     [("f", {}), ("g", {"b": "}"})]),
    ("generic", 'text first {"name": "f"}', "", 'text first {"name": "f"}', []),
    ("generic", '{"name": "f", "arguments": {"a": tru', "", "", [("f", {"a": True})]),
]


@pytest.mark.parametrize("fmt,text,thinking,content,calls", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_parser_at_every_split(fmt, text, thinking, content, calls):
    whole = _run(fmt, [text])
    assert whole == (thinking, content, calls)
    assert _run(fmt, list(text)) == whole  # one character at a time
    for i in range(len(text) + 1):
        assert _run(fmt, [text[:i], text[i:]]) == whole, i
    rng = random.Random(len(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(6, len(text))))
        assert _run(fmt, [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]) == whole


def test_thinking_opened_by_the_prompt():
    assert _run("hermes", ["plan</think>\n\nanswer"], thinking_open=True) == ("plan", "answer", [])
    assert _run("hermes", ["<think>x</think>y"], think=False) == ("", "<think>x</think>y", [])


def test_tools_off_keeps_markup_as_content():
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    assert _run("hermes", [text], tools=False) == ("", text, [])
    assert _run("mistral", ["[TOOL_CALLS]f[ARGS]{}"], tools=False) == ("", "[TOOL_CALLS]f[ARGS]{}", [])


def test_first_delta_has_the_name_and_arguments_stream():
    p = PARSERS["hermes"]()
    parts = p.feed('<tool_call>{"name": "get_weather", "arguments": {"ci')
    assert [(x.kind, x.name or x.text) for x in parts] == [("call_start", "get_weather"),
                                                         ("call_args", '{"ci')]
    parts = p.feed('ty": "Paris"}}</tool_call>') + p.finish()
    assert [x.kind for x in parts] == ["call_args", "call_end"]
    assert parts[1].arguments == {"city": "Paris"}


def test_parse_all():
    assert parse_all(PARSERS["hermes"](), "<think>a</think>b") == ("a", "b", [])
    assert parse_all(PARSERS["llama3"](), '{"name": "f", "parameters": {"x": 1}}') == \
        ("", "", [{"name": "f", "arguments": {"x": 1}}])


@pytest.mark.parametrize("text", ['{"a": [1, {"b": "c\\u00e9"}], "d": -1.5e3, "e": null}', "[]",
                                  '"s"', '{"k": true}'])
def test_json_scan_accepts_json(text):
    s = JsonScan()
    assert all(s.push(c) for c in text) and s.done


@pytest.mark.parametrize("text", ['{"a" 1}', "{,}", '{"a": 1,]', '{"a": tx}', "[1 2]", '{"\x01"'])
def test_json_scan_rejects(text):
    s = JsonScan()
    assert not all(s.push(c) for c in text)


@pytest.mark.parametrize("prefix", ['{"a": [1, {"b": "c', '{"a": tr', '{"a', '{"a": ', '[1, -',
                                    '{"a": "\\u00'])
def test_json_scan_closer_completes(prefix):
    s = JsonScan()
    assert all(s.push(c) for c in prefix)
    json.loads(prefix + s.closer())


@pytest.mark.parametrize("arch,template,vocab,fmt", [
    ("gpt-oss", "", (), "harmony"),
    ("llama", "{{ '[TOOL_CALLS]' }}", (), "mistral"),
    ("llama", "", ("[TOOL_CALLS]",), "mistral"),
    ("qwen3", "", (), "hermes"),
    ("llama", "<|im_start|>", (), "hermes"),
    ("llama", "<|start_header_id|>", (), "llama3"),
    ("gemma3", "<start_of_turn>", (), "generic"),
    ("phi3", "<|assistant|>", (), "generic"),
])
def test_choose_format(arch, template, vocab, fmt):
    assert choose_format(arch, template, lambda t: t in vocab) == fmt


_ATOMS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]",
          "[ARGS]", "[THINK]", "[/THINK]", "<|channel|>", "analysis", "final", "commentary",
          " to=functions.f", "<|message|>", "<|end|>", "<|start|>assistant", "<|call|>",
          '{"name": "f", "arguments": ', '{"name": "g", "parameters": {"a": [1, "x"]}}', "{", "}",
          "[", "]", '"', "\\", ",", ";", ":", " ", "\n", "text", "é", "<", "<|", "[TOOL", "null",
          '{"a": 1}', "tru", "-1.5e"]


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_random_output_never_raises_and_splits_agree(fmt):
    """Random mixes of markers, JSON pieces and text: no exception, the same result however
    the text is cut, and every call's fragments join into its arguments (checked by _summary)."""
    rng = random.Random(fmt)
    for _ in range(150):
        text = "".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 14)))
        for kw in ({}, {"think": False}, {"tools": False}):
            whole = _run(fmt, [text], **kw)
            cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text))))
            assert _run(fmt, [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])], **kw) == whole
            assert _run(fmt, list(text), **kw) == whole, text
