"""JSON tool calls without a model-specific wrapper: a call object (or an array of them) at the
start of the reply, for families with no native format; also the base of the Llama 3 and
Mistral parsers, which add their opening tags.

Owns: JsonCallsParser: optional reasoning between think tags, then content in which a call
section opens at the start of the reply (`{`/`[`, when `at_start`) or at an opening tag
(`call_tags`). A section holds call objects `{"name", "arguments" | "parameters"}`, alone,
separated by `;`/`,`, or in a JSON array; the text after it is content again. Anything that
turns out not to be a call object is content, exactly as generated.
Must not: know any HTTP dialect, or raise on malformed output.
"""

from __future__ import annotations

from typing import Optional

from .output_parse import CallReader, OutputParser, Part, find_tag, partial_suffix

_WS = " \t\r\n"


class JsonCallsParser(OutputParser):
    format = "generic"
    think_tags: Optional[tuple[str, str]] = None   # (open, close)
    call_tags: tuple[str, ...] = ()
    at_start = True                                 # a reply that opens with { or [ is a section

    def __init__(self, think: bool = True, tools: bool = True, thinking_open: bool = False):
        super().__init__(think, tools, thinking_open)
        self.think = think and self.think_tags is not None
        self.in_reasoning = self.in_reasoning and self.think
        self.mode = "thinking" if self.in_reasoning else ("start" if self.think else "body")
        self.call: Optional[CallReader] = None
        self.block = ""          # section text not yet known to be calls (content on fallback)
        self.in_array = False
        self.body_started = False

    # ---- reasoning, content ----

    def _step(self, out: list[Part]) -> bool:
        m = self.mode
        if m == "start":
            op = self.think_tags[0]
            s = self.buf.lstrip(_WS)
            if not s or (op.startswith(s) and s != op):
                return False
            if s.startswith(op):
                self.buf, self.mode, self.in_reasoning = s[len(op):], "thinking", True
            else:
                self.mode = "body"
            return True
        if m == "thinking":
            close = self.think_tags[1]
            i, _ = find_tag(self.buf, (close,))
            if i < 0:
                keep = partial_suffix(self.buf, (close,))
                self._thinking(out, self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                return False
            self._thinking(out, self.buf[:i])
            self.buf, self.mode, self.in_reasoning, self._lstrip = self.buf[i + len(close):], "body", False, True
            return True
        if m == "body":
            s = self.buf.lstrip(_WS)
            if not s:
                return False
            if self.tools and self.at_start and s[0] in "{[":
                self.block, self.buf, self.mode = self.buf[:len(self.buf) - len(s)], s, "section"
                self.body_started = True
                return True
            self.mode = "content"
            return True
        if m == "content":
            return self._content_step(out)
        return self._section_step(out)

    def _content_step(self, out: list[Part]) -> bool:
        tags = self.call_tags if self.tools else ()
        i, tag = find_tag(self.buf, tags)
        if i < 0:
            keep = partial_suffix(self.buf, tags)
            self._content(out, self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return False
        self._content(out, self.buf[:i])
        self.buf, self.block, self.mode = self.buf[i + len(tag):], tag, "section"
        self._opened(tag)
        return True

    def _opened(self, tag: str) -> None:
        """A call tag opened a section (subclasses note which)."""

    # ---- a section of calls ----

    def _section_step(self, out: list[Part]) -> bool:
        """Modes: section (before the first object), obj (inside one), obj_after (between)."""
        while self.buf:
            c = self.buf[0]
            m = self.mode
            if m == "obj":
                state = self.call.push(c, out)
                self.buf = self.buf[1:]
                if state == "reading":
                    self.block += c
                elif state == "done":
                    self.call, self.block, self.mode = None, "", "obj_after"
                else:
                    self.buf = c + self.buf
                    return self._fallback(out)
                continue
            if c in _WS:
                self.block += c
                self.buf = self.buf[1:]
                continue
            if m == "section" and c == "[" and not self.in_array:
                self.in_array = True
            elif c == "{" and (m == "section" or self.block.rstrip(_WS).endswith((";", ",", "["))
                               or (m == "obj_after" and not self.in_array)):
                self.call, self.mode = CallReader(self), "obj"
                continue
            elif m == "obj_after" and c in ";,":
                pass
            elif m == "obj_after" and c == "]" and self.in_array:
                self.buf = self.buf[1:]
                self._end_section()
                return True
            else:
                return self._section_other(out)
            self.block += c
            self.buf = self.buf[1:]
        return False

    def _section_other(self, out: list[Part]) -> bool:
        """A character that is not part of a call list (subclasses may read other forms)."""
        return self._fallback(out)

    def _fallback(self, out: list[Part]) -> bool:
        """The section ends here: a call cut short is closed; text not yet known to be calls
        (and the rest) is content."""
        if self.call is not None and self.call.close(out):
            self.block = ""
        if self.block.strip(_WS) and not (self.n_calls and self.block.strip(_WS) in ";,"):
            self._content(out, self.block)
        self._end_section()
        return True

    def _end_section(self) -> None:
        self.call, self.block, self.in_array, self.mode = None, "", False, "content"

    def finish(self) -> list[Part]:
        out: list[Part] = []
        rest, self.buf = self.buf, ""
        if self.mode == "thinking":
            self._thinking(out, rest)
        elif self.mode in ("start", "body", "content"):
            self._content(out, rest)
        else:
            self._close_section(out)
            self._content(out, rest)
        self._flush_ws(out)
        self.mode = "content"
        return out

    def _close_section(self, out: list[Part]) -> None:
        """The reply ended inside a call section: close it."""
        self._fallback(out)
