"""Savings, overhead, attempts, goodput, unpriced spend, waste, tenants and upstream rotation:
exact against a ledger of three scripted requests, on both recorders: in-memory data points, the
Prometheus text of /metrics, PromQL over a real Prometheus and the protobuf a real OTLP receiver
decodes (gRPC and HTTP)."""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest

import routemeter
from routemeter.export._setup import setup, shutdown
from routemeter.request import _record
from routemeter.testing import Capture, capture
from support.otlp_receiver import OTLPReceiver
from support.prometheus import PrometheusServer, require_prometheus

RECORDERS = ("aggregate", "sdk")
GPT_4O = (2.5e-06, 1e-05)
GPT_4O_MINI = (1.5e-07, 6e-07)
SONNET_INPUT = 3e-06


@contextmanager
def readings(*times: float) -> Iterator[None]:
    """``perf_counter`` gives these readings in order (request start, attempt start/end, ...)."""
    with mock.patch.object(_record, "perf_counter", iter(times).__next__):
        yield


@routemeter.route("think", baseline_model="gpt-4o", slo=routemeter.SLO(duration_s=1.0))
def think(tenant: str, usage: bool) -> None:
    rec = routemeter.current()
    rec.requested("auto")
    rec.tenant(tenant)
    if usage:
        with rec.attempt("anthropic", "claude-sonnet-4-5") as a:
            a.usage(input_tokens=100, output_tokens=0)
            a.error(529)
    with rec.attempt("openai", "gpt-4o-mini") as a:
        if usage:
            a.usage(input_tokens=1000, output_tokens=200)


@routemeter.route("plain")
def plain() -> None:
    rec = routemeter.current()
    rec.requested("gpt-4o")
    with rec.attempt("acme", "house-llm") as a:
        a.usage(input_tokens=10, output_tokens=10)


def run_ledger() -> None:
    """R1: a 529 then a success, 1.0 s (meets the 1 s SLO), 0.5 s inside attempts. R2: one
    attempt without usage, 2.5 s (misses it), a key-shaped tenant. R3: a route without SLO or
    baseline, an unpriced model, the client asked for gpt-4o."""
    with readings(0.0, 0.25, 0.5, 0.5, 0.75, 1.0):
        think("team-a", True)
    with readings(0.0, 0.25, 2.25, 2.5):
        think("sk-proj-abcdefghijklmnopqrstu", False)
    with readings(0.0, 0.125, 0.375, 0.5):
        plain()
    routemeter.cooldown("openai", "gpt-4o-mini", "429")
    routemeter.cooldown("anthropic", "claude-sonnet-4-5", seconds=0.0)
    routemeter.cooldown("google", "gemini-2.5-pro", 503, seconds=3600)
    routemeter.cooldown("acme", "house-llm")
    routemeter.recovered("acme", "house-llm")


BASELINE_R1 = 1000 * GPT_4O[0] + 200 * GPT_4O[1]
BASELINE_R3 = 10 * GPT_4O[0] + 10 * GPT_4O[1]
COST_R1 = 1000 * GPT_4O_MINI[0] + 200 * GPT_4O_MINI[1]
WASTE_R1 = 100 * SONNET_INPUT


@pytest.fixture(params=RECORDERS)
def ledger(request: pytest.FixtureRequest) -> Iterator[Capture]:
    with capture(recorder=request.param) as c:
        run_ledger()
        yield c


def test_baseline_cost_prices_the_answer_at_the_baseline(ledger: Capture):
    """Per route and baseline model: the answering attempt's usage at the baseline's rates."""
    assert ledger.value(
        "llm.router.baseline.cost.usd",
        {"llm.router.route": "think", "llm.router.baseline.model": "gpt-4o"},
    ) == pytest.approx(BASELINE_R1, rel=1e-12)
    [r3] = ledger.select("llm.router.baseline.cost.usd", {"llm.router.route": "plain"})
    assert r3["attributes"]["llm.router.baseline.model"] == "gpt-4o"
    assert r3["value"] == pytest.approx(BASELINE_R3, rel=1e-12)
    assert len(ledger.select("llm.router.baseline.cost.usd")) == 2


def test_waste_carries_error_type(ledger: Capture):
    """Tokens and cost of the failed attempt carry its error.type; the answer's carry none."""
    waste = {"gen_ai.provider.name": "anthropic", "error.type": "529"}
    assert ledger.value("llm.router.cost.usd", waste) == pytest.approx(WASTE_R1, rel=1e-12)
    assert ledger.value("llm.router.usage.tokens", {**waste, "gen_ai.token.type": "input"}) == 100
    [ok] = ledger.select("llm.router.cost.usd", {"gen_ai.provider.name": "openai"})
    assert "error.type" not in ok["attributes"]
    assert ok["value"] == pytest.approx(COST_R1, rel=1e-12)


def test_overhead_and_attempts_per_request(ledger: Capture):
    """Overhead is the duration outside attempts; attempts per request in their buckets."""
    [overhead] = ledger.select("llm.router.overhead.duration", {"llm.router.route": "think"})
    assert (overhead["count"], overhead["sum"]) == (2, 1.0)
    [plain_overhead] = ledger.select("llm.router.overhead.duration", {"llm.router.route": "plain"})
    assert plain_overhead["sum"] == 0.25
    [attempts] = ledger.select("llm.router.request.attempts", {"llm.router.route": "think"})
    assert (attempts["count"], attempts["sum"]) == (2, 3)
    assert attempts["explicit_bounds"] == [1, 2, 3, 4, 5, 8]
    assert attempts["bucket_counts"][:2] == [1, 1]


def test_good_requests_met_every_objective(ledger: Capture):
    """R1 met the 1 s objective, R2 did not; R3's route has none, so its success is good."""
    good = {}
    for p in ledger.select("llm.router.requests.good"):
        attributes = p["attributes"]
        good[attributes["llm.router.route"], attributes.get("llm.router.tenant")] = p["value"]
    assert good == {("think", "team-a"): 1, ("plain", None): 1}


def test_unpriced_attempts_by_reason(ledger: Capture):
    """Usage of an unknown model and an answer without usage are counted, by reason."""
    unpriced = {}
    for p in ledger.select("llm.router.cost.unpriced"):
        attributes = p["attributes"]
        unpriced[attributes["llm.router.unpriced.reason"]] = (
            attributes["gen_ai.provider.name"],
            p["value"],
        )
    assert unpriced == {"unknown_model": ("acme", 1), "no_usage": ("openai", 1)}
    [info] = ledger.select("llm.router.prices.info")
    assert info["value"] == 1
    assert info["attributes"]["llm.router.prices.table"].startswith("genai-prices@")


def test_tenants_are_bounded_and_counted(ledger: Capture):
    """A named tenant is on server metrics, tokens and cost; a key-shaped one folds to _OTHER
    and counts one rejected value."""
    by_tenant = {p["attributes"].get("llm.router.tenant"): p["count"]
                 for p in ledger.select("gen_ai.server.request.duration")}  # fmt: skip
    assert by_tenant == {"team-a": 1, "_OTHER": 1, None: 1}
    assert (
        ledger.value(
            "llm.router.usage.tokens",
            {"llm.router.tenant": "team-a", "gen_ai.token.type": "output"},
        )
        == 200
    )
    assert (
        ledger.value("routemeter.attribute.rejected", {"routemeter.attribute": "llm.router.tenant"})
        == 1
    )
    assert not any("sk-proj" in str(p["attributes"]) for p in ledger.points())


def test_upstream_availability_follows_cooldowns(ledger: Capture):
    """0 while cooled down (until recovered, or for its seconds), 1 once recovered or expired."""
    available = {p["attributes"]["gen_ai.provider.name"]: p["value"]
                 for p in ledger.select("llm.router.upstream.available")}  # fmt: skip
    assert available == {"openai": 0, "anthropic": 1, "google": 0, "acme": 1}
    assert ledger.value("llm.router.cooldowns", {"gen_ai.provider.name": "google"}) == 1


def _prometheus(text: str, family: str) -> dict[str, float]:
    """Sample line (name and labels) -> value, for one family's samples."""
    out = {}
    for line in text.splitlines():
        if line.startswith(family):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


@pytest.mark.parametrize("recorder", RECORDERS)
def test_prometheus_text_carries_the_ledger(recorder: str):
    """The same numbers on /metrics: baseline and actual cost, goodput, overhead, attempts,
    unpriced, availability."""
    shutdown()
    handle = setup(exporters="prometheus", prometheus_port=0, recorder=recorder, set_global=False)
    try:
        run_ledger()
        assert handle.metrics_url is not None
        with urllib.request.urlopen(handle.metrics_url, timeout=10) as response:
            text = response.read().decode()
    finally:
        shutdown()
    baseline = _prometheus(text, "llm_router_baseline_cost_usd_total{")
    [think] = [v for k, v in baseline.items() if 'llm_router_route="think"' in k]
    assert math.isclose(think, BASELINE_R1, rel_tol=1e-12)
    good = _prometheus(text, "llm_router_requests_good_total{")
    assert sorted(good.values()) == [1.0, 1.0]
    overhead = _prometheus(text, "llm_router_overhead_duration_seconds_sum{")
    assert sorted(overhead.values()) == [0.25, 1.0]
    attempts = _prometheus(text, "llm_router_request_attempts_sum{")
    assert sorted(attempts.values()) == [1.0, 3.0]
    unpriced = _prometheus(text, "llm_router_cost_unpriced_total{")
    assert sorted(re.findall(r'reason="(\w+)"', " ".join(unpriced))) == [
        "no_usage",
        "unknown_model",
    ]
    available = _prometheus(text, "llm_router_upstream_available{")
    assert sum(available.values()) == 2
    assert len(available) == 4
    assert "llm_router_prices_info{" in text


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("recorder", RECORDERS)
def test_a_real_prometheus_and_a_real_otlp_receiver_get_the_ledger(recorder: str, protocol: str):
    """PromQL over a real Prometheus scrape and the decoded OTLP protobuf (over gRPC or HTTP)
    give the ledger's savings, goodput, overhead, attempts, unpriced spend and rotation."""
    require_prometheus()
    shutdown()
    with OTLPReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_metrics_url
        handle = setup(
            exporters="prometheus,otlp",
            prometheus_port=0,
            otlp_protocol=protocol,
            otlp_endpoint=endpoint,
            export_interval_ms=3_600_000,
            recorder=recorder,
            set_global=False,
        )
        try:
            run_ledger()
            assert handle.prometheus is not None
            assert handle.prometheus.address is not None
            host, port = handle.prometheus.address
            with PrometheusServer([f"{host}:{port}"]) as prom:
                prom.wait_for_scrape(1)
                baseline = prom.scalar(
                    'sum(llm_router_baseline_cost_usd_total{llm_router_route="think"})'
                )
                good = prom.scalar("sum(llm_router_requests_good_total)")
                overhead = prom.scalar("sum(llm_router_overhead_duration_seconds_sum)")
                attempts = prom.scalar("sum(llm_router_request_attempts_sum)")
                unpriced = prom.scalar("count(llm_router_cost_unpriced_total)")
                available = prom.scalar("sum(llm_router_upstream_available)")
                rotation = prom.scalar("count(llm_router_upstream_available)")
        finally:
            shutdown()  # the OTLP reader's last export
        sent = {
            name: receiver.latest(name)
            for name in (
                "llm.router.baseline.cost.usd",
                "llm.router.requests.good",
                "llm.router.overhead.duration",
                "llm.router.request.attempts",
                "llm.router.cost.unpriced",
                "llm.router.upstream.available",
            )
        }
    assert math.isclose(baseline, BASELINE_R1, rel_tol=1e-12)
    assert (good, overhead, attempts, unpriced, available, rotation) == (2, 1.25, 4, 2, 2, 4)
    [think] = [
        p for p in sent["llm.router.baseline.cost.usd"]
        if p["attributes"]["llm.router.route"] == "think"
    ]  # fmt: skip
    assert math.isclose(think["value"], BASELINE_R1, rel_tol=1e-12)
    assert sum(p["value"] for p in sent["llm.router.requests.good"]) == 2
    assert sum(p["sum"] for p in sent["llm.router.overhead.duration"]) == 1.25
    assert sum(p["sum"] for p in sent["llm.router.request.attempts"]) == 4
    assert len(sent["llm.router.cost.unpriced"]) == 2
    assert sorted(p["value"] for p in sent["llm.router.upstream.available"]) == [0, 0, 1, 1]
