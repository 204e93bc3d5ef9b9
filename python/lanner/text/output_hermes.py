"""Hermes / Qwen-style model output: `<think>...</think>` reasoning and
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in generated text.

Owns: splitting a whole reply (split_thinking, split_tool_calls) and the streaming split
(TextRouter: content / thinking deltas, partial tags held back, tool-call blocks returned whole).
Must not: know any HTTP dialect; malformed blocks stay content, never raise.
"""

from __future__ import annotations

import json
import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, content). A reply that opens with <think> (or has only a closing </think>,
    when the template opened it) has its reasoning split off."""
    s = text.lstrip()
    if s.startswith(THINK_OPEN):
        s = s[len(THINK_OPEN):]
        if THINK_CLOSE in s:
            thinking, content = s.split(THINK_CLOSE, 1)
            return thinking.strip(), content.lstrip()
        return s.strip(), ""
    if THINK_CLOSE in text and THINK_OPEN not in text:
        thinking, content = text.split(THINK_CLOSE, 1)
        return thinking.strip(), content.lstrip()
    return "", text


_TOOL_RE = re.compile(re.escape(TOOL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CLOSE) + r"|$)", re.S)


def split_tool_calls(text: str) -> tuple[str, list[dict]]:
    """(content, calls): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks
    become {"name", "arguments": dict}; blocks that are not such JSON stay in the content."""
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1).strip())
        except ValueError:
            return m.group(0)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return m.group(0)
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"value": args}
        calls.append({"name": obj["name"], "arguments": args if isinstance(args, dict) else {}})
        return ""

    content = _TOOL_RE.sub(take, text) if TOOL_OPEN in text else text
    return (content.strip() if calls else content), calls


class TextRouter:
    """Streaming split of generated text into ('content' | 'thinking', delta) pieces, holding
    back tool-call blocks (returned whole by finish()). A partial tag at the end of a delta is
    held until the next delta decides it."""

    def __init__(self, think: bool, tools: bool):
        self.think, self.tools = think, tools
        self.mode = "start" if think else "content"  # start | thinking | content | tool
        self.buf = ""
        self.tool_text = ""

    def _tags(self) -> list[str]:
        tags = []
        if self.mode in ("start", "thinking") and self.think:
            tags.append(THINK_CLOSE if self.mode == "thinking" else THINK_OPEN)
            if self.mode == "start":
                tags.append(THINK_CLOSE)
        if self.tools and self.mode in ("content", "start"):
            tags.append(TOOL_OPEN)
        if self.mode == "tool":
            tags.append(TOOL_CLOSE)
        return tags

    def feed(self, delta: str) -> list[tuple[str, str]]:
        self.buf += delta
        out: list[tuple[str, str]] = []
        while self.buf:
            if self.mode == "start":
                stripped = self.buf.lstrip()
                if not stripped:
                    return out
                if THINK_OPEN.startswith(stripped) and len(stripped) < len(THINK_OPEN):
                    return out  # maybe the start of <think>
                if stripped.startswith(THINK_OPEN):
                    self.buf = stripped[len(THINK_OPEN):]
                    self.mode = "thinking"
                    continue
                self.mode = "content"
                # a template that opened <think> itself: text up to a bare </think> is thinking
                if THINK_CLOSE in self.buf:
                    thinking, self.buf = self.buf.split(THINK_CLOSE, 1)
                    out.append(("thinking", thinking))
                    continue
            tags = self._tags()
            hit = min(((self.buf.find(t), t) for t in tags if t in self.buf), default=None)
            if hit is not None:
                i, tag = hit
                self._emit(out, self.buf[:i])
                self.buf = self.buf[i + len(tag):]
                if tag == THINK_CLOSE:
                    self.mode = "content"
                elif tag == TOOL_OPEN:
                    self.mode = "tool"
                    self.tool_text += TOOL_OPEN
                elif tag == TOOL_CLOSE:
                    self.tool_text += TOOL_CLOSE
                    self.mode = "content"
                continue
            keep = max((_partial_suffix(self.buf, t) for t in tags), default=0)
            self._emit(out, self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return out
        return out

    def _emit(self, out: list, text: str) -> None:
        if not text:
            return
        if self.mode == "tool":
            self.tool_text += text
        else:
            out.append(("thinking" if self.mode == "thinking" else "content", text))

    def finish(self) -> tuple[list[tuple[str, str]], list[dict]]:
        """Flush held text; the tool calls parsed from every held-back block."""
        out: list[tuple[str, str]] = []
        rest, self.buf = self.buf, ""
        if self.mode == "start":
            self.mode = "content"
        self._emit(out, rest)
        leftover, calls = split_tool_calls(self.tool_text) if self.tool_text else ("", [])
        if leftover.strip():
            out.append(("content", leftover))
        return out, calls


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
