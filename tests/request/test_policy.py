"""Route policies and tenants: bad values are refused at decoration, naming what is allowed,
and nothing a handler passes at a request can raise."""

from __future__ import annotations

import asyncio
import math

import pytest

import routemeter
from routemeter.testing import Capture


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttft_s": -1},
        {"ttft_s": 0},
        {"duration_s": math.nan},
        {"duration_s": math.inf},
        {"duration_s": "2"},
        {"ttft_s": True},
        {"duration_s": 86_401},
    ],
    ids=repr,
)
def test_bad_objectives_are_refused(kwargs):
    """Negative, zero, NaN, infinite, non-numeric or day-plus objectives raise ValueError."""
    with pytest.raises(ValueError, match="number of seconds greater than 0"):
        routemeter.SLO(**kwargs)


@pytest.mark.parametrize("model", ["", "sk-proj-abcdefghijklmnopq", "a b", 42, "x" * 200])
def test_malformed_baselines_are_refused_at_decoration(model):
    """A baseline that could never be an attribute value raises when the decorator runs."""
    with pytest.raises(ValueError, match=r"baseline_model .* is not allowed"):
        routemeter.route("think", baseline_model=model)


def test_slo_must_be_an_slo():
    """A plain dict is not an SLO."""
    with pytest.raises(ValueError, match=r"routemeter\.SLO"):
        routemeter.route("think", slo={"ttft_s": 1})  # type: ignore[arg-type]


def test_unpriced_baseline_is_refused_once_set_up(metrics: Capture):
    """With a recorder active, a baseline without a price raises, naming what to use."""
    with pytest.raises(ValueError, match=r"has no price .* genai-prices knows"):
        routemeter.route("think", baseline_model="house-model-9")
    routemeter.route("think", baseline_model="gpt-4o")


def test_unpriced_baseline_declared_before_setup_folds(metrics: Capture):
    """Declared before setup, an unpriced baseline counts nothing and one rejected value."""
    from routemeter.export._setup import shutdown
    from routemeter.testing import capture

    shutdown()

    @routemeter.route("think", baseline_model="house-model-8")
    def handle() -> None:
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            a.usage(input_tokens=10, output_tokens=5)

    with capture() as c:
        handle()
        assert c.select("llm.router.baseline.cost.usd") == []
        assert (
            c.value(
                "routemeter.attribute.rejected",
                {"routemeter.attribute": "llm.router.baseline.model"},
            )
            == 1
        )


@pytest.mark.parametrize(
    "name",
    ["alice@example.com", "sk-ant-api03-abcdefghijklmnop", "0" * 40, "", None, 7, ["x"], "x" * 300],
    ids=repr,
)
def test_hostile_tenants_fold_and_never_raise(metrics: Capture, name):
    """Key-, email- and hash-shaped, empty, non-string or oversized tenants become _OTHER."""

    @routemeter.route("default")
    def handle() -> None:
        routemeter.current().tenant(name)

    handle()
    [point] = metrics.select("gen_ai.server.request.duration")
    assert point["attributes"]["llm.router.tenant"] == "_OTHER"


def test_declared_tenants_pass_and_the_rest_past_the_limit_fold():
    """ROUTEMETER_TENANTS always pass; ROUTEMETER_MAX_TENANTS others, then _OTHER."""
    from routemeter.testing import capture

    @routemeter.route("default")
    def handle(tenant: str) -> None:
        routemeter.current().tenant(tenant)

    env = {"ROUTEMETER_TENANTS": "gold,silver", "ROUTEMETER_MAX_TENANTS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with capture() as c:
            for tenant in ("gold", "free-1", "free-2", "silver"):
                handle(tenant)
            seen = {
                p["attributes"]["llm.router.tenant"] for p in c.select("llm.router.requests.good")
            }
    assert seen == {"gold", "silver", "free-1", "_OTHER"}


def test_tenants_given_to_setup_bound_like_the_variables():
    """setup(tenants=..., max_tenants=...) builds the same allow-list as the variables."""
    from routemeter.testing import capture

    @routemeter.route("default")
    def handle(tenant: str) -> None:
        routemeter.current().tenant(tenant)

    with capture(tenants=["gold"], max_tenants=0) as c:
        for tenant in ("gold", "free-1"):
            handle(tenant)
        seen = {p["attributes"]["llm.router.tenant"] for p in c.select("llm.router.requests.good")}
    assert seen == {"gold", "_OTHER"}


def test_client_disconnect_mid_stream_is_client_closed(metrics: Capture):
    """A stream closed by its consumer ends its request as client_closed, nothing in flight."""

    @routemeter.route("default")
    async def stream():
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            for i in range(10):
                a.chunk()
                yield i

    async def consume() -> None:
        chunks = stream()
        await anext(chunks)
        await chunks.aclose()

    asyncio.run(consume())
    [point] = metrics.select("gen_ai.server.request.duration")
    assert point["attributes"]["error.type"] == "client_closed"
    [attempt] = metrics.select("gen_ai.client.operation.duration")
    assert attempt["attributes"]["error.type"] == "client_closed"
    assert metrics.value("llm.router.requests.active") == 0
    assert metrics.select("llm.router.requests.good") == []


def test_cooldown_with_bad_seconds_never_raises(metrics: Capture):
    """NaN, negative or huge seconds mean until recovered(); nothing raises."""
    for seconds in (math.nan, -5, 1e30, "x"):
        routemeter.cooldown("openai", "gpt-4o", seconds=seconds)  # type: ignore[arg-type]
    assert metrics.value("llm.router.upstream.available", {"gen_ai.provider.name": "openai"}) == 0
    routemeter.recovered("openai", "gpt-4o")
    assert metrics.value("llm.router.upstream.available", {"gen_ai.provider.name": "openai"}) == 1
