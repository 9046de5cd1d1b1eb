"""Recorders: where a request's measurements go.

``measurements()`` (in ``_measurements``) turns a committed record into ``(cell, value)`` pairs;
a recorder applies them. ``SdkRecorder`` calls OTel API instruments, one call per measurement:
the reference implementation, and the one used inside a MeterProvider the application built
(its Views apply). ``AggregateRecorder`` (in ``aggregate``) aggregates them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import Meter

from routemeter._report import report
from routemeter.recording import _instruments as ins
from routemeter.recording import _measurements
from routemeter.recording._bounds import Bounds
from routemeter.recording._http import ActiveCell, HttpKeys, Raw
from routemeter.recording._pricing import Prices
from routemeter.request._record import Request


class Recorder:
    """Turns records and router events into measurements; subclasses apply them."""

    chunk_bounds: tuple[float, ...] | None = None
    """``Sink.chunk_bounds``: by default every chunk gap is kept (one observation per gap)."""

    def __init__(self, bounds: Bounds, prices: Prices) -> None:
        self.bounds = bounds
        self.prices = prices
        self.keys = _measurements.Keys(bounds, prices)
        self.http = HttpKeys(bounds)

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

    def cooldown(self, provider: str, model: str, error_type: str | None) -> None:
        self.event(_measurements.cooldown(self.bounds, provider, model, error_type))

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


def attributes(spec: ins.InstrumentSpec, key: tuple[Any, ...]) -> dict[str, Any]:
    """A measurement key as an attribute dict; ``None`` values are absent attributes."""
    return {
        name: value for name, value in zip(spec.attributes, key, strict=True) if value is not None
    }


class SdkRecorder(Recorder):
    """Records through OTel API instruments (one SDK call per measurement)."""

    def __init__(self, meter: Meter, bounds: Bounds, prices: Prices) -> None:
        super().__init__(bounds, prices)
        self._calls = [_create(meter, spec) for spec in ins.ALL]

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
