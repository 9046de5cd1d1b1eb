"""Detection of sibling worker processes that share the app's listening socket: a scrape of
that port would reach any one of them (Linux ``/proc``)."""

from __future__ import annotations

import os
import socket
from typing import Final

MAX_SIBLINGS_EXAMINED: Final = 512


def _listening_sockets() -> set[str]:
    """``socket:[inode]`` of every listening socket this process holds (Linux ``/proc``)."""
    found: set[str] = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not link.startswith("socket:["):
            continue
        try:
            with socket.socket(fileno=os.dup(int(name))) as s:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    found.add(link)
        except OSError:
            continue
    return found


def _siblings() -> list[int]:
    """Other children of this process's parent."""
    me, parent = os.getpid(), os.getppid()
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            return [int(p) for p in f.read().split() if int(p) != me]
    except OSError:
        pass
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent:
            found.append(int(name))
    return found


def _holds_any(pid: int, sockets: set[str]) -> bool:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in sockets:
                return True
        except OSError:
            continue
    return False


def sharing_workers() -> int:
    """How many other worker processes (children of the same parent) hold a listening socket
    this process holds: uvicorn ``--workers``, gunicorn and hypercorn workers all accept on the
    socket their parent opened. 0 when there are none, or when this cannot be known (no
    ``/proc``: not Linux)."""
    try:
        sockets = _listening_sockets()
        if not sockets:
            return 0
        siblings = _siblings()[:MAX_SIBLINGS_EXAMINED]
        return sum(1 for pid in siblings if _holds_any(pid, sockets))
    except OSError:
        return 0


class WorkerCheck:
    """Answers "do sibling workers share this listener?", re-checked on each call until the
    answer is yes (workers start one after another; once seen, the answer stays)."""

    def __init__(self) -> None:
        self.workers = 0

    def shared(self) -> int:
        """Sibling workers sharing the listener (0: none seen so far)."""
        if not self.workers:
            self.workers = sharing_workers()
        return self.workers


def shared_port_body(workers: int) -> bytes:
    return (
        f"routemeter: this process is one of {workers + 1} workers sharing this port, so a"
        " scrape here would show one worker's numbers as if they were the server's. Push OTLP"
        " instead (OTEL_METRICS_EXPORTER=otlp), or give each worker its own standalone"
        " /metrics port (OTEL_EXPORTER_PROMETHEUS_PORT with ROUTEMETER_PROMETHEUS_WORKER_PORTS"
        " set to the worker count) and scrape every port. See docs/reliability.md.\n"
    ).encode()
