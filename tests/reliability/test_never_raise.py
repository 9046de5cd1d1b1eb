"""Never raise into the handler: hostile input at every public recording call, the usage
extractors and the router events, thousands of generated cases each, never escapes as an
exception, never loses the request's count and never corrupts what was already recorded."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import routemeter
from routemeter import _report
from routemeter.request import _usage
from routemeter.request._record import Attempt
from routemeter.testing import Capture, capture

from .junk import JunkStatus, NastyStatus, check_exportable, junk, usage_shaped

EXAMPLES = 1000
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

USAGE_KEYWORDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)
attempt_ops = st.lists(
    st.one_of(
        st.tuples(st.just("usage"), usage_shaped),
        st.tuples(
            st.just("usage_kw"),
            st.fixed_dictionaries(
                {},
                optional=dict.fromkeys(USAGE_KEYWORDS, junk),
            ),
        ),
        st.tuples(st.just("error"), junk),
        st.tuples(st.just("chunk"), st.one_of(st.none(), usage_shaped)),
        st.tuples(st.just("served_by"), junk),
        st.tuples(st.just("raise"), st.one_of(st.builds(NastyStatus), st.builds(JunkStatus, junk))),
    ),
    max_size=3,
)

request_ops = st.one_of(
    st.tuples(st.just("requested"), junk),
    st.tuples(st.just("choose"), junk, junk, junk),
    st.tuples(st.just("decide"), junk, junk, junk),
    st.tuples(st.just("attempt"), junk, junk, junk, junk, attempt_ops),
    st.tuples(st.just("cache"), junk, junk),
    st.tuples(st.just("error"), junk),
    st.tuples(st.just("rate_limited")),
    st.tuples(st.just("first_chunk")),
    st.tuples(st.just("cooldown"), junk, junk, junk),
    st.tuples(st.just("cache_entries"), junk, junk),
    st.tuples(st.just("cache_evicted"), junk, junk),
    st.tuples(st.just("ratelimit_remaining"), junk, junk, junk, junk),
)
programs = st.lists(request_ops, max_size=4)


def run(program: list[tuple[Any, ...]]) -> None:
    """Apply every operation to the current record; only the program's own upstream errors
    are caught (anything else escaping fails the test)."""
    rec = routemeter.current()
    for op in program:
        name, args = op[0], op[1:]
        if name == "requested":
            rec.requested(*args)
        elif name == "choose":
            rec.choose(*args)
        elif name == "decide":
            with rec.decide() as d:
                d.choose(*args)
        elif name == "attempt":
            provider, model, address, port, inner = args
            try:
                with rec.attempt(provider, model, server_address=address, server_port=port) as a:
                    for sub, value in inner:
                        if sub == "usage":
                            a.usage(value)
                        elif sub == "usage_kw":
                            a.usage(**value)
                        elif sub == "error":
                            a.error(value)
                        elif sub == "chunk":
                            a.chunk(value)
                        elif sub == "served_by":
                            a.served_by(value)
                        else:
                            raise value
            except (NastyStatus, JunkStatus):
                pass
        elif name == "cache":
            rec.cache(*args)
        elif name == "error":
            rec.error(*args)
        elif name == "rate_limited":
            rec.rate_limited()
        elif name == "first_chunk":
            rec.first_chunk()
        elif name == "cooldown":
            routemeter.cooldown(*args)
        elif name == "cache_entries":
            routemeter.cache_entries(*args)
        elif name == "cache_evicted":
            routemeter.cache_evicted(*args)
        else:
            provider, model, requests, tokens = args
            routemeter.ratelimit_remaining(provider, model, requests=requests, tokens=tokens)


class Failure(Exception):
    """The handler's own exception, which must come out unchanged."""


@routemeter.route("baseline")
def baseline() -> str:
    rec = routemeter.current()
    rec.requested("baseline-model")
    rec.choose("baseline-provider", "baseline-model", "default")
    with rec.attempt(
        "baseline-provider", "baseline-model", server_address="api.example.com", server_port=443
    ) as a:
        a.usage(input_tokens=3, output_tokens=4)
    rec.cache("baseline-cache", hit=True)
    return "ok"


@routemeter.route("junk")
def sync_handler(program: list[Any], fail: Exception | None) -> str:
    run(program)
    if fail is not None:
        raise fail
    return "done"


@routemeter.route("junk")
async def async_handler(program: list[Any], fail: Exception | None) -> str:
    run(program)
    if fail is not None:
        raise fail
    return "done"


@routemeter.route("junk")
def gen_handler(program: list[Any], fail: Exception | None) -> Iterator[str]:
    yield "first"
    run(program)
    if fail is not None:
        raise fail
    yield "done"


@routemeter.route("junk")
async def agen_handler(program: list[Any], fail: Exception | None) -> AsyncIterator[str]:
    yield "first"
    run(program)
    if fail is not None:
        raise fail
    yield "done"


async def body(program: list[Any], fail: Exception | None) -> AsyncIterator[str]:
    yield "first"
    run(program)
    if fail is not None:
        raise fail
    yield "done"


@routemeter.route("junk")
async def streaming_handler(program: list[Any], fail: Exception | None) -> AsyncIterator[str]:
    return routemeter.current().stream(body(program, fail))


async def _consume(chunks: AsyncIterator[str]) -> list[str]:
    return [c async for c in chunks]


_loop = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    _loop.close()


def call(kind: str, program: list[Any], fail: Exception | None) -> Any:
    """Run the program inside a routed request of the given handler kind."""
    if kind == "sync":
        return sync_handler(program, fail)
    if kind == "async":
        return _loop.run_until_complete(async_handler(program, fail))
    if kind == "gen":
        return list(gen_handler(program, fail))
    if kind == "agen":
        return _loop.run_until_complete(_consume(agen_handler(program, fail)))
    stream = _loop.run_until_complete(streaming_handler(program, fail))
    return _loop.run_until_complete(_consume(stream))


def assert_intact(metrics: Capture, junk_requests: int) -> None:
    """The baseline requests recorded before and after the junk are exactly as recorded, the
    junk request is counted once, nothing is left in flight, and everything still exports."""
    base = {"llm.router.route": "baseline"}
    assert metrics.count("gen_ai.server.request.duration", base) == 2
    assert metrics.count("gen_ai.client.operation.duration", base) == 2
    tokens = "llm.router.usage.tokens"
    assert metrics.value(tokens, {**base, "gen_ai.token.type": "input"}) == 6
    assert metrics.value(tokens, {**base, "gen_ai.token.type": "output"}) == 8
    assert metrics.value("llm.router.decisions", base) == 2
    assert metrics.value("llm.router.cache.lookups", base) == 2
    junk_route = {"llm.router.route": "junk"}
    assert metrics.count("gen_ai.server.request.duration", junk_route) == junk_requests
    assert metrics.value("llm.router.requests.active") == 0
    check_exportable(metrics.reader.get_metrics_data())


@SETTINGS
@given(
    program=programs,
    kind=st.sampled_from(["sync", "async", "gen", "agen", "stream"]),
    fail=st.one_of(st.none(), st.builds(Failure), st.builds(NastyStatus)),
)
def test_hostile_input_never_raises_into_the_handler(program, kind, fail):
    """Junk at every recording call never escapes; the request is counted once, data intact."""
    with capture() as metrics:
        baseline()
        if fail is None:
            result = call(kind, program, fail)
            assert result in ("done", ["first", "done"])
        else:
            with pytest.raises(type(fail)) as raised:
                call(kind, program, fail)
            assert raised.value is fail
        baseline()
        run(program)  # outside any routed request: the no-op record
        assert_intact(metrics, junk_requests=1)


@SETTINGS
@given(responses=st.lists(usage_shaped, min_size=1, max_size=4))
def test_usage_extraction_never_raises_and_stays_sane(responses):
    """a.usage()/a.chunk() on junk never raise and keep only sane token counts."""
    attempt = Attempt("openai", "gpt-4o")
    attempt.usage(input_tokens=3, output_tokens=4)
    for response in responses:
        attempt.usage(response)
        attempt.chunk(response)
    for value in attempt.used:
        assert value is None or (type(value) is int and 0 <= value < _usage.MAX_TOKENS)
    assert attempt.response_model is None or type(attempt.response_model) is str
    assert attempt.used.input is not None
    assert attempt.used.output is not None


@SETTINGS
@given(
    calls=st.lists(
        st.one_of(
            st.tuples(st.just("cooldown"), junk, junk, junk),
            st.tuples(st.just("cache_entries"), junk, junk),
            st.tuples(st.just("cache_evicted"), junk, junk),
            st.tuples(st.just("ratelimit_remaining"), junk, junk, junk, junk),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_router_events_never_raise_nor_poison_the_export(calls):
    """Router events take junk without raising or making the collection unexportable."""
    with capture() as metrics:
        routemeter.cache_entries("baseline-cache", 5)
        run(calls)
        routemeter.cache_entries("baseline-cache", 2)
        entries = {"llm.router.cache.name": "baseline-cache"}
        assert metrics.value("llm.router.cache.entries", entries) == 7
        check_exportable(metrics.reader.get_metrics_data())


def test_token_counters_cannot_overflow_int64(metrics: Capture):
    """A token counter pushed past int64 saturates instead of breaking every export."""

    @routemeter.route("default")
    def handle() -> None:
        with routemeter.current().attempt("openai", "gpt-4o") as a:
            a.usage({"usage": {"prompt_tokens": 2**53 - 1, "completion_tokens": 2**53 - 1}})

    for _ in range(1100):
        handle()
    check_exportable(metrics.reader.get_metrics_data())


def test_internal_failures_are_logged_once_per_kind(metrics: Capture, monkeypatch, caplog):
    """2,000 internal failures of each of two kinds log one warning per kind, count all."""
    from routemeter.recording import _measurements

    monkeypatch.setattr(_report, "counts", Counter())

    def broken_commit(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("commit exploded")

    def broken_usage(response: Any) -> Any:
        raise RuntimeError("extractor exploded")

    monkeypatch.setattr(_measurements, "measurements", broken_commit)
    monkeypatch.setattr(_measurements, "folded_measurements", broken_commit)
    monkeypatch.setattr(_usage, "extract", broken_usage)

    @routemeter.route("default")
    def handle(i: int) -> int:
        with routemeter.current().attempt("openai", "gpt-4o") as a:
            a.usage({"usage": {}})
        return i

    caplog.set_level(logging.WARNING, logger="routemeter")
    assert [handle(i) for i in range(2000)] == list(range(2000))
    warnings = [r for r in caplog.records if r.name == "routemeter"]
    assert sorted(r.getMessage().split(" failed")[0] for r in warnings) == [
        "routemeter: commit",
        "routemeter: usage extraction",
    ]
    assert all(r.exc_info for r in warnings)
    assert _report.counts == Counter({"commit": 2000, "usage extraction": 2000})
