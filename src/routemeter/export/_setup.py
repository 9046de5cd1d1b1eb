"""``setup()`` / ``shutdown()``: the only code that builds SDK objects.

Setup is explicit, idempotent and reversible: it returns a handle, a second call returns the same
handle, and ``shutdown()`` flushes every reader and stops the /metrics server.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from routemeter._config import Config, ConfigError, load
from routemeter._report import report
from routemeter.export import _readers
from routemeter.export._exposition import Exposition
from routemeter.recording import _otel_private
from routemeter.recording._bounds import TENANT, Bounded, Bounds
from routemeter.recording._instruments import DURATION_BUCKETS
from routemeter.recording._pricing import Prices, known_model_ids, load_prices_file
from routemeter.recording._recorder import Recorder, SdkRecorder
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.request import _sink

_log = logging.getLogger("routemeter")
_lock = threading.Lock()
_owned: weakref.WeakSet[MeterProvider] = weakref.WeakSet()

HTTP_DURATION_VIEW_NAME = "http.server.request.duration"
"""The instrument a View gives routemeter's duration buckets, for the ASGI instrumentation's
middleware (``ROUTEMETER_HTTP_INSTRUMENTATION=opentelemetry``), whose own advice stops at 10 s.
routemeter's middleware records the same buckets without the View."""


@dataclass
class Handle:
    """What ``setup()`` built; ``shutdown()`` undoes it."""

    config: Config
    meter_provider: MeterProvider | None = None
    recorder: Recorder | None = None
    prometheus: _readers.PrometheusEndpoint | None = None
    owns_provider: bool = False
    readers: list[MetricReader] = field(default_factory=list)
    stats_registry: Any = None
    """A private registry ``stats()`` reads when no Prometheus exporter was asked for."""
    exposition: Exposition | None = None
    """routemeter's families rendered from the aggregate state (the aggregate recorder)."""
    _closed: bool = False

    @property
    def metrics_url(self) -> str | None:
        """URL of the standalone /metrics server, when one runs."""
        address = self.prometheus.address if self.prometheus else None
        if address is None:
            return None
        host, port = address
        return f"http://{host}:{port}/metrics"

    def _timeout_s(self, timeout_s: float | None) -> float:
        """An explicit timeout, else ``ROUTEMETER_SHUTDOWN_TIMEOUT``."""
        return self.config.shutdown_timeout_ms / 1000 if timeout_s is None else timeout_s

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export now through every push reader. Pull readers are skipped: a collect outside a
        scrape makes the Prometheus exporter render every family twice at the next scrape."""
        if self.meter_provider is None or not self.owns_provider:
            return True
        timeout_s = self._timeout_s(timeout_s)
        done: list[bool] = []

        def flush() -> None:
            ok = True
            for reader in self.readers:
                if not isinstance(reader, PrometheusMetricReader):
                    ok = reader.force_flush(timeout_millis=timeout_s * 1000) and ok
            done.append(ok)

        # The OTLP exporters wait their own timeout (OTEL_EXPORTER_OTLP_TIMEOUT) whatever the
        # flush's: a daemon thread bounds the wait, and cannot hold the interpreter's exit.
        thread = threading.Thread(target=flush, name="routemeter-flush", daemon=True)
        thread.start()
        thread.join(timeout_s)
        return bool(done and done[0])

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop the /metrics server and flush every reader, within ``timeout_s`` (default
        ``ROUTEMETER_SHUTDOWN_TIMEOUT``) even when the Collector does not answer."""
        if self._closed:
            return
        self._closed = True
        timeout_s = self._timeout_s(timeout_s)
        if _sink.active is self.recorder:
            _sink.active = None
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.meter_provider is not None and self.owns_provider:
            try:
                self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            except Exception:  # a reader failing to flush must not fail the app's exit
                _log.warning("routemeter: meter provider shutdown failed", exc_info=True)


_handle: Handle | None = None


def current_handle() -> Handle | None:
    return _handle


def _bounds(config: Config) -> Bounds:
    ids = known_model_ids()

    def priced(name: str) -> bool:
        return name in ids

    return Bounds(
        providers=Bounded("gen_ai.provider.name", config.providers, config.max_providers),
        models=Bounded("gen_ai.request.model", config.models, config.max_models, priced),
        requested_models=Bounded(
            "gen_ai.request.model (client)", config.models, config.max_models, priced
        ),
        tenants=Bounded(TENANT, config.tenants, config.max_tenants),
    )


def _prices(config: Config) -> Prices:
    if not config.prices_file:
        return Prices()
    try:
        return Prices(load_prices_file(config.prices_file))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"ROUTEMETER_PRICES_FILE={config.prices_file!r} cannot be used: {e};"
            " allowed: a JSON or TOML file with a 'models' list of"
            " {model, provider?, input_mtok, output_mtok, cache_read_mtok?, cache_write_mtok?}"
        ) from None


def _resource(config: Config) -> Resource:
    """The Resource from the environment (``service.instance.id`` is per process)."""
    if config.service_name:
        return Resource.create({SERVICE_NAME: config.service_name})
    return Resource.create()


_EXEMPLAR_FILTERS: Final[dict[str, Callable[[], ExemplarFilter]]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}


def _meter(provider: MeterProvider, scope: InstrumentationScope) -> Meter:
    return provider.get_meter(scope.name, scope.version)


def _sdk_provider_in_use() -> MeterProvider | None:
    provider = metrics.get_meter_provider()
    if isinstance(provider, MeterProvider) and provider not in _owned:
        return provider
    return None


def setup(
    *,
    readers: Sequence[MetricReader] = (),
    meter_provider: MeterProvider | None = None,
    set_global: bool = True,
    **settings: Any,
) -> Handle:
    """Configure metrics from ``OTEL_*``/``ROUTEMETER_*`` variables; keyword arguments win.

    ``readers`` adds readers of your own (an ``InMemoryMetricReader`` in tests). When the
    application already installed an SDK ``MeterProvider`` (or passes ``meter_provider``),
    routemeter records into it and builds no readers of its own.
    """
    global _handle
    with _lock:
        if _handle is not None and not _handle._closed:
            if settings or readers or meter_provider is not None:
                _log.warning("routemeter: setup() already ran; call shutdown() to reconfigure")
            return _handle
        config = load(**settings)
        if config.disabled:
            _handle = Handle(config)
            return _handle
        prices = _prices(config)
        bounds = _bounds(config)

        if meter_provider is not None and readers:
            raise ConfigError(
                "setup(readers=...) cannot add readers to a MeterProvider the application"
                " built; add them to that provider instead"
            )
        provider = meter_provider or (None if readers else _sdk_provider_in_use())
        scope = InstrumentationScope("routemeter", version("routemeter"))
        if provider is not None:
            handle = Handle(config, provider)
            handle.recorder = SdkRecorder(_meter(provider, scope), bounds, prices)
        else:
            built, endpoint = _readers.build(config)
            all_readers = [*built, *readers]
            stats_registry = None
            if endpoint is None and config.recorder == "aggregate":
                # stats() reads a registry: a private one costs nothing per request here, as the
                # aggregate recorder's readers share its store (an SDK reader would not)
                stats_registry = CollectorRegistry(auto_describe=True)
                all_readers.append(
                    PrometheusMetricReader(
                        registry=stats_registry,
                        disable_target_info=True,
                        cardinality_limits=_readers.cardinality_limits(config),
                    )
                )
            resource = _resource(config)
            provider = MeterProvider(
                metric_readers=all_readers,
                resource=resource,
                views=[
                    View(
                        instrument_name=HTTP_DURATION_VIEW_NAME,
                        aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
                    )
                ],
                exemplar_filter=_EXEMPLAR_FILTERS[config.exemplar_filter](),
                shutdown_on_exit=False,  # _at_exit shuts down within the configured timeout
            )
            _owned.add(provider)
            _register_exit_hook()
            if set_global and not isinstance(metrics.get_meter_provider(), MeterProvider):
                metrics.set_meter_provider(provider)
            handle = Handle(config, provider, None, endpoint, True, all_readers, stats_registry)
            _watch_fork(handle)
            changed = (
                _otel_private.aggregate_problems(all_readers, provider)
                if config.recorder == "aggregate"
                else []
            )
            if changed:
                _log.warning(
                    "routemeter: this OpenTelemetry SDK lacks what the aggregate recorder reads"
                    " (%s; checked against %s), so routemeter records through the SDK's own"
                    " instruments instead: same data, more CPU per request",
                    "; ".join(changed),
                    _otel_private.CHECKED_AGAINST,
                )
            if config.recorder == "sdk" or changed:
                handle.recorder = SdkRecorder(_meter(provider, scope), bounds, prices)
            else:
                aggregate = AggregateRecorder(
                    bounds,
                    prices,
                    limit=config.cardinality_limit,
                    scope=scope,
                    resource=resource,
                    exemplar_filter=config.exemplar_filter,
                )
                direct = endpoint.reader if endpoint is not None else None
                for reader in all_readers:
                    aggregate.attach(reader, merge=reader is not direct)
                handle.recorder = aggregate
                handle.exposition = Exposition(aggregate)
                if endpoint is not None:
                    endpoint.exposition = handle.exposition

        _sink.active = handle.recorder
        _handle = handle
        return handle


def shutdown(timeout_s: float | None = None) -> None:
    """Flush every reader and stop the /metrics server; safe to call twice. ``timeout_s``
    defaults to ``ROUTEMETER_SHUTDOWN_TIMEOUT``."""
    global _handle
    with _lock:
        handle, _handle = _handle, None
    if handle is not None:
        handle.shutdown(timeout_s)


_exit_hook_registered = False


def _register_exit_hook() -> None:
    """Once per process: shut down at interpreter exit, bounded by the configured timeout (the
    SDK's own exit hook waits up to 30 s, and longer while an export to a dead Collector
    retries)."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    try:
        shutdown()
    except Exception:  # nothing may fail the interpreter's exit
        _log.warning("routemeter: shutdown at exit failed", exc_info=True)


def _watch_fork(handle: Handle) -> None:
    """setup() may run before the process forks (gunicorn --preload, a multiprocessing child).
    The SDK then gives the child a new ``service.instance.id`` in its own fork hook; routemeter's
    metrics must carry it too, and a standalone /metrics server started by the parent does not
    run in the child. Registered after the MeterProvider so this hook runs after the SDK's (and
    after ``concurrent.futures`` reinitialised its locks: nothing here may block)."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(handle)

    def after_in_child() -> None:
        h = ref()
        if h is None or h._closed or h is not _handle:
            return
        if isinstance(h.recorder, AggregateRecorder):
            try:
                h.recorder.resource = _otel_private.provider_resource(h.meter_provider)
            except _otel_private.SdkChanged as e:  # probed at setup: only a monkeypatch gets here
                report("fork resource", e)
        if h.prometheus is not None and h.prometheus.server is not None:
            # The server's thread stayed in the parent: stopping this copy would wait forever
            # for a serve loop that does not run here. Close the child's copy of the socket.
            server, h.prometheus.server, h.prometheus.thread = h.prometheus.server, None, None
            with contextlib.suppress(OSError):
                server.socket.close()
            _log.warning(
                "routemeter: setup() ran before this process was forked (gunicorn --preload?),"
                " so this worker's metrics are not on the standalone /metrics server, which"
                " stayed in the parent; call routemeter.setup() in each worker (after the"
                " fork), or push OTLP"
            )

    os.register_at_fork(after_in_child=after_in_child)
