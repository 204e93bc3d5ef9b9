"""Gemini function calling and thinking: request fields -> template tools, tool turns and the
thinking switch; function calls -> reply parts.

Owns: tools[].functionDeclarations (parameters as Gemini Schema, or parametersJsonSchema) as
the template's tools; toolConfig.functionCallingConfig (AUTO, ANY with allowedFunctionNames:
a grammar forces one call of an allowed function, NONE: no tools); functionCall parts (model
turns) and functionResponse parts (user / function turns) as the template's tool calls and
tool messages; generationConfig.thinkingConfig (includeThoughts, thinkingBudget: 0 = off,
thinkingLevel: the reasoning effort); functionCall reply parts.
Must not: submit, or render anything but parts.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Optional

from ...types import Grammar
from ..errors import bad_request
from ..request import opt_bool, opt_int, opt_str, output_format
from ..structured import from_gemini_schema, tool_call_grammar


def _camel(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


def _norm(obj):
    return {_camel(k): v for k, v in obj.items()} if isinstance(obj, dict) else obj


# ---- tools ----

def _declaration(d, path: str) -> dict:
    d = _norm(d)
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
        raise bad_request(f"{path}.name", "must be a non-empty string")
    fn = {"name": d["name"], "description": opt_str(d, "description", f"{path}.description",
                                                    default="")}
    if d.get("parametersJsonSchema") is not None and d.get("parameters") is not None:
        raise bad_request(f"{path}.parameters", "cannot be combined with parametersJsonSchema")
    if d.get("parametersJsonSchema") is not None:
        js = d["parametersJsonSchema"]
        if not isinstance(js, dict):
            raise bad_request(f"{path}.parametersJsonSchema", "must be a JSON Schema object")
        fn["parameters"] = js
    elif d.get("parameters") is not None:
        fn["parameters"] = from_gemini_schema(d["parameters"], f"{path}.parameters")
    else:
        fn["parameters"] = {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def parse_tools(body: dict, ctx) -> tuple[list[dict], Optional[Grammar]]:
    """(tools for the template, the Grammar forcing a call or None)."""
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise bad_request("tools", "must be an array of Tool objects")
    tools: list[dict] = []
    for i, t in enumerate(raw):
        t = _norm(t)
        if not isinstance(t, dict):
            raise bad_request(f"tools[{i}]", "must be an object")
        decls = t.get("functionDeclarations")
        others = [k for k in t if k != "functionDeclarations"]
        if others:
            raise bad_request(f"tools[{i}].{others[0]}", "is not supported: only "
                              "functionDeclarations (the caller runs the functions)")
        if not isinstance(decls, list):
            raise bad_request(f"tools[{i}].functionDeclarations", "must be an array")
        tools += [_declaration(d, f"tools[{i}].functionDeclarations[{j}]") for j, d in enumerate(decls)]
    cfg = _norm(_norm(body.get("toolConfig") or {}).get("functionCallingConfig") or {})
    p = "toolConfig.functionCallingConfig"
    mode = str(opt_str(cfg, "mode", f"{p}.mode", default="AUTO")).upper()
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise bad_request(f"{p}.mode", f"must be AUTO, ANY, NONE or VALIDATED, got {mode!r}")
    names = cfg.get("allowedFunctionNames")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise bad_request(f"{p}.allowedFunctionNames", "must be an array of function names")
    if names and mode != "ANY":
        raise bad_request(f"{p}.allowedFunctionNames", "needs mode ANY")
    if mode == "NONE":
        return [], None
    if mode != "ANY":
        return tools, None
    if not tools:
        raise bad_request(f"{p}.mode", "ANY needs functionDeclarations in tools")
    known = {t["function"]["name"] for t in tools}
    for n in names or ():
        if n not in known:
            raise bad_request(f"{p}.allowedFunctionNames", f"names no declared function: {n!r}")
    return tools, tool_call_grammar(tools, names or None, "tools", output_format(ctx.backend))


def thinking_config(body: dict) -> tuple[Optional[bool], bool, Optional[str]]:
    """(the template's thinking switch or None, includeThoughts, reasoning effort or None)."""
    cfg = _norm(_norm(body.get("generationConfig") or {}).get("thinkingConfig") or {})
    if not isinstance(cfg, dict):
        raise bad_request("generationConfig.thinkingConfig", "must be an object")
    p = "generationConfig.thinkingConfig"
    include = opt_bool(cfg, "includeThoughts", f"{p}.includeThoughts", default=False)
    budget = opt_int(cfg, "thinkingBudget", f"{p}.thinkingBudget", -1)
    level = opt_str(cfg, "thinkingLevel", f"{p}.thinkingLevel")
    if level is not None and level.lower() not in ("low", "medium", "high", "minimal"):
        raise bad_request(f"{p}.thinkingLevel", f"must be low, medium or high, got {level!r}")
    think = None if budget is None or budget < 0 else budget > 0
    if include and think is None:
        think = True
    effort = level.lower() if level else None
    return think, include, effort


# ---- tool turns in contents ----

def has_call_parts(content: dict) -> bool:
    parts = content.get("parts")
    return isinstance(parts, list) and any(
        isinstance(x, dict) and ({"functionCall", "functionResponse", "function_call",
                                  "function_response"} & set(x)) for x in parts)


def tool_turns(content: dict, role: str, path: str) -> list[dict]:
    """A Content with functionCall parts (an assistant turn with tool calls) or functionResponse
    parts (one tool message per response) as template messages."""
    texts, calls, out = [], [], []
    for i, part in enumerate(content.get("parts") or []):
        part = _norm(part)
        pp = f"{path}.parts[{i}]"
        if not isinstance(part, dict):
            raise bad_request(pp, "must be an object")
        if part.get("thought"):
            continue
        if "text" in part:
            if not isinstance(part["text"], str):
                raise bad_request(f"{pp}.text", "must be a string")
            texts.append(part["text"])
        elif "functionCall" in part:
            fc = _norm(part["functionCall"])
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                raise bad_request(f"{pp}.functionCall.name", "must be a string")
            args = fc.get("args") or {}
            if not isinstance(args, dict):
                raise bad_request(f"{pp}.functionCall.args", "must be an object")
            calls.append({"id": fc.get("id") or "call_" + uuid.uuid4().hex[:12],
                          "type": "function", "function": {"name": fc["name"], "arguments": args}})
        elif "functionResponse" in part:
            fr = _norm(part["functionResponse"])
            if not isinstance(fr, dict) or not isinstance(fr.get("name"), str):
                raise bad_request(f"{pp}.functionResponse.name", "must be a string")
            resp = fr.get("response")
            msg = {"role": "tool", "name": fr["name"],
                   "content": json.dumps(resp, ensure_ascii=False) if not isinstance(resp, str) else resp}
            if isinstance(fr.get("id"), str):
                msg["tool_call_id"] = fr["id"]
            out.append(msg)
        else:
            raise bad_request(pp, "unsupported part: text, functionCall and functionResponse "
                                  "parts are accepted")
    if calls or (texts and role == "model"):
        out.insert(0, {"role": "assistant", "content": "".join(texts), "tool_calls": calls})
    elif texts:
        out.append({"role": "user", "content": "".join(texts)})
    return out


# ---- reply ----

def function_call_parts(calls: list[dict]) -> list[dict]:
    return [{"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in calls]
