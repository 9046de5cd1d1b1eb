"""Long streams: an attempt's chunk gaps reach the aggregate recorder folded, so its commit does
O(buckets) work under the lock whatever the stream's length, and every count stays exact."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from routemeter._config import load
from routemeter.export._setup import _bounds
from routemeter.recording import _instruments as ins
from routemeter.recording import _measurements
from routemeter.recording._recorder import Recorder
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.request import _record
from routemeter.request._record import Attempt, Request
from support.clock import GAPS, clock

from .test_recorder import (
    DELTA,
    PRICES,
    RESOURCE,
    SCOPE,
    TRACER,
    Drawn,
    assert_same,
    in_memory,
    make_pair,
    otlp_without_times,
)

TPOC = ins.CLIENT_TIME_PER_OUTPUT_CHUNK.name
CHUNKS = 200_000
EXPECTED_BUCKETS = [79_999, 40_000, 0, 0, 0, 0, 40_000, 0, 40_000, 0, 0, 0, 0, 0, 0]
"""``CHUNKS`` chunks ``GAPS`` apart, per duration bucket: 40,000 of each gap but 39,999 of the
0.0 one (2^-8 and 0.0 at or below 0.01, then 2^-6, 0.5 and 2.0)."""


def streamed(recorder: Recorder, chunks: int, monkeypatch: pytest.MonkeyPatch) -> Request:
    """A request begun on ``recorder`` whose one attempt received ``chunks`` chunks."""
    rec = Request(("default", "chat"), recorder)
    rec.start = 0.0
    a = rec.attempt("openai", "gpt-4o-mini")
    a.start = 0.0
    with monkeypatch.context() as m:
        m.setattr(_record, "perf_counter", clock())
        for _ in range(chunks):
            a.chunk()
    a.end = rec.end = 200_000.0
    return rec


def point(reader: InMemoryMetricReader, name: str) -> Any:
    data = reader.get_metrics_data()
    assert data is not None
    [found] = [
        m.data.data_points
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
    ]
    [only] = found
    return only


def test_long_stream_commit_is_constant_work(monkeypatch: pytest.MonkeyPatch):
    """A 200,000-chunk attempt yields as many measurements as a 10-chunk one: one fold."""
    pair = make_pair(in_memory(None), 2000)
    try:
        keys = pair.agg.keys
        short = _measurements.folded_measurements(streamed(pair.agg, 10, monkeypatch), keys)
        long = _measurements.folded_measurements(streamed(pair.agg, CHUNKS, monkeypatch), keys)
        assert [len(part or ()) for part in long] == [len(part or ()) for part in short]
        observed, _, folded = long
        assert folded is not None
        [(cell, gaps, _)] = folded
        assert cell.index == _measurements.TPOC
        assert gaps.count == CHUNKS - 1
        assert not [m for m in observed if m[0].index == _measurements.TPOC]
    finally:
        pair.shutdown()


def test_long_stream_exports_exact_counts(monkeypatch: pytest.MonkeyPatch):
    """200,000 chunks export 199,999 gaps with exact buckets, sum, min, max, and one TTFC."""
    pair = make_pair(in_memory(None), 2000)
    try:
        rec = streamed(pair.agg, CHUNKS, monkeypatch)
        pair.agg.begin(rec)
        pair.agg.commit(rec)
        tpoc = point(pair.agg_reader, TPOC)
        assert tpoc.count == CHUNKS - 1
        assert list(tpoc.bucket_counts) == EXPECTED_BUCKETS
        assert tpoc.sum == 40_000 * sum(GAPS) == 100_781.25
        assert (tpoc.min, tpoc.max) == (0.0, 2.0)
        ttfc = point(pair.agg_reader, ins.CLIENT_TIME_TO_FIRST_CHUNK.name)
        assert (ttfc.count, ttfc.sum) == (1, 1.0)
    finally:
        pair.shutdown()


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
def test_long_stream_matches_the_sdk_path(temporality: Any):
    """20,000 folded chunks export the SDK path's OTLP payload, sampled exemplars included."""
    template = Request(("default", "chat"))
    template.start, template.end = 0.0, 30_000.0
    attempt = Attempt("openai", "gpt-4o-mini", "api.openai.com", 443)
    attempt.start, attempt.end = 0.0, 30_000.0
    marks = clock()
    chunks = tuple(marks() for _ in range(20_000))
    pair = make_pair(in_memory(temporality), 2000)
    try:
        for _ in range(2):
            with TRACER.start_as_current_span("request"):
                pair.record(Drawn(template, ((attempt, chunks),)))
            assert_same(otlp_without_times(pair.agg_reader), otlp_without_times(pair.sdk_reader))
    finally:
        pair.shutdown()


def test_recorders_say_how_they_take_chunk_gaps():
    """Aggregate: folded gaps unless a reader is exponential; SDK recorder: always each gap."""
    explicit = make_pair(in_memory(None), 2000)
    exponential = make_pair(in_memory(None, exponential=160), 2000)
    try:
        assert explicit.agg.chunk_bounds is ins.CLIENT_TIME_PER_OUTPUT_CHUNK.buckets
        assert exponential.agg.chunk_bounds is None
        assert explicit.sdk.chunk_bounds is None
        assert exponential.sdk.chunk_bounds is None
    finally:
        explicit.shutdown()
        exponential.shutdown()


def test_a_fold_where_each_gap_is_needed_keeps_counts_exact(monkeypatch: pytest.MonkeyPatch):
    """A fold reaching the SDK path or a late exponential reader keeps counts, min, max exact."""
    pair = make_pair(in_memory(None), 2000)
    agg = AggregateRecorder(_bounds(load({})), PRICES, limit=2000, scope=SCOPE, resource=RESOURCE)
    reader = InMemoryMetricReader(
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation(max_size=160)}
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    try:
        rec = streamed(pair.agg, 1_000, monkeypatch)
        pair.sdk.begin(rec)
        pair.sdk.commit(rec)
        sdk = point(pair.sdk_reader, TPOC)
        assert sdk.count == 999
        assert (sdk.min, sdk.max) == (0.0, 2.0)
        assert list(sdk.bucket_counts) == [200 + 199, 200, 0, 0, 0, 0, 200, 0, 200] + [0] * 6

        rec = streamed(agg, 1_000, monkeypatch)
        assert rec.attempts[0].chunk_gaps is not None
        agg.attach(reader)
        with TRACER.start_as_current_span("request"):
            agg.begin(rec)
            agg.commit(rec)
        exp = point(reader, TPOC)
        assert exp.count == 999
        assert (exp.min, exp.max) == (0.0, 2.0)
        assert exp.exemplars
    finally:
        pair.shutdown()
        provider.shutdown()
