"""Mistral tool calls: `[TOOL_CALLS]` followed by a JSON array of call objects (v0.3 templates)
or by `name[ARGS]{...}` (v11+ templates, one `[TOOL_CALLS]` per call); `[THINK]...[/THINK]`
reasoning (Magistral).

Owns: MistralParser (JsonCallsParser plus the name[ARGS] form, its arguments streamed as
generated). Must not: know any HTTP dialect, or raise on malformed output.
"""

from __future__ import annotations

from .output_generic import JsonCallsParser
from .output_parse import CALL_ARGS, CALL_END, JsonScan, Part, loads_object

TOOL_CALLS, ARGS = "[TOOL_CALLS]", "[ARGS]"
_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class MistralParser(JsonCallsParser):
    format = "mistral"
    think_tags = ("[THINK]", "[/THINK]")
    call_tags = (TOOL_CALLS,)
    at_start = False
    tags = think_tags + call_tags + (ARGS,)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.name = ""
        self.scan: JsonScan | None = None
        self.args = ""
        self.index = -1

    def _section_step(self, out: list[Part]) -> bool:
        if self.mode == "mname":
            return self._name_step(out)
        if self.mode == "margs":
            return self._args_step(out)
        return super()._section_step(out)

    def _section_other(self, out: list[Part]) -> bool:
        if self.mode == "section" and not self.in_array and self.buf[0] in _NAME:
            self.mode, self.name = "mname", ""
            return True
        return self._fallback(out)

    def _name_step(self, out: list[Part]) -> bool:
        while self.buf:
            c = self.buf[0]
            if c in _NAME:
                self.name += c
                self.block += c
                self.buf = self.buf[1:]
                continue
            rest = self.buf
            if rest.startswith(ARGS) or c == "{":
                self.buf = rest[len(ARGS):] if rest.startswith(ARGS) else rest
                self.block += ARGS if rest.startswith(ARGS) else ""
                self.index = self._start_call(out, self.name)
                self.scan, self.args, self.mode = JsonScan(), "", "margs"
                return True
            if ARGS.startswith(rest):
                return False  # maybe [ARGS], cut
            return self._fallback(out)
        return False

    def _args_step(self, out: list[Part]) -> bool:
        n = 0
        for c in self.buf:
            if (self.scan.depth == 0 and c not in " \t\r\n{") or not self.scan.push(c):
                break  # the arguments must be an object
            n += 1
            self.args += c
            if self.scan.done:
                break
        self._frag(out, self.buf[:n])
        self.buf = self.buf[n:]
        if self.scan.done:
            self._end_call(out, "")
            self.mode = "content"
            return True
        if self.buf:  # not JSON: the call ends here, the rest is content
            self._end_call(out, self.scan.closer() if self.args.strip() else "{}")
            self.mode = "content"
            return True
        return False

    def _frag(self, out: list[Part], text: str) -> None:
        if not text:
            return
        if out and out[-1].kind == CALL_ARGS and out[-1].index == self.index:
            out[-1].text += text
        else:
            out.append(Part(CALL_ARGS, text, index=self.index))

    def _end_call(self, out: list[Part], tail: str) -> None:
        self._frag(out, tail)
        args = loads_object(self.args + tail) or {}
        out.append(Part(CALL_END, index=self.index, arguments=args))
        self.scan, self.index, self.block = None, -1, ""

    def _close_section(self, out: list[Part]) -> None:
        if self.mode == "margs":
            self._end_call(out, self.scan.closer() if self.args.strip() else "{}")
            self.mode = "content"
        else:
            self._fallback(out)
