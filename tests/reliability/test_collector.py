"""A dead or flapping Collector: cumulative totals come back whole once it returns, handlers
never wait on an export, and every way out (shutdown(), interpreter exit, SIGTERM under
uvicorn) returns within the configured timeout even when the Collector never answers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import routemeter
from support.otlp_receiver import OTLPReceiver

from .hostile import otlp_totals
from .servers import clean_env, free_ports, running, uvicorn_argv

pytestmark = pytest.mark.integration

DURATION = "gen_ai.server.request.duration"


@contextmanager
def blackhole(port: int = 0) -> Iterator[int]:
    """A listener on ``port`` that accepts connections and never answers (a hung Collector)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 5
    while True:
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
        for conn in held:
            conn.close()


@routemeter.route("default")
def handle() -> None:
    rec = routemeter.current()
    rec.requested("gpt-4o-mini")
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=10, output_tokens=5)


class Load:
    """Calls the handler from a thread until stopped; counts calls, keeps their latencies."""

    def __init__(self) -> None:
        self.served = 0
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            handle()
            self.latencies.append(time.perf_counter() - started)
            self.served += 1
            time.sleep(0.0005)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_flapping_collector_loses_no_count(monkeypatch):
    """Collector up, hung, refusing, up: exported total equals requests; no request waits."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "400")
        routemeter.setup(
            exporters="otlp",
            otlp_endpoint=receiver.http_metrics_url,
            export_interval_ms=200,
            set_global=False,
        )
        handle()  # the first commit loads the price table: not part of what is measured
        with Load() as load:
            receiver.wait_for_metric(DURATION)
            receiver.stop()
            with blackhole(receiver.http_port):
                time.sleep(1.2)  # exports hang until their 400 ms timeout
            up_to = len(receiver.received)
            time.sleep(1.0)  # exports are refused
            assert len(receiver.received) == up_to
            receiver.start()
            receiver.wait_for(lambda r: len(r.received) > up_to, what="an export after the outage")
        routemeter.shutdown()
        totals = otlp_totals(receiver.points(DURATION), DURATION)
    assert sum(totals.values()) == load.served + 1
    worst = max(load.latencies)
    print(f"\n{load.served} requests; worst handler latency during the outage {worst * 1e3:.2f} ms")
    assert worst < 0.05


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_shutdown_with_a_hung_collector_returns_within_the_timeout(monkeypatch, protocol):
    """shutdown() with a hung Collector returns within ROUTEMETER_SHUTDOWN_TIMEOUT."""
    handle()
    with blackhole() as port:
        monkeypatch.setenv("ROUTEMETER_SHUTDOWN_TIMEOUT", "1000")
        path = "/v1/metrics" if protocol == "http/protobuf" else ""
        routemeter.setup(
            exporters="otlp",
            otlp_protocol=protocol,
            otlp_endpoint=f"http://127.0.0.1:{port}{path}",
            otlp_timeout_ms=10_000,
            export_interval_ms=3_600_000,
            set_global=False,
        )
        for _ in range(100):
            handle()
        started = time.monotonic()
        routemeter.shutdown()
        took = time.monotonic() - started
    print(f"\nshutdown() with a hung Collector ({protocol}): {took:.2f} s (timeout 1 s)")
    assert took < 1.5


EXIT_SCRIPT = """
import routemeter
@routemeter.route("default")
def handle():
    routemeter.current().requested("gpt-4o")
routemeter.setup(set_global=False)
for _ in range(10):
    handle()
"""


def test_interpreter_exit_with_a_hung_collector_is_bounded():
    """A process ending without shutdown() exits within the timeout despite a hung Collector."""
    with blackhole() as port:
        env = clean_env(
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
                "ROUTEMETER_SHUTDOWN_TIMEOUT": "1000",
            }
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT], env=env, capture_output=True, timeout=60
        )
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    print(f"\nprocess exit with a hung Collector: {took:.2f} s (start-up included; timeout 1 s)")
    assert took < 6


def test_sigterm_under_uvicorn_with_a_hung_collector_is_bounded():
    """uvicorn exits promptly on SIGTERM: the lifespan flush gives up after the timeout."""
    port = free_ports(1)
    with blackhole() as collector:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
            "ROUTEMETER_SHUTDOWN_TIMEOUT": "1000",
        }
        with running(uvicorn_argv("reliability.apps:small", port), env, port) as server:
            started = time.monotonic()
            server.signal()
            code = server.wait(timeout_s=30)
            took = time.monotonic() - started
    print(f"\nuvicorn SIGTERM to exit with a hung Collector: {took:.2f} s (timeout 1 s)")
    assert code in (0, -signal.SIGTERM), server.output  # uvicorn re-raises the signal it handled
    assert "Application shutdown complete" in server.output
    assert took < 3, server.output
