"""The bounded standalone /metrics server (``export/_server.py``) on real loopback sockets:
connections waiting for their request cost no thread, handler threads are capped, every
request head has a deadline, a stalled response is dropped, and shutdown leaves no thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

import routemeter
from routemeter.export import _server
from routemeter.export._server import MAX_HANDLERS, THREAD_NAME, BoundedWSGIServer
from support.net import closed_by_server, still_open

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: router\r\n\r\n"


@routemeter.route("default")
def routed() -> None:
    routemeter.current().requested("gpt-4o")


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def handler_threads() -> list[threading.Thread]:
    return [t for t in server_threads() if t.name != THREAD_NAME]


def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 20 ms for at most ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@contextlib.contextmanager
def running(app=hello) -> Iterator[BoundedWSGIServer]:
    server = BoundedWSGIServer(("127.0.0.1", 0), socket.AF_INET, app)
    thread = threading.Thread(target=server.serve_forever, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def connections(server: BoundedWSGIServer, n: int, send: bytes = b"") -> Iterator[list]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(server.server_address, timeout=5)
            socks.append(s)
            if send:
                s.sendall(send)
        yield socks
    finally:
        for s in socks:
            s.close()


def get(server: BoundedWSGIServer, request: bytes = REQUEST) -> bytes:
    with socket.create_connection(server.server_address, timeout=5) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_waiting_connections_cost_no_thread():
    """300 connections that send nothing or half a request hold no thread; a GET is answered."""
    with (
        running() as server,
        connections(server, 200) as silent,
        connections(server, 100, send=b"GET /metr") as halves,
    ):
        time.sleep(0.2)
        assert len(server_threads()) == 1  # the accepting thread only
        started = time.monotonic()
        assert get(server).startswith(b"HTTP/1.0 200 OK")
        assert get(server).endswith(b"hello")
        assert time.monotonic() - started < 1.0
        assert all(map(still_open, silent + halves))


def test_handler_threads_are_capped():
    """Complete requests beyond MAX_HANDLERS wait for a free handler; no extra thread starts."""
    release = threading.Event()

    def blocking(environ, start_response):
        release.wait(10)
        return hello(environ, start_response)

    extra = 36
    with running(blocking) as server, connections(server, MAX_HANDLERS + extra, REQUEST) as socks:
        try:
            assert until(lambda: len(handler_threads()) == MAX_HANDLERS, 5)
            time.sleep(0.3)
            assert len(handler_threads()) == MAX_HANDLERS
        finally:
            release.set()
        for s in socks:
            s.settimeout(4)
            assert s.recv(65536).startswith(b"HTTP/1.0 200 OK")
        assert until(lambda: not handler_threads(), 2)


def test_request_head_deadline(monkeypatch):
    """A client sending nothing, dribbling its head, or stalling a long head is closed unanswered
    HEAD_TIMEOUT_S after it connected."""
    monkeypatch.setattr(_server, "HEAD_TIMEOUT_S", 0.5)
    long_head = b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * (_server.HEAD_BUFFER + 100)
    with running() as server:
        started = time.monotonic()
        with connections(server, 1) as silent, connections(server, 1, long_head) as long:
            with socket.create_connection(server.server_address, timeout=5) as dribbler:
                for byte in REQUEST:  # a byte every 0.1 s: no single read ever waits long
                    with contextlib.suppress(OSError):
                        dribbler.sendall(bytes([byte]))
                    if closed_by_server(dribbler, within_s=0.1):
                        break
                else:
                    pytest.fail("the dribbling client was never closed")
            for s in (*silent, *long):
                assert closed_by_server(s, within_s=1.5)
        assert 0.45 < time.monotonic() - started < 2.0
        assert get(server).endswith(b"hello")
        assert until(lambda: not handler_threads(), 2)


def test_oldest_waiting_connection_is_closed_beyond_the_limit(monkeypatch):
    """Beyond MAX_WAITING waiting connections the oldest are closed, and the newest served."""
    monkeypatch.setattr(_server, "MAX_WAITING", 4)
    with running() as server, connections(server, 6) as socks:
        assert closed_by_server(socks[0], 1)
        assert closed_by_server(socks[1], 1)
        assert all(map(still_open, socks[2:]))
        assert get(server).endswith(b"hello")


def test_a_response_the_client_does_not_read_is_dropped(monkeypatch):
    """A client that never reads its response frees the handler SEND_TIMEOUT_S later."""
    monkeypatch.setattr(_server, "SEND_TIMEOUT_S", 0.5)
    body = b"x" * (32 << 20)  # more than both sockets' buffers hold

    def big(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    with running(big) as server, socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(server.server_address)
        client.sendall(REQUEST)
        assert until(lambda: len(handler_threads()) == 1, 2)
        assert until(lambda: not handler_threads(), 2)


def test_shutdown_cuts_a_stalled_response_and_leaves_no_thread():
    """shutdown() returns promptly with a response stuck on a client, and no thread remains."""
    body = b"x" * (32 << 20)

    def big(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = BoundedWSGIServer(("127.0.0.1", 0), socket.AF_INET, big)
    thread = threading.Thread(target=server.serve_forever, name=THREAD_NAME, daemon=True)
    thread.start()
    with socket.socket() as client, connections(server, 50):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(server.server_address)
        client.sendall(REQUEST)
        assert until(lambda: len(handler_threads()) == 1, 2)
        started = time.monotonic()
        server.shutdown()
        server.server_close()
        thread.join(1)
        assert time.monotonic() - started < 1.0
        assert server_threads() == []


def test_standalone_endpoint_still_gzips_and_checks_the_token(monkeypatch):
    """Through setup(): gzip when asked, plain otherwise, 401 and the challenge without a token."""
    token = "t0k3n-" + "9f8e7d6c5b4a3210" * 2
    monkeypatch.setenv("ROUTEMETER_METRICS_TOKEN", token)
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0, set_global=False)
    routed()
    url = handle.metrics_url
    assert url is not None
    denied = httpx.get(url, timeout=5)
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Bearer")
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=5) as client:
        zipped = client.get(url, headers={**auth, "accept-encoding": "gzip"})
        plain = client.get(url, headers={**auth, "accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert "gen_ai_server_request_duration_seconds_count" in zipped.text  # decoded by httpx
    assert "gen_ai_server_request_duration_seconds_count" in plain.text
