"""routemeter's own aggregation: the schema's metrics kept in plain dicts, handed to the SDK's
readers as standard OTel metric data at collection time.

Recording a request costs one lock and a few list updates per measurement (the SDK path costs
about 10 µs per measurement here). Readers still receive ``MetricsData`` built from the SDK's
public data classes, merged into the same collection as every SDK instrument (HTTP metrics, the
application's own), so exporters see no difference.
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable
from math import inf
from time import time_ns
from typing import Any, Final

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Gauge as GaugeData
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import Sum as SumData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from routemeter import _instruments as ins
from routemeter import _schema
from routemeter._bounds import Bounds
from routemeter._errors import report
from routemeter._pricing import Prices
from routemeter._record import Request
from routemeter._recorder import Recorder, attributes

_SDK_CLASS_NAME: Final = {
    "histogram": "Histogram",
    "counter": "Counter",
    "updowncounter": "UpDownCounter",
    "gauge": "Gauge",
}
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

    __slots__ = ("limit", "order", "points", "start_ns", "starts")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start_ns = time_ns()
        self.points: list[dict[tuple[Any, ...], list[Any]]] = [{} for _ in ins.ALL]
        self.starts: list[dict[tuple[Any, ...], int]] = [{} for _ in ins.ALL]
        self.order: list[int] = []
        """Metrics in the order of their first measurement: the order the SDK exports them."""

    def state(self, index: int, key: tuple[Any, ...]) -> list[Any]:
        """Must be called with the recorder's lock held: the point's state, created if new."""
        state = self.points[index].get(key)
        return self._new(index, key) if state is None else state

    def apply(self, measurements: _schema.Measurements, cells: bool) -> None:
        """Must be called with the recorder's lock held. ``cells``: this store's states are
        cached on the cells (the cumulative store: no lookup per measurement); other stores
        find theirs by key."""
        observed, counted = measurements
        bounds = _BOUNDS
        for cell, value in observed:
            state = cell.state if cells else None
            if state is None:
                state = self.state(cell.index, cell.key)
                if cells:
                    cell.state = state
            state[0] += value
            if value < state[1]:
                state[1] = value
            if value > state[2]:
                state[2] = value
            state[3 + bisect_left(bounds[cell.index], value)] += 1
        for cell, value in counted:
            state = cell.state if cells else None
            if state is None:
                state = self.state(cell.index, cell.key)
                if cells:
                    cell.state = state
            state[0] += value

    def _new(self, index: int, key: tuple[Any, ...]) -> list[Any]:
        points = self.points[index]
        if not points and index not in self.order:
            self.order.append(index)
        if len(points) >= self.limit:
            key = OVERFLOW
            state = points.get(key)
            if state is not None:
                return state
        buckets = len(_BOUNDS[index]) + 1
        state = [0, inf, -inf] + [0] * buckets if _IS_HISTOGRAM[index] else [0]
        points[key] = state
        self.starts[index][key] = time_ns()
        return state


_IS_HISTOGRAM: Final = tuple(spec.kind == "histogram" for spec in ins.ALL)
_GAUGE_INDEX: Final = _schema.RATELIMIT_REMAINING
_ACTIVE_INDEX: Final = _schema.ACTIVE
assert [i for i, s in enumerate(ins.ALL) if s.kind == "gauge"] == [_GAUGE_INDEX]
_BOUNDS: Final = tuple(spec.buckets or () for spec in ins.ALL)


class View:
    """One reader's window on the aggregation: its temporality per metric, and for delta its own
    interval store, swapped out at each collection."""

    def __init__(self, recorder: AggregateRecorder, temporality: dict[type, Any]) -> None:
        self.recorder = recorder
        # the reader keys its preferences by the SDK's private instrument classes (_Counter, ...)
        by_name = {cls.__name__.lstrip("_"): value for cls, value in temporality.items()}
        self.delta = tuple(
            by_name.get(_SDK_CLASS_NAME[spec.kind], _CUMULATIVE) == _DELTA for spec in ins.ALL
        )
        self.interval: Store | None = Store(recorder.limit) if any(self.delta) else None
        self.last_collection_ns = recorder.cumulative.start_ns

    def collect(self) -> list[Metric]:
        now = time_ns()
        rec = self.recorder
        with rec.lock:
            order = list(rec.cumulative.order)
            cumulative = _snapshot(rec.cumulative)
            cumulative[_ACTIVE_INDEX] = rec.active()
            interval: Store | None = None
            if self.interval is not None:
                interval = self.interval
                self.interval = Store(rec.limit)
                rec.rebuild_targets()
        start = self.last_collection_ns
        self.last_collection_ns = now
        metrics = []
        for index in order:
            spec = ins.ALL[index]
            if self.delta[index] and interval is not None:
                metric = _metric(spec, index, _snapshot_one(interval, index), now, _DELTA, start)
            else:
                metric = _metric(spec, index, cumulative[index], now, _CUMULATIVE, None)
            if metric is not None:
                metrics.append(metric)
        return metrics


Snapshot = list[tuple[tuple[Any, ...], list[Any], int]]

_INT64_MAX: Final = 2**63 - 1


def _int64(value: Any) -> Any:
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


def _metric(
    spec: ins.InstrumentSpec,
    index: int,
    points: Snapshot,
    now: int,
    temporality: AggregationTemporality,
    interval_start: int | None,
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
                value=_int64(state[0]),
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
    ) -> None:
        super().__init__(bounds, prices)
        self.limit = limit
        self.scope = scope
        self.resource = resource
        self.lock = threading.Lock()
        self.cumulative = Store(limit)
        self.inflight: set[Request] = set()
        self.routes: dict[tuple[str, str], int] = {}
        self.views: list[View] = []
        self._intervals: tuple[Store, ...] = ()
        _forked.add(self)

    def rebuild_targets(self) -> None:
        """Must be called with the lock held: the interval stores each commit also updates."""
        self._intervals = tuple(v.interval for v in self.views if v.interval is not None)

    def apply(self, measurements: _schema.Measurements) -> None:
        lock = self.lock
        lock.acquire()
        try:
            self._apply(measurements)
        finally:
            lock.release()

    def _apply(self, measurements: _schema.Measurements) -> None:
        """Must be called with the lock held."""
        self.cumulative.apply(measurements, True)
        for store in self._intervals:
            store.apply(measurements, False)

    def event(self, measurement: _schema.Measurement) -> None:
        cell, value = measurement
        index = cell.index
        if index == _ACTIVE_INDEX:
            raise ValueError("requests in flight are counted by begin() and commit()")
        if index != _GAUGE_INDEX:
            self.apply(([], [measurement]))
            return
        with self.lock:
            for store in (self.cumulative, *self._intervals):
                store.state(index, cell.key)[0] = value

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
            ms = _schema.measurements(rec, self.keys, False)
        except Exception as e:
            self.inflight.discard(rec)
            report("commit", e)
            return
        lock = self.lock
        lock.acquire()
        try:
            self.inflight.discard(rec)
            self.cumulative.apply(ms, True)
            for store in self._intervals:
                store.apply(ms, False)
        except Exception as e:
            report("commit", e)
        finally:
            lock.release()

    def active(self) -> Snapshot:
        """Must be called with the lock held: in-flight requests per route, as points."""
        counts: dict[tuple[str, str], int] = dict.fromkeys(self.routes, 0)
        for rec in list(self.inflight):
            counts[rec.route_key] += 1
        return [(key, [value], self.routes[key]) for key, value in counts.items()]

    def attach(self, reader: MetricReader) -> None:
        """Merge this recorder's metrics into everything ``reader`` collects.

        The SDK's ``collect()`` skips ``_receive_metrics`` when its own instruments have nothing
        to report, so the merge wraps the collect callback the MeterProvider installed.
        """
        temporality = getattr(reader, "_instrument_class_temporality", {})
        view = View(self, temporality)
        with self.lock:
            self.views.append(view)
            self.rebuild_targets()
        original: Callable[..., MetricsData | None] | None = getattr(reader, "_collect", None)
        if original is None:
            raise RuntimeError("attach() needs a reader already registered with a MeterProvider")

        def collect(
            metric_reader: MetricReader, timeout_millis: float = 10_000
        ) -> MetricsData | None:
            data = original(metric_reader, timeout_millis=timeout_millis)
            try:
                return self.merge(data, view.collect())
            except Exception as e:
                report("collection", e)
                return data

        # the SDK annotates this callback's second parameter wrongly (AggregationTemporality)
        reader._set_collect_callback(collect)  # type: ignore[arg-type]

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
        self.keys = _schema.Keys(self.bounds, self.prices)  # its cells hold the old states
        self.inflight = set()
        self.routes = {}
        for view in self.views:
            if view.interval is not None:
                view.interval = Store(self.limit)
            view.last_collection_ns = self.cumulative.start_ns
        self.rebuild_targets()


_forked: weakref.WeakSet[AggregateRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_forked):
        recorder.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
