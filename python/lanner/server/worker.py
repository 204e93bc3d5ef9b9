"""The gunicorn worker `lanner serve` runs: gthread with I/O time limits and a draining stop.

Owns: (1) every blocking read or write on a client socket is limited to `io_timeout_s`
(a client that sends half a header and stalls, or stops reading a stream, loses its
connection and frees its thread; its request is aborted), and a request's head (request line
and headers) must arrive whole within `io_timeout_s` of its thread starting on it (a client
trickling a byte every few seconds is cut too); (2) SIGTERM drains: new requests get
503 + Retry-After, running ones may finish until most of the graceful timeout has passed, then
each ends with its dialect's terminal error event and terminator, and the worker exits.
Must not: know dialects; the app's ServerContext does the draining, this only times it.
"""

from __future__ import annotations

import select
import threading
import time
from concurrent import futures

from gunicorn import util
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker


_DEFER = getattr(gthread, "_DEFER", None)  # gunicorn >= 27: "park this connection in the poller"

DEFAULT_IO_TIMEOUT_S = 30  # when the app is not lanner's (it always is under lanner serve)
DRAIN_SHARE = 0.8    # of the graceful timeout, spent letting running requests finish
FLUSH_S = 0.5        # for ended streams to write their last events before the worker stops


class TimedSocket:
    """A client socket whose blocking mode has a time limit (gunicorn switches sockets
    between non-blocking, for its poller, and blocking, for a request's thread), and whose
    reads may also have an absolute deadline (the request head's)."""

    __slots__ = ("_sock", "_timeout", "_blocking", "deadline")

    def __init__(self, sock, timeout_s: float):
        self._sock, self._timeout = sock, timeout_s
        self._blocking = False
        self.deadline = None  # time.monotonic() by which reads must be done, or None

    def setblocking(self, flag: bool) -> None:
        self._blocking = flag
        self._sock.settimeout(self._timeout if flag else 0.0)

    def _limit_read(self) -> None:
        if self.deadline is None or not self._blocking:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request head did not arrive in time")
        self._sock.settimeout(min(self._timeout, left))

    def recv(self, *args):
        self._limit_read()
        return self._sock.recv(*args)

    def recv_into(self, *args):
        self._limit_read()
        return self._sock.recv_into(*args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


_request_path = threading.local()  # the path of the request whose error is being written


def _write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error replies (414 URI too long, 431 headers too large, a malformed
    request line...) in the dialect of the request's path, as JSON instead of HTML."""
    from .dialect import error_body  # imported here: the arbiter, which loads this module,
    from .errors import ApiError     # must not import the app's modules (numpy, falcon...)

    body = error_body(getattr(_request_path, "path", "") or "", ApiError(status_int, mesg or reason))
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class LannerWorker(ThreadWorker):
    def init_process(self):
        util.write_error = _write_json_error  # this worker process only
        super().init_process()

    def handle_error(self, req, client, addr, exc):
        _request_path.path = getattr(req, "path", None) or getattr(getattr(exc, "req", None), "path", "")
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            _request_path.path = ""

    def enqueue_req(self, conn):
        """A new connection with nothing to read yet waits in the poller, not in a request
        thread (gunicorn would hold a thread for up to 5 s first: 100 idle connections then
        starve /health); every client socket gets the I/O time limit."""
        if not isinstance(conn.sock, TimedSocket):
            ctx = getattr(self.wsgi, "lanner", None)
            conn.sock = TimedSocket(conn.sock, ctx.settings.io_timeout if ctx else DEFAULT_IO_TIMEOUT_S)
        if _DEFER is not None and not conn.initialized and not conn.data_ready and \
                not select.select([conn.sock], [], [], 0)[0]:
            parked = futures.Future()
            parked.set_result(_DEFER)
            self.finish_request(conn, parked)  # runs on the main thread, as accept() does
            return
        super().enqueue_req(conn)

    def handle(self, conn):
        """A request's head must arrive within the I/O time limit in all (not per read)."""
        if isinstance(conn.sock, TimedSocket):
            conn.sock.deadline = time.monotonic() + conn.sock._timeout
        return super().handle(conn)

    def handle_request(self, req, conn):
        if isinstance(conn.sock, TimedSocket):  # the head is in: body and replies use the
            conn.sock.deadline = None           # per-operation limit only
            conn.sock.setblocking(True)
        return super().handle_request(req, conn)

    def handle_exit(self, sig, frame):
        """SIGTERM: drain in a thread, then stop as gunicorn does (the signal handler must
        return at once). SIGQUIT / SIGINT still stop at once."""
        ctx = getattr(self.wsgi, "lanner", None)
        if ctx is None:
            super().handle_exit(sig, frame)
            return
        if ctx.draining:
            return  # the arbiter repeats SIGTERM; the drain thread ends the worker
        ctx.draining = True
        threading.Thread(target=self._drain, args=(ctx, sig, frame), name="lanner-drain",
                         daemon=True).start()

    def _drain(self, ctx, sig, frame) -> None:
        deadline = time.monotonic() + DRAIN_SHARE * self.cfg.graceful_timeout
        while ctx.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        if ctx.busy():
            ctx.end_all("the server is shutting down")
            time.sleep(FLUSH_S)
        ThreadWorker.handle_exit(self, sig, frame)  # stop accepting; gunicorn's own wind-down
