"""A real Prometheus scrapes the demo router's /metrics during and after seeded load; PromQL
answers equal the ledger exactly and promtool finds nothing to flag in the exposition."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import httpx
import pytest

import routemeter
from routemeter.demo.load import LoadConfig, run_load
from routemeter.demo.providers import Upstreams
from routemeter.demo.router import Router, RouterSettings, build_app
from routemeter.demo.run import bind, serving
from support.prometheus import PrometheusServer, promtool_check_metrics, require_prometheus

pytestmark = pytest.mark.integration

LOAD = LoadConfig(rate=30, duration_s=3.0, seed=5, burst_probability=0.05)
SETTINGS = RouterSettings(cache_size=8, cooldown_after=2, cooldown_s=0.5, client_rate=8)


def by_labels(result: list[dict[str, Any]], labels: Sequence[str]) -> Counter[Any]:
    """A PromQL vector as a Counter keyed by ``labels`` (one label: the bare value)."""
    out: Counter[Any] = Counter()
    for sample in result:
        key = tuple(sample["metric"].get(label, "") for label in labels)
        value = float(sample["value"][1])
        assert value == int(value), sample
        if value:
            out[key[0] if len(key) == 1 else key] += int(value)
    return out


def regroup(counter: Counter[Any], *positions: int) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for key, n in counter.items():
        picked = tuple(key[i] for i in positions)
        out[picked[0] if len(picked) == 1 else picked] += n
    return out


QUERIES = {
    "requests": (
        "sum by (llm_router_route) (gen_ai_server_request_duration_seconds_count)",
        ("llm_router_route",),
    ),
    "attempts": (
        "sum by (gen_ai_provider_name, gen_ai_request_model, error_type)"
        " (gen_ai_client_operation_duration_seconds_count)",
        ("gen_ai_provider_name", "gen_ai_request_model", "error_type"),
    ),
    "fallbacks": (
        "sum by (llm_router_fallback_from_provider, llm_router_fallback_from_model,"
        " gen_ai_provider_name, gen_ai_request_model) (llm_router_fallbacks_total)",
        (
            "llm_router_fallback_from_provider",
            "llm_router_fallback_from_model",
            "gen_ai_provider_name",
            "gen_ai_request_model",
        ),
    ),
    "tokens": (
        "sum by (gen_ai_token_type) (llm_router_usage_tokens_total)",
        ("gen_ai_token_type",),
    ),
    "lookups": (
        "sum by (llm_router_cache_result) (llm_router_cache_lookups_total)",
        ("llm_router_cache_result",),
    ),
    "rejections": (
        "sum by (llm_router_route) (llm_router_ratelimit_rejections_total)",
        ("llm_router_route",),
    ),
}


def read_back(prom: PrometheusServer, midway: float) -> dict[str, Any]:
    """Every query in ``QUERIES`` now, plus the total request count as of ``midway``."""
    found: dict[str, Any] = {
        name: by_labels(prom.query(promql), labels) for name, (promql, labels) in QUERIES.items()
    }
    total = prom.query("sum(gen_ai_server_request_duration_seconds_count)", midway)
    found["midway"] = float(total[0]["value"][1]) if total else 0.0
    return found


async def test_promql_over_scraped_demo_equals_ledger():
    """Requests per route, attempts per provider/model/outcome, fallbacks, tokens, cache lookups
    and router 429s read back through Prometheus equal the ledger; promtool is silent."""
    require_prometheus()
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    router = Router(Upstreams.build(LOAD.seed, cycle_s=LOAD.duration_s), SETTINGS)
    sock = bind("127.0.0.1", 0)
    target = f"127.0.0.1:{sock.getsockname()[1]}"
    with closing(sock), PrometheusServer([target], scrape_interval="1s") as prom:
        async with serving(build_app(router), sock) as url:
            await asyncio.to_thread(prom.wait_for_scrape, 1, 30)
            began = time.time()
            ledger = await run_load(url, LOAD)
            await asyncio.to_thread(prom.wait_for_scrape, 2, 30)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                exposition = (await client.get("/metrics")).text
            got = await asyncio.to_thread(read_back, prom, began + LOAD.duration_s / 2)

    assert not ledger.transport_errors
    assert ledger.answered == ledger.sent > 0
    assert 0 < got["midway"] < ledger.answered  # scraped while the load ran, too
    assert got["requests"] == regroup(ledger.requests, 0)
    outcomes = regroup(ledger.attempts, 1, 2, 3)
    assert got["attempts"] == Counter(
        {(p, m, o.replace("ok", "")): n for (p, m, o), n in outcomes.items()}
    )
    assert got["fallbacks"] == regroup(ledger.fallbacks, 1, 2, 3, 4)
    assert got["tokens"] == regroup(ledger.tokens, 3)
    assert got["lookups"] == regroup(ledger.cache_lookups, 1)
    assert got["rejections"] == ledger.rejections
    assert ledger.fallbacks
    assert ledger.rejections

    code, output = promtool_check_metrics(exposition)
    assert code == 0, output
    assert output.strip() == "", output
