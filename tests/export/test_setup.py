"""setup()/shutdown(): configuration from the environment, readers by name, fail-fast errors."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import routemeter
from routemeter.request import _sink
from routemeter.testing import flatten


@routemeter.route("default")
def handle() -> None:
    rec = routemeter.current()
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=10, output_tokens=2)


def test_setup_is_idempotent_and_shutdown_safe_twice():
    """A second setup() returns the first handle; shutdown() twice is harmless."""
    first = routemeter.setup(exporters="none", set_global=False)
    assert routemeter.setup() is first
    routemeter.shutdown()
    routemeter.shutdown()
    assert _sink.active is None


def test_bad_env_fails_at_setup_naming_variable(monkeypatch):
    """A bad OTEL_* value raises ConfigError naming the variable, value and what is allowed."""
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(routemeter.ConfigError) as e:
        routemeter.setup(set_global=False)
    assert "OTEL_METRIC_EXPORT_INTERVAL" in str(e.value)
    assert "'soon'" in str(e.value)
    assert "allowed" in str(e.value)


def test_unknown_exporter_lists_known_names(monkeypatch):
    """OTEL_METRICS_EXPORTER with an unknown name lists built-ins and entry points."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,carrier-pigeon")
    with pytest.raises(routemeter.ConfigError, match="carrier-pigeon") as e:
        routemeter.setup(set_global=False, prometheus_port=0)
    for name in ("prometheus", "otlp", "console", "none", "otlp_proto_grpc"):
        assert name in str(e.value)


def test_sdk_disabled_makes_everything_a_noop(monkeypatch):
    """OTEL_SDK_DISABLED=true: setup builds nothing and handlers still run."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handle_ = routemeter.setup(set_global=False)
    assert handle_.meter_provider is None
    assert _sink.active is None
    handle()


def test_standalone_prometheus_server_serves_metrics():
    """The prometheus exporter serves our families on its own loopback port."""
    h = routemeter.setup(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, set_global=False
    )
    handle()
    url = h.metrics_url
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    assert 'gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="chat"' in body
    assert "llm_router_usage_tokens_total" in body
    assert 'le="81.92"' in body
    routemeter.shutdown()
    with pytest.raises(OSError, match=r"refused|reset|timed out"):
        urllib.request.urlopen(url, timeout=2)


def test_busy_prometheus_port_fails_naming_variable():
    """A port already bound fails setup naming OTEL_EXPORTER_PROMETHEUS_PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(routemeter.ConfigError, match="OTEL_EXPORTER_PROMETHEUS_HOST/PORT"):
            routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=port, set_global=False)
    assert _sink.active is None


def test_records_into_an_app_provider():
    """When the app passes its own MeterProvider, routemeter records into it."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    h = routemeter.setup(meter_provider=provider, set_global=False)
    handle()
    names = {p["name"] for p in flatten(reader.get_metrics_data())}
    assert "gen_ai.server.request.duration" in names
    routemeter.shutdown()
    assert not h.owns_provider
    handle()  # the app's provider still works after routemeter shut down
    provider.shutdown()


def test_prices_file_overrides_and_adds_models(tmp_path: Path):
    """ROUTEMETER_PRICES_FILE adds a model genai-prices lacks, priced per million tokens."""
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"models": [{"model": "acme-large", "input_mtok": 2, "output_mtok": 8}]})
    )
    reader = InMemoryMetricReader()
    routemeter.setup(readers=[reader], exporters="none", prices_file=str(prices), set_global=False)

    @routemeter.route("default")
    def acme() -> None:
        with routemeter.current().attempt("acme", "acme-large") as a:
            a.usage(input_tokens=1_000_000, output_tokens=500_000)

    acme()
    [cost] = [p for p in flatten(reader.get_metrics_data()) if p["name"] == "llm.router.cost.usd"]
    assert cost["value"] == pytest.approx(2 + 4)


def test_bad_prices_file_fails_naming_variable(tmp_path: Path):
    """A prices file that cannot be read fails setup naming ROUTEMETER_PRICES_FILE."""
    bad = tmp_path / "prices.json"
    bad.write_text('{"models": [{"input_mtok": 1}]}')
    with pytest.raises(routemeter.ConfigError, match="ROUTEMETER_PRICES_FILE"):
        routemeter.setup(exporters="none", prices_file=str(bad), set_global=False)


def test_third_party_exporter_through_entry_point(tmp_path: Path, monkeypatch):
    """A name from the opentelemetry_metrics_exporter entry points builds that exporter."""
    (tmp_path / "pigeon_exporter.py").write_text(
        textwrap.dedent(
            """
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            class PigeonReader(InMemoryMetricReader):
                instances = []

                def __init__(self):
                    super().__init__()
                    PigeonReader.instances.append(self)
            """
        )
    )
    dist = tmp_path / "pigeon_exporter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pigeon-exporter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[opentelemetry_metrics_exporter]\npigeon = pigeon_exporter:PigeonReader\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "pigeon")
    routemeter.setup(set_global=False)
    handle()
    [reader] = sys.modules["pigeon_exporter"].PigeonReader.instances
    names = {p["name"] for p in flatten(reader.get_metrics_data())}
    assert "gen_ai.client.operation.duration" in names
