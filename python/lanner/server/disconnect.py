"""Noticing a client that left before its reply was written.

A streamed reply notices a gone client when a write fails, but a request that writes nothing
for a while (waiting in the queue, prefilling a long prompt, or any non-streamed request) would
run to its end for nobody. Owns: one daemon thread per app that polls the sockets of such
requests (gunicorn hands the socket to the app as `gunicorn.socket`) and, when one reads as
closed (EOF), calls that request's abort: the engine drops it from the queue or stops it within
one step. Must not: read request bytes (it only peeks) or touch a socket after its request ends.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Callable, Optional

log = logging.getLogger("lanner.server")

POLL_S = 0.1  # how often the sockets are looked at


class DisconnectWatcher:
    def __init__(self, poll_s: float = POLL_S):
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[socket.socket, Callable[[], None]]] = {}  # fd -> (sock, abort)
        self._thread: Optional[threading.Thread] = None

    def watch(self, sock: Optional[socket.socket], on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call on_gone (once) if `sock`'s peer closes before the returned `unwatch` is called.
        Without a socket (another WSGI server) nothing is watched."""
        if sock is None or not hasattr(sock, "fileno"):
            return lambda: None
        try:
            fd = sock.fileno()
        except OSError:
            return lambda: None
        with self._lock:
            self._watched[fd] = (sock, on_gone)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lanner-disconnects",
                                                daemon=True)
                self._thread.start()

        def unwatch() -> None:
            with self._lock:
                if self._watched.get(fd, (None,))[0] is sock:
                    del self._watched[fd]
        return unwatch

    def _run(self) -> None:
        poller = select.poll()
        while True:
            with self._lock:
                watched = dict(self._watched)
            for fd in watched:
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            try:
                ready = poller.poll(self._poll_s * 1000) if watched else []
            finally:
                for fd in watched:
                    poller.unregister(fd)
            if not watched:
                threading.Event().wait(self._poll_s)
            for fd, _ in ready:
                self._check(fd, *watched[fd])

    def _check(self, fd: int, sock: socket.socket, on_gone: Callable[[], None]) -> None:
        try:
            gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return
        except OSError:
            gone = True
        with self._lock:
            if self._watched.get(fd, (None,))[0] is not sock:
                return  # the request ended meanwhile
            del self._watched[fd]  # gone, or pipelined bytes of a next request: stop looking
        if gone:
            try:
                on_gone()
            except Exception:
                log.exception("aborting a request whose client left failed")
