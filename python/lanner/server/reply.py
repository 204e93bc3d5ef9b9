"""The reply side every dialect shares: engine events -> the parts each dialect renders.

Owns: Piece (a content or thinking delta, with the tokens whose logprobs it carries), Ending
(how a stream ends: the text released at the end, tool calls, the finish), Reply (a whole
generation, post-processed as the request asked), the finish reason, a token's logprob text,
and `stream`: the one driver that routes text, holds back tags, and turns engine failures into
the dialect's terminal error event. JSON mode streams token by token like text: the engine's
grammar makes the output valid as it is generated.
Must not: build any dialect's JSON; an adapter's StreamRenderer turns parts into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..text.output_hermes import TextRouter, split_thinking, split_tool_calls
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
    pieces: list[Piece]             # text released at the end, before any tool call
    tool_calls: list[dict]          # [{"name": str, "arguments": dict}]

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


def whole_reply(call: Call, out: Collected) -> Reply:
    """Post-process a finished generation; ApiError 500 (the engine failed it) or 422 (JSON mode,
    the generation ended on its own - not at max_tokens - and the output is not the JSON asked
    for: under the grammar, only when a stop string cut it short)."""
    ev = out.finish
    if ev.reason is FinishReason.ERROR:
        raise engine_error(ev)
    thinking, text = split_thinking(out.text) if call.think else ("", out.text)
    calls: list[dict] = []
    if call.tools:
        text, calls = split_tool_calls(text)
    if call.json is not None and ev.reason is FinishReason.STOP:
        text = check_output(text, call.json)
    return Reply(thinking, text, calls, out.tokens, ev)


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

    def end(self, e: Ending) -> Iterable[bytes]:  # the finish: final text, tool calls, usage
        raise NotImplementedError

    def error(self, err: ApiError) -> Iterable[bytes]:  # a terminal error event
        raise NotImplementedError

    def done(self) -> Iterable[bytes]:  # the terminator, after end or error
        return ()


def stream(call: Call, events: Iterable, r: StreamRenderer) -> Iterator[bytes]:
    """Bytes of a streamed reply, a part as soon as the router releases it."""
    router = TextRouter(think=call.think, tools=call.tools)
    yield from r.head()
    for ev in events:
        if isinstance(ev, QueuedEvent):
            yield from r.queued(ev)
            continue
        if isinstance(ev, FinishEvent):
            if ev.reason is FinishReason.ERROR:
                yield from r.error(engine_error(ev))
                break
            pieces = router.feed(ev.text) if ev.text else []
            more, calls = router.finish()
            yield from r.end(Ending(ev, [Piece(k, t) for k, t in pieces + more], calls))
            break
        pieces = router.feed(ev.text)
        if not pieces and call.logprobs:
            pieces = [("content", "")]  # the token's logprob goes out even while its text is held
        for i, (kind, text) in enumerate(pieces):
            yield from r.piece(Piece(kind, text, [ev] if call.logprobs and i == 0 else []))
    yield from r.done()
