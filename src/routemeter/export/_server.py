"""The standalone /metrics server: the standard library's WSGI server, with bounds.

prometheus_client's server starts a thread for every connection and then waits for its request
without a timeout, so idle or slow clients hold any number of threads and delay the scrape.
This subclass of the same ``wsgiref`` server hands connections out differently:

- one thread (``serve_forever``) accepts connections and reads their request heads as bytes
  arrive, so a client that sends nothing, or sends its head slowly, costs a file descriptor and
  a few bytes, not a thread;
- a connection whose head is complete gets a handler thread (wsgiref's handler, unchanged but
  for timeouts), at most ``MAX_HANDLERS`` at a time; the others wait their turn, oldest first;
- a connection not reading its request head by ``HEAD_TIMEOUT_S`` after it was accepted
  (whether it sent too little or waited for a handler) is closed unanswered; each write of the
  response then gets ``SEND_TIMEOUT_S``;
- at most ``MAX_WAITING`` accepted connections wait; beyond, the oldest is closed.

A scrape therefore waits for nobody who sends nothing or dribbles a request: only
``MAX_HANDLERS`` clients that stop reading their responses can hold it up.
"""

from __future__ import annotations

import errno
import io
import re
import selectors
import socket
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from _typeshed import ReadableBuffer, WriteableBuffer

HEAD_TIMEOUT_S = 5.0  # accept to end of request head; Prometheus sends its head at once
SEND_TIMEOUT_S = 10.0  # each write of the response: Prometheus's default scrape_timeout
MAX_HANDLERS = 64  # handler threads at once; a scrape holds one for milliseconds
MAX_WAITING = 512  # accepted connections waiting for a head or a handler (a descriptor each)
HEAD_BUFFER = 8192  # head bytes read before a handler takes over (a scrape's are ~200)
BACKLOG = 512  # listen() backlog; socketserver's 5 made connecting clients retry after 1 s
SHUTDOWN_WAIT_S = 1.0  # shutdown() waits this long for the handlers it cuts off
THREAD_NAME = "routemeter-metrics"  # the accepting thread; handlers add "-handler"
_END_OF_HEAD = re.compile(rb"\n\r?\n")


class _Connection(io.RawIOBase):
    """A handler's socket: the head read so far, then the socket's bytes, each read bounded by
    what is left of the head's deadline; each write bounded by ``SEND_TIMEOUT_S``. A response
    the client does not take in time ends as if the client went away: quietly."""

    def __init__(self, sock: socket.socket, deadline: float, head: bytes) -> None:
        self._sock, self._deadline, self._head = sock, deadline, head

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._head:
            with memoryview(buffer) as view:
                n = min(view.nbytes, len(self._head))
                view.cast("B")[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request head not received in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)

    def write(self, data: ReadableBuffer) -> int:
        self._sock.settimeout(SEND_TIMEOUT_S)
        try:
            self._sock.sendall(data)
        except TimeoutError as e:  # wsgiref logs a traceback for this one, not for a gone client
            raise BrokenPipeError("response not taken in time") from e
        with memoryview(data) as view:
            return view.nbytes


class Handler(WSGIRequestHandler):
    """wsgiref's handler, silent, on a ``_Connection``: the head within ``deadline``
    (``HEAD_TIMEOUT_S`` from now unless given), starting with the ``head`` read so far."""

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: Any,
        deadline: float | None = None,
        head: bytes = b"",
    ) -> None:
        self.deadline = time.monotonic() + HEAD_TIMEOUT_S if deadline is None else deadline
        self.head = head
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        conn = _Connection(self.request, self.deadline, self.head)
        self.rfile, self.wfile = io.BufferedReader(conn), io.BufferedWriter(conn)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(slots=True)
class _Pending:
    conn: socket.socket
    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    ready: bool = False  # the head is complete: waits for a handler


class BoundedWSGIServer(WSGIServer):
    """wsgiref's server with the accept loop described above. ``shutdown()`` closes every
    waiting connection and cuts those being answered, so no thread outlives it."""

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], family: int, app: WSGIApplication) -> None:
        self.address_family = family
        self._pending: dict[socket.socket, _Pending] = {}  # in order of acceptance
        self._slots = threading.Semaphore(MAX_HANDLERS)
        self._handling: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()  # guards _handling
        self._stopping = False
        self._stopped = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        super().__init__(address, Handler)  # binds, or calls server_close() and raises OSError
        self.set_app(app)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept, read heads and dispatch until ``shutdown()``; wakes on events, never polls."""
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._until_next_deadline()):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._receive(key.data)
                self._expire()
                self._dispatch()
        finally:
            for p in list(self._pending.values()):
                self._close(p)
            self._stopped.set()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake()
        self._stopped.wait()
        with self._lock:
            handling = dict(self._handling)
            for conn in handling.values():
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + SHUTDOWN_WAIT_S
        for thread in handling:
            thread.join(max(0.0, end - time.monotonic()))

    def server_close(self) -> None:
        super().server_close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out, reset or vanish are routine here; anything else is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def _accept(self) -> None:
        try:
            conn, address = self.get_request()
        except OSError as e:  # the client left already, or this process is out of descriptors
            if e.errno in (errno.EMFILE, errno.ENFILE) and self._pending:
                self._close(next(iter(self._pending.values())))
            return
        if len(self._pending) >= MAX_WAITING:
            self._close(next(iter(self._pending.values())))
        conn.setblocking(False)  # _Connection sets a timeout before each read and write
        p = _Pending(conn, address, time.monotonic() + HEAD_TIMEOUT_S)
        self._pending[conn] = p
        self._selector.register(conn, selectors.EVENT_READ, p)

    def _receive(self, p: _Pending) -> None:
        if self._pending.get(p.conn) is not p:  # closed since select() returned
            return
        try:
            chunk = p.conn.recv(HEAD_BUFFER)
        except BlockingIOError:  # not readable after all
            return
        except OSError:
            self._close(p)
            return
        seen = len(p.head)
        p.head += chunk
        if not p.head:  # closed without a word
            self._close(p)
        elif not chunk or len(p.head) >= HEAD_BUFFER or _END_OF_HEAD.search(p.head, seen - 2):
            self._selector.unregister(p.conn)
            p.ready = True

    def _until_next_deadline(self) -> float | None:
        oldest = next(iter(self._pending.values()), None)
        return None if oldest is None else max(0.0, oldest.deadline - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.deadline > now:
                return
            self._close(oldest)

    def _dispatch(self) -> None:
        for p in [p for p in self._pending.values() if p.ready]:
            if not self._slots.acquire(blocking=False):
                return
            del self._pending[p.conn]
            thread = threading.Thread(
                target=self._handle, args=(p,), name=f"{THREAD_NAME}-handler", daemon=True
            )
            with self._lock:
                self._handling[thread] = p.conn
            try:
                thread.start()
            except RuntimeError:  # no thread to be had (interpreter exit, thread limit)
                with self._lock:
                    del self._handling[thread]
                self._slots.release()
                self.shutdown_request(p.conn)

    def _handle(self, p: _Pending) -> None:
        try:
            Handler(p.conn, p.address, self, p.deadline, bytes(p.head))
        except Exception:
            self.handle_error(p.conn, p.address)
        finally:
            with self._lock:  # before closing, so shutdown() never cuts a reused descriptor
                del self._handling[threading.current_thread()]
            self.shutdown_request(p.conn)
            self._slots.release()
            self._wake()

    def _close(self, p: _Pending) -> None:
        del self._pending[p.conn]
        if not p.ready:
            self._selector.unregister(p.conn)
        self.shutdown_request(p.conn)

    def _wake(self) -> None:
        with suppress(OSError):  # full: the loop is awake already; closed: it has stopped
            self._wake_w.send(b"\0")
