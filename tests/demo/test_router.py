"""The demo router under real uvicorn: what routemeter recorded equals the router's own ledger.

Each test serves the router on a free loopback port in the test's event loop, drives it with the
seeded load generator, stops the server (so every request has committed), then compares the
in-memory metrics with the ledger built from the ``routemeter_demo`` facts of every response.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import pytest

from routemeter.demo.load import Ledger, LoadConfig, run_load
from routemeter.demo.providers import PROFILES, Incident, Profile, Upstreams
from routemeter.demo.router import CHAINS, Router, RouterSettings, build_app
from routemeter.demo.run import bind, serving

SEED = 7
# A small cache, quick cooldowns and a roomy client rate (only the batch bursts overflow it), so
# a few seconds of load show evictions, cooldowns and some router 429s.
SETTINGS = RouterSettings(cache_size=8, cooldown_after=2, cooldown_s=0.5, client_rate=8)


def outage(profile: Profile) -> Profile:
    """The primary of the default route mostly fails for the middle third of every cycle."""
    if (profile.provider, profile.model) != CHAINS["default"][0]:
        return profile
    return dataclasses.replace(profile, incidents=(Incident(0.33, 0.66, 0.95, 529),))


async def drive(load: LoadConfig, settings: RouterSettings = SETTINGS) -> Ledger:
    upstreams = Upstreams.build(
        load.seed, cycle_s=load.duration_s, profiles=[outage(p) for p in PROFILES]
    )
    router = Router(upstreams, settings)
    async with serving(build_app(router), bind("127.0.0.1", 0)) as url:
        return await run_load(url, load)


def tally(points: Iterable[dict[str, Any]], name: str, keys: Sequence[str]) -> Counter[Any]:
    """Histogram counts (or counter values) of ``name`` summed by the attribute ``keys``;
    a missing ``error.type`` reads as ``ok``."""
    out: Counter[Any] = Counter()
    for p in points:
        if p["name"] != name:
            continue
        attrs = p["attributes"]
        key = tuple(attrs.get(k, "ok" if k == "error.type" else None) for k in keys)
        amount = p["count"] if "count" in p else p["value"]
        if amount:
            out[key[0] if len(keys) == 1 else key] += amount
    return out


def by(counter: Counter[Any], *positions: int) -> Counter[Any]:
    """Re-key a tuple-keyed counter by some of its positions."""
    out: Counter[Any] = Counter()
    for key, n in counter.items():
        picked = tuple(key[i] for i in positions)
        out[picked[0] if len(picked) == 1 else picked] += n
    return out


ROUTE = "llm.router.route"
PROVIDER = "gen_ai.provider.name"
MODEL = "gen_ai.request.model"
ERROR = "error.type"
FROM_PROVIDER = "llm.router.fallback.from.provider"
FROM_MODEL = "llm.router.fallback.from.model"


def assert_matches_ledger(points: list[dict[str, Any]], ledger: Ledger) -> None:
    """Every per-request metric routemeter recorded equals what the ledger predicts."""
    assert not ledger.transport_errors
    assert ledger.answered == ledger.sent > 0

    server = tally(points, "gen_ai.server.request.duration", (ROUTE, ERROR))
    assert by(server, 0) == by(ledger.requests, 0)
    assert +Counter({k: n for k, n in server.items() if k[1] != "ok"}) == ledger.server_errors

    attempts = tally(points, "gen_ai.client.operation.duration", (ROUTE, PROVIDER, MODEL, ERROR))
    assert attempts == ledger.attempts

    fallbacks = tally(
        points, "llm.router.fallbacks", (ROUTE, FROM_PROVIDER, FROM_MODEL, PROVIDER, MODEL, ERROR)
    )
    assert fallbacks == ledger.fallbacks

    tokens = tally(points, "llm.router.usage.tokens", (ROUTE, PROVIDER, MODEL, "gen_ai.token.type"))
    assert tokens == ledger.tokens

    decisions = tally(
        points,
        "llm.router.decisions",
        (ROUTE, "llm.router.target.provider", "llm.router.target.model", "llm.router.reason"),
    )
    assert decisions == ledger.decisions

    lookups = tally(points, "llm.router.cache.lookups", (ROUTE, "llm.router.cache.result"))
    assert lookups == ledger.cache_lookups
    assert tally(points, "llm.router.ratelimit.rejections", (ROUTE,)) == ledger.rejections
    assert tally(points, "llm.router.cooldowns", (PROVIDER, MODEL, ERROR)) == ledger.cooldowns
    evictions = tally(points, "llm.router.cache.evictions", ("llm.router.cache.name",))
    assert evictions == +Counter({"responses": ledger.cache_evictions})
    entries = tally(points, "llm.router.cache.entries", ("llm.router.cache.name",))
    assert entries == +Counter({"responses": ledger.cache_stores - ledger.cache_evictions})
    assert not +tally(points, "llm.router.requests.active", (ROUTE,))

    cost = tally(points, "llm.router.cost.usd", (ROUTE,))
    assert cost.keys() == ledger.cost_usd.keys()
    for route, usd in ledger.cost_usd.items():
        assert cost[route] == pytest.approx(usd, rel=1e-9)


async def test_mixed_load_metrics_equal_ledger(metrics):
    """Under mixed load every request, attempt, fallback, token, cache and 429 count is exact."""
    load = LoadConfig(rate=40, duration_s=3.0, seed=SEED, burst_probability=0.05)
    ledger = await drive(load)
    points = metrics.points()
    assert_matches_ledger(points, ledger)
    assert set(by(ledger.requests, 0)) == set(CHAINS)
    assert ledger.fallbacks
    assert ledger.rejections
    assert ledger.cooldowns
    assert any(result == "hit" for _, result in ledger.cache_lookups)
    assert ledger.cache_evictions > 0
    assert any(kind == "cache_read" for *_, kind in ledger.tokens)
    assert any(kind == "cache_creation" for *_, kind in ledger.tokens)
    assert any(kind == "reasoning" for *_, kind in ledger.tokens)
    deployments = {(p.provider, p.model) for p in PROFILES}
    for gauge in (
        "llm.router.ratelimit.remaining.requests",
        "llm.router.ratelimit.remaining.tokens",
    ):
        remaining = tally(points, gauge, (PROVIDER, MODEL))
        assert remaining.keys(), gauge
        assert remaining.keys() <= deployments, gauge
    http = tally(points, "http.server.request.duration", ("http.response.status_code",))
    assert http == by(ledger.requests, 1)


async def test_streaming_only_load(metrics):
    """Streamed answers end with the facts event and [DONE]; TTFT and chunk timing are per
    streamed answer and successful attempt, and no cache is consulted."""
    load = LoadConfig(rate=30, duration_s=2.0, seed=SEED + 1, stream_share=1.0)
    ledger = await drive(load)
    points = metrics.points()
    assert_matches_ledger(points, ledger)
    assert not ledger.cache_lookups
    assert sum(ledger.streamed.values()) > 0
    ttft = tally(points, "gen_ai.server.time_to_first_token", (ROUTE,))
    assert ttft == ledger.streamed
    ok_attempts = by(Counter({k: n for k, n in ledger.attempts.items() if k[3] == "ok"}), 1, 2)
    ttfc = tally(points, "gen_ai.client.operation.time_to_first_chunk", (PROVIDER, MODEL))
    assert ttfc == ok_attempts


async def test_non_streaming_only_load(metrics):
    """JSON answers carry the facts in the body; every admitted request looks up the cache and
    no streaming timing is recorded."""
    load = LoadConfig(rate=30, duration_s=2.0, seed=SEED + 2, stream_share=0.0)
    ledger = await drive(load)
    points = metrics.points()
    assert_matches_ledger(points, ledger)
    assert not ledger.streamed
    admitted = by(ledger.requests, 0) - ledger.rejections
    assert by(ledger.cache_lookups, 0) == admitted
    assert any(result == "hit" for _, result in ledger.cache_lookups)
    assert not tally(points, "gen_ai.server.time_to_first_token", (ROUTE,))
    assert not tally(points, "gen_ai.client.operation.time_to_first_chunk", (PROVIDER,))


def profiles(error_rate: float) -> list[Any]:
    """The demo's upstreams failing with 5xx at ``error_rate`` and in no other way."""
    return [
        dataclasses.replace(
            p, error_rate=error_rate, ratelimit_rate=0.0, timeout_rate=0.0, incidents=()
        )
        for p in PROFILES
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_every_provider_failing_answers_502(metrics, stream):
    """When the whole chain fails the client gets an OpenAI-style 502 and the request's
    error.type is the 502 it answered (each attempt keeps its own error.type)."""
    router = Router(Upstreams.build(SEED, profiles=profiles(1.0)), RouterSettings())
    body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        serving(build_app(router), bind("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/json"
    payload = r.json()
    assert payload["error"]["type"] == "upstream_error"
    facts = payload["routemeter_demo"]
    assert [(a["provider"], a["model"]) for a in facts["attempts"]] == list(CHAINS["default"])
    assert len(facts["fallbacks"]) == len(CHAINS["default"]) - 1
    last = facts["attempts"][-1]["outcome"]
    server = tally(metrics.points(), "gen_ai.server.request.duration", (ROUTE, ERROR))
    assert server == {("default", "502"): 1}
    attempts = tally(metrics.points(), "gen_ai.client.operation.duration", (ROUTE, ERROR))
    assert attempts[("default", last)] >= 1


async def test_router_rate_limit_answers_429_with_retry_after(metrics):
    """A client over its token bucket gets 429 and Retry-After, counted as a rejection."""
    router = Router(
        Upstreams.build(SEED, profiles=profiles(0.0)),
        RouterSettings(client_rate=0.001, client_burst=1),
    )
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        serving(build_app(router), bind("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        statuses = [
            (await client.post("/v1/chat/completions", json={**body, "stream": s})).status_code
            for s in (False, False, True)
        ]
        r = await client.post("/v1/chat/completions", json=body)
    assert statuses == [200, 429, 429]
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["routemeter_demo"]["rate_limited"] is True
    rejections = tally(metrics.points(), "llm.router.ratelimit.rejections", (ROUTE,))
    assert rejections == {"background": 3}


async def test_bad_body_is_400_and_not_routed(metrics):
    """A body without messages is refused before routing: 400, no routed-request metrics."""
    router = Router(Upstreams.build(SEED))
    async with (
        serving(build_app(router), bind("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        r = await client.post("/v1/chat/completions", json={"model": "gpt-4o"})
        health = await client.get("/healthz")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert health.json() == {"status": "ok", "routes": sorted(CHAINS)}
    assert not metrics.points("gen_ai.server.request.duration")
