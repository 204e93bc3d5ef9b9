"""What every model-output parser shares: the parts it emits, tag holdback, and an incremental
JSON scanner that streams a tool call's arguments as they are generated.

Owns: Part (content / thinking text, or a tool call's start, argument fragments and end),
OutputParser (feed text deltas, finish; the base of output_<format>.py), partial-tag holdback,
JsonScan (a character-level JSON syntax checker that knows when a value ends) and CallObject
(`{"name": ..., "arguments" | "parameters": {...}}` read incrementally: the name once known,
then the raw argument text). Parsers decide on characters only, never on where a delta ends.
Must not: know any HTTP dialect, or raise on malformed output (it becomes content).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

CONTENT, THINKING = "content", "thinking"
_WS = " \t\r\n"
CALL_START, CALL_ARGS, CALL_END = "call_start", "call_args", "call_end"


@dataclass
class Part:
    """One parsed piece of output. Text kinds carry `text`; a call has one CALL_START (index,
    name), CALL_ARGS fragments (index, text: pieces of its arguments' JSON text, which together
    are one JSON object) and one CALL_END (index, arguments: the parsed object)."""

    kind: str
    text: str = ""
    index: int = -1
    name: str = ""
    arguments: Optional[dict] = None


class OutputParser:
    """Base of the per-format parsers: feed(delta) -> parts released now; finish() -> the rest
    (an unclosed reasoning block is reasoning; an unfinished call is closed)."""

    format = "plain"
    tags: tuple[str, ...] = ()  # the format's markers (their token ids are kept in the text)

    def __init__(self, think: bool = True, tools: bool = True, thinking_open: bool = False):
        self.think, self.tools = think, tools
        self.n_calls = 0
        self.in_reasoning = thinking_open and think
        self._pending_ws = ""   # whitespace held in content: dropped before a call
        self._lstrip = False    # drop whitespace at the start of the next content
        self.buf = ""           # text fed and not yet consumed by _step

    def feed(self, delta: str) -> list[Part]:
        """Parts released now: the delta is buffered, then consumed step by step."""
        self.buf += delta
        out: list[Part] = []
        while self.buf and self._step(out):
            pass
        return out

    def _step(self, out: list[Part]) -> bool:
        """Consume from buf into out; False when the rest must wait for more text."""
        raise NotImplementedError

    def finish(self) -> list[Part]:
        raise NotImplementedError

    # ---- helpers for subclasses ----

    def _content(self, out: list[Part], text: str) -> None:
        """Content text; trailing whitespace is held until more text follows (so the gaps
        around tool calls are not content)."""
        if self._lstrip:
            text = text.lstrip()
            if not text:
                return
            self._lstrip = False
        body = text.rstrip(_WS)
        if body:
            _text(out, CONTENT, self._pending_ws + body)
            self._pending_ws = ""
        self._pending_ws += text[len(body):]

    def _flush_ws(self, out: list[Part]) -> None:
        if self._pending_ws and not self.n_calls:
            _text(out, CONTENT, self._pending_ws)
        self._pending_ws = ""

    def _thinking(self, out: list[Part], text: str) -> None:
        _text(out, THINKING, text)

    def _start_call(self, out: list[Part], name: str) -> int:
        self._pending_ws = ""
        i = self.n_calls
        self.n_calls += 1
        out.append(Part(CALL_START, index=i, name=name))
        return i


def _text(out: list[Part], kind: str, text: str) -> None:
    if not text:
        return
    if out and out[-1].kind == kind:
        out[-1].text += text
    else:
        out.append(Part(kind, text))


def partial_suffix(text: str, tags) -> int:
    """Length of the longest suffix of text that is a proper prefix of one of tags."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


def find_tag(text: str, tags) -> tuple[int, str]:
    """(index, tag) of the earliest tag in text (the longest at that index); (-1, "") if none."""
    best, which = -1, ""
    for t in tags:
        i = text.find(t)
        if i >= 0 and (best < 0 or i < best or (i == best and len(t) > len(which))):
            best, which = i, t
    return best, which


def parse_all(parser: OutputParser, text: str) -> tuple[str, str, list[dict]]:
    """(thinking, content, calls [{"name", "arguments"}]) of a whole reply, by the same parser
    a stream uses (so both agree)."""
    parts = parser.feed(text) + parser.finish()
    thinking = "".join(p.text for p in parts if p.kind == THINKING)
    content = "".join(p.text for p in parts if p.kind == CONTENT)
    names = {p.index: p.name for p in parts if p.kind == CALL_START}
    calls = [{"name": names[p.index], "arguments": p.arguments or {}}
             for p in parts if p.kind == CALL_END]
    return thinking.strip(), (content.strip() if calls else content), calls


# ---- incremental JSON ----

_SCALAR = set("0123456789+-.eEtruefalsn")


class JsonScan:
    """A JSON value, one character at a time. push(c) -> False once c breaks JSON syntax
    (scanning stops). `done` is True right after the value's last character (a top-level
    scalar other than a string ends at the character after it, which push reports as not
    part of the value via `overrun`)."""

    def __init__(self):
        self.stack: list[str] = []     # "{" | "["
        self.state = "value"           # value | key_or_end | key | colon | after | string | scalar | value_or_end
        self.string_is_key = False
        self.escape = 0                # 0 none, 1 after backslash, 2..5 hex digits left + 1
        self.scalar = ""
        self.done = False
        self.overrun = False
        self.key = ""                  # the last object key read (raw JSON text, quotes included)
        self.key_depth = -1            # depth of the object that key belongs to

    @property
    def depth(self) -> int:
        return len(self.stack)

    def push(self, c: str) -> bool:
        if self.done:
            return False
        s = self.state
        if s == "string":
            return self._string(c)
        if s == "scalar":
            if c in _SCALAR:
                if not _scalar_prefix(self.scalar + c):
                    return False
                self.scalar += c
                return True
            if not _scalar_ok(self.scalar):
                return False
            self.state = "after"
            if not self.stack:
                self.done = self.overrun = True
                return True
            return self.push(c)
        if c in _WS:
            return True
        if s in ("value", "value_or_end"):
            if s == "value_or_end" and c == "]":
                return self._close("[")
            return self._value(c)
        if s in ("key_or_end", "key"):
            if s == "key_or_end" and c == "}":
                return self._close("{")
            if c != '"':
                return False
            self.state, self.string_is_key, self.key = "string", True, '"'
            self.key_depth = self.depth
            return True
        if s == "colon":
            if c != ":":
                return False
            self.state = "value"
            return True
        # after a value
        top = self.stack[-1] if self.stack else None
        if c == "," and top is not None:
            self.state = "key" if top == "{" else "value"
            return True
        if c in "}]" and top == ("{" if c == "}" else "["):
            return self._close(top)
        return False

    def closer(self, depth: int = 0) -> str:
        """Text that completes what was read into valid JSON, closing the containers above
        `depth` (for a value cut short: the characters already sent stay valid)."""
        s, out = self.state, ""
        if s == "string":
            out = ("\\" if self.escape == 1 else "0" * max(0, self.escape - 1)) + '"'
            s = "colon" if self.string_is_key else "after"
        elif s == "scalar":
            t = self.scalar
            lit = next((w for w in ("true", "false", "null") if w.startswith(t)), None)
            out = lit[len(t):] if lit else ("" if t[-1].isdigit() else "0")
            s = "after"
        if s == "colon":
            out += ":null"
        elif s == "value":
            out += "null"
        elif s == "key":
            out += '"":null'
        return out + "".join("}" if c == "{" else "]" for c in reversed(self.stack[depth:]))

    def _value(self, c: str) -> bool:
        if c in "{[":
            self.stack.append(c)
            self.state = "key_or_end" if c == "{" else "value_or_end"
            return True
        if c == '"':
            self.state, self.string_is_key = "string", False
            return True
        if c in "-0123456789tfn":
            self.state, self.scalar = "scalar", c
            return True
        return False

    def _string(self, c: str) -> bool:
        if self.string_is_key:
            self.key += c
        if self.escape == 1:
            if c == "u":
                self.escape = 5
                return True
            if c not in '"\\/bfnrt':
                return False
            self.escape = 0
            return True
        if self.escape > 1:
            if c not in "0123456789abcdefABCDEF":
                return False
            self.escape = self.escape - 1 if self.escape > 2 else 0
            return True
        if c == "\\":
            self.escape = 1
            return True
        if c == '"':
            if self.string_is_key:
                self.state = "colon"
            else:
                self.state = "after"
                self.done = not self.stack
            return True
        return c >= " "  # control characters must be escaped

    def _close(self, which: str) -> bool:
        if not self.stack or self.stack[-1] != which:
            return False
        self.stack.pop()
        self.state = "after"
        self.done = not self.stack
        return True


_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*|\.\d+[eE][+-]?\d*|[eE][+-]?\d*)?)?")


def _scalar_prefix(s: str) -> bool:
    """s can still grow into a JSON literal or number."""
    if s[0] in "tfn":
        return any(w.startswith(s) for w in ("true", "false", "null"))
    return _NUMBER_PREFIX.fullmatch(s) is not None


def _scalar_ok(s: str) -> bool:
    if s in ("true", "false", "null"):
        return True
    try:
        json.loads(s)
    except ValueError:
        return False
    return s[0] in "-0123456789"


def loads_object(text: str) -> Optional[dict]:
    """text as a JSON object, or None (also for a string that holds an object's JSON)."""
    try:
        v = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(v, str):
        return loads_object(v)
    return v if isinstance(v, dict) else None


class CallObject:
    """`{"name": "f", "arguments": {...}}` (or "parameters") read one character at a time.
    `name` is set once its value is complete; `take_args()` gives the argument text read since
    the last call (raw JSON, streamed only when the value is an object; a string value that
    holds JSON is decoded by arguments() at the end).
    `state`: "reading" | "done" (the object closed) | "bad" (not such an object)."""

    def __init__(self):
        self.scan = JsonScan()
        self.state = "reading"
        self.name: Optional[str] = None
        self.raw = ""                # every character read
        self.spans: dict[str, list[int]] = {}  # top-level key -> [start, end (-1 open)] in raw
        self._field = ""             # the top-level key whose value is being read
        self._sent = -1              # raw index up to which argument text was handed out
        self._tail = ""              # closing text added to arguments cut short

    def push(self, c: str) -> None:
        if self.state != "reading":
            return
        sc = self.scan
        depth, before = sc.depth, sc.state
        if not sc.push(c) or (depth == 0 and c not in _WS and c != "{"):
            self.state = "bad"
            return
        self.raw += c
        n = len(self.raw)
        if depth == 1 and before == "colon" and c == ":":
            self._field = _key(sc.key)
        elif depth == 1 and before == "value" and c not in _WS and self._field not in self.spans:
            self.spans[self._field] = [n - 1, -1]
            if self._field in ("arguments", "parameters") and self._sent < 0 and c == "{":
                self._sent = n - 1
        span = self.spans.get(self._field)
        if span is not None and span[1] < 0 and n - 1 > span[0]:  # past the value's first char
            scalar = self.raw[span[0]] not in '{["'
            if (sc.depth == 1 and sc.state in ("after", "key")) or sc.done:
                span[1] = n - 1 if scalar else n
                if self._field == "name":
                    self._set_name()
        if sc.done and self.state == "reading":
            self.state = "done" if self.name else "bad"

    def _set_name(self) -> None:
        st, en = self.spans["name"]
        try:
            v = json.loads(self.raw[st:en])
        except ValueError:
            v = None
        if isinstance(v, str) and v:
            self.name = v
        else:
            self.state = "bad"

    def _args_span(self) -> Optional[list[int]]:
        return self.spans.get("arguments") or self.spans.get("parameters")

    def take_args(self) -> str:
        """Argument text not handed out yet (only while the value is an object and the name
        is known)."""
        span = self._args_span()
        if self._sent < 0 or self.name is None or span is None:
            return ""
        end = span[1] if span[1] >= 0 else len(self.raw)
        out = self.raw[self._sent:end]
        self._sent = end
        return out

    def cut_args(self) -> str:
        """For arguments cut short while streaming: the text that completes those sent into
        a JSON object (the object closed)."""
        span = self._args_span()
        if self._sent < 0 or span is None or span[1] >= 0:
            return ""
        self._tail = self.scan.closer(1)
        return self._tail

    def arguments(self) -> dict:
        """The parsed arguments ({} when absent or not an object)."""
        span = self._args_span()
        if span is None:
            return {}
        end = span[1] if span[1] >= 0 else len(self.raw)
        return loads_object(self.raw[span[0]:end] + self._tail) or {}


def _key(raw: str) -> str:
    try:
        k = json.loads(raw)
    except ValueError:
        return ""
    return k if isinstance(k, str) else ""


class CallReader:
    """One call object fed character by character, emitted as CALL_START (once the name is
    known), CALL_ARGS fragments (argument text as it grows) and CALL_END."""

    def __init__(self, parser: OutputParser, name: Optional[str] = None):
        self.parser = parser
        self.obj = CallObject()
        self.index = -1
        self.sent = False       # some argument text went out
        self.ended = False

    @property
    def started(self) -> bool:
        return self.index >= 0

    def push(self, c: str, out: list[Part]) -> str:
        """Read one character; returns the object's state (reading | done | bad)."""
        o = self.obj
        o.push(c)
        if o.name is not None and self.index < 0:
            self.index = self.parser._start_call(out, o.name)
        if self.index >= 0:
            self._args(out, o.take_args())
        if o.state == "done":
            self.close(out)
        return o.state

    def _args(self, out: list[Part], text: str) -> None:
        if not text:
            return
        self.sent = True
        if out and out[-1].kind == CALL_ARGS and out[-1].index == self.index:
            out[-1].text += text
        else:
            out.append(Part(CALL_ARGS, text, index=self.index))

    def close(self, out: list[Part]) -> bool:
        """End the call (at its end, or cut short); False if it never started."""
        if self.index < 0 or self.ended:
            return self.index >= 0
        self.ended = True
        if self.sent:
            self._args(out, self.obj.cut_args())
        args = self.obj.arguments()
        if not self.sent:
            self._args(out, json.dumps(args, ensure_ascii=False))
        out.append(Part(CALL_END, index=self.index, arguments=args))
        return True
