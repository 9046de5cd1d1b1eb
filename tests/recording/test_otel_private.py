"""The seam for private SDK names: probes at setup, a loud fallback, never different data."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

import routemeter
from routemeter.recording import _otel_private
from routemeter.recording._recorder import SdkRecorder
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.testing import flatten

DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}


@routemeter.route("default")
def handle() -> None:
    rec = routemeter.current()
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=10, output_tokens=2)


def _registered(reader: InMemoryMetricReader) -> InMemoryMetricReader:
    MeterProvider(metric_readers=[reader])
    return reader


def test_this_sdk_offers_everything_the_aggregate_recorder_reads():
    """On the SDK we test with, the probes find nothing missing."""
    reader = _registered(InMemoryMetricReader())
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert _otel_private.aggregate_problems([reader], provider) == []
    assert _otel_private.SYNC_GAUGE is not None


def test_reader_preferences_are_read_per_instrument_kind():
    """A delta reader reads as delta for counters and histograms, cumulative elsewhere."""
    reader = InMemoryMetricReader(preferred_temporality=DELTA)
    table = _otel_private.reader_temporality(reader)
    assert table["Counter"] == AggregationTemporality.DELTA
    assert table["Histogram"] == AggregationTemporality.DELTA
    assert table["UpDownCounter"] == AggregationTemporality.CUMULATIVE
    assert _otel_private.reader_exponential(reader) is None


def test_exponential_limits_come_from_the_reader_aggregation():
    """An exponential histogram preference yields its max size and scale."""
    reader = InMemoryMetricReader(
        preferred_aggregation={
            Histogram: ExponentialBucketHistogramAggregation(max_size=80, max_scale=10)
        }
    )
    assert _otel_private.reader_exponential(reader) == (80, 10)


@pytest.mark.parametrize(
    ("constant", "expected"),
    [
        ("TEMPORALITY", "_instrument_class_temporality_renamed"),
        ("AGGREGATION", "_instrument_class_aggregation_renamed"),
        ("COLLECT", "_collect_renamed"),
        ("SDK_CONFIG", "_sdk_config_renamed"),
    ],
)
def test_a_renamed_private_name_falls_back_to_the_sdk_recorder(
    monkeypatch, caplog, constant, expected
):
    """A private name gone from the SDK: setup warns naming it, records through the SDK
    recorder, and a delta reader still gets deltas."""
    monkeypatch.setattr(_otel_private, constant, expected)
    reader = InMemoryMetricReader(preferred_temporality=DELTA)
    with caplog.at_level(logging.WARNING, logger="routemeter"):
        h = routemeter.setup(readers=[reader], set_global=False, exporters="none")
    assert isinstance(h.recorder, SdkRecorder)
    warnings = [r.getMessage() for r in caplog.records if "aggregate recorder" in r.getMessage()]
    assert len(warnings) == 1
    assert expected in warnings[0]
    for _ in range(3):
        handle()
    first = [
        p for p in flatten(reader.get_metrics_data()) if p["name"] == "llm.router.usage.tokens"
    ]
    handle()
    second = [
        p for p in flatten(reader.get_metrics_data()) if p["name"] == "llm.router.usage.tokens"
    ]
    assert sorted(p["value"] for p in first) == [6, 30]
    assert sorted(p["value"] for p in second) == [2, 10]


def test_exponential_limits_renamed_fall_back(monkeypatch, caplog):
    """Exponential histograms never silently become explicit ones: the fallback takes over."""
    monkeypatch.setattr(_otel_private, "MAX_SIZE", "_max_size_renamed")
    reader = InMemoryMetricReader(
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()}
    )
    with caplog.at_level(logging.WARNING, logger="routemeter"):
        h = routemeter.setup(readers=[reader], set_global=False, exporters="none")
    assert isinstance(h.recorder, SdkRecorder)
    assert "_max_size_renamed" in caplog.text
    handle()
    kinds = {
        type(m.data).__name__
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.operation.duration"
    }
    assert kinds == {"ExponentialHistogram"}


def test_an_intact_sdk_keeps_the_aggregate_recorder(caplog):
    """Nothing changed: the aggregate recorder is used and nothing is logged."""
    with caplog.at_level(logging.WARNING, logger="routemeter"):
        h = routemeter.setup(readers=[InMemoryMetricReader()], set_global=False, exporters="none")
    assert isinstance(h.recorder, AggregateRecorder)
    assert "aggregate recorder" not in caplog.text


def test_a_foreign_runtime_context_takes_the_public_getter(monkeypatch):
    """A runtime context other than the standard one is read through get_current."""
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", object())
    assert _otel_private.context_getter() is otel_context.get_current


def test_a_missing_exporter_mapping_names_the_module(monkeypatch):
    """Prometheus names come from the exporter's _mapping; its loss is reported by name."""
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus._mapping", None)
    with pytest.raises(_otel_private.SdkChanged, match="_mapping"):
        _otel_private.prometheus_mapping()
