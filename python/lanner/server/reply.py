"""The reply side every dialect shares: engine events -> the parts each dialect renders.

Owns: Piece (a content or thinking delta, with the tokens whose logprobs it carries), Ending
(how a stream ends: the text released at the end, tool calls, the finish), Reply (a whole
generation, post-processed as the request asked), the finish reason, a token's logprob text,
and `stream`: the one driver that feeds each token's text to the model format's output parser
(content and reasoning pieces, tool calls as start / argument fragments / end, reasoning tokens
counted) and turns engine failures into the dialect's terminal error event; whole replies go
through the same parser. JSON mode streams token by token like text: the engine's grammar
makes the output valid as it is generated.
Must not: build any dialect's JSON; an adapter's StreamRenderer turns parts into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..text.output_format import PARSERS
from ..text.output_parse import CALL_END, CALL_START, CONTENT, THINKING, OutputParser, Part
from ..types import FinishEvent, FinishReason, QueuedEvent, TokenEvent
from .errors import ApiError, engine_error
from .request import Call
from .streaming import Collected
from .structured import check_output


@dataclass
class Piece:
    kind: str                       # "content" | "thinking"
    text: str                       # may be "" (a token whose text is held back, with logprobs)
    tokens: list[TokenEvent] = field(default_factory=list)  # logprobs to render with it


@dataclass
class Ending:
    finish: FinishEvent
    pieces: list[Piece]             # text released at the end
    tool_calls: list[dict]          # every call of the reply: [{"name": str, "arguments": dict}]
    reasoning_tokens: int = 0       # generated tokens spent in reasoning

    @property
    def reason(self) -> str:
        return finish_reason(self.finish, bool(self.tool_calls))


@dataclass
class Reply:
    """A whole generation as the request asked for it: thinking split off, tool calls parsed,
    JSON checked."""

    thinking: str
    text: str
    tool_calls: list[dict]
    tokens: list[TokenEvent]
    finish: FinishEvent
    reasoning_tokens: int = 0

    @property
    def reason(self) -> str:
        return finish_reason(self.finish, bool(self.tool_calls))


def finish_reason(finish: FinishEvent, tool_calls: bool) -> str:
    """'length' | 'tool_calls' | 'stop' (OpenAI's and Ollama's words; Gemini maps its own)."""
    if finish.reason is FinishReason.LENGTH:
        return "length"
    return "tool_calls" if tool_calls else "stop"


def token_text(ev: TokenEvent) -> str:
    """The generated token's own text (its top-logprob entry), even where the text delta is
    held back or merges several tokens."""
    for t in ev.top_logprobs or ():
        if t.token_id == ev.token_id:
            return t.text
    return ev.text


def new_parser(call: Call) -> OutputParser:
    """The output parser of the call's model format, switched as the request asked."""
    return PARSERS[call.output](think=call.think, tools=call.tools,
                                thinking_open=call.thinking_open)


class _Reader:
    """Token texts through the parser: parts, the calls seen, reasoning tokens counted (a token
    read while the reply is inside reasoning, its tags included)."""

    def __init__(self, call: Call):
        self.parser = new_parser(call)
        self.calls: dict[int, dict] = {}
        self.reasoning_tokens = 0
        self.max_calls = call.max_calls

    def token(self, text: str) -> list[Part]:
        was = self.parser.in_reasoning
        parts = self.parser.feed(text) if text else []
        if was or self.parser.in_reasoning or any(p.kind == THINKING for p in parts):
            self.reasoning_tokens += 1
        return self._seen(parts)

    def finish(self, text: str) -> list[Part]:
        parts = self.parser.feed(text) if text else []
        return self._seen(parts + self.parser.finish())

    def _seen(self, parts: list[Part]) -> list[Part]:
        if self.max_calls is not None:  # calls past the limit are dropped
            parts = [p for p in parts if p.index < self.max_calls]
        for p in parts:
            if p.kind == CALL_START:
                self.calls[p.index] = {"name": p.name, "arguments": {}}
            elif p.kind == CALL_END:
                self.calls[p.index]["arguments"] = p.arguments or {}
        return parts

    def tool_calls(self) -> list[dict]:
        return [self.calls[i] for i in sorted(self.calls)]


def whole_reply(call: Call, out: Collected) -> Reply:
    """Post-process a finished generation; ApiError 500 (the engine failed it) or 422 (JSON mode,
    the generation ended on its own - not at max_tokens - and the output is not the JSON asked
    for: under the grammar, only when a stop string cut it short)."""
    ev = out.finish
    if ev.reason is FinishReason.ERROR:
        raise engine_error(ev)
    if call.json is not None:  # JSON mode: the text is the reply (no reasoning or calls)
        text = check_output(out.text, call.json) if ev.reason is FinishReason.STOP else out.text
        return Reply("", text, [], out.tokens, ev)
    r = _Reader(call)
    parts = [p for t in out.tokens for p in r.token(t.text)] + r.finish(ev.text)
    calls = r.tool_calls()
    thinking = "".join(p.text for p in parts if p.kind == THINKING)
    text = "".join(p.text for p in parts if p.kind == CONTENT)
    return Reply(thinking.strip(), text.strip() if calls else text, calls, out.tokens, ev,
                 r.reasoning_tokens)


class StreamRenderer:
    """What an adapter implements to stream one request in its dialect: piece, end and error
    always; head and done where the dialect has a preamble or a terminator."""

    def __init__(self, call: Call):
        self.call = call

    def head(self) -> Iterable[bytes]:  # before any piece
        return ()

    def queued(self, q: QueuedEvent) -> Iterable[bytes]:  # still waiting for a slot (web UI)
        return ()

    def piece(self, p: Piece) -> Iterable[bytes]:  # a delta
        raise NotImplementedError

    def tool(self, p: Part) -> Iterable[bytes]:  # a tool call's start, argument text or end
        return ()                                 # (the calls also come whole in end())

    def end(self, e: Ending) -> Iterable[bytes]:  # the finish: final text, tool calls, usage
        raise NotImplementedError

    def error(self, err: ApiError) -> Iterable[bytes]:  # a terminal error event
        raise NotImplementedError

    def done(self) -> Iterable[bytes]:  # the terminator, after end or error
        return ()


def stream(call: Call, events: Iterable, r: StreamRenderer) -> Iterator[bytes]:
    """Bytes of a streamed reply, a part as soon as the parser releases it."""
    reader = None if call.json is not None else _Reader(call)  # JSON mode: text as it comes
    yield from r.head()
    for ev in events:
        if isinstance(ev, QueuedEvent):
            yield from r.queued(ev)
            continue
        if isinstance(ev, FinishEvent):
            if ev.reason is FinishReason.ERROR:
                yield from r.error(engine_error(ev))
                break
            parts = reader.finish(ev.text) if reader else _text(ev.text)
            pieces: list[Piece] = []
            if any(p.kind not in (CONTENT, THINKING) for p in parts):
                yield from _parts(r, parts, None)  # calls too: everything in order
            else:
                pieces = [Piece(p.kind, p.text) for p in parts if p.text]
            calls = reader.tool_calls() if reader else []
            yield from r.end(Ending(ev, pieces, calls, reader.reasoning_tokens if reader else 0))
            break
        parts = reader.token(ev.text) if reader else _text(ev.text)
        if not any(p.kind in (CONTENT, THINKING) for p in parts) and call.logprobs:
            parts = [Part(CONTENT, "")] + parts  # the token's logprob goes out even while held
        yield from _parts(r, parts, ev if call.logprobs else None)
    yield from r.done()


def _text(text: str) -> list[Part]:
    return [Part(CONTENT, text)] if text else []


def _parts(r: StreamRenderer, parts: list[Part], ev) -> Iterator[bytes]:
    """Each part to the renderer; the token's logprobs ride on its first text piece."""
    for p in parts:
        if p.kind in (CONTENT, THINKING):
            yield from r.piece(Piece(p.kind, p.text, [ev] if ev is not None else []))
            ev = None
        else:
            yield from r.tool(p)
