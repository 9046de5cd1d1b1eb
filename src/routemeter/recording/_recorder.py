"""Recorders: where a request's measurements go.

``measurements()`` (in ``_measurements``) turns a committed record into ``(cell, value)`` pairs;
a recorder applies them. ``SdkRecorder`` calls OTel API instruments, one call per measurement:
the reference implementation, and the one used inside a MeterProvider the application built
(its Views apply). ``AggregateRecorder`` (in ``aggregate``) aggregates them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from math import inf
from time import monotonic
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from routemeter import _report
from routemeter._report import report
from routemeter.recording import _instruments as ins
from routemeter.recording import _measurements
from routemeter.recording import _semconv as sc
from routemeter.recording._bounds import Bounds
from routemeter.recording._http import ActiveCell, HttpKeys, Raw
from routemeter.recording._pricing import Prices
from routemeter.request._record import Request
from routemeter.request._route import declared_baselines
from routemeter.request._safe import acceptable

_log = logging.getLogger("routemeter")
_MAX_KINDS: Final = 100


class Recorder:
    """Turns records and router events into measurements; subclasses apply them."""

    chunk_bounds: tuple[float, ...] | None = None
    """``Sink.chunk_bounds``: by default every chunk gap is kept (one observation per gap)."""

    def __init__(self, bounds: Bounds, prices: Prices) -> None:
        self.bounds = bounds
        self.prices = prices
        self.keys = _measurements.Keys(bounds, prices)
        self.http = HttpKeys(bounds)
        self.unavailable: dict[tuple[str, str], float] = {}
        """(provider, model), bounded -> ``monotonic()`` deadline of its cooldown (``inf``:
        until ``recovered``; past: back in rotation): ``llm.router.upstream.available``."""
        self._computed_order: dict[int, dict[tuple[Any, ...], None]] = {}
        self._reported_before = dict(_report.counts)
        """Failures reported before this recorder: ``routemeter.internal.errors`` counts
        from ``setup()`` on."""
        self._warn_unpriced_baselines()

    def _warn_unpriced_baselines(self) -> None:
        """Baselines declared before ``setup()`` that this price table cannot price: said once
        here (a decoration after ``setup()`` raises instead)."""
        try:
            unpriced = sorted(m for m in declared_baselines if not self.priced(m))
        except Exception as e:
            report("baseline price", e)
            return
        if unpriced:
            _log.warning(
                "routemeter: baseline_model %s has no price in %s: no baseline cost is counted"
                " for it (routemeter.attribute.rejected); use a model id genai-prices knows or"
                " add it to ROUTEMETER_PRICES_FILE",
                ", ".join(unpriced),
                self.prices.table,
            )

    def priced(self, model: str) -> bool:
        return self.prices.baseline_rates(model) is not None

    def computed(self, index: int) -> list[tuple[tuple[Any, ...], Any]]:
        """The points of a metric read at collection (``_instruments.COMPUTED``), each
        ``(key, value)``: nothing per request or event pays for them. Points keep the order
        of their first collection, as an SDK point keeps its place."""
        points = dict(self._computed(index))
        seen = self._computed_order.setdefault(index, {})
        for key in points:
            if key not in seen and len(seen) < _measurements.Keys.LIMIT:
                seen[key] = None
        ordered = [(key, points[key]) for key in seen if key in points]
        return ordered if len(ordered) == len(points) else list(points.items())

    def _computed(self, index: int) -> list[tuple[tuple[Any, ...], Any]]:
        if index == _measurements.AVAILABLE:
            now = monotonic()
            return [(key, 0 if now < until else 1) for key, until in list(self.unavailable.items())]
        if index == _measurements.PRICES_INFO:
            return [((self.prices.table,), 1)] if self.keys.priced else []
        if index == _measurements.ATTRIBUTE_REJECTED:
            folded: dict[str, int] = {}
            for bounded in (*self.bounds.all(), self.keys.baselines):
                if bounded.rejected:
                    name = bounded.name.split(" ", 1)[0]  # "gen_ai.request.model (client)"
                    folded[name] = folded.get(name, 0) + bounded.rejected
            return [((name,), value) for name, value in folded.items()]
        if index == _measurements.INTERNAL_ERRORS:
            before = self._reported_before
            kinds: dict[str, int] = {}
            for kind, n in dict(_report.counts).items():
                if n > before.get(kind, 0):
                    name = kind.replace(" ", "_")  # "usage extraction" -> usage_extraction
                    name = name if acceptable(name) else sc.OTHER
                    kinds[name] = kinds.get(name, 0) + n - before.get(kind, 0)
            return [((kind,), n) for kind, n in kinds.items()][:_MAX_KINDS]
        raise ValueError(f"{ins.ALL[index].name} is not read at collection")

    def apply(self, measurements: _measurements.Measurements) -> None:
        raise NotImplementedError

    def event(self, measurement: _measurements.Measurement) -> None:
        """One measurement outside a request (a sum increment, or the gauge's new value)."""
        raise NotImplementedError

    def begin(self, rec: Request) -> None:
        self.event((self.keys.route(rec.route_key).active, 1))

    def commit(self, rec: Request) -> None:
        try:
            self.apply(_measurements.measurements(rec, self.keys))
        except Exception as e:
            report("commit", e)

    def http_begin(self, method: str | None, scheme: str | None, token: object) -> Any:
        """An HTTP request began: ``http.server.active_requests`` +1. Returns what ``http_end``
        takes back (``token`` is the request's own hashable object). Never raises."""
        try:
            cell = self.http.begun(method, scheme)
            self.event((cell, 1))
            return cell
        except Exception as e:
            report("http metrics", e)
            return None

    def http_end(
        self,
        began: Any,
        token: object,
        raw: Raw,
        duration: float,
        request_size: int | None,
        response_size: int | None,
    ) -> None:
        """An HTTP request finished: its duration and body sizes (``None``: not known) under
        ``raw``'s attributes, and active -1 for what ``http_begin`` returned. Never raises."""
        try:
            cells = self.http.cells.get(raw) or self.http.finished(raw)
            observed: list[_measurements.Measurement] = [(cells.duration, duration)]
            if request_size is not None:
                observed.append((cells.request_size, request_size))
            if response_size is not None:
                observed.append((cells.response_size, response_size))
            self.apply((observed, [(began, -1)] if isinstance(began, ActiveCell) else []))
        except Exception as e:
            report("http metrics", e)

    def cooldown(
        self, provider: str, model: str, error_type: str | None, seconds: float | None = None
    ) -> None:
        measurement = _measurements.cooldown(self.bounds, provider, model, error_type)
        key = measurement[0].key[:2]
        until = inf if seconds is None else monotonic() + seconds
        if key in self.unavailable or len(self.unavailable) < _measurements.Keys.LIMIT:
            self.unavailable[key] = until
        self.event(measurement)

    def recovered(self, provider: str, model: str) -> None:
        b = self.bounds
        key = (b.providers(provider), b.models(model))
        if key in self.unavailable or len(self.unavailable) < _measurements.Keys.LIMIT:
            self.unavailable[key] = -inf

    def cache_evicted(self, name: str, count: int) -> None:
        self.event(_measurements.cache_evicted(self.bounds, name, count))

    def cache_entries(self, name: str, delta: int) -> None:
        self.event(_measurements.cache_entries(self.bounds, name, delta))

    def ratelimit_remaining(self, provider: str, model: str, kind: str, value: float) -> None:
        self.event(_measurements.ratelimit_remaining(self.bounds, provider, model, kind, value))


def _create(meter: Meter, spec: ins.InstrumentSpec) -> Callable[..., None]:
    """The instrument's recording method (``record``, ``add`` or ``set``)."""
    if spec.kind == "histogram":
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
        ).record
    if spec.kind == "counter":
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description).add
    if spec.kind == "updowncounter":
        return meter.create_up_down_counter(
            spec.name, unit=spec.unit, description=spec.description
        ).add
    return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description).set


def _observe(
    meter: Meter,
    spec: ins.InstrumentSpec,
    callback: Callable[[CallbackOptions], Iterable[Observation]],
) -> Callable[..., None]:
    """An observable instrument read at collection; what it returns takes no measurement."""
    if spec.kind == "gauge":
        meter.create_observable_gauge(
            spec.name, callbacks=[callback], unit=spec.unit, description=spec.description
        )
    else:
        meter.create_observable_counter(
            spec.name, callbacks=[callback], unit=spec.unit, description=spec.description
        )

    def refuse(*_: Any) -> None:
        raise ValueError(f"{spec.name} is read at collection, not measured")

    return refuse


def attributes(spec: ins.InstrumentSpec, key: tuple[Any, ...]) -> dict[str, Any]:
    """A measurement key as an attribute dict; ``None`` values are absent attributes."""
    return {
        name: value for name, value in zip(spec.attributes, key, strict=True) if value is not None
    }


class SdkRecorder(Recorder):
    """Records through OTel API instruments (one SDK call per measurement); the metrics read
    at collection are observable instruments."""

    def __init__(self, meter: Meter, bounds: Bounds, prices: Prices) -> None:
        super().__init__(bounds, prices)
        self._calls = [
            _observe(meter, spec, self._callback(i)) if i in ins.COMPUTED else _create(meter, spec)
            for i, spec in enumerate(ins.ALL)
        ]

    def _callback(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        spec = ins.ALL[index]

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            try:
                points = self.computed(index)
            except Exception as e:
                report("collection", e)
                return []
            return [Observation(value, attributes(spec, key)) for key, value in points]

        return observe

    def apply(self, measurements: _measurements.Measurements) -> None:
        for part in measurements:
            for measurement in part:
                self.event(measurement)

    def event(self, measurement: _measurements.Measurement) -> None:
        cell, value = measurement
        attrs = cell.attrs
        if attrs is None:
            attrs = cell.attrs = attributes(ins.ALL[cell.index], cell.key)
        self._calls[cell.index](value, attrs)
