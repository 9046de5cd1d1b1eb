"""routemeter's own aggregation: the schema's metrics kept in plain dicts, handed to the SDK's
readers as standard OTel metric data at collection time.

Recording a request costs one lock and a few list updates per measurement (the SDK path costs
about 10 µs per measurement here). Readers still receive ``MetricsData`` built from the SDK's
public data classes, merged into the same collection as every SDK instrument (HTTP metrics, the
application's own), so exporters see no difference.

The cumulative explicit-bucket points are shared by every reader; what only some readers keep
lives in their ``View``: delta points of the current interval, base2 exponential histograms, and
exemplars, each the way the SDK would keep them for that reader.
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from math import inf
from random import randrange
from time import time_ns
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import ExponentialHistogram as ExponentialData
from opentelemetry.sdk.metrics.export import Gauge as GaugeData
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import Sum as SumData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from routemeter._report import report
from routemeter.recording import _http, _measurements, _otel_private
from routemeter.recording import _instruments as ins
from routemeter.recording._bounds import Bounds
from routemeter.recording._pricing import Prices
from routemeter.recording._recorder import Recorder, attributes
from routemeter.recording.aggregate._exponential import ExponentialHistogram
from routemeter.request._record import ChunkGaps, Request

_SDK_CLASS_NAME: Final = {
    "histogram": "Histogram",
    "counter": "Counter",
    "updowncounter": "UpDownCounter",
    "gauge": "Gauge",
}


def _sdk_class(index: int) -> str:
    """The SDK instrument class a metric is recorded through: observable for those read at
    collection (a reader may give them their own temporality)."""
    name = _SDK_CLASS_NAME[ins.ALL[index].kind]
    return f"Observable{name}" if index in ins.COMPUTED else name


OVERFLOW: Final = (object(),)
"""Key of the one point that takes every attribute set beyond the cardinality limit."""
_OVERFLOW_ATTRIBUTES: Final = {"otel.metric.overflow": True}

_CUMULATIVE: Final = AggregationTemporality.CUMULATIVE
_DELTA: Final = AggregationTemporality.DELTA


class Store:
    """Points of every metric since ``start_ns``: ``points[metric][key] -> state``.

    Histogram state is ``[sum, min, max, *bucket_counts]`` (the count is the buckets' total);
    sums and gauges ``[value]``.
    """

    __slots__ = ("exponential", "limit", "order", "points", "start_ns", "starts")

    def __init__(self, limit: int, exponential: tuple[int, int] | None = None) -> None:
        self.limit = limit
        self.exponential = exponential
        """``(max_size, max_scale)``: histogram states are ``ExponentialHistogram``s."""
        self.start_ns = time_ns()
        self.points: list[dict[tuple[Any, ...], Any]] = [{} for _ in ins.ALL]
        self.starts: list[dict[tuple[Any, ...], int]] = [{} for _ in ins.ALL]
        self.order: list[int] = []
        """Metrics in the order of their first measurement: the order the SDK exports them."""

    def state(self, index: int, key: tuple[Any, ...]) -> Any:
        """Must be called with the recorder's lock held: the point's state, created if new."""
        state = self.points[index].get(key)
        return self._new(index, key) if state is None else state

    def apply(
        self,
        measurements: _measurements.Measurements,
        folded: Sequence[_measurements.Folded] = (),
    ) -> None:
        """Must be called with the recorder's lock held: states found by key (the cumulative
        store's are cached on the cells instead: ``AggregateRecorder.commit``)."""
        observed, counted = measurements
        if self.exponential is not None:
            for cell, value in observed:
                self.state(cell.index, cell.key).record(value)
            for cell, gaps, _ in folded:  # only a reader attached while the request ran
                state = self.state(cell.index, cell.key)
                for value in _measurements.gap_values(gaps):
                    state.record(value)
        else:
            for cell, value in observed:
                _observe(self.state(cell.index, cell.key), cell.index, value)
            for cell, gaps, _ in folded:
                _add_folded(self.state(cell.index, cell.key), cell.index, gaps)
        for cell, value in counted:
            self.state(cell.index, cell.key)[0] += value

    def key(self, index: int, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """The key of the point a measurement under ``key`` went to (the overflow point when
        the metric was full)."""
        return key if key in self.points[index] else OVERFLOW

    def _new(self, index: int, key: tuple[Any, ...]) -> Any:
        points = self.points[index]
        if not points and index not in self.order:
            self.order.append(index)
        if len(points) >= self.limit:
            key = OVERFLOW
            existing = points.get(key)
            if existing is not None:
                return existing
        state: Any
        if not _IS_HISTOGRAM[index]:
            state = [0]
        elif self.exponential is not None:
            state = ExponentialHistogram(*self.exponential)
        else:
            state = [0, inf, -inf] + [0] * (len(_BOUNDS[index]) + 1)
        points[key] = state
        self.starts[index][key] = time_ns()
        return state


def _observe(state: list[Any], index: int, value: float) -> None:
    """One histogram observation: ``[sum, min, max, *bucket_counts]``. The commit path inlines
    this (a call per measurement is most of its cost); the two must stay the same."""
    state[0] += value
    if value < state[1]:
        state[1] = value
    if value > state[2]:
        state[2] = value
    state[3 + bisect_left(_BOUNDS[index], value)] += 1


def _add_folded(state: list[Any], index: int, gaps: ChunkGaps) -> None:
    """Folded observations into a histogram state, in O(buckets): both are ``[sum, min, max,
    *bucket_counts]`` over the same bounds (else, defensively, one observation per stand-in)."""
    folded = gaps.state
    if gaps.bounds is not _BOUNDS[index] and gaps.bounds != _BOUNDS[index]:
        for value in _measurements.gap_values(gaps):
            _observe(state, index, value)
        return
    state[0] += folded[0]
    if folded[1] < state[1]:
        state[1] = folded[1]
    if folded[2] > state[2]:
        state[2] = folded[2]
    for i in range(3, len(state)):
        state[i] += folded[i]


def _apply_in_order(
    store: Store, observed: list[_measurements.Measurement], folded: list[_measurements.Folded]
) -> None:
    """Must be called with the lock held: observations and folds in the order the request made
    them, for a fold whose metric has no point yet: its first point takes the place in the
    export order (``Store.order``) that its first observation would have."""
    done = 0
    for cell, gaps, where in folded:
        for c, value in observed[done:where]:
            _observe(store.state(c.index, c.key), c.index, value)
        _add_folded(store.state(cell.index, cell.key), cell.index, gaps)
        done = where
    for c, value in observed[done:]:
        _observe(store.state(c.index, c.key), c.index, value)


_IS_HISTOGRAM: Final = tuple(spec.kind == "histogram" for spec in ins.ALL)
_GAUGES: Final = frozenset((_measurements.REMAINING_REQUESTS, _measurements.REMAINING_TOKENS))
"""Gauges keep the last value set (``event``); no commit measures one."""
_ACTIVE_INDEX: Final = _measurements.ACTIVE
_HTTP_ACTIVE_INDEX: Final = _http.ACTIVE
"""Both in-flight counts are kept as sets of what is in flight, read at collection."""
assert {i for i, s in enumerate(ins.ALL) if s.kind == "gauge"} - ins.COMPUTED == _GAUGES
_COMPUTED: Final = tuple(sorted(ins.COMPUTED))
"""Metrics read at collection (``Recorder.computed``), in export order among themselves: each
takes its place in ``Store.order`` at the first collection that has points for it, as the SDK's
observable instruments do."""
_BOUNDS: Final = tuple(spec.buckets or () for spec in ins.ALL)
_CHUNK_BOUNDS: Final = _BOUNDS[_measurements.TPOC]
"""``Sink.chunk_bounds`` while no reader needs each chunk gap: this very tuple, so a fold's
bounds are checked by identity."""


class View:
    """One reader's window on the aggregation: its temporality and histogram aggregation per
    metric, its exemplars, and the stores only it needs (delta points for one interval;
    exponential histograms), swapped or folded at each of its collections."""

    def __init__(self, recorder: AggregateRecorder, reader: MetricReader) -> None:
        self.recorder = recorder
        limit = recorder.limit
        by_name = _otel_private.reader_temporality(reader)
        self.delta = tuple(
            by_name.get(_sdk_class(i), by_name[_SDK_CLASS_NAME[spec.kind]]) == _DELTA
            for i, spec in enumerate(ins.ALL)
        )
        self.exponential: tuple[int, int] | None = _otel_private.reader_exponential(reader)
        histogram_delta = any(d for d, h in zip(self.delta, _IS_HISTOGRAM, strict=True) if h)
        self.interval: Store | None = (
            Store(limit, self.exponential if histogram_delta else None) if any(self.delta) else None
        )
        self.histograms: Store | None = None
        """Exponential histograms of the current interval, folded into ``merged`` at collection
        (cumulative temporality), as the SDK folds its interval aggregations."""
        self.merged: dict[int, dict[tuple[Any, ...], ExponentialHistogram]] = {}
        if self.exponential is not None and not histogram_delta:
            self.histograms = Store(limit, self.exponential)
        self.exemplars: _Exemplars = {}
        self.last_collection_ns = recorder.cumulative.start_ns
        self.reported: dict[tuple[int, tuple[Any, ...]], float] = {}
        """What a delta reader was last given of each computed counter point."""

    def targets(self) -> list[tuple[Store, bool]]:
        """The stores a commit updates for this view: ``(store, histograms only)``."""
        out = []
        if self.interval is not None:
            out.append((self.interval, False))
        if self.histograms is not None:
            out.append((self.histograms, True))
        return out

    def store_for(self, index: int) -> Store:
        if self.delta[index] and self.interval is not None:
            return self.interval
        if _IS_HISTOGRAM[index] and self.histograms is not None:
            return self.histograms
        return self.recorder.cumulative

    def offer(
        self,
        measurements: _measurements.Measurements,
        sample: _Sample,
        folded: Sequence[_measurements.Folded] = (),
    ) -> None:
        """Must be called with the lock held, after the commit: the request's measurements as
        exemplar candidates, kept the way the SDK's default reservoirs keep them (the last
        per bucket for explicit histograms; uniform sampling, 1 per point for sums and
        min(20, max_size) for exponential histograms). A fold offers each bucket's last gap,
        what the explicit-bucket reservoir keeps of its gaps offered one by one."""
        now, span_id, trace_id = sample
        exemplars = self.exemplars
        for part in measurements:
            for cell, value in part:
                index = cell.index
                key = self.store_for(index).key(index, cell.key)
                point = (index, key)
                # an exemplar keeps the attributes its point lacks: all of them on the overflow
                filtered = attributes(ins.ALL[index], cell.key) if key is OVERFLOW else {}
                exemplar = Exemplar(filtered, value, now, span_id, trace_id)
                if _IS_HISTOGRAM[index] and self.exponential is None:
                    buckets = exemplars.get(point)
                    if buckets is None:
                        buckets = exemplars[point] = {}
                    buckets[bisect_left(_BOUNDS[index], value)] = exemplar
                    continue
                size = 1
                if _IS_HISTOGRAM[index] and self.exponential is not None:
                    if value == 0:
                        continue  # the SDK's exponential aggregation offers zeros no exemplar
                    size = min(20, self.exponential[0])
                reservoir = exemplars.get(point)
                if reservoir is None:
                    reservoir = exemplars[point] = [0, {}]
                reservoir[0] += 1
                seen = reservoir[0]
                slot = seen - 1 if seen <= size else randrange(0, seen)
                if slot < size:
                    reservoir[1][slot] = exemplar
        for cell, gaps, _ in folded:
            index = cell.index
            if self.exponential is not None or (
                gaps.bounds is not _BOUNDS[index] and gaps.bounds != _BOUNDS[index]
            ):  # only a reader attached while the request ran: each stand-in, as observed
                values = _measurements.gap_values(gaps)
                self.offer(([(cell, value) for value in values], []), sample)
                continue
            key = self.store_for(index).key(index, cell.key)
            point = (index, key)
            filtered = attributes(ins.ALL[index], cell.key) if key is OVERFLOW else {}
            buckets = exemplars.get(point)
            if buckets is None:
                buckets = exemplars[point] = {}
            for i, last in enumerate(gaps.last_gaps):
                if last is not None:
                    buckets[i] = Exemplar(filtered, last, now, span_id, trace_id)

    def collect(self) -> list[Metric]:
        now = time_ns()
        rec = self.recorder
        with rec.lock:
            computed = rec.computed_snapshot()
            order = list(rec.cumulative.order)
            cumulative = _snapshot(rec.cumulative)
            cumulative[_ACTIVE_INDEX] = rec.active()
            cumulative[_HTTP_ACTIVE_INDEX] = rec.http_active()
            for index, points in computed.items():
                if self.delta[index] and ins.ALL[index].kind == "counter":
                    points = self._delta_of(index, points)
                cumulative[index] = points
            interval: Store | None = None
            if self.interval is not None:
                interval = self.interval
                self.interval = Store(rec.limit, interval.exponential)
                rec.rebuild_targets()
            exemplars, self.exemplars = self.exemplars, {}
            start = self.last_collection_ns
            folded = self._fold(now, exemplars) if self.histograms is not None else {}
            if interval is not None and interval.exponential is not None:
                folded.update(_exponential_points(interval, start, now, exemplars))
        self.last_collection_ns = now
        metrics = []
        for index in order:
            spec = ins.ALL[index]
            found = exemplars.get
            metric: Metric | None
            if index in folded:
                temporality = _DELTA if self.delta[index] else _CUMULATIVE
                data = ExponentialData(
                    data_points=folded[index], aggregation_temporality=temporality
                )
                metric = Metric(
                    name=spec.name, description=spec.description, unit=spec.unit, data=data
                )
            elif index in computed:
                temporality = _DELTA if self.delta[index] else _CUMULATIVE
                since = None if temporality is _CUMULATIVE else start
                metric = _metric(spec, index, cumulative[index], now, temporality, since, found)
            elif self.delta[index] and interval is not None:
                snapshot = _snapshot_one(interval, index)
                metric = _metric(spec, index, snapshot, now, _DELTA, start, found)
            else:
                metric = _metric(spec, index, cumulative[index], now, _CUMULATIVE, None, found)
            if metric is not None:
                metrics.append(metric)
        return metrics

    def _delta_of(self, index: int, points: Snapshot) -> Snapshot:
        """Must be called with the lock held: a computed counter's points as the change since
        this reader's previous collection (what the SDK gives a delta reader of an observable
        counter)."""
        out: Snapshot = []
        reported = self.reported
        for key, state, start in points:
            value = state[0]
            out.append((key, [value - reported.get((index, key), 0)], start))
            reported[(index, key)] = value
        return out

    def _fold(self, now: int, exemplars: _Exemplars) -> dict[int, list[ExponentialPoint]]:
        """Must be called with the lock held: this interval's exponential histograms folded into
        the cumulative ones, as points."""
        store = self.histograms
        assert store is not None
        assert self.exponential is not None
        out: dict[int, list[ExponentialPoint]] = {}
        for index, points in enumerate(store.points):
            if not points:
                continue
            merged = self.merged.setdefault(index, {})
            spec = ins.ALL[index]
            out[index] = []
            for key, interval in points.items():
                total = merged.get(key)
                if total is None:
                    total = merged[key] = ExponentialHistogram(*self.exponential)
                try:
                    total.merge(interval)
                except ValueError as e:  # the SDK fails the same way (see _exponential)
                    report("exponential histogram merge", e)
                    continue
                finally:
                    interval.reset()
                start = store.starts[index][key]
                point = total.point(_attrs(spec, key), start, now)
                out[index].append(_with_exemplars(point, exemplars.get((index, key))))
        return out


_current_context: Final = _otel_private.context_getter()

_Sample = tuple[int, int | None, int | None]
"""An exemplar's time, span id and trace id."""
_Exemplars = dict[tuple[int, tuple[Any, ...]], Any]
ExponentialPoint = ExponentialHistogramDataPoint


def _exponential_points(
    store: Store, start: int, now: int, exemplars: _Exemplars
) -> dict[int, list[ExponentialPoint]]:
    out: dict[int, list[ExponentialPoint]] = {}
    for index, points in enumerate(store.points):
        if points and _IS_HISTOGRAM[index]:
            spec = ins.ALL[index]
            out[index] = [
                _with_exemplars(h.point(_attrs(spec, key), start, now), exemplars.get((index, key)))
                for key, h in points.items()
            ]
    return out


def _with_exemplars(point: ExponentialPoint, reservoir: Any) -> ExponentialPoint:
    return point if reservoir is None else replace(point, exemplars=_sum_exemplars(reservoir))


Snapshot = list[tuple[tuple[Any, ...], list[Any], int]]

_INT64_MAX: Final = 2**63 - 1


def saturate_int64(value: Any) -> Any:
    """An int sum saturates at OTLP's int64 range: one value beyond it would make every later
    export of the whole collection fail to encode."""
    if type(value) is int and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        return _INT64_MAX if value > 0 else -_INT64_MAX - 1
    return value


def _snapshot_one(store: Store, index: int) -> Snapshot:
    starts = store.starts[index]
    return [(key, list(state), starts[key]) for key, state in store.points[index].items()]


def _snapshot(store: Store) -> list[Snapshot]:
    return [_snapshot_one(store, i) for i in range(len(ins.ALL))]


def _attrs(spec: ins.InstrumentSpec, key: tuple[Any, ...]) -> dict[str, Any]:
    return dict(_OVERFLOW_ATTRIBUTES) if key is OVERFLOW else attributes(spec, key)


def _histogram_exemplars(found: Any) -> list[Exemplar]:
    return [] if found is None else [e for _, e in sorted(found.items())]


def _sum_exemplars(found: Any) -> list[Exemplar]:
    return [] if found is None else [e for _, e in sorted(found[1].items())]


def _metric(
    spec: ins.InstrumentSpec,
    index: int,
    points: Snapshot,
    now: int,
    temporality: AggregationTemporality,
    interval_start: int | None,
    exemplars: Callable[[Any], Any],
) -> Metric | None:
    if not points:
        return None
    data: Any
    if spec.kind == "histogram":
        bounds = list(_BOUNDS[index])
        data = HistogramData(
            data_points=[
                HistogramDataPoint(
                    attributes=_attrs(spec, key),
                    start_time_unix_nano=interval_start or start,
                    time_unix_nano=now,
                    count=sum(state[3:]),
                    sum=state[0],
                    bucket_counts=state[3:],
                    explicit_bounds=bounds,
                    min=state[1],
                    max=state[2],
                    exemplars=_histogram_exemplars(exemplars((index, key))),
                )
                for key, state, start in points
            ],
            aggregation_temporality=temporality,
        )
    else:
        number_points = [
            NumberDataPoint(
                attributes=_attrs(spec, key),
                start_time_unix_nano=interval_start or start,
                time_unix_nano=now,
                value=saturate_int64(state[0]),
                exemplars=_sum_exemplars(exemplars((index, key))),
            )
            for key, state, start in points
        ]
        if spec.kind == "gauge":
            data = GaugeData(data_points=number_points)
        else:
            data = SumData(
                data_points=number_points,
                aggregation_temporality=temporality,
                is_monotonic=spec.kind == "counter",
            )
    return Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)


ExposedExemplar = tuple[float, int, int, int]
"""An exemplar as OpenMetrics shows it: value, trace id, span id, time in nanoseconds."""


class LatestExemplars:
    """For OpenMetrics scrapes of the cumulative points: the latest exemplar of each explicit
    histogram bucket (as the SDK's bucket reservoir keeps them) and of each counter point,
    kept for the life of the process like the points themselves. Only sampled spans give
    exemplars; a commit without one never reaches this."""

    def __init__(self, cumulative: Store) -> None:
        self.cumulative = cumulative
        self.points: dict[int, dict[tuple[Any, ...], dict[int, ExposedExemplar]]] = {}
        """Per metric, per point key, per bucket (slot 0 for a counter)."""

    def keep(
        self,
        measurements: _measurements.Measurements,
        sample: _Sample,
        folded: Sequence[_measurements.Folded] = (),
    ) -> None:
        """Must be called with the lock held, after the commit."""
        now, span_id, trace_id = sample
        if span_id is None or trace_id is None:
            return  # always_on outside a span: nothing to point to
        at = now
        for part in measurements:
            for cell, value in part:
                index = cell.index
                kind = ins.ALL[index].kind
                if kind == "histogram":
                    slot = bisect_left(_BOUNDS[index], value)
                elif kind == "counter":
                    slot = 0
                else:
                    continue
                key = self.cumulative.key(index, cell.key)
                found = self.points.setdefault(index, {}).setdefault(key, {})
                found[slot] = (float(value), trace_id, span_id, at)
        for cell, gaps, _ in folded:
            key = self.cumulative.key(cell.index, cell.key)
            found = self.points.setdefault(cell.index, {}).setdefault(key, {})
            for slot, last in enumerate(gaps.last_gaps):
                if last is not None:
                    found[slot] = (float(last), trace_id, span_id, at)

    def of(self, index: int) -> dict[tuple[Any, ...], dict[int, ExposedExemplar]]:
        """Must be called with the lock held: a copy of one metric's exemplars, by point key."""
        return {key: dict(found) for key, found in self.points.get(index, {}).items()}


class AggregateRecorder(Recorder):
    """Aggregates the schema itself: one lock per request commit, no SDK calls per measurement."""

    def __init__(
        self,
        bounds: Bounds,
        prices: Prices,
        *,
        limit: int,
        scope: InstrumentationScope,
        resource: Resource,
        exemplar_filter: str = "trace_based",
    ) -> None:
        super().__init__(bounds, prices)
        self.limit = limit
        self.scope = scope
        self.resource = resource
        self.exemplar_filter = exemplar_filter
        """The SDK's ``OTEL_METRICS_EXEMPLAR_FILTER``: trace_based, always_on or always_off."""
        self._always_on = exemplar_filter == "always_on"
        self.lock = threading.Lock()
        self.cumulative = Store(limit)
        self.inflight: set[Request] = set()
        self.routes: dict[tuple[str, str], int] = {}
        self.views: list[View] = []
        self._others: tuple[tuple[Store, bool], ...] = ()
        self.exposed: LatestExemplars | None = None
        """Exemplars for OpenMetrics scrapes, once a direct exposition asks (``expose()``)."""
        self.chunk_bounds = _CHUNK_BOUNDS
        _forked.add(self)

    def expose_exemplars(self) -> LatestExemplars:
        """Keep the latest exemplars of the cumulative points from now on."""
        with self.lock:
            if self.exposed is None:
                self.exposed = LatestExemplars(self.cumulative)
            return self.exposed

    def rebuild_targets(self) -> None:
        """Must be called with the lock held: the views' own stores each commit also updates,
        with whether they take histograms only; and whether chunk gaps may arrive folded (not
        when a reader keeps base2 exponential histograms: they need every value)."""
        self._others = tuple(target for view in self.views for target in view.targets())
        exponential = any(view.exponential is not None for view in self.views)
        self.chunk_bounds = None if exponential else _CHUNK_BOUNDS

    def sample(self) -> _Sample | None:
        """The exemplar this moment yields under the filter, or None (one check per commit:
        the SDK checks per measurement)."""
        if self.exemplar_filter == "always_off":
            return None
        context = _current_context()
        if context:
            span = trace.get_current_span(context).get_span_context()
            if span.is_valid and (span.trace_flags.sampled or self.exemplar_filter == "always_on"):
                return (time_ns(), span.span_id, span.trace_id)
        return (time_ns(), None, None) if self.exemplar_filter == "always_on" else None

    def apply(self, measurements: _measurements.Measurements) -> None:
        sample = self.sample()
        lock = self.lock
        lock.acquire()
        try:
            self._apply(measurements, sample)
        finally:
            lock.release()

    def _apply(self, measurements: _measurements.Measurements, sample: _Sample | None) -> None:
        """Must be called with the lock held."""
        self.cumulative.apply(measurements)
        self._apply_views(measurements, sample)

    def _apply_views(
        self,
        measurements: _measurements.Measurements,
        sample: _Sample | None,
        folded: Sequence[_measurements.Folded] = (),
    ) -> None:
        """Must be called with the lock held: what only some readers keep."""
        for store, histograms_only in self._others:
            store.apply((measurements[0], []) if histograms_only else measurements, folded)
        if sample is not None:
            for view in self.views:
                view.offer(measurements, sample, folded)
            if self.exposed is not None:
                self.exposed.keep(measurements, sample, folded)

    def computed_snapshot(self) -> dict[int, Snapshot]:
        """Must be called with the lock held: the metrics read at collection that have points,
        as snapshots; each takes its place in the export order at its first points."""
        out: dict[int, Snapshot] = {}
        start = self.cumulative.start_ns
        order = self.cumulative.order
        for index in _COMPUTED:
            try:
                points = self.computed(index)
            except Exception as e:
                report("collection", e)
                continue
            if points:
                if index not in order:
                    order.append(index)
                out[index] = [(key, [value], start) for key, value in points]
        return out

    def event(self, measurement: _measurements.Measurement) -> None:
        cell, value = measurement
        index = cell.index
        if index in ins.COMPUTED:
            raise ValueError(f"{ins.ALL[index].name} is read at collection, not measured")
        if index == _ACTIVE_INDEX:
            raise ValueError("requests in flight are counted by begin() and commit()")
        if index == _HTTP_ACTIVE_INDEX:
            raise ValueError("HTTP requests in flight are counted by http_begin() and http_end()")
        if index not in _GAUGES:
            self.apply(([], [measurement]))
            return
        sample = self.sample()
        with self.lock:
            self.cumulative.state(index, cell.key)[0] = value
            for store, histograms_only in self._others:
                if not histograms_only:
                    store.state(index, cell.key)[0] = value
            if sample is not None:
                for view in self.views:
                    view.offer(([], [measurement]), sample)

    def begin(self, rec: Request) -> None:
        # Requests in flight are the records in this set: set.add is atomic, so starting a
        # request takes no lock; commit removes it under the lock it takes anyway.
        self.inflight.add(rec)
        if rec.route_key not in self.routes:
            with self.lock:
                self.routes.setdefault(rec.route_key, time_ns())
                if _ACTIVE_INDEX not in self.cumulative.order:
                    self.cumulative.order.append(_ACTIVE_INDEX)

    def commit(self, rec: Request) -> None:
        try:
            ms = _measurements.folded_measurements(rec, self.keys, False)
            # no span can be current in an empty context: the common case without tracing
            sample = self.sample() if self._always_on or _current_context() else None
        except Exception as e:
            self.inflight.discard(rec)
            report("commit", e)
            return
        observed, counted, folded = ms
        cumulative = self.cumulative
        bounds = _BOUNDS
        lock = self.lock
        lock.acquire()
        try:
            self.inflight.discard(rec)
            if folded is not None and not all(c.index in cumulative.order for c, _, _ in folded):
                _apply_in_order(cumulative, observed, folded)  # once: a fold's first point
            else:
                for cell, value in observed:  # _observe, inlined; the state cached on the cell
                    state = cell.state
                    if state is None:
                        state = cell.state = cumulative.state(cell.index, cell.key)
                    state[0] += value
                    if value < state[1]:
                        state[1] = value
                    if value > state[2]:
                        state[2] = value
                    state[3 + bisect_left(bounds[cell.index], value)] += 1
                if folded is not None:  # a long stream's gaps: O(buckets), not O(chunks)
                    for cell, gaps, _ in folded:
                        state = cell.state
                        if state is None:
                            state = cell.state = cumulative.state(cell.index, cell.key)
                        _add_folded(state, cell.index, gaps)
            for cell, value in counted:
                state = cell.state
                if state is None:
                    state = cell.state = cumulative.state(cell.index, cell.key)
                state[0] += value
            if self._others or sample is not None:
                self._apply_views((observed, counted), sample, folded or ())
        except Exception as e:
            report("commit", e)
        finally:
            lock.release()

    def http_begin(self, method: str | None, scheme: str | None, token: object) -> Any:
        # in flight = the members of the point's set: set.add is atomic, so no lock here
        try:
            cell = self.http.active.get((method, scheme))
            if cell is None:
                cell = self.http.begun(method, scheme)
                if _HTTP_ACTIVE_INDEX not in self.cumulative.order:
                    with self.lock:
                        if _HTTP_ACTIVE_INDEX not in self.cumulative.order:
                            self.cumulative.order.append(_HTTP_ACTIVE_INDEX)
            cell.inflight.add(token)
            return cell
        except Exception as e:
            report("http metrics", e)
            return None

    def http_end(
        self,
        began: Any,
        token: object,
        raw: _http.Raw,
        duration: float,
        request_size: int | None,
        response_size: int | None,
    ) -> None:
        # one lock per request: out of the in-flight set, and the histograms (_observe)
        try:
            cells = self.http.cells.get(raw) or self.http.finished(raw)
            sample = self.sample() if self._always_on or _current_context() else None
        except Exception as e:
            if isinstance(began, _http.ActiveCell):
                began.inflight.discard(token)
            report("http metrics", e)
            return
        cumulative = self.cumulative
        lock = self.lock
        lock.acquire()
        try:
            if isinstance(began, _http.ActiveCell):
                began.inflight.discard(token)
            for cell, value in (
                (cells.duration, duration),
                (cells.request_size, request_size),
                (cells.response_size, response_size),
            ):
                if value is not None:
                    state = cell.state
                    if state is None:
                        state = cell.state = cumulative.state(cell.index, cell.key)
                    _observe(state, cell.index, value)
            if self._others or sample is not None:
                observed: list[_measurements.Measurement] = [(cells.duration, duration)]
                if request_size is not None:
                    observed.append((cells.request_size, request_size))
                if response_size is not None:
                    observed.append((cells.response_size, response_size))
                self._apply_views((observed, []), sample)
        except Exception as e:
            report("http metrics", e)
        finally:
            lock.release()

    def http_active(self) -> Snapshot:
        """Must be called with the lock held: HTTP requests in flight per point."""
        return [
            (key, [len(cell.inflight)], cell.start_ns)
            for key, cell in list(self.http.points.items())
        ]

    def active(self) -> Snapshot:
        """Must be called with the lock held: in-flight requests per route, as points."""
        counts: dict[tuple[str, str], int] = dict.fromkeys(self.routes, 0)
        for rec in list(self.inflight):
            counts[rec.route_key] += 1
        return [(key, [value], self.routes[key]) for key, value in counts.items()]

    def exemplars_of(self, index: int) -> dict[tuple[Any, ...], dict[int, ExposedExemplar]]:
        """The latest exemplars of one metric's cumulative points (empty unless exposed)."""
        with self.lock:
            return {} if self.exposed is None else self.exposed.of(index)

    def cumulative_points(self) -> Iterator[tuple[int, list[tuple[tuple[Any, ...], list[Any]]]]]:
        """Each metric's cumulative points as ``(index, [(key, state copy)])``, in export order:
        what a cumulative reader receives, for renderers that skip the OTel data model. The lock
        is held for one metric's copy at a time, so commits never wait for a whole scrape."""
        with self.lock:
            computed = self.computed_snapshot()
            order = list(self.cumulative.order)
        points = self.cumulative.points
        for index in order:
            if index in computed:
                yield index, [(key, state) for key, state, _ in computed[index]]
                continue
            with self.lock:
                if index == _ACTIVE_INDEX:
                    copy = [(key, state) for key, state, _ in self.active()]
                elif index == _HTTP_ACTIVE_INDEX:
                    copy = [(key, state) for key, state, _ in self.http_active()]
                else:
                    copy = [(key, list(state)) for key, state in points[index].items()]
            yield index, copy

    def attach(self, reader: MetricReader, *, merge: bool = True) -> None:
        """Merge this recorder's metrics into everything ``reader`` collects.

        ``merge=False`` is for a Prometheus reader whose endpoint renders routemeter's families
        itself (``export/_exposition``): its collections then carry the resource only, so the
        exporter's ``target_info`` stays right when the SDK has nothing else to report.

        The SDK's ``collect()`` skips ``_receive_metrics`` when its own instruments have nothing
        to report, so the merge wraps the collect callback the MeterProvider installed.
        Raises ``SdkChanged`` when this SDK lacks what that needs (``setup()`` probes first).
        """
        view = View(self, reader) if merge else None
        if view is not None:
            with self.lock:
                self.views.append(view)
                self.rebuild_targets()

        def wrap(original: Callable[..., MetricsData | None]) -> Callable[..., MetricsData | None]:
            def collect(
                metric_reader: MetricReader, timeout_millis: float = 10_000
            ) -> MetricsData | None:
                data = original(metric_reader, timeout_millis=timeout_millis)
                try:
                    if view is None:  # routemeter's families are rendered elsewhere
                        return self.with_resource(data) if self.cumulative.order else data
                    return self.merge(data, view.collect())
                except Exception as e:
                    report("collection", e)
                    return data

            return collect

        _otel_private.wrap_collect(reader, wrap)

    def with_resource(self, data: MetricsData | None) -> MetricsData:
        """``data``, or a collection of the resource alone when the SDK has nothing."""
        if data is not None and data.resource_metrics:
            return data
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=self.resource, scope_metrics=[], schema_url=self.resource.schema_url
                )
            ]
        )

    def merge(self, data: MetricsData | None, ours: list[Metric]) -> MetricsData | None:
        if not ours:
            return data
        scope_metrics = ScopeMetrics(scope=self.scope, metrics=ours, schema_url="")
        if data is None or not data.resource_metrics:
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=self.resource,
                        scope_metrics=[scope_metrics],
                        schema_url=self.resource.schema_url,
                    )
                ]
            )
        first, *rest = data.resource_metrics
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=first.resource,
                    scope_metrics=[*first.scope_metrics, scope_metrics],
                    schema_url=first.schema_url,
                ),
                *rest,
            ]
        )

    def reset(self) -> None:
        """Forget everything (a forked child must not re-export its parent's counts)."""
        self.lock = threading.Lock()
        self.cumulative = Store(self.limit)
        self.keys = _measurements.Keys(self.bounds, self.prices)  # its cells hold the old states
        self.http = _http.HttpKeys(self.bounds)
        self.inflight = set()
        self.routes = {}
        for view in self.views:
            if view.interval is not None:
                view.interval = Store(self.limit, view.interval.exponential)
            if view.histograms is not None:
                view.histograms = Store(self.limit, view.exponential)
            view.merged = {}
            view.exemplars = {}
            view.last_collection_ns = self.cumulative.start_ns
        self.rebuild_targets()


_forked: weakref.WeakSet[AggregateRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_forked):
        recorder.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
