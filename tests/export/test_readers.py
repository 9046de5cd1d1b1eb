"""OTLP out of routemeter over real gRPC and HTTP to a receiver decoding the real protobuf."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

import routemeter
from routemeter._config import load
from routemeter.export._readers import temporality
from routemeter.recording import _instruments as ins
from support.otlp_receiver import OTLPReceiver
from support.prometheus import have_prometheus, promtool_check_metrics

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


def _export(env: dict[str, str], monkeypatch, n: int = 20, **settings) -> str | None:
    """Serve ``n`` requests, then shut down; returns the /metrics text when prometheus is on."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    h = routemeter.setup(set_global=False, export_interval_ms=3_600_000, **settings)
    for i in range(n):
        handle(i)
    text = None
    if h.metrics_url is not None:
        with urllib.request.urlopen(h.metrics_url, timeout=5) as response:
            text = response.read().decode()
    routemeter.shutdown(timeout_s=10)
    return text


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
    from routemeter.export._readers import otlp_exporter

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


@pytest.mark.parametrize("recorder", ["aggregate", "sdk"])
def test_exponential_histograms_over_otlp_prometheus_keeps_buckets(
    receiver: OTLPReceiver, monkeypatch, recorder: str
):
    """base2_exponential_bucket_histogram turns OTLP histograms exponential in the same process
    whose Prometheus endpoint keeps the semconv explicit buckets."""
    text = _export(
        {
            "OTEL_METRICS_EXPORTER": "otlp,prometheus",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.http_endpoint + "/v1/metrics",
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": (
                "base2_exponential_bucket_histogram"
            ),
        },
        monkeypatch,
        recorder=recorder,
        prometheus_host="127.0.0.1",
        prometheus_port=0,
    )
    [server] = receiver.latest("gen_ai.server.request.duration")
    assert server["kind"] == "exponential_histogram"
    assert server["count"] == 20
    assert sum(server["positive"]["bucket_counts"]) + server["zero_count"] == 20
    assert -10 <= server["scale"] <= 20
    usage = _by_token_type(receiver)
    assert usage["input"]["kind"] == "exponential_histogram"
    assert usage["input"]["sum"] == sum(100 + i for i in range(20))
    assert usage["input"]["min"] == 100
    assert usage["input"]["max"] == 119
    [tokens] = [p for p in receiver.latest("llm.router.usage.tokens") if p["value"] == 200]
    assert tokens["kind"] == "sum"

    assert text is not None
    assert "gen_ai_server_request_duration_seconds_bucket{" in text
    assert 'le="81.92"' in text
    assert "gen_ai_client_token_usage_bucket{" in text
    if have_prometheus():
        assert promtool_check_metrics(text) == (0, "")


def test_unknown_histogram_aggregation_fails_setup(monkeypatch):
    """A misspelt histogram aggregation fails setup naming the variable and what is allowed."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "exponential")
    with pytest.raises(routemeter.ConfigError) as info:
        routemeter.setup(set_global=False)
    message = str(info.value)
    assert "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION" in message
    assert "'exponential'" in message
    assert "base2_exponential_bucket_histogram" in message


def _by_token_type(receiver: OTLPReceiver) -> dict[str, dict]:
    return {
        p["attributes"]["gen_ai.token.type"]: p
        for p in receiver.latest("gen_ai.client.token.usage")
    }


def _traced(sampler, n: int) -> list[tuple[str, str]]:
    """Serve ``n`` requests, each inside its own span of a real SDK tracer; the span ids."""
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    ids = []
    for i in range(n):
        with tracer.start_as_current_span("route") as span:
            handle(i)
            context = span.get_span_context()
            ids.append((f"{context.trace_id:032x}", f"{context.span_id:016x}"))
    return ids


@pytest.mark.parametrize("recorder", ["aggregate", "sdk"])
def test_exemplars_link_histogram_buckets_to_sampled_traces(
    receiver: OTLPReceiver, monkeypatch, recorder: str
):
    """Inside sampled spans, OTLP histogram points carry exemplars naming those spans: the last
    measurement per bucket, as the SDK's aligned reservoir keeps it; sums carry one."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    routemeter.setup(set_global=False, export_interval_ms=3_600_000, recorder=recorder)
    spans = _traced(ALWAYS_ON, 6)
    routemeter.shutdown(timeout_s=10)

    [server] = receiver.latest("gen_ai.server.request.duration")
    exemplars = server["exemplars"]
    assert exemplars, "a sampled span yields exemplars"
    assert len(exemplars) == sum(1 for c in server["bucket_counts"] if c)
    assert {(e["trace_id"], e["span_id"]) for e in exemplars} <= set(spans)
    assert (exemplars[-1]["trace_id"], exemplars[-1]["span_id"]) == spans[-1]
    for e in exemplars:
        assert e["attributes"] == {}
        assert e["value"] > 0
    usage = _by_token_type(receiver)
    [only] = usage["input"]["exemplars"]  # 100..105 tokens all fall in one bucket: the last
    assert only["value"] == 105
    assert (only["trace_id"], only["span_id"]) == spans[-1]
    [fallbacks] = receiver.latest("llm.router.fallbacks")
    [one] = fallbacks["exemplars"]
    assert (one["trace_id"], one["span_id"]) in set(spans)


@pytest.mark.parametrize("recorder", ["aggregate", "sdk"])
@pytest.mark.parametrize(
    ("sampler", "exemplar_filter"),
    [(ALWAYS_OFF, "trace_based"), (None, "trace_based"), (ALWAYS_ON, "always_off")],
    ids=["unsampled-span", "no-span", "filter-off"],
)
def test_no_exemplars_without_a_sampled_span(
    receiver: OTLPReceiver, monkeypatch, recorder: str, sampler, exemplar_filter: str
):
    """Unsampled spans, no span at all, or OTEL_METRICS_EXEMPLAR_FILTER=always_off: none."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", exemplar_filter)
    routemeter.setup(set_global=False, export_interval_ms=3_600_000, recorder=recorder)
    if sampler is None:
        for i in range(4):
            handle(i)
    else:
        _traced(sampler, 4)
    routemeter.shutdown(timeout_s=10)
    points = receiver.points()
    assert any(p.get("count") == 4 for p in points)
    assert [p for p in points if p.get("exemplars")] == []


def test_always_on_exemplars_without_a_span(receiver: OTLPReceiver, monkeypatch):
    """always_on keeps exemplars with no span: values and times, no trace ids."""
    _export(
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_METRICS_EXEMPLAR_FILTER": "always_on",
        },
        monkeypatch,
        n=3,
    )
    [server] = receiver.latest("gen_ai.server.request.duration")
    assert server["exemplars"]
    assert all(e["trace_id"] == "" and e["span_id"] == "" for e in server["exemplars"])
