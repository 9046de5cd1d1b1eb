"""Loopback port helpers shared by the test harnesses."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is released before returning, so a child process (Prometheus) can bind it; another
    process could grab it in between, which callers that can bind port 0 themselves avoid.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """The server closed ``sock`` (EOF or reset) within ``within_s``, unanswered."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    """Not closed by the server (yet): nothing to read, no EOF."""
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False
