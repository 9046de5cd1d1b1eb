"""routemeter's exponential histogram exports the same points as the SDK's own aggregation.

Every comparison is field by field and bit for bit (``repr`` tells ``-0.0`` from ``0.0`` and
``3`` from ``3.0``): the SDK's quirks (capacity-padded ``bucket_counts``, scale 0 for zero-only
intervals, cumulative merging at the lowest scale) are part of what exporters see.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Histogram, MeterProvider, SimpleFixedSizeExemplarReservoir
from opentelemetry.sdk.metrics._internal.aggregation import (
    _ExponentialBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.exponent_mapping import (
    ExponentMapping,
)
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import (
    LogarithmMapping,
)
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from routemeter.recording.aggregate._exponential import ExponentialHistogram

DELTA = AggregationTemporality.DELTA
CUMULATIVE = AggregationTemporality.CUMULATIVE
CONTEXT = Context()
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

latencies = st.floats(1e-4, 100.0)
tokens = st.integers(0, 1_000_000)
edges = st.sampled_from(
    [0.0, -0.0, 5e-324, sys.float_info.min, sys.float_info.max, math.inf, -math.inf, 1.0]
)
powers_of_two = st.integers(-1074, 1023).map(lambda e: math.ldexp(1.0, e))
near_powers_of_two = st.builds(
    lambda e, up: math.nextafter(math.ldexp(1.0, e), math.inf if up else 0.0),
    st.integers(-1021, 1022),
    st.booleans(),
)
subnormals = st.floats(0.0, sys.float_info.min, exclude_min=True)
huge = st.floats(1e200, sys.float_info.max)
values = st.one_of(
    latencies,
    tokens,
    edges,
    powers_of_two,
    near_powers_of_two,
    subnormals,
    huge,
    st.floats(allow_nan=False),
    latencies.map(lambda v: -v),
)
sweeps = st.builds(
    lambda start, ratio, n: [start * ratio**i for i in range(n)],
    st.floats(1e-6, 1e6),
    st.floats(1.01, 1e3),
    st.integers(1, 40),
)
sequences = st.one_of(st.lists(values, max_size=60), sweeps)
max_sizes = st.sampled_from([2, 3, 4, 5, 8, 20, 160])
max_scales = st.integers(-10, 20)


def sdk(max_size: int = 160, max_scale: int = 20) -> _ExponentialBucketHistogramAggregation:
    return _ExponentialBucketHistogramAggregation(
        attributes={},
        reservoir_builder=SimpleFixedSizeExemplarReservoir,
        instrument_aggregation_temporality=DELTA,
        start_time_unix_nano=0,
        max_size=max_size,
        max_scale=max_scale,
    )


def feed(aggregation: _ExponentialBucketHistogramAggregation, vals: list[Any]) -> None:
    """Record into the SDK; inputs its own aggregation crashes on (an IndexError on some
    subnormals with tiny max sizes, SDK 1.45.2) have no reference to compare with."""
    for v in vals:
        try:
            aggregation.aggregate(Measurement(v, 0, None, CONTEXT, None), False)
        except IndexError:
            reject()


def fields(point: Any) -> tuple[Any, ...]:
    return (
        point.scale,
        point.zero_count,
        point.positive.offset,
        list(point.positive.bucket_counts),
        point.negative.offset,
        list(point.negative.bucket_counts),
        point.count,
        repr(point.sum),
        repr(point.min),
        repr(point.max),
        point.flags,
    )


def ours(hist: ExponentialHistogram) -> tuple[Any, ...]:
    return fields(hist.point({}, 0, 1))


def sdk_collect(aggregation: Any, temporality: AggregationTemporality) -> Any:
    """The SDK's point, or the exception its collect raised."""
    try:
        point = aggregation.collect(temporality, 1)
    except Exception as e:
        return type(e).__name__, str(e)
    return None if point is None else fields(point)


def our_cumulative(cumulative: ExponentialHistogram, interval: ExponentialHistogram) -> Any:
    try:
        cumulative.merge(interval)
    except ValueError as e:
        return "Exception", str(e)
    finally:
        interval.reset()
    return ours(cumulative)


@EXAMPLES
@given(vals=sequences, max_size=max_sizes, max_scale=max_scales)
def test_delta_point_matches_sdk(vals, max_size, max_scale):
    """One interval gives the SDK's delta point for any values, window size and max scale."""
    aggregation = sdk(max_size, max_scale)
    feed(aggregation, vals)
    hist = ExponentialHistogram(max_size, max_scale)
    for v in vals:
        hist.record(v)
    expected = sdk_collect(aggregation, DELTA)
    assert (ours(hist) if hist.count else None) == expected


@EXAMPLES
@given(
    intervals=st.lists(sequences, min_size=1, max_size=6),
    max_size=max_sizes,
    max_scale=max_scales,
)
def test_reset_keeps_scale_like_repeated_sdk_delta_collects(intervals, max_size, max_scale):
    """reset keeps the reached scale, like one SDK aggregation collected repeatedly."""
    aggregation = sdk(max_size, max_scale)
    hist = ExponentialHistogram(max_size, max_scale)
    for vals in intervals:
        feed(aggregation, vals)
        for v in vals:
            hist.record(v)
        assert (ours(hist) if hist.count else None) == sdk_collect(aggregation, DELTA)
        hist.reset()


@EXAMPLES
@given(
    intervals=st.lists(sequences, min_size=1, max_size=6),
    max_size=max_sizes,
    max_scale=max_scales,
)
def test_merge_matches_sdk_cumulative_collects(intervals, max_size, max_scale):
    """merge reproduces every SDK cumulative point, its errors and what follows them."""
    aggregation = sdk(max_size, max_scale)
    cumulative = ExponentialHistogram(max_size, max_scale)
    interval = ExponentialHistogram(max_size, max_scale)
    for vals in intervals:
        feed(aggregation, vals)
        for v in vals:
            interval.record(v)
        assert our_cumulative(cumulative, interval) == sdk_collect(aggregation, CUMULATIVE)


def trimmed(point: tuple[Any, ...]) -> tuple[Any, ...]:
    """The histogram's meaning: buckets without the SDK's zero padding, sum aside."""
    counts = point[3]
    while len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]
    return (*point[:3], counts, *point[4:7], *point[8:])


@EXAMPLES
@given(
    intervals=st.lists(
        st.lists(st.one_of(latencies, st.integers(1, 10**6)), max_size=40), max_size=5
    ),
    max_size=max_sizes,
)
def test_live_state_means_the_same_as_sdk_cumulative_for_positive_values(intervals, max_size):
    """Without zeros or negatives a live histogram differs from the SDK only in padding and sum."""
    aggregation = sdk(max_size)
    live = ExponentialHistogram(max_size)
    for vals in [[1e-3], *intervals]:
        feed(aggregation, vals)
        for v in vals:
            live.record(v)
        assert trimmed(ours(live)) == trimmed(sdk_collect(aggregation, CUMULATIVE))


def live_and_sdk_cumulative(*intervals: list[float]) -> tuple[Any, Any]:
    aggregation, live = sdk(), ExponentialHistogram()
    expected = None
    for vals in intervals:
        feed(aggregation, vals)
        for v in vals:
            live.record(v)
        expected = sdk_collect(aggregation, CUMULATIVE)
    return ours(live), expected


def test_live_state_pads_differently_from_sdk_cumulative():
    """The SDK's cumulative buffer grows differently, so a live histogram is not bit-identical."""
    live, expected = live_and_sdk_cumulative([0.3], [0.001, 2.5])
    assert live[:3] == expected[:3] == (3, 0, -80)
    assert (len(live[3]), len(expected[3])) == (160, 128)
    assert trimmed(live) == trimmed(expected)


def test_live_state_sums_differently_from_sdk_cumulative():
    """The SDK adds interval sums, so its float sum can differ from a running sum."""
    live, expected = live_and_sdk_cumulative([0.001] * 5, [0.001] * 5)
    assert (live[7], expected[7]) == ("0.010000000000000002", "0.01")


def test_live_state_differs_from_sdk_cumulative_after_a_zero_only_interval():
    """A zero-only interval drops the SDK's cumulative scale to 0; a live histogram stays at 20."""
    aggregation = sdk()
    feed(aggregation, [1.5])
    aggregation.collect(CUMULATIVE, 1)
    feed(aggregation, [0.0])
    live = ExponentialHistogram()
    live.record(1.5)
    live.record(0.0)
    assert sdk_collect(aggregation, CUMULATIVE) == (0, 1, 0, [1], 0, [0], 2, "1.5", "0.0", "1.5", 0)
    assert ours(live) == (20, 1, 613377, [1], 0, [0], 2, "1.5", "0.0", "1.5", 0)


def test_merge_raises_like_sdk_when_a_late_sign_is_far_from_zero():
    """The SDK's cumulative collect fails if positives first appear far from index 0; merge too."""
    cumulative, interval = ExponentialHistogram(), ExponentialHistogram()
    interval.record(0.0)
    our_cumulative(cumulative, interval)
    interval.record(1e300)
    with pytest.raises(ValueError, match="Incorrect merge scale"):
        cumulative.merge(interval)


@settings(max_examples=2000, deadline=None)
@given(
    value=st.one_of(
        powers_of_two, near_powers_of_two, subnormals, huge, st.floats(0.0, exclude_min=True)
    ),
    scale=max_scales,
)
def test_index_matches_sdk_mapping(value, scale):
    """A lone value lands in the bucket the SDK's own mapping gives, at every scale."""
    hist = ExponentialHistogram(max_size=16384, max_scale=scale)
    hist.record(value)
    mapping = LogarithmMapping(scale) if scale > 0 else ExponentMapping(scale)
    assert hist.point({}, 0, 0).positive.offset == mapping.map_to_index(value)


def test_known_answer_for_powers_of_two():
    """1, 2 and 4 land at scale 6 in a 160-wide buffer padded with zeros, as the SDK exports."""
    hist = ExponentialHistogram()
    for v in (1.0, 2.0, 4.0):
        hist.record(v)
    point = hist.point({"a": 1}, 5, 6)
    expected = [0] * 160
    expected[0] = expected[64] = expected[128] = 1
    assert (point.scale, point.positive.offset, list(point.positive.bucket_counts)) == (
        6,
        -1,
        expected,
    )
    assert (point.negative.offset, list(point.negative.bucket_counts)) == (0, [0])
    assert (point.attributes, point.start_time_unix_nano, point.time_unix_nano) == ({"a": 1}, 5, 6)


def test_known_answer_for_small_window():
    """With max_size 4, 1, 2 and 8 collapse to scale 0, one bucket per power of two."""
    hist = ExponentialHistogram(max_size=4)
    for v in (1.0, 2.0, 8.0):
        hist.record(v)
    assert ours(hist) == (0, 0, -1, [1, 1, 0, 1], 0, [0], 3, "11.0", "1.0", "8.0", 0)


def test_repeated_downscales_track_the_sdk():
    """A widening sweep forces many downscales, each matching the SDK's point."""
    aggregation, hist = sdk(max_size=8), ExponentialHistogram(max_size=8)
    scales = []
    for exponent in range(-40, 41):
        v = 1.7 * 2.0**exponent
        feed(aggregation, [v])
        hist.record(v)
        scales.append(ours(hist)[0])
    assert len(set(scales)) > 5
    assert ours(hist) == sdk_collect(aggregation, DELTA)


def test_zero_only_reports_scale_zero():
    """Only zeros give scale 0 and empty signs, as the SDK reports."""
    hist = ExponentialHistogram()
    hist.record(0.0)
    hist.record(-0.0)
    aggregation = sdk()
    feed(aggregation, [0.0, -0.0])
    assert ours(hist) == sdk_collect(aggregation, DELTA)
    assert ours(hist)[:6] == (0, 2, 0, [0], 0, [0])


@pytest.mark.parametrize(
    ("value", "max_scale", "error"),
    [
        (math.nan, 20, ValueError),
        (math.nan, 0, None),
        (math.nan, -3, None),
        (10**400, 20, OverflowError),
        (-(10**400), -2, OverflowError),
    ],
)
def test_unmappable_values_behave_like_sdk(value, max_scale, error):
    """NaN and ints beyond float range fail, or not, where the SDK does and leave the same state."""
    aggregation, hist = sdk(max_scale=max_scale), ExponentialHistogram(max_scale=max_scale)
    if error is None:
        feed(aggregation, [value])
        hist.record(value)
        assert ours(hist) == sdk_collect(aggregation, DELTA)
        return
    with pytest.raises(error):
        feed(aggregation, [value])
    with pytest.raises(error):
        hist.record(value)
    # The SDK then exports scale=None; we keep the mapping scale.
    assert ours(hist)[1:] == sdk_collect(aggregation, DELTA)[1:]


def test_copy_is_independent():
    """A copy keeps its point while the original keeps recording and rescaling."""
    hist = ExponentialHistogram(max_size=4)
    hist.record(1.0)
    snapshot = hist.copy()
    before = ours(snapshot)
    for v in (1e-9, 1e9, -3.0):
        hist.record(v)
    assert ours(snapshot) == before
    assert ours(hist) != before


@pytest.mark.parametrize(("max_size", "max_scale"), [(1, 20), (16385, 20), (160, 21), (160, -11)])
def test_rejects_sizes_the_sdk_rejects(max_size, max_scale):
    """Out-of-range parameters fail at construction, not on the first measurement."""
    with pytest.raises(ValueError, match="must be in"):
        ExponentialHistogram(max_size, max_scale)


@settings(max_examples=60, deadline=None)
@given(
    intervals=st.lists(
        st.lists(st.one_of(st.just(0.0), latencies, tokens), max_size=20), max_size=4
    ),
    temporality=st.sampled_from([DELTA, CUMULATIVE]),
)
def test_sdk_pipeline_matches_intended_usage(intervals, temporality):
    """Via a MeterProvider: fresh state per delta interval, interval + merge when cumulative."""
    reader = InMemoryMetricReader(
        preferred_temporality={Histogram: temporality},
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()},
    )
    provider = MeterProvider(metric_readers=[reader])
    instrument = provider.get_meter("t").create_histogram("h")
    interval: ExponentialHistogram | None = None
    cumulative = ExponentialHistogram()
    try:
        for vals in intervals:
            for v in vals:
                interval = interval or ExponentialHistogram()
                interval.record(v)
                instrument.record(v)
            data = reader.get_metrics_data()
            expected = [
                fields(p)
                for m in (data.resource_metrics if data else [])
                for s in m.scope_metrics
                for metric in s.metrics
                for p in metric.data.data_points
            ]
            got: list[Any] = []
            if interval is not None and temporality is DELTA:
                got = [ours(interval)] if interval.count else []
                interval = None
            elif interval is not None:
                got = [our_cumulative(cumulative, interval)]
            assert got == expected
    finally:
        provider.shutdown()
