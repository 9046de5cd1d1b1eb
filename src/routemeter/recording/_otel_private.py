"""Every private name of the OTel SDK and Prometheus exporter that routemeter reads, in one place.

The aggregate recorder does the SDK's aggregation itself, so it must know what each reader asked
for (temporality, histogram aggregation), hook the reader's collection and follow the resource
across a fork; the SDK has no public API for these. Each accessor here raises ``SdkChanged``
naming the missing name instead of guessing a default: a guess would export different data
(cumulative points to a delta reader, explicit histograms instead of exponential ones).
``aggregate_problems()`` probes them all at ``setup()``, which then falls back to the SDK recorder
with one warning that names what changed.

Checked against: see ``CHECKED_AGAINST`` (``make test`` runs the recorder and export tests on
the oldest supported and the newest released SDK).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import opentelemetry.sdk.metrics as sdk_metrics
from opentelemetry import context as otel_context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

CHECKED_AGAINST: Final = (
    "opentelemetry-sdk 1.45.2, opentelemetry-exporter-prometheus and"
    " opentelemetry-instrumentation(-asgi) 0.66b2"
)


TEMPORALITY = "_instrument_class_temporality"
AGGREGATION = "_instrument_class_aggregation"
MAX_SIZE, MAX_SCALE = "_max_size", "_max_scale"
COLLECT, SET_COLLECT = "_collect", "_set_collect_callback"
SDK_CONFIG = "_sdk_config"


class SdkChanged(Exception):
    """A private SDK or exporter name routemeter relies on is missing or has changed shape."""


SYNC_GAUGE: Final[type | None] = getattr(sdk_metrics, "_Gauge", None)
"""The SDK's synchronous gauge class (exported as ``_Gauge``); readers key preferences by it."""


def _private(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise SdkChanged(f"{type(obj).__qualname__}.{name} is gone") from None


def reader_temporality(reader: MetricReader) -> dict[str, AggregationTemporality]:
    """The reader's temporality by SDK instrument class name (``Counter``, ``Histogram``, ...)."""
    table = _private(reader, TEMPORALITY)
    if not isinstance(table, dict) or not all(isinstance(k, type) for k in table):
        raise SdkChanged(
            f"{type(reader).__qualname__}.{TEMPORALITY} is no longer a dict"
            " keyed by instrument classes"
        )
    out = {cls.__name__.lstrip("_"): value for cls, value in table.items()}
    for kind in ("Counter", "UpDownCounter", "Histogram", "Gauge"):
        if not isinstance(out.get(kind), AggregationTemporality):
            raise SdkChanged(
                f"{type(reader).__qualname__}.{TEMPORALITY} has no"
                f" AggregationTemporality for the {kind} class"
            )
    return out


def reader_exponential(reader: MetricReader) -> tuple[int, int] | None:
    """``(max_size, max_scale)`` when the reader asked histograms to be base2 exponential."""
    table = _private(reader, AGGREGATION)
    if not isinstance(table, dict) or not all(isinstance(k, type) for k in table):
        raise SdkChanged(
            f"{type(reader).__qualname__}.{AGGREGATION} is no longer a dict"
            " keyed by instrument classes"
        )
    histogram = [v for k, v in table.items() if k.__name__.lstrip("_") == "Histogram"]
    if len(histogram) != 1:
        raise SdkChanged(f"{type(reader).__qualname__}.{AGGREGATION} has no Histogram entry")
    aggregation = histogram[0]
    if not isinstance(aggregation, ExponentialBucketHistogramAggregation):
        return None
    size, scale = _private(aggregation, MAX_SIZE), _private(aggregation, MAX_SCALE)
    if type(size) is not int or type(scale) is not int:
        raise SdkChanged("ExponentialBucketHistogramAggregation._max_size/_max_scale are not ints")
    return size, scale


Collect = Callable[..., Any]


def wrap_collect(reader: MetricReader, wrap: Callable[[Collect], Collect]) -> None:
    """Replace the collect callback the MeterProvider installed on ``reader`` by ``wrap(it)``.

    The SDK's ``collect()`` skips ``_receive_metrics`` when its own instruments have nothing to
    report, so merging our points needs the callback itself."""
    original = _private(reader, COLLECT)
    if original is None:
        raise RuntimeError("attach() needs a reader already registered with a MeterProvider")
    setter = _private(reader, SET_COLLECT)
    if not callable(original) or not callable(setter):
        raise SdkChanged(f"{type(reader).__qualname__}._collect is no longer a callback")
    setter(wrap(original))


def provider_resource(provider: object) -> Resource:
    """The Resource a MeterProvider uses now (the SDK renews ``service.instance.id`` on fork)."""
    resource = getattr(_private(provider, SDK_CONFIG), "resource", None)
    if not isinstance(resource, Resource):
        raise SdkChanged(f"{type(provider).__qualname__}._sdk_config.resource is not a Resource")
    return resource


def context_getter() -> Callable[[], Any]:
    """The current OTel context, read straight from its context variable when the runtime
    context is the standard one (a C call instead of two Python frames per commit). Anything
    else takes the public ``get_current``: same answer, slower, so no warning."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable.get
    return otel_context.get_current


def prometheus_mapping() -> tuple[Callable[[str], str], Callable[[str], str], Callable[[str], str]]:
    """The Prometheus exporter's ``sanitize_full_name``, ``sanitize_attribute`` and ``map_unit``:
    the names it renders, which ``stats()`` and the docs must match exactly."""
    try:
        from opentelemetry.exporter.prometheus._mapping import (
            map_unit,
            sanitize_attribute,
            sanitize_full_name,
        )
    except ImportError as e:
        raise SdkChanged(f"opentelemetry.exporter.prometheus._mapping changed: {e}") from None
    return sanitize_full_name, sanitize_attribute, map_unit


def aggregate_problems(readers: Iterable[MetricReader], provider: object) -> list[str]:
    """What the aggregate recorder needs and this SDK does not offer (empty: all is there)."""
    problems: list[str] = []
    if SYNC_GAUGE is None:
        problems.append("opentelemetry.sdk.metrics._Gauge is gone")
    for reader in readers:
        for probe in (reader_temporality, reader_exponential):
            try:
                probe(reader)
            except SdkChanged as e:
                problems.append(str(e))
        problems.extend(
            f"{type(reader).__qualname__}.{name} is gone"
            for name in (COLLECT, SET_COLLECT)
            if not hasattr(reader, name)
        )
    try:
        provider_resource(provider)
    except SdkChanged as e:
        problems.append(str(e))
    return list(dict.fromkeys(problems))


_semconv_lock = threading.Lock()


@contextmanager
def stable_http_semconv() -> Iterator[bool]:
    """Within the block, opentelemetry-instrumentation constructs HTTP instrumentation in the
    stable semconv mode (``http.server.request.duration`` in seconds), as
    ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` would, without changing the process environment
    (which would switch every other HTTP instrumentation the app uses). The middleware keeps the
    mode it was built with. Yields False, changing nothing, when those names are gone."""
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability as Stability,
        )
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetryStabilitySignalType as Signal,
        )
        from opentelemetry.instrumentation._semconv import _StabilityMode as Mode

        Stability._initialize()  # type: ignore[no-untyped-call]
        mapping = Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING
        http, stable, dup = Signal.HTTP, Mode.HTTP, Mode.HTTP_DUP
    except (ImportError, AttributeError):
        yield False
        return
    with _semconv_lock:  # not the instrumentation's own lock: its constructor takes that one
        before = mapping.get(http)
        if before not in (stable, dup):
            mapping[http] = stable
        try:
            yield True
        finally:
            if before is None:
                mapping.pop(http, None)
            else:
                mapping[http] = before
