"""RequestStream: the consumer's end of one submitted request.

Owns: a thread-safe FIFO of events for one request: QueuedEvents while it waits (only if the
request asked for them), zero or more TokenEvents, then exactly one FinishEvent, after which iteration stops. `close()` asks the engine to abort (a no-op once finished).
Must not: touch the model or the engine's state; the model thread only calls `_put`.
Iterate it from one consumer thread; `close()` may be called from any thread.
"""

from __future__ import annotations

import queue
from typing import Callable, Iterator, Optional, Union

from ..types import FinishEvent, QueuedEvent, TokenEvent

Event = Union[QueuedEvent, TokenEvent, FinishEvent]


class RequestStream(Iterator[Event]):
    """Iterator of TokenEvent ... FinishEvent for the request `id`."""

    def __init__(self, request_id: str, abort: Callable[[str], object]):
        self.id = request_id
        self.finish: Optional[FinishEvent] = None   # set once the FinishEvent was delivered
        self._abort = abort
        self._events: "queue.SimpleQueue[Event]" = queue.SimpleQueue()
        self._finished_put = False                   # the engine has queued the FinishEvent

    # -- engine side (model thread, or the submitting thread for immediate finishes)
    def _put(self, event: Event) -> None:
        if isinstance(event, FinishEvent):
            self._finished_put = True
        self._events.put(event)

    # -- consumer side
    def __iter__(self) -> "RequestStream":
        return self

    def __next__(self) -> Event:
        if self.finish is not None:
            raise StopIteration
        event = self._events.get()
        if isinstance(event, FinishEvent):
            self.finish = event
        return event

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """Next event, or None if none arrived within `timeout` seconds (or after the finish)."""
        if self.finish is not None:
            return None
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, FinishEvent):
            self.finish = event
        return event

    @property
    def done(self) -> bool:
        """True once the engine has finished the request (the FinishEvent may still be unread)."""
        return self._finished_put

    def close(self) -> None:
        """Abort the request (client gone). Remaining events, ending in the FinishEvent, stay readable."""
        if not self._finished_put:
            self._abort(self.id)

    def __enter__(self) -> "RequestStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
