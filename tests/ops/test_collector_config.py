"""The Collector config is structurally sound: pipelines name defined components, the memory
limiter comes first, listeners are reachable from other containers, and the commented
remote-write alternative is a working config once uncommented.

No Collector binary exists on these machines, so this is a structural check, not a run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .kit import COLLECTOR, collector_config, collector_listeners, collector_ports, require_module

KINDS = ("receivers", "processors", "exporters", "connectors")


def _config() -> dict[str, Any]:
    return collector_config()


def _pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    pipelines: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    return pipelines


def test_every_pipeline_component_is_defined():
    """Each receiver, processor and exporter a pipeline names is defined in its section."""
    config = _config()
    for pipeline, parts in _pipelines(config).items():
        for kind in ("receivers", "processors", "exporters"):
            defined = set(config.get(kind) or {}) | set(config.get("connectors") or {})
            for name in parts.get(kind, []):
                assert name in defined, f"pipeline {pipeline} names undefined {kind[:-1]} {name}"


def test_every_defined_component_is_used():
    """No defined receiver, processor, exporter or extension is left out of the service."""
    config = _config()
    used = {name for parts in _pipelines(config).values() for ids in parts.values() for name in ids}
    for kind in KINDS:
        for name in config.get(kind) or {}:
            assert name in used, f"{kind[:-1]} {name} is defined but in no pipeline"
    extensions = set(config["service"].get("extensions", []))
    assert extensions == set(config.get("extensions") or {})


def test_pipeline_types_are_signals():
    """Pipeline ids are `metrics`, `traces` or `logs`, optionally `/name`d."""
    for pipeline in _pipelines(_config()):
        assert re.fullmatch(r"(metrics|traces|logs)(/[\w-]+)?", pipeline), pipeline


def test_memory_limiter_is_first_then_batch():
    """Every pipeline starts with memory_limiter and batches after it (production guidance)."""
    for pipeline, parts in _pipelines(_config()).items():
        processors = parts.get("processors", [])
        assert processors[:1] == ["memory_limiter"], f"{pipeline}: {processors}"
        assert "batch" in processors[1:], f"{pipeline} has no batch processor after the limiter"


def test_memory_limiter_is_configured_for_a_container():
    """The limiter checks every second and uses cgroup percentages with a smaller spike limit."""
    limiter = _config()["processors"]["memory_limiter"]
    assert limiter["check_interval"] == "1s"
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 90


def test_otlp_receives_grpc_and_http_on_standard_ports():
    """The OTLP receiver listens on 4317 (gRPC) and 4318 (HTTP)."""
    ports = collector_ports()
    assert ports["receivers.otlp.grpc"] == 4317
    assert ports["receivers.otlp.http"] == 4318


def test_prometheus_exporter_health_check_and_own_telemetry():
    """Prometheus exporter, health_check and the Collector's own metrics (8888) are configured."""
    config = _config()
    ports = collector_ports(config)
    assert "prometheus" in _pipelines(config)["metrics"]["exporters"]
    assert ports["exporters.prometheus"] == 8889
    assert ports["extensions.health_check"] == 13133
    assert ports["service.telemetry.metrics.readers[0]"] == 8888


def test_listeners_bind_every_interface():
    """Every listener binds 0.0.0.0, since localhost is unreachable from other containers."""
    for where, address in collector_listeners(_config()).items():
        assert address.rsplit(":", 1)[0] == "0.0.0.0", f"{where} listens on {address}"


def test_prometheus_exporter_keeps_names_and_resource_attributes_apart():
    """The exporter keeps routemeter's names and leaves resource attributes on target_info."""
    exporter = _config()["exporters"]["prometheus"]
    assert exporter.get("add_metric_suffixes", True) is True
    assert "translation_strategy" not in exporter
    assert not (exporter.get("resource_to_telemetry_conversion") or {}).get("enabled", False)
    assert exporter["metric_expiration"].endswith("m")


def _uncommented_alternative() -> dict[str, Any]:
    """The commented prometheusremotewrite block, uncommented and parsed."""
    yaml = require_module("yaml")
    lines = COLLECTOR.read_text().splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.match(r"\s*#\s*prometheusremotewrite:", line)
    )
    indent = lines[start].index("#")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#") or line.index("#") != indent:
            break
        block.append(line[indent + 2 :] if len(line) > indent + 1 else "")
    parsed: dict[str, Any] = yaml.safe_load("\n".join(block))
    return parsed


def test_remote_write_alternative_is_valid_once_uncommented():
    """The commented prometheusremotewrite exporter and pipeline are valid once uncommented."""
    exporter = _uncommented_alternative()["prometheusremotewrite"]
    assert exporter["endpoint"].startswith("http")
    assert exporter["endpoint"].endswith("/api/v1/push")
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is False
    assert re.search(r"^\s*# exporters: \[prometheusremotewrite\]$", COLLECTOR.read_text(), re.M)


@pytest.mark.parametrize("key", ["pipelines", "telemetry", "extensions"])
def test_service_section_is_complete(key: str):
    """The service section declares pipelines, its own telemetry and the extensions it runs."""
    assert _config()["service"][key]
