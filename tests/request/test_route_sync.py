"""@route on plain functions: one record per call, committed once, exceptions re-raised."""

from __future__ import annotations

import inspect

import pytest

import routemeter
from routemeter.testing import Capture

DURATION = "gen_ai.server.request.duration"
ROUTE = "llm.router.route"


def test_each_call_is_one_request(metrics: Capture):
    """Three calls of a decorated function record three requests under its label."""

    @routemeter.route("default")
    def handle(x: int) -> int:
        return x * 2

    assert [handle(i) for i in range(3)] == [0, 2, 4]
    assert metrics.count(DURATION, {ROUTE: "default", "gen_ai.operation.name": "chat"}) == 3
    assert metrics.value("llm.router.requests.active", {ROUTE: "default"}) == 0


def test_signature_and_name_are_kept():
    """The wrapper keeps the handler's name, docstring and signature."""

    @routemeter.route("default")
    def handle(body: dict, *, stream: bool = False) -> dict:
        """Route a body."""
        return body

    assert handle.__name__ == "handle"
    assert handle.__doc__ == "Route a body."
    assert list(inspect.signature(handle).parameters) == ["body", "stream"]


def test_exception_is_reraised_and_recorded(metrics: Capture):
    """A handler's exception reaches the caller unchanged and marks error.type."""

    class UpstreamDown(Exception):
        pass

    @routemeter.route("default")
    def handle() -> None:
        raise UpstreamDown("boom")

    with pytest.raises(UpstreamDown, match="boom"):
        handle()
    assert metrics.count(DURATION, {"error.type": "UpstreamDown"}) == 1
    assert metrics.value("llm.router.requests.active", {ROUTE: "default"}) == 0


def test_without_setup_handler_runs_and_current_is_noop():
    """Before setup() the decorator only calls through and current() is a no-op record."""

    @routemeter.route("default")
    def handle() -> str:
        rec = routemeter.current()
        rec.requested("gpt-4o")
        with rec.attempt("openai", "gpt-4o") as a:
            a.usage(input_tokens=1, output_tokens=1)
        return "ok"

    assert handle() == "ok"
    assert routemeter.current() is routemeter.current()


def test_current_outside_route_is_noop(metrics: Capture):
    """Calls on current() outside any routed request record nothing."""
    rec = routemeter.current()
    rec.requested("gpt-4o")
    rec.choose("openai", "gpt-4o", "x")
    with rec.attempt("openai", "gpt-4o") as a:
        a.usage(input_tokens=5)
    rec.cache("responses", hit=True)
    assert metrics.points() == []


def test_nested_routes_keep_their_own_records(metrics: Capture):
    """A routed call inside another restores the outer record afterwards."""

    @routemeter.route("inner")
    def inner() -> None:
        routemeter.current().requested("inner-model")

    @routemeter.route("outer")
    def outer() -> None:
        rec = routemeter.current()
        inner()
        assert routemeter.current() is rec
        rec.requested("outer-model")

    outer()
    assert metrics.count(DURATION, {ROUTE: "outer", "gen_ai.request.model": "outer-model"}) == 1
    assert metrics.count(DURATION, {ROUTE: "inner", "gen_ai.request.model": "inner-model"}) == 1


def test_sync_generator_is_a_stream(metrics: Capture):
    """A decorated sync generator commits when exhausted and marks time to first token."""

    @routemeter.route("default")
    def handle():
        yield "a"
        yield "b"

    assert list(handle()) == ["a", "b"]
    assert metrics.count(DURATION) == 1
    assert metrics.count("gen_ai.server.time_to_first_token") == 1


@pytest.mark.parametrize("label", ["", "has space", "x" * 129, "sk-abcdefghijklmnopqrstuv", 7])
def test_bad_route_label_fails_at_decoration(label):
    """Route labels that could not be a bounded, non-secret attribute are refused early."""
    with pytest.raises(ValueError, match="route label"):
        routemeter.route(label)


def test_bad_operation_fails_at_decoration():
    """An operation name with spaces is refused, listing the well-known names."""
    with pytest.raises(ValueError, match="chat"):
        routemeter.route("default", operation="not an op")
