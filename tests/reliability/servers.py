"""Real server processes for the reliability tests: uvicorn and gunicorn on loopback, each in
its own session so the whole process tree can be stopped by the id this harness started."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TESTS_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without any OTEL_/ROUTEMETER_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROUTEMETER_"))}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that were free a moment ago."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first: int = probe.getsockname()[1]
        if first + count > 65535:
            continue
        held = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class Server:
    """A server process and everything it printed."""

    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout_s)


def uvicorn_argv(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(TESTS_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *extra,
    ]  # fmt: skip


def gunicorn_argv(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", app, "--pythonpath", str(TESTS_DIR),
        "--bind", f"127.0.0.1:{port}", "-k", "uvicorn.workers.UvicornWorker",
        "--graceful-timeout", "20", *_no_control_socket(), *extra,
    ]  # fmt: skip


def _no_control_socket() -> list[str]:
    """gunicorn 24+ opens a control socket under ~/.gunicorn unless told not to."""
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


@contextmanager
def running(
    argv: list[str], env: Mapping[str, str], port: int, *, ready: bool = True
) -> Iterator[Server]:
    """Start ``argv``; once ``GET /ready`` on ``port`` answers (any status), yield the server.
    On exit the process (its session) is stopped: SIGTERM, then SIGKILL if it lingers."""
    process = subprocess.Popen(
        argv,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: server.lines.extend(stdout), daemon=True)
    reader.start()
    try:
        if ready:
            wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        reader.join(timeout=10)
        stdout.close()


def wait_ready(server: Server, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output}")
        try:
            urllib.request.urlopen(f"{server.url}/ready", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout_s}s:\n{server.output}") from None
            time.sleep(0.1)


def client(url: str, concurrency: int = 16) -> httpx.AsyncClient:
    """A client opening a new connection per request: requests spread over a server's workers
    (each connection goes to whichever worker accepts it)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=30)


async def tally_pids(url: str, requests: int, concurrency: int = 16) -> Counter[int]:
    """GET /work ``requests`` times; how many each worker pid answered."""
    async with client(url, concurrency) as http:
        todo = iter(range(requests))

        async def worker() -> Counter[int]:
            seen: Counter[int] = Counter()
            for _ in todo:
                r = await http.get("/work")
                r.raise_for_status()
                seen[r.json()["pid"]] += 1
            return seen

        return sum(await asyncio.gather(*(worker() for _ in range(concurrency))), Counter())
