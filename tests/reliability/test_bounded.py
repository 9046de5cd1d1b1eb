"""Bounded memory under hostile input: a client inventing model names cannot grow the series
or the process without bound, and every request is still counted exactly."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter

import httpx
import pytest

import routemeter
from routemeter.demo.router import build_app
from routemeter.demo.run import bind, serving
from routemeter.testing import Capture, capture

from .hostile import chat, exposition_series, exposition_values, fast_router

NAMES = 100_000
LIMIT = 2000  # ROUTEMETER_CARDINALITY_LIMIT's default
OVERFLOW = {"otel.metric.overflow": True}


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@routemeter.route("default")
def handle(model: str) -> None:
    """What a router does with a client's request: the asked-for model, a decision, an attempt."""
    rec = routemeter.current()
    rec.requested(model)
    rec.choose("openai", "gpt-4o-mini", "default")
    with rec.attempt(
        "openai", "gpt-4o-mini", server_address="api.openai.com", server_port=443
    ) as a:
        a.usage(input_tokens=10, output_tokens=5)


def send_names(metrics: Capture, marks: tuple[int, ...]) -> dict[int, int]:
    """Send NAMES distinct client model names; RSS after each mark (garbage collected first)."""
    handle("warm-up")
    metrics.points()
    rss: dict[int, int] = {}
    started = time.perf_counter()
    for i in range(NAMES):
        handle(f"client-model-{i:06d}")
        if i + 1 in marks:
            gc.collect()
            rss[i + 1] = rss_bytes()
    print(f"\n{NAMES} requests in {time.perf_counter() - started:.1f} s", end="")
    return rss


def per_metric(metrics: Capture) -> Counter[str]:
    return Counter(p["name"] for p in metrics.points())


def test_100k_names_fold_into_the_allow_list():
    """100,000 invented names: 100 admitted + _OTHER per metric, all counted, no RSS growth."""
    with capture() as metrics:
        rss = send_names(metrics, (10_000, NAMES))
        series = per_metric(metrics)
        assert series["gen_ai.server.request.duration"] == 100 + 1
        assert series["llm.router.decisions"] == 100 + 1
        assert max(series.values()) == 101
        assert metrics.count("gen_ai.server.request.duration") == NAMES + 1
        other = {"gen_ai.request.model": "_OTHER"}
        assert metrics.count("gen_ai.server.request.duration", other) == NAMES - 99
        assert metrics.value("llm.router.decisions") == NAMES + 1
        assert metrics.value("llm.router.usage.tokens") == (NAMES + 1) * 15
    growth = rss[NAMES] - rss[10_000]
    print(f"\nRSS growth 10k -> 100k names (defaults): {growth / 1e6:.2f} MB")
    assert growth < 2_000_000


def test_100k_names_overflow_at_the_cardinality_limit():
    """Allow-list opened: each metric stops at limit + 1 overflow point; RSS stops when full."""
    with capture(max_models=50_000) as metrics:
        rss = send_names(metrics, (10_000, 50_000, 60_000, NAMES))
        series = per_metric(metrics)
        assert series["gen_ai.server.request.duration"] == LIMIT + 1
        assert series["llm.router.decisions"] == LIMIT + 1
        assert max(series.values()) == LIMIT + 1
        total = metrics.count("gen_ai.server.request.duration")
        assert total == NAMES + 1
        overflowed = metrics.count("gen_ai.server.request.duration", OVERFLOW)
        assert overflowed == NAMES + 1 - LIMIT
        assert metrics.value("llm.router.decisions", OVERFLOW) == overflowed
        assert metrics.value("llm.router.decisions") == NAMES + 1
    filling, full = rss[50_000] - rss[10_000], rss[NAMES] - rss[60_000]
    print(
        f"\nRSS growth while the allow-list fills (10k -> 50k names): {filling / 1e6:.2f} MB;"
        f" once full (60k -> 100k): {full / 1e6:.2f} MB"
    )
    assert filling < 15_000_000
    assert full < 2_000_000


HTTP_NAMES = 1000


@pytest.mark.integration
@pytest.mark.parametrize(
    ("settings", "bound"),
    [({"max_models": 50}, 50), ({"max_models": 100_000, "cardinality_limit": 200}, 200)],
    ids=["allow-list", "cardinality-limit"],
)
async def test_hostile_client_through_the_demo_router(settings, bound):
    """Invented names over real HTTP: at most bound + 1 series per metric, every request counted."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False, **settings)
    app = build_app(fast_router())
    async with serving(app, bind("127.0.0.1", 0)) as url:
        # one connection per request: keep-alive reuse against this in-process server stalls
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            names = iter(range(HTTP_NAMES))

            async def worker() -> Counter[int]:
                statuses: Counter[int] = Counter()
                for i in names:
                    r = await client.post("/v1/chat/completions", json=chat(f"evil-{i}"))
                    statuses[r.status_code] += 1
                return statuses

            statuses = sum(await asyncio.gather(*(worker() for _ in range(16))), Counter())
            text = (await client.get("/metrics")).text
    assert statuses == Counter({200: HTTP_NAMES})
    series = exposition_series(text)
    assert len(series["gen_ai_server_request_duration_seconds_count"]) == bound + 1
    assert len(series["llm_router_decisions_total"]) == bound + 1
    assert max(len(v) for v in series.values()) == bound + 1
    counted = exposition_values(text, "gen_ai_server_request_duration_seconds_count")
    assert sum(v for _, v in counted) == HTTP_NAMES
    http_counted = exposition_values(text, "http_server_request_duration_seconds_count")
    assert sum(v for _, v in http_counted) == HTTP_NAMES
