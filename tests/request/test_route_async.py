"""@route on coroutines: context follows awaits, concurrent requests keep separate records."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import routemeter
from routemeter.testing import Capture, flatten

DURATION = "gen_ai.server.request.duration"


async def test_coroutine_records_one_request(metrics: Capture):
    """An awaited handler records one request with the model the client asked for."""

    @routemeter.route("background")
    async def handle(model: str) -> str:
        await asyncio.sleep(0)
        routemeter.current().requested(model)
        return "ok"

    assert await handle("claude-3-5-haiku") == "ok"
    assert metrics.count(DURATION, {"gen_ai.request.model": "claude-3-5-haiku"}) == 1


async def test_concurrent_requests_do_not_share_records(metrics: Capture):
    """Fifty interleaved requests each see their own record through current()."""

    @routemeter.route("default")
    async def handle(i: int) -> int:
        rec = routemeter.current()
        rec.requested(f"m{i % 5}")
        await asyncio.sleep(0.001 * (i % 3))
        assert routemeter.current() is rec
        return i

    results = await asyncio.gather(*(handle(i) for i in range(50)))
    assert results == list(range(50))
    for m in range(5):
        assert metrics.count(DURATION, {"gen_ai.request.model": f"m{m}"}) == 10


async def test_async_exception_reraised(metrics: Capture):
    """An exception from an async handler propagates and is recorded as error.type."""

    @routemeter.route("default")
    async def handle() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await handle()
    assert metrics.count(DURATION, {"error.type": "TimeoutError"}) == 1


async def test_cancellation_is_recorded_and_propagates(metrics: Capture):
    """A cancelled handler (its client went away) re-raises CancelledError and commits its
    request with error.type=client_closed."""
    started = asyncio.Event()

    @routemeter.route("default")
    async def handle() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(handle())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.count(DURATION, {"error.type": "client_closed"}) == 1
    assert metrics.value("llm.router.requests.active") == 0


async def test_failed_attempts_only_mark_request_failed(metrics: Capture):
    """A handler that returns after every attempt failed records the last attempt's error."""

    @routemeter.route("default")
    async def handle() -> dict:
        rec = routemeter.current()
        for provider in ("openai", "anthropic"):
            with rec.attempt(provider, "gpt-4o") as a:
                a.error(503)
        return {"error": "all upstreams failed"}

    await handle()
    assert metrics.count(DURATION, {"error.type": "503"}) == 1
    assert metrics.count("gen_ai.client.operation.duration", {"error.type": "503"}) == 2


async def test_a_request_commits_to_the_recorder_that_began_it():
    """shutdown() and a new setup() mid-request: the new recorder sees no half of that request
    (no -1 on llm.router.requests.active without its +1), and records its own requests whole."""
    started, release = asyncio.Event(), asyncio.Event()

    @routemeter.route("default")
    async def slow() -> None:
        started.set()
        await release.wait()

    @routemeter.route("default")
    async def quick() -> None:
        pass

    routemeter.setup(readers=[InMemoryMetricReader()], exporters="none", set_global=False)
    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 5)
    routemeter.shutdown()
    second = InMemoryMetricReader()
    routemeter.setup(readers=[second], exporters="none", set_global=False, recorder="sdk")
    release.set()
    await asyncio.wait_for(task, 5)
    ours = [
        p for p in flatten(second.get_metrics_data()) if p["name"].startswith(("llm.", "gen_ai."))
    ]
    assert ours == []

    await quick()
    points = flatten(second.get_metrics_data())
    assert [p["value"] for p in points if p["name"] == "llm.router.requests.active"] == [0]
    assert [p["count"] for p in points if p["name"] == "gen_ai.server.request.duration"] == [1]
