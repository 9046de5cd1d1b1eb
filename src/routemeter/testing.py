"""Test helpers for applications that use routemeter.

``capture()`` sets routemeter up with an in-memory reader for the duration of a block (no
servers, no global MeterProvider), and ``Capture`` flattens what was recorded into plain dicts
so assertions read like the schema::

    with routemeter.testing.capture() as metrics:
        handle(request)
    assert metrics.count("gen_ai.server.request.duration", {"llm.router.route": "default"}) == 1
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)

__all__ = ["Capture", "Point", "capture", "flatten"]

Point = dict[str, Any]
"""One data point: ``name``, ``unit``, ``attributes`` and ``value`` (sums, gauges) or ``count``,
``sum``, ``min``, ``max``, ``bucket_counts``, ``explicit_bounds`` (histograms)."""


def flatten(data: MetricsData | None) -> list[Point]:
    """Every data point in ``data`` as a plain dict."""
    points: list[Point] = []
    if data is None:
        return points
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for dp in metric.data.data_points:
                    point: Point = {
                        "name": metric.name,
                        "unit": metric.unit,
                        "scope": sm.scope.name,
                        "attributes": dict(dp.attributes or {}),
                    }
                    if isinstance(dp, HistogramDataPoint):
                        point.update(
                            count=dp.count,
                            sum=dp.sum,
                            min=dp.min,
                            max=dp.max,
                            bucket_counts=list(dp.bucket_counts),
                            explicit_bounds=list(dp.explicit_bounds),
                        )
                    elif isinstance(dp, NumberDataPoint):
                        point["value"] = dp.value
                    points.append(point)
    return points


def _matches(point: Point, name: str, attributes: Mapping[str, Any] | None) -> bool:
    if point["name"] != name:
        return False
    attrs = point["attributes"]
    return all(attrs.get(k) == v for k, v in (attributes or {}).items())


class Capture:
    """What routemeter recorded, read from an in-memory reader on demand."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def points(self, name: str | None = None) -> list[Point]:
        """Current cumulative points, optionally of one metric."""
        found = flatten(self.reader.get_metrics_data())
        return found if name is None else [p for p in found if p["name"] == name]

    def select(self, name: str, attributes: Mapping[str, Any] | None = None) -> list[Point]:
        """Points of ``name`` whose attributes include every given key/value."""
        return [p for p in self.points(name) if _matches(p, name, attributes)]

    def value(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """Sum of counter/gauge values over matching points."""
        return float(sum(p.get("value", 0) for p in self.select(name, attributes)))

    def count(self, name: str, attributes: Mapping[str, Any] | None = None) -> int:
        """Sum of histogram counts over matching points."""
        return sum(int(p.get("count", 0)) for p in self.select(name, attributes))


@contextmanager
def capture(**settings: Any) -> Iterator[Capture]:
    """routemeter set up with only an in-memory reader; torn down on exit.

    ``settings`` are ``setup()`` keyword arguments (``models=[...]``, ``max_models=...``).
    """
    from routemeter.export._setup import setup, shutdown

    shutdown()
    reader = InMemoryMetricReader()
    setup(readers=[reader], exporters="none", set_global=False, **settings)
    try:
        yield Capture(reader)
    finally:
        shutdown()
