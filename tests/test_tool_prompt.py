"""Tools for chat templates without tool support (lanner.text.tool_prompt), and the prompt
opening a reasoning block (the reply then starts inside it)."""

from __future__ import annotations

import json

import pytest

from fake_backend import FakeLLM
from lanner.text import tool_prompt
from lanner.text.output_format import PARSERS
from lanner.text.output_parse import parse_all
from server_helpers import make_client

TOOL = {"type": "function", "function": {"name": "f", "description": "d",
                                         "parameters": {"type": "object"}}}
HISTORY = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
           {"role": "tool", "tool_call_id": "c1", "content": "42"},
           {"role": "tool", "tool_call_id": "c1", "content": "43"}]


@pytest.mark.parametrize("fmt", ["hermes", "llama3", "mistral", "generic"])
def test_fallback_turns_read_back_by_the_family_parser(fmt):
    out = tool_prompt.fallback(fmt, tool_prompt.tool_names(HISTORY), [TOOL])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and json.dumps(TOOL["function"]) in out[0]["content"]
    assert "42" in out[3]["content"] and "43" in out[3]["content"]  # one turn's results together
    # the call written into the history is what the family's parser reads as that call
    assert parse_all(PARSERS[fmt](), out[2]["content"])[2] == [{"name": "f", "arguments": {"x": 1}}]
    assert all(set(m) == {"role", "content"} for m in out)


def test_tool_names_from_call_ids_and_ollama_tool_name():
    out = tool_prompt.tool_names(HISTORY + [{"role": "tool", "tool_name": "g", "content": "1"}])
    assert [m.get("name") for m in out if m["role"] == "tool"] == ["f", "f", "g"]


def test_handles_tools():
    assert tool_prompt.handles_tools("{% for t in tools %}{% endfor %}")
    assert not tool_prompt.handles_tools("{% for m in messages %}{{ m.content }}{% endfor %}")


class _OpenThink(FakeLLM):
    """A template whose generation prompt opens <think> (the reply starts inside it)."""

    def chat_tokens(self, messages, tools=None, add_generation_prompt=True, **kw):
        return super().chat_tokens(messages, tools, add_generation_prompt, **kw) + \
            self.tokenize("<think>\n", add_special=False)


def test_prompt_that_opens_reasoning():
    c = make_client(_OpenThink(reply="Let me see.</think>\n\nThe answer is 4."))
    r = c.simulate_post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "2+2"}]})
    msg = r.json["choices"][0]["message"]
    assert msg["reasoning_content"] == "Let me see." and msg["content"] == "The answer is 4."
    assert r.json["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
