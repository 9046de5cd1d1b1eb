"""OTLP out of routemeter over real gRPC and HTTP to a receiver decoding the real protobuf."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import routemeter
from routemeter import _instruments as ins
from routemeter._config import load
from routemeter._readers import temporality
from support.otlp_receiver import OTLPReceiver

SPECS = {s.name: s for s in ins.ALL}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@routemeter.route("background")
def handle(i: int) -> None:
    rec = routemeter.current()
    rec.requested("auto")
    rec.choose("openai", "gpt-4o-mini", "cheap")
    if i % 4 == 0:
        with rec.attempt("anthropic", "claude-3-5-haiku") as a:
            a.error(529)
    with rec.attempt("openai", "gpt-4o-mini", server_address="api.openai.com") as a:
        a.usage(input_tokens=100 + i, output_tokens=10)


def _export(env: dict[str, str], monkeypatch, n: int = 20) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    routemeter.setup(set_global=False, export_interval_ms=3_600_000)
    for i in range(n):
        handle(i)
    routemeter.shutdown(timeout_s=10)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_exports_exact_counts(receiver: OTLPReceiver, monkeypatch, protocol: str):
    """20 requests arrive over OTLP with exact counts, semconv units, buckets and attributes."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    _export(
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret,x-tenant=router",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_SERVICE_NAME": "router-under-test",
        },
        monkeypatch,
    )
    assert receiver.transports[-1] == ("grpc" if protocol == "grpc" else "http")
    assert receiver.headers[-1]["authorization"] == "Bearer s3cret"
    assert receiver.headers[-1]["x-tenant"] == "router"

    [server] = receiver.latest("gen_ai.server.request.duration")
    assert server["count"] == 20
    assert server["unit"] == "s"
    assert server["temporality"] == "cumulative"
    assert server["explicit_bounds"] == list(ins.DURATION_BUCKETS)
    assert server["resource"]["service.name"] == "router-under-test"
    assert server["attributes"] == {
        "llm.router.route": "background",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "auto",
    }
    attempts = {
        (p["attributes"]["gen_ai.provider.name"], p["attributes"].get("error.type")): p["count"]
        for p in receiver.latest("gen_ai.client.operation.duration")
    }
    assert attempts == {("openai", None): 20, ("anthropic", "529"): 5}
    [fallbacks] = receiver.latest("llm.router.fallbacks")
    assert fallbacks["value"] == 5
    assert fallbacks["monotonic"] is True
    tokens = {
        p["attributes"]["gen_ai.token.type"]: p["value"]
        for p in receiver.latest("llm.router.usage.tokens")
    }
    assert tokens == {"input": sum(100 + i for i in range(20)), "output": 200}
    for name in receiver.metric_names() & set(SPECS):
        for p in receiver.latest(name):
            assert p["unit"] == SPECS[name].unit
            assert set(p["attributes"]) <= set(SPECS[name].attributes)


def test_delta_temporality_preference(receiver: OTLPReceiver, monkeypatch):
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta exports counters as deltas."""
    _export(
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        },
        monkeypatch,
        n=8,
    )
    [server] = receiver.latest("gen_ai.server.request.duration")
    assert server["temporality"] == "delta"
    assert server["count"] == 8
    [active] = receiver.latest("llm.router.requests.active")
    assert active["temporality"] == "cumulative"


@pytest.mark.parametrize(
    ("preference", "counter", "updown"),
    [("cumulative", 2, 2), ("delta", 1, 2), ("lowmemory", 1, 2)],
)
def test_temporality_table_follows_spec(preference, counter, updown):
    """The preference table maps counters and histograms per the OTel spec."""
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, UpDownCounter

    table = temporality(preference)
    assert table[Counter].value == counter
    assert table[Histogram].value == counter
    assert table[UpDownCounter].value == updown
    assert table[ObservableCounter].value == (1 if preference == "delta" else 2)


def test_timeout_is_milliseconds_per_spec(monkeypatch):
    """OTEL_EXPORTER_OTLP_TIMEOUT is read as milliseconds and handed to Python as seconds."""
    from routemeter._readers import otlp_exporter

    config = load({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    exporter = otlp_exporter(config)
    assert exporter._timeout == 2.5
    exporter.shutdown()


def test_dead_collector_costs_the_handler_nothing(monkeypatch):
    """With nothing listening, requests still run and shutdown returns within its timeout."""
    import time

    from support.net import free_port

    port = free_port()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
    routemeter.setup(set_global=False, export_interval_ms=100)
    for i in range(50):
        handle(i)
    started = time.monotonic()
    routemeter.shutdown(timeout_s=3)
    assert time.monotonic() - started < 10
