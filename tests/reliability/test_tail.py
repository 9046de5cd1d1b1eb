"""No lost tail: a server stopped by SIGTERM in the middle of its load exports every request it
served before exiting, through the lifespan flush ``instrument_app`` wires (and speaks for apps
that do not support the lifespan protocol themselves)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from itertools import count

import httpx
import pytest

from support.otlp_receiver import OTLPReceiver

from .hostile import chat, otlp_totals
from .servers import Server, client, free_ports, running, uvicorn_argv

pytestmark = pytest.mark.integration

DURATION = "gen_ai.server.request.duration"
LOAD_BEFORE_SIGNAL_S = 1.5


def otlp_env(receiver: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        # no periodic export before exit: only the flush at shutdown can carry the counts
        "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
    }


async def load_through_sigterm(server: Server, path: str) -> tuple[Counter[str], int]:
    """Send requests from 16 clients; SIGTERM the server mid-load; keep sending until it stops
    accepting. Returns outcomes (``answered`` = a complete response, ``refused`` = never
    reached the app) and how many were answered when the signal went."""
    outcomes: Counter[str] = Counter()
    numbers = count()
    stopped = asyncio.Event()

    async def one(http: httpx.AsyncClient) -> None:
        i = next(numbers)
        try:
            if path == "/work":
                r = await http.get(path)
            else:
                body = {**chat(f"model-{i % 7}", f"tail {i}"), "stream": i % 2 == 0}
                r = await http.post(path, json=body)
            r.raise_for_status()
            outcomes["answered"] += 1
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            outcomes["refused"] += 1
            stopped.set()

    async def sender(http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 30
        while not stopped.is_set() and time.monotonic() < deadline:
            await one(http)

    async with client(server.url, 16) as http:
        senders = [asyncio.create_task(sender(http)) for _ in range(16)]
        await asyncio.sleep(LOAD_BEFORE_SIGNAL_S)
        at_signal = outcomes["answered"]
        server.signal(signal.SIGTERM)
        await asyncio.gather(*senders)
    return outcomes, at_signal


@pytest.mark.parametrize(
    ("app", "path"),
    [
        ("reliability.apps:demo", "/v1/chat/completions"),
        ("reliability.apps:bare", "/work"),
    ],
    ids=["demo-router", "app-without-lifespan"],
)
def test_sigterm_mid_load_exports_every_served_request(app, path):
    """SIGTERM mid-load: every answered request is exported before exit, lifespan or not."""
    with OTLPReceiver() as receiver:
        port = free_ports(1)
        with running(uvicorn_argv(app, port), otlp_env(receiver), port) as server:
            outcomes, at_signal = asyncio.run(load_through_sigterm(server, path))
            code = server.wait()
        points = receiver.points(DURATION)
    assert code in (0, -signal.SIGTERM), server.output
    assert outcomes["answered"] > at_signal > 0, outcomes
    exported = sum(otlp_totals(points, DURATION).values())
    print(
        f"\n{app}: {outcomes['answered']} answered ({at_signal} before SIGTERM),"
        f" {outcomes['refused']} refused after it; exported {exported}"
    )
    assert exported == outcomes["answered"]
