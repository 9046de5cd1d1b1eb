"""RoutemeterCallback against the real litellm package: a real Router with fallbacks, retries,
streaming, failures, cooldowns and rate limits, driven through LiteLLM's own mock responses,
dead loopback ports and a loopback OpenAI-compatible stub. No network.

Each test states what happened (from LiteLLM's own objects where it can) and asserts that the
exported points are exactly that: every point of a metric, with all its attributes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from routemeter.recording._pricing import Prices
from routemeter.request._usage import Usage
from routemeter.testing import Capture

from .kit import HEADROOM, USAGE, OpenAIStub, dead_port, require

litellm = require("litellm", "the routemeter[litellm] extra")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER  # noqa: E402

from routemeter.integrations.litellm import RoutemeterCallback  # noqa: E402

HAIKU = "claude-3-5-haiku-20241022"
MINI = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
SERVER = "gen_ai.server.request.duration"
CLIENT = "gen_ai.client.operation.duration"
TOKENS = "llm.router.usage.tokens"
TOKEN_USAGE = "gen_ai.client.token.usage"
FALLBACKS = "llm.router.fallbacks"
DECISIONS = "llm.router.decisions"
COST = "llm.router.cost.usd"


def points(metrics: Capture, name: str) -> list[tuple[dict[str, Any], float]]:
    """Every point of ``name`` as (attributes, count-or-value), in a stable order."""
    return ordered(
        [
            (p["attributes"], p["count"] if "count" in p else p["value"])
            for p in metrics.points(name)
        ]
    )


def ordered(found: list[tuple[dict[str, Any], float]]) -> list[tuple[dict[str, Any], float]]:
    """Points in the order ``points()`` returns them."""
    return sorted(found, key=lambda item: sorted((k, str(v)) for k, v in item[0].items()))


def uninstall(callback: CustomLogger) -> None:
    """Remove a callback from every list LiteLLM copies callbacks into."""
    litellm.logging_callback_manager.remove_callback_from_all_lists(callback)
    for name in ("input_callback", "service_callback"):
        listed = getattr(litellm, name, None)
        if isinstance(listed, list):
            listed[:] = [c for c in listed if c is not callback]


def server(route: str, requested: str, provider: str, response: str | None, **extra: Any):
    attrs = {
        "llm.router.route": route,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": requested,
        **extra,
    }
    if response is not None:
        attrs["gen_ai.response.model"] = response
    return attrs


def attempt(route: str, provider: str, model: str, response: str | None = None, **extra: Any):
    attrs = {
        "llm.router.route": route,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **extra,
    }
    if response is not None:
        attrs["gen_ai.response.model"] = response
    return attrs


class Spy(CustomLogger):
    """Keeps what LiteLLM itself reported, to compare the exported numbers against."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any], Any, Any, Any]] = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("success", kwargs, response_obj, start_time, end_time))

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("failure", kwargs, response_obj, start_time, end_time))

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("success", kwargs, response_obj, start_time, end_time))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("failure", kwargs, response_obj, start_time, end_time))


@pytest.fixture
def install(metrics: Capture) -> Iterator[Callable[..., RoutemeterCallback]]:
    """Installs a RoutemeterCallback (and a Spy) as LiteLLM's callbacks; removes them after."""
    installed: list[RoutemeterCallback] = []
    saved = list(litellm.callbacks)

    def make(**options: Any) -> RoutemeterCallback:
        callback = RoutemeterCallback(**{"settle_s": 30.0, **options})
        installed.append(callback)
        litellm.callbacks = [*litellm.callbacks, callback]
        return callback

    yield make
    for callback in installed:
        callback.close()
        uninstall(callback)
    litellm.callbacks = saved


@pytest.fixture
def spy(install: Callable[..., RoutemeterCallback]) -> Iterator[Spy]:
    """A Spy installed next to the callback under test."""
    s = Spy()
    litellm.callbacks = [*litellm.callbacks, s]
    yield s
    uninstall(s)


@pytest.fixture
def routers() -> Iterator[Callable[..., Any]]:
    """Builds litellm Routers and discards them (their global callbacks) after the test."""
    made: list[Any] = []

    def make(model_list: list[dict[str, Any]], **options: Any) -> Any:
        router = litellm.Router(model_list=model_list, **{"num_retries": 0, **options})
        made.append(router)
        return router

    yield make
    for router in made:
        router.discard()


@pytest.fixture
def dead() -> Iterator[int]:
    """A loopback port that refuses connections."""
    with dead_port() as port:
        yield port


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    """The loopback OpenAI-compatible stub."""
    with OpenAIStub() as s:
        yield s


def mocked(group: str, provider_model: str, text: str = "Hello from backup") -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": provider_model, "api_key": "x", "mock_response": text},
    }


def at(group: str, provider_model: str, api_base: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {
            "model": provider_model,
            "api_base": api_base,
            "api_key": "x",
            "max_retries": 0,
        },
    }


async def settled(callback: RoutemeterCallback, *, failed: bool = False) -> None:
    """Wait until LiteLLM delivered every event and the callback committed every request
    (``failed``: commit the ones waiting for a retry or fallback now, as ``flush()`` does)."""
    deadline = time.monotonic() + 10
    while True:
        await GLOBAL_LOGGING_WORKER.flush()
        if failed:
            callback.flush()
        if callback.open_requests == 0:
            return
        assert time.monotonic() < deadline, "requests never committed"
        await asyncio.sleep(0.01)


def seconds(start: Any, end: Any) -> float:
    return float((end - start).total_seconds())


async def test_router_success_records_one_request_exactly(install, spy, routers, metrics):
    """One successful Router call: one request, one attempt, its usage and cost, one decision."""
    callback = install()
    router = routers([mocked("backup", f"anthropic/{HAIKU}")])
    response = await router.acompletion(model="backup", messages=MESSAGES)
    await settled(callback)

    usage = Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
    served = response.model
    assert points(metrics, SERVER) == [(server("backup", "backup", "anthropic", served), 1)]
    assert points(metrics, CLIENT) == [(attempt("backup", "anthropic", HAIKU, served), 1)]
    assert points(metrics, TOKENS) == [
        (attempt("backup", "anthropic", HAIKU, served, **{"gen_ai.token.type": "input"}), 10),
        (attempt("backup", "anthropic", HAIKU, served, **{"gen_ai.token.type": "output"}), 20),
    ]
    assert (usage.input, usage.output) == (10, 20)
    cost = Prices().rates("anthropic", served).cost(usage)
    assert cost > 0
    assert points(metrics, COST) == [(attempt("backup", "anthropic", HAIKU, served), cost)]
    assert points(metrics, DECISIONS) == [
        (
            {
                "llm.router.route": "backup",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "backup",
                "llm.router.target.provider": "anthropic",
                "llm.router.target.model": HAIKU,
                "llm.router.reason": "none",
            },
            1,
        )
    ]
    assert points(metrics, FALLBACKS) == []
    assert metrics.value("llm.router.requests.active") == 0
    [(kind, _, _, start, end)] = spy.events
    assert kind == "success"
    [point] = metrics.points(CLIENT)
    assert point["sum"] == pytest.approx(seconds(start, end), abs=1e-6)


async def test_fallback_records_both_attempts_and_the_fallback(
    install, spy, routers, dead, metrics
):
    """A real failure then the fallback's success: one request, two attempts, one fallback."""
    callback = install()
    router = routers(
        [
            at("primary", f"openai/{MINI}", f"http://localhost:{dead}/v1"),
            mocked("backup", f"anthropic/{HAIKU}"),
        ],
        fallbacks=[{"primary": ["backup"]}],
    )
    response = await router.acompletion(model="primary", messages=MESSAGES)
    await settled(callback)

    [(failure, failed_kwargs, _, f_start, f_end), (success, _, _, s_start, s_end)] = spy.events
    assert (failure, success) == ("failure", "success")
    status = str(failed_kwargs["exception"].status_code)
    served = response.model
    assert points(metrics, SERVER) == [(server("primary", "primary", "anthropic", served), 1)]
    assert points(metrics, CLIENT) == ordered(
        [
            (attempt("primary", "anthropic", HAIKU, served), 1),
            (
                attempt(
                    "primary",
                    "openai",
                    MINI,
                    **{"server.address": "localhost", "server.port": dead, "error.type": status},
                ),
                1,
            ),
        ]
    )
    assert points(metrics, FALLBACKS) == [
        (
            {
                "llm.router.route": "primary",
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": HAIKU,
                "llm.router.fallback.from.provider": "openai",
                "llm.router.fallback.from.model": MINI,
                "error.type": status,
            },
            1,
        )
    ]
    assert [p[0]["llm.router.target.model"] for p in points(metrics, DECISIONS)] == [MINI]
    assert [p[0]["gen_ai.token.type"] for p in points(metrics, TOKENS)] == ["input", "output"]
    [request] = metrics.points(SERVER)
    assert request["sum"] == pytest.approx(seconds(f_start, s_end), abs=1e-3)
    durations = sorted(p["sum"] for p in metrics.points(CLIENT))
    assert durations == pytest.approx(
        sorted([seconds(f_start, f_end), seconds(s_start, s_end)]), abs=1e-6
    )


async def test_retries_are_attempts_and_fallbacks_within_one_request(
    install, spy, routers, dead, metrics
):
    """Retries then a fallback: all attempts in one request, each failed one a fallback."""
    callback = install()
    down = f"http://localhost:{dead}/v1"
    twin = at("primary", f"openai/{MINI}", down)
    twin["litellm_params"]["api_key"] = "y"  # a second deployment of the same model
    router = routers(
        [at("primary", f"openai/{MINI}", down), twin, mocked("backup", f"anthropic/{HAIKU}")],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=2,
        retry_after=0,
    )
    await router.acompletion(model="primary", messages=MESSAGES)
    await settled(callback)

    kinds = [e[0] for e in spy.events]
    assert kinds == ["failure", "failure", "failure", "success"]
    assert metrics.count(SERVER) == 1
    assert metrics.count(CLIENT, {"gen_ai.provider.name": "openai", "error.type": "500"}) == 3
    assert metrics.count(CLIENT, {"gen_ai.provider.name": "anthropic"}) == 1
    by_target = {
        (p[0]["gen_ai.provider.name"], p[0]["llm.router.fallback.from.model"]): p[1]
        for p in points(metrics, FALLBACKS)
    }
    assert by_target == {("openai", MINI): 2, ("anthropic", MINI): 1}


async def test_failure_without_fallback_commits_on_flush(install, spy, routers, dead, metrics):
    """A call whose every attempt fails waits for flush(), then is one failed request."""
    callback = install()
    router = routers(
        [
            at("primary", f"openai/{MINI}", f"http://localhost:{dead}/v1"),
            at("dead-too", "openai/gpt-4o", f"http://localhost:{dead}/v1"),
        ],
        fallbacks=[{"primary": ["dead-too"]}],
    )
    with pytest.raises(litellm.InternalServerError) as raised:
        await router.acompletion(model="primary", messages=MESSAGES)
    status = str(raised.value.status_code)
    await GLOBAL_LOGGING_WORKER.flush()
    assert metrics.count(SERVER) == 0
    assert callback.open_requests == 1
    await settled(callback, failed=True)

    assert [e[0] for e in spy.events] == ["failure", "failure"]
    assert points(metrics, SERVER) == [
        (server("primary", "primary", "openai", None, **{"error.type": status}), 1)
    ]
    assert metrics.count(CLIENT, {"error.type": status}) == 2
    assert metrics.count(CLIENT) == 2
    assert [(p[0]["gen_ai.request.model"], p[1]) for p in points(metrics, FALLBACKS)] == [
        ("gpt-4o", 1)
    ]
    assert points(metrics, TOKENS) == []
    assert metrics.value("llm.router.requests.active") == 0


async def test_failed_request_commits_by_itself_after_settle_s(install, routers, dead, metrics):
    """Without flush(), a failed request commits by itself once settle_s pass."""
    callback = install(settle_s=0.2)
    router = routers([at("primary", f"openai/{MINI}", f"http://localhost:{dead}/v1")])
    with pytest.raises(litellm.InternalServerError):
        await router.acompletion(model="primary", messages=MESSAGES)
    started = time.monotonic()
    while metrics.count(SERVER) == 0:
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.02)
    assert time.monotonic() - started >= 0.1
    assert metrics.count(SERVER, {"error.type": "500"}) == 1
    assert callback.open_requests == 0


async def test_streaming_records_time_to_first_token_and_usage(install, spy, routers, metrics):
    """A streamed call records TTFT from LiteLLM's first-chunk time, usage and TPOT."""
    callback = install()
    router = routers([mocked("backup", f"anthropic/{HAIKU}", "Hello from the stream")])
    stream = await router.acompletion(
        model="backup", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    await settled(callback)

    usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    [(kind, kwargs, response, start, end)] = spy.events
    assert kind == "success"
    first = kwargs["completion_start_time"]
    served = response.model
    assert metrics.count(SERVER) == 1
    assert points(metrics, TOKENS) == [
        (
            attempt("backup", "anthropic", HAIKU, served, **{"gen_ai.token.type": "input"}),
            usage.prompt_tokens,
        ),
        (
            attempt("backup", "anthropic", HAIKU, served, **{"gen_ai.token.type": "output"}),
            usage.completion_tokens,
        ),
    ]
    [ttft] = metrics.points("gen_ai.server.time_to_first_token")
    assert ttft["count"] == 1
    assert ttft["sum"] == pytest.approx(seconds(start, first), abs=1e-6)
    [ttfc] = metrics.points("gen_ai.client.operation.time_to_first_chunk")
    assert ttfc["sum"] == pytest.approx(seconds(start, first), abs=1e-6)
    assert metrics.points("gen_ai.client.operation.time_per_output_chunk") == []
    [tpot] = metrics.points("gen_ai.server.time_per_output_token")
    assert usage.completion_tokens > 1
    expected = seconds(first, end) / (usage.completion_tokens - 1)
    assert tpot["sum"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.integration
async def test_real_http_stream_through_the_stub(install, spy, routers, stub, metrics):
    """A stream over real HTTP records its usage, headroom and server address."""
    callback = install()
    router = routers([at("fast", f"openai/{MINI}", stub.api_base)])
    stream = await router.acompletion(
        model="fast", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await settled(callback)

    assert text == "Hello there"
    assert metrics.count("gen_ai.server.time_to_first_token") == 1
    assert metrics.value(TOKENS, {"gen_ai.token.type": "input"}) == USAGE["prompt_tokens"]
    assert metrics.value(TOKENS, {"gen_ai.token.type": "output"}) == USAGE["completion_tokens"]
    [client] = metrics.points(CLIENT)
    assert client["attributes"]["server.address"] == "localhost"
    assert client["attributes"]["server.port"] == stub.server.server_address[1]


@pytest.mark.integration
async def test_rate_limit_headroom_from_provider_headers(install, routers, stub, metrics):
    """Provider x-ratelimit-remaining-* headers become the deployment's requests and tokens
    headroom gauges."""
    callback = install()
    router = routers([at("fast", f"openai/{MINI}", stub.api_base)])
    await router.acompletion(model="fast", messages=MESSAGES)
    await settled(callback)

    deployment = {"gen_ai.provider.name": "openai", "gen_ai.request.model": MINI}
    assert points(metrics, "llm.router.ratelimit.remaining.requests") == [
        (deployment, float(HEADROOM["x-ratelimit-remaining-requests"]))
    ]
    assert points(metrics, "llm.router.ratelimit.remaining.tokens") == [
        (deployment, float(HEADROOM["x-ratelimit-remaining-tokens"]))
    ]


@pytest.mark.integration
async def test_cooldowns_and_the_routers_own_refusal(install, routers, stub, metrics):
    """Upstream 429s record cooldowns; the Router's own refusal is a rejection."""
    callback = install()
    router = routers(
        [
            at("pool", "openai/limited-a", stub.api_base),
            at("pool", "openai/limited-b", stub.api_base),
        ],
        cooldown_time=60,
    )
    callback.watch(router)
    for _ in range(2):
        with pytest.raises(litellm.RateLimitError):
            await router.acompletion(model="pool", messages=MESSAGES)
    deadline = time.monotonic() + 5
    while metrics.value("llm.router.cooldowns") < 2:  # LiteLLM cools down from a worker thread
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    with pytest.raises(Exception, match="No deployments available") as refused:
        await router.acompletion(model="pool", messages=MESSAGES)
    await settled(callback, failed=True)

    assert type(refused.value).__name__ == "RouterRateLimitError"
    assert sorted(stub.requests) == ["limited-a", "limited-b"]
    assert points(metrics, "llm.router.cooldowns") == [
        ({"gen_ai.provider.name": "openai", "gen_ai.request.model": m, "error.type": "429"}, 1)
        for m in ("limited-a", "limited-b")
    ]
    assert points(metrics, "llm.router.ratelimit.rejections") == [
        (
            {
                "llm.router.route": "pool",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "pool",
            },
            1,
        )
    ]
    assert metrics.count(SERVER) == 3
    assert metrics.count(SERVER, {"error.type": "429"}) == 3
    assert metrics.count(CLIENT, {"error.type": "429"}) == 2
    assert metrics.value("llm.router.ratelimit.remaining.requests") == 0
    callback.watch(router)  # watching twice wraps once: the next cooldown counts once
    router.cooldown_cache.add_deployment_to_cooldown(
        model_id=router.get_model_ids("pool")[0],
        original_exception=litellm.RateLimitError("again", "openai", "limited-a"),
        exception_status=429,
        cooldown_time=60,
    )
    assert metrics.value("llm.router.cooldowns") == 3


async def test_watched_cooldowns_take_upstreams_out_of_rotation_for_their_time(
    install, routers, stub, metrics
):
    """A watched Router's cooldown sets llm.router.upstream.available to 0 for LiteLLM's own
    cooldown time, then back to 1 without any call (LiteLLM's cooldowns expire by themselves)."""
    callback = install()
    router = routers([at("pool", "openai/limited-a", stub.api_base)], cooldown_time=60)
    callback.watch(router)
    model_id = router.get_model_ids("pool")[0]
    available = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "limited-a"}
    router.cooldown_cache.add_deployment_to_cooldown(
        model_id=model_id,
        original_exception=litellm.RateLimitError("slow down", "openai", "limited-a"),
        exception_status=429,
        cooldown_time=0.2,
    )
    assert metrics.value("llm.router.upstream.available", available) == 0
    await asyncio.sleep(0.3)
    assert metrics.value("llm.router.upstream.available", available) == 1


async def test_plain_completion_uses_the_default_route(install, metrics):
    """litellm.acompletion without a Router: the default route label, the model as requested."""
    callback = install()
    await litellm.acompletion(model=f"openai/{MINI}", messages=MESSAGES, mock_response="hello")
    await settled(callback)

    [(attrs, count)] = points(metrics, SERVER)
    assert count == 1
    assert attrs["llm.router.route"] == "default"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == MINI
    assert metrics.count(CLIENT, {"gen_ai.request.model": MINI}) == 1


def test_sync_router_completion(install, routers, metrics):
    """Router.completion (sync) is recorded from LiteLLM's sync success event."""
    install()
    router = routers([mocked("backup", f"anthropic/{HAIKU}")])
    router.completion(model="backup", messages=MESSAGES)
    deadline = time.monotonic() + 5
    while metrics.count(SERVER) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert metrics.count(SERVER, {"llm.router.route": "backup"}) == 1
    assert metrics.count(CLIENT, {"gen_ai.provider.name": "anthropic"}) == 1


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"backup": "default"}, "default"),
        ("think", "think"),
        (lambda group, md: md.get("tier"), "background"),
        (lambda group, md: None, "backup"),
        (lambda group, md: "sk-" + "a" * 40, "_OTHER"),
        (lambda group, md: 1 / 0, "_OTHER"),
    ],
    ids=["mapping", "label", "callable-metadata", "callable-none", "secret-shaped", "raises"],
)
async def test_route_option(install, routers, metrics, route, expected):
    """route= maps model groups to labels; unusable labels become _OTHER."""
    callback = install(route=route)
    router = routers([mocked("backup", f"anthropic/{HAIKU}")])
    await router.acompletion(model="backup", messages=MESSAGES, metadata={"tier": "background"})
    await settled(callback)
    assert [p[0]["llm.router.route"] for p in points(metrics, SERVER)] == [expected]


async def test_groups_a_watched_router_does_not_serve_are_not_labels(install, metrics):
    """While a router is watched, a model group it does not serve never becomes a label."""
    callback = install()
    router = litellm.Router(model_list=[mocked("backup", f"anthropic/{HAIKU}")])
    try:
        callback.watch(router)
        await litellm.acompletion(
            model=f"openai/{MINI}",
            messages=MESSAGES,
            mock_response="x",
            metadata={"model_group": "made-up-by-a-client"},
        )
        await settled(callback)
    finally:
        router.discard()
    assert [p[0]["llm.router.route"] for p in points(metrics, SERVER)] == ["_OTHER"]


def test_invalid_options_fail_at_construction():
    """Route labels that could never be attributes, and nonsense timings, fail at once."""
    with pytest.raises(ValueError, match="route label"):
        RoutemeterCallback(route="not a label")
    with pytest.raises(ValueError, match="route label"):
        RoutemeterCallback(route={"g": "x" * 200})
    with pytest.raises(TypeError):
        RoutemeterCallback(route=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="settle_s"):
        RoutemeterCallback(settle_s=0)


async def test_proxy_hooks_group_by_call_id_not_shared_trace(install, routers, dead, metrics):
    """In the proxy, requests key by call id, not a shared trace; its failure hook ends them."""
    callback = install()
    router = routers(
        [
            at("primary", f"openai/{MINI}", f"http://localhost:{dead}/v1"),
            mocked("backup", f"anthropic/{HAIKU}"),
        ],
        fallbacks=[{"primary": ["backup"]}],
    )

    async def proxy_request(call_id: str, model: str, **extra: Any) -> Any:
        data = {"model": model, "messages": MESSAGES, "litellm_call_id": call_id, "metadata": {}}
        await callback.async_pre_call_hook(None, None, data, "acompletion")
        try:
            return await router.acompletion(
                **data, litellm_trace_id="session-shared-by-both", **extra
            )
        except Exception as e:
            await callback.async_post_call_failure_hook(data, e, None)
            return e

    _, failed = await asyncio.gather(
        proxy_request("call-1", "primary"), proxy_request("call-2", "primary", fallbacks=[])
    )
    await GLOBAL_LOGGING_WORKER.flush()
    await settled(callback)  # no flush(): the failure hook committed call-2

    assert isinstance(failed, litellm.InternalServerError)
    assert metrics.count(SERVER) == 2
    assert metrics.count(SERVER, {"gen_ai.provider.name": "anthropic"}) == 1
    assert metrics.count(SERVER, {"error.type": str(failed.status_code)}) == 1
    assert metrics.count(CLIENT) == 3
    assert metrics.value(FALLBACKS) == 1


async def test_proxy_refusal_without_attempts_is_a_rejection(install, metrics):
    """A proxy 429 before any upstream call is a rejection; other early failures keep status."""
    callback = install()
    limited = {"model": "primary", "litellm_call_id": "call-429", "metadata": {}}
    await callback.async_pre_call_hook(None, None, limited, "acompletion")
    await callback.async_post_call_failure_hook(
        limited, litellm.RateLimitError("limit", "openai", "x"), None
    )
    denied = {"model": "primary", "litellm_call_id": "call-401"}
    await callback.async_post_call_failure_hook(
        denied, litellm.AuthenticationError("no", "openai", "x"), None
    )
    await callback.async_post_call_failure_hook(denied, RuntimeError("again"), None)

    assert points(metrics, "llm.router.ratelimit.rejections") == [
        (
            {
                "llm.router.route": "primary",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "primary",
            },
            1,
        )
    ]
    assert metrics.count(SERVER, {"error.type": "429"}) == 1
    assert metrics.count(SERVER, {"error.type": "401"}) == 1
    assert metrics.count(SERVER) == 2
    assert metrics.count(CLIENT) == 0
    assert callback.open_requests == 0


async def test_concurrent_routed_calls_stay_separate(install, routers, dead, metrics):
    """Twenty concurrent calls, half falling back, stay twenty separate requests."""
    callback = install()
    router = routers(
        [
            at("primary", f"openai/{MINI}", f"http://localhost:{dead}/v1"),
            mocked("backup", f"anthropic/{HAIKU}"),
        ],
        fallbacks=[{"primary": ["backup"]}],
    )
    calls = [router.acompletion(model="primary", messages=MESSAGES) for _ in range(10)]
    calls += [router.acompletion(model="backup", messages=MESSAGES) for _ in range(10)]
    await asyncio.gather(*calls)
    await settled(callback)

    assert metrics.count(SERVER) == 20
    assert metrics.count(SERVER, {"llm.router.route": "primary"}) == 10
    assert metrics.count(SERVER, {"error.type": "500"}) == 0
    assert metrics.count(CLIENT) == 30
    assert metrics.value(FALLBACKS) == 10
    assert metrics.value(TOKENS, {"gen_ai.token.type": "output"}) == 20 * 20
    assert metrics.value("llm.router.requests.active") == 0


async def test_litellm_response_cache_hits_and_misses(install, metrics):
    """With litellm.cache, a miss has an upstream attempt and the repeat hit has none."""
    require("orjson", "LiteLLM's response cache imports the litellm[proxy] extra")
    from litellm.caching.caching import Cache

    callback = install()
    saved, litellm.cache = litellm.cache, Cache(type="local")
    try:
        for _ in range(2):
            await litellm.acompletion(
                model=f"openai/{MINI}", messages=MESSAGES, mock_response="cached", caching=True
            )
            await settled(callback)
    finally:
        litellm.cache = saved
    lookups = {
        p[0]["llm.router.cache.result"]: p[1] for p in points(metrics, "llm.router.cache.lookups")
    }
    assert lookups == {"miss": 1, "hit": 1}
    assert {p[0]["llm.router.cache.name"] for p in points(metrics, "llm.router.cache.lookups")} == {
        "litellm"
    }
    assert metrics.count(SERVER) == 2
    assert metrics.count(CLIENT) == 1


async def test_duplicate_sync_and_async_reports_count_once(install, metrics):
    """LiteLLM may report one attempt through both its sync and async handlers: it counts once."""
    callback = install()
    end = datetime.now()
    start = end - timedelta(milliseconds=250)
    kwargs = {
        "litellm_call_id": "c1",
        "litellm_trace_id": "t1",
        "model": MINI,
        "custom_llm_provider": "openai",
        "litellm_params": {"metadata": {"model_group": "g"}},
        "call_type": "acompletion",
    }
    callback.log_success_event(
        kwargs, {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, start, end
    )
    await callback.async_log_success_event(kwargs, None, start, end)
    assert metrics.count(SERVER) == 1
    assert metrics.count(CLIENT) == 1
    [client] = metrics.points(CLIENT)
    assert client["sum"] == pytest.approx(0.25, abs=1e-6)
    assert metrics.value(TOKENS) == 7


async def test_callback_never_raises_into_litellm(install, metrics, caplog):
    """Garbage events, a failing route function and a broken recorder never raise."""
    callback = install(route=lambda group, md: 1 / 0)
    junk: list[Any] = [None, 5, "x", {}, {"litellm_params": 5, "litellm_trace_id": 7}, object()]
    for kwargs in junk:
        callback.log_pre_api_call(None, None, kwargs)
        callback.log_success_event(kwargs, object(), "start", None)
        callback.log_failure_event(kwargs, None, object(), 12)
        await callback.async_log_success_event(kwargs, None, None, None)
        await callback.async_log_failure_event(kwargs, None, None, None)
        assert await callback.async_pre_call_hook(None, None, kwargs, None) is None
        assert await callback.async_post_call_failure_hook(kwargs, None, None) is None
    callback.watch(None)
    callback.watch(object())
    kwargs = {"litellm_trace_id": "t", "model": MINI, "custom_llm_provider": "openai"}
    from routemeter.request import _sink

    recorder = _sink.active
    assert recorder is not None

    def broken(*_: Any) -> None:
        raise RuntimeError("recorder down")

    recorder.commit = broken  # type: ignore[method-assign]
    callback.log_success_event(kwargs, None, datetime.now(), datetime.now())
    callback.flush()


async def test_nothing_is_recorded_before_setup():
    """Without routemeter.setup() the callback only calls through and keeps no state."""
    callback = RoutemeterCallback()
    try:
        kwargs = {"litellm_trace_id": "t", "model": MINI, "custom_llm_provider": "openai"}
        callback.log_pre_api_call(None, None, kwargs)
        await callback.async_log_failure_event(kwargs, None, datetime.now(), datetime.now())
        assert callback.open_requests == 0
    finally:
        callback.close()


def test_litellm_model_response_usage_is_read():
    """A litellm ModelResponse yields cache reads and writes without double counting."""
    from litellm.types.utils import ModelResponse
    from litellm.types.utils import Usage as LiteLLMUsage

    from routemeter.request._usage import extract, response_model

    response = ModelResponse(
        model="claude-sonnet-4-5-20250929",
        usage=LiteLLMUsage(
            prompt_tokens=9225,
            completion_tokens=410,
            total_tokens=9635,
            prompt_tokens_details={"cached_tokens": 8000, "cache_creation_tokens": 1200},
            cache_creation_input_tokens=1200,
            cache_read_input_tokens=8000,
        ),
    )
    assert extract(response) == Usage(9225, 410, 8000, 1200, None)
    assert response_model(response) == "claude-sonnet-4-5-20250929"


async def test_a_new_callback_takes_over_a_watched_router(install, routers, metrics):
    """A new callback takes over a closed one's watched router and counts cooldowns once."""
    router = routers([mocked("g", f"openai/{MINI}"), mocked("g", "openai/gpt-4o")])
    first = install()
    first.watch(router)
    first.close()
    second = install()
    second.watch(router)
    second.watch(router)
    model_id = router.get_model_ids("g")[0]
    model = router.get_deployment(model_id=model_id).litellm_params.model.split("/", 1)[1]
    router.cooldown_cache.add_deployment_to_cooldown(
        model_id=model_id,
        original_exception=litellm.RateLimitError("slow down", "openai", model),
        exception_status=429,
        cooldown_time=60,
    )
    assert points(metrics, "llm.router.cooldowns") == [
        ({"gen_ai.provider.name": "openai", "gen_ai.request.model": model, "error.type": "429"}, 1)
    ]
