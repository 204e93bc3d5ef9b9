"""gpt-oss Harmony output: messages `<|channel|>NAME[ to=RECIPIENT][ <|constrain|>json]<|message|>
BODY<|end|>`, each after `<|start|>assistant` but the first. The `analysis` channel is reasoning,
`final` is content, `commentary` addressed `to=functions.NAME` is a tool call whose body is
its JSON arguments (ended by `<|call|>`); `commentary` without a recipient is a preamble
(content). `<|return|>` / `<|call|>` end the generation (they arrive as its end, not as text).

Owns: HarmonyParser (headers held until `<|message|>`, bodies streamed, end tags held back).
A reply without Harmony markup is content. Must not: know any HTTP dialect, or raise.
"""

from __future__ import annotations

import re

from .output_parse import (CALL_ARGS, CALL_END, JsonScan, OutputParser, Part, find_tag,
                           loads_object, partial_suffix)

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
END, CALL, RETURN, CONSTRAIN = "<|end|>", "<|call|>", "<|return|>", "<|constrain|>"
_ENDS = (END, CALL, RETURN)
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")


class HarmonyParser(OutputParser):
    format = "harmony"
    tags = (START, CHANNEL, MESSAGE, END, CALL, RETURN, CONSTRAIN)

    def __init__(self, think: bool = True, tools: bool = True, thinking_open: bool = False):
        super().__init__(think, tools, False)
        self.mode = "header"   # header | body
        self.header = ""
        self.route = "content"  # content | thinking | call (of the current body)
        self.index = -1
        self.scan: JsonScan | None = None
        self.args = ""

    def _step(self, out: list[Part]) -> bool:
        if self.mode == "header":
            text = self.header + self.buf
            s = text.lstrip()
            if s and not (s.startswith((START, CHANNEL)) or START.startswith(s) or
                          CHANNEL.startswith(s)):
                self.header, self.buf = "", text
                self.mode, self.route = "body", "content"  # no header: plain content
                return True
            i = text.find(MESSAGE)
            if i < 0:
                self.header, self.buf = text, ""
                return False
            self.header, self.buf = "", text[i + len(MESSAGE):]
            self._open(out, text[:i])
            return True
        i, tag = find_tag(self.buf, _ENDS + (START, CHANNEL))
        if i < 0:
            keep = partial_suffix(self.buf, _ENDS + (START, CHANNEL))
            self._body(out, self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return False
        self._body(out, self.buf[:i])
        self.buf = self.buf[i + (len(tag) if tag in _ENDS else 0):]
        self._close(out)
        return True

    def _open(self, out: list[Part], header: str) -> None:
        """A message starts: route its body by channel and recipient."""
        m = _CHANNEL.search(header)
        channel = m.group(1) if m else ""
        to = _RECIPIENT.search(header)
        self.mode = "body"
        if to is not None and self.tools:
            name = to.group(1)
            name = name[len("functions."):] if name.startswith("functions.") else name
            self.route, self.scan, self.args = "call", JsonScan(), ""
            self.index = self._start_call(out, name)
        elif channel == "analysis":  # never content, even when reasoning was not asked for
            self.route, self.in_reasoning = "thinking", True
        else:
            self.route = "content"

    def _body(self, out: list[Part], text: str) -> None:
        if self.route == "thinking":
            self._thinking(out, text)
        elif self.route == "content":
            self._content(out, text)
        elif self.scan is not None:
            n = 0
            for c in text:
                if self.scan.done:
                    break
                if (self.scan.depth == 0 and c not in " \t\r\n{") or not self.scan.push(c):
                    self.scan = None  # not (or no longer) an object: the rest is dropped
                    break
                n += 1
            self._frag(out, text[:n])

    def _frag(self, out: list[Part], text: str) -> None:
        if not text:
            return
        self.args += text
        if out and out[-1].kind == CALL_ARGS and out[-1].index == self.index:
            out[-1].text += text
        else:
            out.append(Part(CALL_ARGS, text, index=self.index))

    def _close(self, out: list[Part]) -> None:
        """The message ended (an end tag, the next header, or the end of the reply)."""
        if self.route == "call":
            tail = ""
            if not self.args.strip():
                tail = "{}"
            elif self.scan is None or not self.scan.done:
                tail = self._closer()
            self._frag(out, tail)
            out.append(Part(CALL_END, index=self.index,
                            arguments=loads_object(self.args) or {}))
        self.in_reasoning = False
        self.mode, self.route, self.scan, self.args, self.index = "header", "content", None, "", -1

    def _closer(self) -> str:
        scan = JsonScan()
        for c in self.args:
            if not scan.push(c):
                break
        return scan.closer()

    def finish(self) -> list[Part]:
        out: list[Part] = []
        rest, self.buf = self.buf, ""
        if self.mode == "header":
            self._content(out, self.header + rest)  # markup that never became a message
            self.header = ""
        else:
            self._body(out, rest)
            self._close(out)
        self._flush_ws(out)
        return out
