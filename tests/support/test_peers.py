"""Self-tests: the test harnesses work against real exporters, real Prometheus and promtool."""

from __future__ import annotations

import gzip
import json
import urllib.request
import zlib
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server

from support import prometheus as prom_support
from support.net import free_port
from support.otlp_receiver import OTLPReceiver
from support.prometheus import (
    PrometheusError,
    PrometheusServer,
    promtool_check_metrics,
    require_prometheus,
)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


def _exporter(transport: str, rx: OTLPReceiver, timeout: float = 5.0) -> MetricExporter:
    if transport == "grpc":
        return GrpcMetricExporter(
            endpoint=rx.grpc_endpoint,
            insecure=True,
            timeout=timeout,
            headers={"authorization": "Bearer selftest"},
        )
    return HttpMetricExporter(
        endpoint=rx.http_metrics_url,
        timeout=timeout,
        compression=HttpCompression.Gzip,
        headers={"authorization": "Bearer selftest"},
    )


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporter_points_arrive_exactly(receiver: OTLPReceiver, transport: str) -> None:
    """Real OTLP exporters' counter and histogram points decode to exact values and metadata."""
    reader = PeriodicExportingMetricReader(
        _exporter(transport, receiver), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "selftest"}),
        shutdown_on_exit=False,
    )
    try:
        meter = provider.get_meter("selftest.scope", "1.2.3")
        counter = meter.create_counter("selftest.requests", unit="{request}", description="reqs")
        hist = meter.create_histogram(
            "selftest.latency",
            unit="s",
            explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0],
        )
        m1 = {"model": "m1", "stream": True, "retries": 2, "ratio": 0.5, "tags": ["a", "b"]}
        counter.add(3, m1)
        counter.add(2, m1)
        counter.add(4, {"model": "m2", "stream": False})
        for value in (0.05, 0.3, 0.3, 2.0):
            hist.record(value, {"model": "m1"})
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown(timeout_millis=10_000)

    assert set(receiver.transports) == {transport}
    assert receiver.headers[0]["authorization"] == "Bearer selftest"
    if transport == "http":
        assert receiver.headers[0]["content-encoding"] == "gzip"

    m1_point = receiver.latest_point("selftest.requests", {"model": "m1"})
    assert m1_point["attributes"] == m1
    assert m1_point["value"] == 5
    assert isinstance(m1_point["value"], int)
    assert m1_point["kind"] == "sum"
    assert m1_point["monotonic"] is True
    assert m1_point["temporality"] == "cumulative"
    assert m1_point["unit"] == "{request}"
    assert m1_point["description"] == "reqs"
    assert m1_point["scope"] == "selftest.scope"
    assert m1_point["scope_version"] == "1.2.3"
    assert m1_point["resource"]["service.name"] == "selftest"
    assert receiver.latest_point("selftest.requests", {"model": "m2"})["value"] == 4

    h = receiver.latest_point("selftest.latency")
    assert h["kind"] == "histogram"
    assert h["unit"] == "s"
    assert h["attributes"] == {"model": "m1"}
    assert h["explicit_bounds"] == [0.1, 0.5, 1.0]
    assert h["bucket_counts"] == [1, 2, 0, 1]
    assert h["count"] == 4
    assert h["sum"] == pytest.approx(2.65)
    assert (h["min"], h["max"]) == (0.05, 2.0)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_receiver_restarts_on_same_ports(receiver: OTLPReceiver, transport: str) -> None:
    """stop() makes exports fail; start() rebinds the same ports and the same exporter recovers."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("selftest").create_counter("selftest.restarts").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    # 2 s lets the exporter retry once: after an outage the gRPC exporter's first attempt fails
    # fast on a channel still in reconnect backoff, and only its retry uses a fresh channel.
    exporter = _exporter(transport, receiver, timeout=2.0)
    ports = (receiver.grpc_port, receiver.http_port)
    try:
        assert exporter.export(data) is MetricExportResult.SUCCESS
        receiver.stop()
        assert exporter.export(data) is MetricExportResult.FAILURE
        receiver.start()
        assert (receiver.grpc_port, receiver.http_port) == ports
        assert exporter.export(data) is MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
        provider.shutdown()
    assert receiver.transports == [transport, transport]
    assert [p["value"] for p in receiver.points("selftest.restarts")] == [1, 1]


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        status: int = resp.status
        return status


def test_http_decodes_deflate_json_and_nested_any_values(receiver: OTLPReceiver) -> None:
    """Deflate bodies, OTLP/JSON and kvlist/array/bool/double attributes all decode."""
    nested = AnyValue()
    nested.kvlist_value.values.add(key="inner", value=AnyValue(int_value=7))
    nested.kvlist_value.values.add(
        key="list", value=AnyValue(array_value={"values": [AnyValue(bool_value=True)]})
    )
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="g", unit="1")
    metric.gauge.data_points.add(
        as_double=1.5,
        attributes=[KeyValue(key="kv", value=nested), KeyValue(key="d", value=AnyValue())],
    )
    wire = request.SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert (
        _post(
            receiver.http_metrics_url,
            zlib.compress(wire),
            {**protobuf, "Content-Encoding": "deflate"},
        )
        == 200
    )
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_body = raw.compress(wire) + raw.flush()
    assert (
        _post(receiver.http_metrics_url, raw_body, {**protobuf, "Content-Encoding": "deflate"})
        == 200
    )
    body = json.dumps(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "j",
                                    "sum": {
                                        "aggregationTemporality": 1,
                                        "isMonotonic": True,
                                        "dataPoints": [{"asInt": "9", "attributes": []}],
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    assert (
        _post(
            receiver.http_metrics_url,
            gzip.compress(body),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        == 200
    )

    g = receiver.points("g")
    assert len(g) == 2
    assert g[0]["attributes"] == {"kv": {"inner": 7, "list": [True]}, "d": None}
    assert (g[0]["kind"], g[0]["value"]) == ("gauge", 1.5)
    assert "temporality" not in g[0]
    (j,) = receiver.points("j")
    assert (j["value"], j["temporality"], j["monotonic"]) == (9, "delta", True)


def test_receiver_wait_for_is_bounded(receiver: OTLPReceiver) -> None:
    """wait_for raises TimeoutError instead of hanging when nothing arrives."""
    with pytest.raises(TimeoutError, match="metric 'never'"):
        receiver.wait_for_metric("never", timeout_s=0.2)


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)]
)
def test_require_prometheus_never_skips_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    """Missing binaries skip locally but fail when CI=true."""
    monkeypatch.setattr(prom_support, "have_prometheus", lambda: False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        require_prometheus()


@pytest.mark.integration
def test_prometheus_scrapes_exact_counter_and_promtool_accepts() -> None:
    """Real Prometheus sees exactly 7 increments; promtool accepts the exposition."""
    require_prometheus()
    registry = CollectorRegistry()
    counter = Counter("selftest_hits", "Hits counted by the self-test.", registry=registry)
    for _ in range(7):
        counter.inc()
    code, output = promtool_check_metrics(generate_latest(registry).decode())
    assert code == 0, output

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with PrometheusServer([f"127.0.0.1:{port}"]) as prom:
            prom.wait_for_scrape(min_scrapes=1, timeout_s=30)
            assert prom.scalar("sum(selftest_hits_total)") == 7
            assert (
                prom.query('up{job="routemeter"}')[0]["metric"]["instance"] == f"127.0.0.1:{port}"
            )
            assert prom.query("sum(nonexistent_metric)") == []
            with pytest.raises(PrometheusError, match="parse error"):
                prom.query("sum(")
            prom.reload()
            prom.wait_for_scrape(min_scrapes=1, timeout_s=30)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.integration
def test_promtool_rejects_bad_exposition() -> None:
    """promtool_check_metrics reports a non-zero exit and its complaint for broken text."""
    require_prometheus()
    code, output = promtool_check_metrics("# TYPE x counter\nx{ 1\n")
    assert code != 0
    assert output.strip()
