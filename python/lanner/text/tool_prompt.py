"""Tools and tool turns for chat templates that do not render them.

Owns: what a model whose chat template ignores tools is told instead, in its own output format
(a system instruction listing the tools as JSON Schema and the call syntax its parser reads),
and the history rewritten as text such a template can render: an assistant's tool calls as
call text, a tool result as a user turn. Templates that handle tools get the messages as they
are (Hugging Face conventions: `tools=`, `tool_calls` with object arguments, role "tool").
Must not: tokenize, or know any HTTP dialect.
"""

from __future__ import annotations

import json
from typing import Optional

_CALL_SYNTAX = {
    "hermes": ('To call a function, answer with a JSON object {"name": <function name>, '
               '"arguments": <arguments object>} inside <tool_call></tool_call> tags; use one '
               "such block per call."),
    "llama3": ('To call a function, answer only with a JSON object {"name": <function name>, '
               '"parameters": <arguments object>}.'),
    "mistral": ('To call functions, answer with [TOOL_CALLS] followed by a JSON array of '
                '{"name": <function name>, "arguments": <arguments object>} objects.'),
    "generic": ('To call a function, answer only with a JSON object {"name": <function name>, '
                '"arguments": <arguments object>}.'),
}


def handles_tools(template_source: str) -> bool:
    """The chat template renders tools and tool turns itself."""
    return "tool" in (template_source or "")


def _functions(tools: list) -> list[dict]:
    return [t["function"] if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
            for t in tools]


def instruction(fmt: str, tools: list) -> str:
    lines = "\n".join(json.dumps(f, ensure_ascii=False) for f in _functions(tools))
    return ("You can call the following functions, described as JSON Schema:\n<tools>\n" + lines +
            "\n</tools>\n" + _CALL_SYNTAX.get(fmt, _CALL_SYNTAX["generic"]) +
            " After a call, the results come back in the next user turn; answer normally when "
            "no call is needed.")


def call_text(fmt: str, calls: list) -> str:
    """An assistant's earlier tool calls written the way the format's parser reads them."""
    objs = []
    for c in calls:
        fn = c.get("function", c) if isinstance(c, dict) else {}
        objs.append({"name": fn.get("name"), "arguments": fn.get("arguments") or {}})
    if fmt == "hermes":
        return "\n".join("<tool_call>\n" + json.dumps(o, ensure_ascii=False) + "\n</tool_call>"
                         for o in objs)
    if fmt == "mistral":
        return "[TOOL_CALLS]" + json.dumps(objs, ensure_ascii=False)
    key = "parameters" if fmt == "llama3" else "arguments"
    return "; ".join(json.dumps({"name": o["name"], key: o["arguments"]}, ensure_ascii=False)
                     for o in objs)


def result_text(fmt: str, m: dict) -> str:
    name = m.get("name") or "the function"
    body = m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
    if fmt == "hermes":
        return f"<tool_response>\n{body}\n</tool_response>"
    return f"Result of {name}:\n{body}"


def fallback(fmt: str, messages: list[dict], tools: Optional[list]) -> list[dict]:
    """messages for a template without tool support: the instruction merged into the system
    message (one added first if none), calls and results as plain turns."""
    out: list[dict] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            text = result_text(fmt, m)
            if out and out[-1]["role"] == "user" and out[-1].get("_results"):
                out[-1]["content"] += "\n" + text  # results of one turn's calls together
            else:
                out.append({"role": "user", "content": text, "_results": True})
            continue
        m = {k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id", "name")}
        out.append(m)
    _attach_calls(fmt, messages, out)
    out = [{k: v for k, v in m.items() if k != "_results"} for m in out]
    if tools:
        text = instruction(fmt, tools)
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0] = dict(out[0], content=out[0]["content"] + "\n\n" + text)
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _attach_calls(fmt: str, messages: list[dict], out: list[dict]) -> None:
    """Each assistant message's tool calls appended to its content, as call text."""
    calls = [m.get("tool_calls") for m in messages if m.get("role") != "tool"]
    for m, c in zip(out, calls):
        if c:
            text = m.get("content") if isinstance(m.get("content"), str) else ""
            m["content"] = (text + "\n" if text else "") + call_text(fmt, c)


def tool_names(messages: list[dict]) -> list[dict]:
    """Tool-result messages get the called function's `name` (from tool_call_id, or the
    Ollama-style tool_name) when they lack one, as templates read it."""
    by_id: dict[str, str] = {}
    out = []
    for m in messages:
        for c in m.get("tool_calls") or ():
            fn = c.get("function") or {}
            if c.get("id") and fn.get("name"):
                by_id[c["id"]] = fn["name"]
        if m.get("role") == "tool" and not m.get("name"):
            name = m.get("tool_name") or by_id.get(m.get("tool_call_id") or "")
            if name:
                m = dict(m, name=name)
        out.append(m)
    return out
