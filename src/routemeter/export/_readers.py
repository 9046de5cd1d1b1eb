"""Metric readers chosen by name, the way the SDK resolves ``OTEL_METRICS_EXPORTER``.

Built-in names are handled here (with every ``OTEL_EXPORTER_OTLP_*`` setting passed explicitly,
timeouts converted to the seconds the Python exporters expect); any other name is looked up in
the ``opentelemetry_metrics_exporter`` entry-point group, so third-party exporters plug in.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
)

from routemeter._config import BUILTIN_EXPORTERS, Config, ConfigError
from routemeter.export._guard import (
    TOKEN_HINT,
    UNAUTHORIZED_BODY,
    authorized,
    challenge,
    is_loopback,
)
from routemeter.recording._otel_private import SYNC_GAUGE

if TYPE_CHECKING:
    from routemeter.export._exposition import Exposition

_log = logging.getLogger("routemeter")

ENTRY_POINT_GROUP = "opentelemetry_metrics_exporter"


def cardinality_limits(config: Config) -> dict[type, int]:
    classes: list[type] = [
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    ]
    if SYNC_GAUGE is not None:
        classes.append(SYNC_GAUGE)
    return dict.fromkeys(classes, config.cardinality_limit)


def temporality(preference: str) -> dict[type, AggregationTemporality]:
    """The spec's OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE table."""
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    monotonic = delta if preference in ("delta", "lowmemory") else cumulative
    observable_counter = delta if preference == "delta" else cumulative
    table: dict[type, AggregationTemporality] = {
        Counter: monotonic,
        Histogram: monotonic,
        ObservableCounter: observable_counter,
        UpDownCounter: cumulative,
        ObservableUpDownCounter: cumulative,
        ObservableGauge: cumulative,
    }
    if SYNC_GAUGE is not None:
        table[SYNC_GAUGE] = cumulative
    return table


class Page(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def content_type(self) -> str: ...
    @property
    def body(self) -> bytes: ...


PageSource = Callable[[str, Mapping[str, str]], Page | None]
"""``(subpath, query) -> page``: the pages under the metrics path, or ``None`` for no page."""


@dataclass
class PrometheusEndpoint:
    """The private registry behind /metrics, and the standalone server when one runs."""

    registry: Any
    reader: MetricReader
    server: Any = None
    thread: threading.Thread | None = None
    exposition: Exposition | None = None
    """routemeter's own families, rendered beside the registry's (aggregate recorder)."""
    pages: PageSource | None = None
    """What ``<metrics_path>/<page>`` serves beside /metrics (``tools/_pages`` sets it)."""

    @property
    def address(self) -> tuple[str, int] | None:
        if self.server is None:
            return None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(1.0)  # its loop has ended: this is the thread finishing
            self.thread = None


def prometheus(config: Config) -> PrometheusEndpoint:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(
        registry=registry, cardinality_limits=cardinality_limits(config)
    )
    endpoint = PrometheusEndpoint(registry, reader)
    if config.prometheus_server:
        try:
            endpoint.server, endpoint.thread = _serve_first_free(config, registry, endpoint)
        except BaseException:
            reader.shutdown()
            raise
        host, port = endpoint.address or (config.prometheus_host, config.prometheus_port)
        if not is_loopback(config.prometheus_host) and config.metrics_token is None:
            _log.warning(
                "routemeter: /metrics is served on %s:%s, beyond loopback and without"
                " authentication; %s, or bind OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1",
                host,
                port,
                TOKEN_HINT,
            )
    return endpoint


def _serve_first_free(
    config: Config, registry: Any, endpoint: PrometheusEndpoint
) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on the first free port of ``prometheus_worker_ports`` from
    ``prometheus_port``: one port per worker process when several share the configuration."""
    host, first = config.prometheus_host, config.prometheus_port
    span = 1 if first == 0 else min(config.prometheus_worker_ports, 65536 - first)
    busy: OSError | None = None
    for port in range(first, first + span):
        try:
            return _serve(host, port, registry, config, endpoint)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise ConfigError(
                    f"OTEL_EXPORTER_PROMETHEUS_HOST/PORT={host}:{port} cannot be served:"
                    f" {e.strerror or e}; allowed: a free port on a local address (0 picks one),"
                    " or ROUTEMETER_PROMETHEUS_SERVER=false when the app mounts /metrics"
                ) from None
            busy = e
    ports = str(first) if span == 1 else f"{first}-{first + span - 1}"
    raise ConfigError(
        f"OTEL_EXPORTER_PROMETHEUS_HOST/PORT={host}:{ports} cannot be served:"
        f" {(busy.strerror if busy else None) or 'address already in use'}. Another process"
        " holds it: with several worker processes (uvicorn --workers, gunicorn -w) each needs"
        " its own port, so set ROUTEMETER_PROMETHEUS_WORKER_PORTS to the worker count (and"
        " scrape every port) or push OTLP (OTEL_METRICS_EXPORTER=otlp); allowed: a free port"
        " (0 picks one), or ROUTEMETER_PROMETHEUS_SERVER=false when the app mounts /metrics"
    ) from None


def _serve(
    host: str, port: int, registry: Any, config: Config, endpoint: PrometheusEndpoint
) -> tuple[Any, threading.Thread]:
    """/metrics (``export/_exposition.wsgi_app``) and the pages beside it, with the token check
    in front, on the bounded server of ``export/_server.py`` (read timeouts, a cap on handler
    threads)."""
    from routemeter.export._exposition import wsgi_app
    from routemeter.export._server import THREAD_NAME, BoundedWSGIServer

    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    exposition = wsgi_app(registry, lambda: endpoint.exposition)
    token = config.metrics_token
    prefix = config.metrics_path.rstrip("/") + "/"

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if token is not None and not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", challenge(path)),
                    ("Content-Type", "text/plain; charset=utf-8"),
                ],
            )
            return [UNAUTHORIZED_BODY]
        pages = endpoint.pages
        method = environ.get("REQUEST_METHOD")
        if pages is not None and path.startswith(prefix) and method in ("GET", "HEAD"):
            page = pages(path.removeprefix(prefix), _query(environ.get("QUERY_STRING", "")))
            if page is not None:
                start_response(
                    f"{page.status} {HTTPStatus(page.status).phrase}",
                    [
                        ("Content-Type", page.content_type),
                        ("Content-Length", str(len(page.body))),
                        ("Cache-Control", "no-store"),
                    ],
                )
                return [b"" if method == "HEAD" else page.body]
        return exposition(environ, start_response)

    httpd = BoundedWSGIServer((str(address[0]), port), family, guarded)
    thread = threading.Thread(target=httpd.serve_forever, name=THREAD_NAME, daemon=True)
    thread.start()
    return httpd, thread


def _query(raw: str) -> dict[str, str]:
    """A query string's first value per name (at most 20 names, values as sent)."""
    return dict(reversed(parse_qsl(raw, max_num_fields=20)))


def otlp_exporter(config: Config) -> MetricExporter:
    timeout_s = config.otlp_timeout_ms / 1000  # the Python exporters read seconds (#4044)
    headers = dict(config.otlp_headers)
    compression = config.otlp_compression
    common: dict[str, Any] = {
        "endpoint": config.metrics_endpoint,
        "headers": headers,
        "timeout": timeout_s,
        "preferred_temporality": temporality(config.temporality),
        "preferred_aggregation": {
            Histogram: ExponentialBucketHistogramAggregation()
            if config.histogram_aggregation == "base2_exponential_bucket_histogram"
            else ExplicitBucketHistogramAggregation()
        },
    }
    if config.otlp_protocol == "grpc":
        from grpc import (  # type: ignore[import-untyped]  # grpcio ships no stubs
            Compression,
            ssl_channel_credentials,
        )
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        if compression == "deflate":
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_COMPRESSION='deflate' is not valid with grpc;"
                " allowed: gzip, none"
            )
        if config.otlp_certificate:
            with open(config.otlp_certificate, "rb") as f:
                common["credentials"] = ssl_channel_credentials(root_certificates=f.read())
        return GrpcExporter(
            insecure=config.otlp_insecure,
            compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
            **common,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(
        certificate_file=config.otlp_certificate or None,
        compression=HttpCompression(compression if compression != "none" else "none"),
        **common,
    )


def periodic(exporter: MetricExporter, config: Config) -> PeriodicExportingMetricReader:
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=config.export_interval_ms,
        export_timeout_millis=config.export_timeout_ms,
        cardinality_limits=cardinality_limits(config),
    )


def known_names() -> list[str]:
    names = set(BUILTIN_EXPORTERS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def from_entry_point(name: str, config: Config) -> MetricReader:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(
            f"OTEL_METRICS_EXPORTER={name!r} is not a known exporter;"
            f" allowed: {', '.join(known_names())}"
        )
    cls = found[0].load()
    if isinstance(cls, type) and issubclass(cls, MetricReader):
        return cls()
    exporter = cls()
    if not isinstance(exporter, MetricExporter):
        raise ConfigError(
            f"OTEL_METRICS_EXPORTER={name!r}: entry point {found[0].value} is neither a"
            " MetricReader nor a MetricExporter"
        )
    return periodic(exporter, config)


def build(config: Config) -> tuple[list[MetricReader], PrometheusEndpoint | None]:
    """Every reader ``config.exporters`` names; the Prometheus endpoint when one is among them."""
    readers: list[MetricReader] = []
    endpoint: PrometheusEndpoint | None = None
    try:
        for name in config.exporters:
            if name == "none":
                continue
            if name == "prometheus":
                endpoint = prometheus(config)
                readers.append(endpoint.reader)
            elif name in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
                if name != "otlp":
                    config = _with_protocol(config, name)
                readers.append(periodic(otlp_exporter(config), config))
            elif name == "console":
                readers.append(periodic(ConsoleMetricExporter(), config))
            else:
                readers.append(from_entry_point(name, config))
    except BaseException:
        if endpoint is not None:
            endpoint.stop()
        for r in readers:
            r.shutdown()
        raise
    return readers, endpoint


def _with_protocol(config: Config, name: str) -> Config:
    import dataclasses

    protocol = "grpc" if name == "otlp_proto_grpc" else "http/protobuf"
    return dataclasses.replace(config, otlp_protocol=protocol)
