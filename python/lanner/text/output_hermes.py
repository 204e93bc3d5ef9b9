"""Hermes / Qwen-style model output: `<think>...</think>` reasoning, then content with any number
of `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.

Owns: HermesParser, a streaming state machine (partial tags held back; a call's name as soon as
it is complete, its arguments as they are generated). Reasoning opens with a leading `<think>`
(or the prompt opened it: thinking_open); a reply that ends inside it is all reasoning.
Must not: know any HTTP dialect; a block that is not a call object stays content, never raises.
"""

from __future__ import annotations

from .output_parse import CallReader, OutputParser, Part, find_tag, partial_suffix

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_WS = " \t\r\n"


class HermesParser(OutputParser):
    format = "hermes"
    tags = (THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE)

    def __init__(self, think: bool = True, tools: bool = True, thinking_open: bool = False):
        super().__init__(think, tools, thinking_open)
        self.mode = "thinking" if self.in_reasoning else ("start" if think else "content")
        self.call: CallReader | None = None
        self.block = ""  # text of the current <tool_call> block (for a fall back to content)

    def _step(self, out: list[Part]) -> bool:
        """Consume from buf; False when the rest must wait for more text."""
        if self.mode == "start":
            s = self.buf.lstrip(_WS)
            if not s or (THINK_OPEN.startswith(s) and s != THINK_OPEN):
                return False
            if s.startswith(THINK_OPEN):
                self.buf, self.mode, self.in_reasoning = s[len(THINK_OPEN):], "thinking", True
            else:
                self.mode = "content"
            return True
        if self.mode == "thinking":
            return self._until(out, THINK_CLOSE, self._thinking, "content")
        if self.mode == "content":
            if not self.tools:
                self._content(out, self.buf)
                self.buf = ""
                return False
            return self._until(out, TOOL_OPEN, self._content, "call")
        if self.mode == "call":
            return self._call_chars(out)
        # after_call: whitespace, then </tool_call> (tolerated when missing)
        s = self.buf.lstrip(_WS)
        if not s or (TOOL_CLOSE.startswith(s) and s != TOOL_CLOSE):
            return False
        self.buf = s[len(TOOL_CLOSE):] if s.startswith(TOOL_CLOSE) else s
        self.mode = "content"
        return True

    def _until(self, out: list[Part], tag: str, emit, next_mode: str) -> bool:
        i, _ = find_tag(self.buf, (tag,))
        if i < 0:
            keep = partial_suffix(self.buf, (tag,))
            emit(out, self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return False
        emit(out, self.buf[:i])
        self.buf = self.buf[i + len(tag):]
        if tag == THINK_CLOSE:
            self.in_reasoning, self._lstrip = False, True
        if next_mode == "call":
            self.call, self.block = CallReader(self), tag
        self.mode = next_mode
        return True

    def _call_chars(self, out: list[Part]) -> bool:
        for n, c in enumerate(self.buf):
            state = self.call.push(c, out)
            if state == "reading":
                self.block += c
                continue
            if state == "done":
                self.buf, self.mode = self.buf[n + 1:], "after_call"
                return True
            self._bad(out)
            self.buf = self.buf[n:]
            return True
        self.buf = ""
        return False

    def _bad(self, out: list[Part]) -> None:
        """The block is not a call object: its text is content (a call already started is
        closed with the arguments read so far)."""
        if not self.call.close(out):
            self._content(out, self.block)
        self.call, self.block, self.mode = None, "", "content"

    def finish(self) -> list[Part]:
        out: list[Part] = []
        rest, self.buf = self.buf, ""  # text no tag can complete now
        if self.mode == "thinking":
            self._thinking(out, rest)
        elif self.mode in ("start", "content"):
            self._content(out, rest)
        elif self.mode == "call":
            self._bad(out)
        self._flush_ws(out)
        self.mode = "content"
        return out
