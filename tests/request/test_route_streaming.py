"""Streaming: async-generator handlers and rec.stream() commit at the end of the stream and
measure time to first token, time per output token and upstream chunk timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import routemeter
from routemeter.testing import Capture

DURATION = "gen_ai.server.request.duration"
TTFT = "gen_ai.server.time_to_first_token"
TPOT = "gen_ai.server.time_per_output_token"


async def upstream(n: int, delay: float = 0.0) -> AsyncIterator[dict]:
    for i in range(n):
        await asyncio.sleep(delay)
        last = i == n - 1
        yield {
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [] if last else [{"delta": {"content": "x"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": n - 1} if last else None,
        }


async def test_async_generator_commits_at_end(metrics: Capture):
    """The request is committed after the last chunk, not when the generator is created."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        rec = routemeter.current()
        with rec.attempt("openai", "gpt-4o-mini") as a:
            async for chunk in upstream(5):
                a.chunk(chunk)
                yield "data"

    stream = handle()
    assert metrics.count(DURATION) == 0
    got = [c async for c in stream]
    assert got == ["data"] * 5
    assert metrics.count(DURATION) == 1
    assert metrics.count(TTFT) == 1
    usage = metrics.select("gen_ai.client.token.usage", {"gen_ai.token.type": "output"})
    assert usage[0]["sum"] == 4


async def test_tpot_uses_output_tokens(metrics: Capture):
    """Time per output token divides the time after the first token by output tokens - 1."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        rec = routemeter.current()
        with rec.attempt("openai", "gpt-4o-mini") as a:
            yield "first"
            await asyncio.sleep(0.05)
            a.usage(output_tokens=11)
        yield "last"

    _ = [c async for c in handle()]
    [point] = metrics.select(TPOT)
    assert point["count"] == 1
    assert 0.05 / 10 <= point["sum"] < 0.05  # ~5 ms per token, never the whole 50 ms


async def test_tpot_without_output_token_count_records_no_point(metrics: Capture):
    """A stream whose output token count is unknown records no time per output token, not
    a time per chunk; the chunk gaps stay on the client time_per_output_chunk."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            for _ in range(5):
                await asyncio.sleep(0.001)
                a.chunk({"choices": [{"delta": {"content": "x"}}]})
                yield "x"

    _ = [c async for c in handle()]
    assert metrics.count(TTFT) == 1
    assert metrics.select(TPOT) == []
    assert metrics.count("gen_ai.client.operation.time_per_output_chunk") == 4


async def test_tpot_without_any_attempt_records_no_point(metrics: Capture):
    """A streaming handler that records no attempt (no usage at all) records no time per
    output token however many chunks it yields."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        for _ in range(4):
            yield "x"

    _ = [c async for c in handle()]
    assert metrics.count(TTFT) == 1
    assert metrics.select(TPOT) == []


async def test_tpot_with_zero_output_tokens_records_no_point(metrics: Capture):
    """Usage that reports 0 output tokens records no time per output token (no fallback to
    the yielded chunks)."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            yield "first"
            yield "second"
            a.usage(input_tokens=3, output_tokens=0)
        yield "last"

    _ = [c async for c in handle()]
    assert metrics.select(TPOT) == []


async def test_client_chunk_metrics_follow_semconv(metrics: Capture):
    """time_to_first_chunk once per attempt; time_per_output_chunk once per later chunk."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            async for chunk in upstream(4, delay=0.001):
                a.chunk(chunk)
                yield "x"

    _ = [c async for c in handle()]
    assert metrics.count("gen_ai.client.operation.time_to_first_chunk") == 1
    assert metrics.count("gen_ai.client.operation.time_per_output_chunk") == 3
    tokens = metrics.value("llm.router.usage.tokens", {"gen_ai.token.type": "input"})
    assert tokens == 12


async def test_error_mid_stream_reraised_and_recorded(metrics: Capture):
    """An exception after some chunks reaches the consumer and marks the request failed."""

    @routemeter.route("default")
    async def handle() -> AsyncIterator[str]:
        yield "a"
        raise ConnectionResetError

    stream = handle()
    assert await anext(stream) == "a"
    with pytest.raises(ConnectionResetError):
        await anext(stream)
    assert metrics.count(DURATION, {"error.type": "ConnectionResetError"}) == 1
    assert metrics.count(TPOT) == 0


async def test_consumer_stopping_early_commits_once(metrics: Capture):
    """A client that disconnects (aclose) commits the request once and closes the handler."""
    closed = asyncio.Event()

    @routemeter.route("default")
    async def handle() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    stream = handle()
    assert await anext(stream) == 0
    await stream.aclose()
    assert closed.is_set()
    assert metrics.count(DURATION, {"error.type": "client_closed"}) == 1
    assert metrics.value("llm.router.requests.active") == 0


async def test_rec_stream_defers_commit_to_end_of_body(metrics: Capture):
    """A handler returning a body iterator via rec.stream() commits when the body ends."""

    async def body() -> AsyncIterator[bytes]:
        rec = routemeter.current()
        with rec.attempt("anthropic", "claude-sonnet-4-5") as a:
            a.usage({"type": "message_start", "message": {"usage": {"input_tokens": 7}}})
            yield b"one"
            a.usage({"type": "message_delta", "usage": {"output_tokens": 3}})
            yield b"two"

    @routemeter.route("think")
    async def handle() -> AsyncIterator[bytes]:
        return routemeter.current().stream(body())

    iterator = await handle()
    assert metrics.count(DURATION) == 0
    chunks = await asyncio.create_task(_drain(iterator))  # consumed from another task
    assert chunks == [b"one", b"two"]
    assert metrics.count(DURATION, {"llm.router.route": "think"}) == 1
    assert metrics.value("llm.router.usage.tokens", {"gen_ai.token.type": "output"}) == 3
    assert metrics.value("llm.router.usage.tokens", {"gen_ai.token.type": "input"}) == 7


async def _drain(iterator: AsyncIterator[bytes]) -> list[bytes]:
    return [c async for c in iterator]
