"""Response framing (SSE, NDJSON) and the WSGI body that ties one response to one engine request.

Owns: ResponseBody, the iterable a streaming responder hands to Falcon. The WSGI server calls
its close() when the response ends or the client goes away (a write fails); if the engine's
RequestStream has not finished by then, close() aborts it so its KV cells are freed.
Also `collect` for non-streaming responses, with the same abort-on-exit guarantee.
Must not: know any dialect's JSON; adapters render events to bytes, this module only frames.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

from ..types import FinishEvent, QueuedEvent, TokenEvent

log = logging.getLogger("lanner.server")

SSE_DONE = b"data: [DONE]\n\n"


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse(obj) -> bytes:
    """One Server-Sent Event carrying a JSON object."""
    return b"data: " + dumps(obj).encode("utf-8") + b"\n\n"


def ndjson(obj) -> bytes:
    """One newline-delimited JSON line."""
    return dumps(obj).encode("utf-8") + b"\n"


class TrackedEvents:
    """Iterates a RequestStream, noting whether its FinishEvent was seen (and calling on_finish)."""

    def __init__(self, stream, on_finish: Optional[Callable[[FinishEvent], None]] = None):
        self.stream = stream
        self.finished: Optional[FinishEvent] = None
        self._on_finish = on_finish
        self._aborted = False

    def __iter__(self) -> Iterator:
        for ev in self.stream:
            if isinstance(ev, FinishEvent):
                self.finished = ev
                if self._on_finish is not None:
                    self._on_finish(ev)
            yield ev
            if isinstance(ev, FinishEvent):
                return

    def abort_if_unfinished(self) -> bool:
        """Close the engine stream if it has not finished; True if that aborted a request
        (the first time only)."""
        if self.finished is not None or self._aborted:
            return False
        self._aborted = True
        try:
            self.stream.close()
        except Exception:  # the client is gone either way; never let cleanup raise into WSGI
            log.exception("closing request stream failed")
        return True


class ResponseBody:
    """WSGI iterable of bytes chunks; close() = response over (done or client gone)."""

    def __init__(self, events: TrackedEvents, chunks: Iterator[bytes],
                 on_abort: Optional[Callable[[], None]] = None,
                 on_close: Optional[Callable[[], None]] = None):
        self.events = events
        self._chunks = chunks
        self._on_abort = on_abort
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> "ResponseBody":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                self._on_close()
            if self.events.abort_if_unfinished() and self._on_abort is not None:
                self._on_abort()


@dataclass
class Collected:
    """A whole generation: the text, each token event, and how it finished."""

    text: str = ""
    tokens: list[TokenEvent] = field(default_factory=list)
    finish: Optional[FinishEvent] = None


def gather(events: Iterable) -> Collected:
    """Every event of a stream into one Collected (text = all deltas incl. held-back text)."""
    out = Collected()
    parts: list[str] = []
    for ev in events:
        if isinstance(ev, QueuedEvent):
            continue
        parts.append(ev.text)
        if isinstance(ev, FinishEvent):
            out.finish = ev
        else:
            out.tokens.append(ev)
    out.text = "".join(parts)
    return out


def collect(events: TrackedEvents, on_abort: Optional[Callable[[], None]] = None) -> Collected:
    """Drain a stream for a non-streaming response; abort it if draining is interrupted."""
    try:
        return gather(events)
    finally:
        if events.abort_if_unfinished() and on_abort is not None:
            on_abort()
