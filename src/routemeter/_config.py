"""Configuration: code arguments, then the environment, then defaults, parsed once.

Standard ``OTEL_*`` variables mean what the OTel spec says (timeouts and intervals in
milliseconds, even where the Python exporter reads seconds); routemeter's own use the
``ROUTEMETER_`` prefix. Every bad value fails ``setup()`` naming the variable, the value and what
is allowed. This table is also the source of docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

BUILTIN_EXPORTERS: Final = ("prometheus", "otlp", "console", "none")
PROTOCOLS: Final = ("grpc", "http/protobuf")
TEMPORALITIES: Final = ("cumulative", "delta", "lowmemory")
RECORDERS: Final = ("aggregate", "sdk")
HTTP_INSTRUMENTATIONS: Final = ("routemeter", "opentelemetry")
HISTOGRAM_AGGREGATIONS: Final = ("explicit_bucket_histogram", "base2_exponential_bucket_histogram")
EXEMPLAR_FILTERS: Final = ("trace_based", "always_on", "always_off")
COMPRESSIONS: Final = ("gzip", "deflate", "none")


class ConfigError(ValueError):
    """A configuration value routemeter cannot use; the message says which and why."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError("allowed: true or false")


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"allowed: an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"allowed: an integer from {lo} to {hi}")
        return value

    return parse


def _millis(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("allowed: a non-negative number of milliseconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("allowed: a non-negative number of milliseconds")
    return value


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"allowed: {', '.join(options)}")
        return value

    return parse


def _names(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))


def _exporters(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.lower() for n in _names(raw)))
    if not names:
        raise ValueError(f"allowed: a comma-separated list of {', '.join(BUILTIN_EXPORTERS)}")
    if "none" in names and len(names) > 1:
        raise ValueError("allowed: 'none' alone, or a comma-separated list without it")
    return names


def _headers(raw: str) -> tuple[tuple[str, str], ...]:
    """W3C-baggage-style ``key=value,key2=value2``, values percent-decoded."""
    pairs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("allowed: comma-separated key=value pairs")
        pairs.append((unquote(key.strip()).lower(), unquote(value.strip())))
    return tuple(pairs)


def _path(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("allowed: an absolute URL path such as /metrics")
    return value


def _text(raw: str) -> str:
    return raw.strip()


MIN_TOKEN_LENGTH: Final = 16


def _token(raw: str) -> str:
    value = raw.strip()
    if len(value) < MIN_TOKEN_LENGTH or not all("!" <= c <= "~" for c in value):
        raise ValueError(
            f"allowed: {MIN_TOKEN_LENGTH} or more visible ASCII characters without spaces"
            " (for instance from `openssl rand -hex 32`)"
        )
    return value


def _readable_file(raw: str) -> str:
    value = raw.strip()
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ValueError("allowed: the path of a readable PEM file")
    return value


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _span(text: str) -> int:
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError
    return int(number) * _UNITS[unit]


def _retention(raw: str) -> str:
    retention_tiers(raw)
    return ",".join(item.strip() for item in raw.split(","))


def retention_tiers(raw: str) -> tuple[tuple[int, int], ...]:
    """``(step_s, kept_s)`` of ``ROUTEMETER_HISTORY_RETENTION`` (``10s:1h,1m:48h,1h:30d``): each
    step a multiple of the one before, each tier keeping one step at least, 100,000 at most."""
    allowed = (
        "allowed: 1-4 comma-separated step:kept pairs of durations (s, m, h, d), steps"
        " ascending and each a multiple of the one before, e.g. 10s:1h,1m:48h,1h:30d"
    )
    tiers: list[tuple[int, int]] = []
    try:
        for item in raw.split(","):
            step_text, sep, kept_text = item.strip().partition(":")
            if not sep:
                raise ValueError
            step, kept = _span(step_text.strip()), _span(kept_text.strip())
            if kept < step or kept // step > 100_000:
                raise ValueError
            if tiers and (step <= tiers[-1][0] or step % tiers[-1][0]):
                raise ValueError
            tiers.append((step, kept))
    except ValueError:
        raise ValueError(allowed) from None
    if not 1 <= len(tiers) <= 4:
        raise ValueError(allowed)
    return tuple(tiers)


def _database(raw: str) -> str:
    value = os.path.abspath(os.path.expanduser(raw.strip()))
    folder = os.path.dirname(value)
    if os.path.isdir(value) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError("allowed: a file path in an existing, writable directory")
    return value


def _endpoint(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("allowed: a URL starting with http:// or https://")
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    field: str
    env: tuple[str, ...]
    """Variables read, first set wins (signal-specific before general)."""
    default: Any
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("disabled", ("OTEL_SDK_DISABLED",), False, _bool,
            "`true` turns every routemeter call into a no-op (the OTel SDK switch)."),
    Setting("service_name", ("OTEL_SERVICE_NAME",), None, _text,
            "`service.name` on the Resource; `OTEL_RESOURCE_ATTRIBUTES` is read by the SDK too."),
    Setting("exporters", ("OTEL_METRICS_EXPORTER",), ("prometheus",), _exporters,
            "Comma-separated: `prometheus`, `otlp`, `console`, `none`, or any"
            " `opentelemetry_metrics_exporter` entry point name."),
    Setting("prometheus_host", ("OTEL_EXPORTER_PROMETHEUS_HOST",), "localhost", _text,
            "Address the standalone `/metrics` server binds."),
    Setting("prometheus_port", ("OTEL_EXPORTER_PROMETHEUS_PORT",), 9464, _int_range(0, 65535),
            "Port of the standalone `/metrics` server (`0` picks a free one)."),
    Setting("prometheus_server", ("ROUTEMETER_PROMETHEUS_SERVER",), True, _bool,
            "Start the standalone `/metrics` server; `false` when the app mounts it"
            " (`instrument_app`) and needs no second port."),
    Setting("metrics_path", ("ROUTEMETER_METRICS_PATH",), "/metrics", _path,
            "Path `instrument_app` serves the Prometheus exposition on."),
    Setting("metrics_token", ("ROUTEMETER_METRICS_TOKEN",), None, _token,
            "Bearer token both `/metrics` endpoints (standalone and mounted) require:"
            " `Authorization: Bearer <token>`, else 401. At least 16 visible ASCII characters;"
            " never printed.", secret=True),
    Setting("prometheus_worker_ports", ("ROUTEMETER_PROMETHEUS_WORKER_PORTS",), 1,
            _int_range(1, 1024),
            "Consecutive ports from `OTEL_EXPORTER_PROMETHEUS_PORT` the standalone server may"
            " take, the first free one wins: set it to the worker count of a multi-process"
            " server so each worker serves its own `/metrics`, and scrape every port."),
    Setting("otlp_protocol",
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
            "http/protobuf", _choice(PROTOCOLS), "OTLP transport: `grpc` or `http/protobuf`."),
    Setting("otlp_endpoint", ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
            None, _endpoint,
            "Collector URL. The general variable is a base (`/v1/metrics` is appended for"
            " http/protobuf); the metrics one is used as is. Default `http://localhost:4317`"
            " (grpc) or `http://localhost:4318/v1/metrics`."),
    Setting("otlp_headers", ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
            (), _headers, "`key=value,...` sent with every export (values are never printed).",
            secret=True),
    Setting("otlp_timeout_ms", ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
            10_000.0, _millis, "Milliseconds per export request, as the spec says."),
    Setting("otlp_compression",
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
            "none", _choice(COMPRESSIONS), "`gzip`, `deflate` (http only) or `none`."),
    Setting("otlp_insecure", ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"),
            None, _bool, "grpc without TLS when the endpoint has no scheme to say so."),
    Setting("otlp_certificate",
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"),
            None, _readable_file, "PEM file of trusted roots for the Collector's TLS certificate."),
    Setting("temporality", ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",),
            "cumulative", _choice(TEMPORALITIES),
            "OTLP temporality: `cumulative`, `delta` or `lowmemory` (spec semantics)."),
    Setting("histogram_aggregation", ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",),
            "explicit_bucket_histogram", _choice(HISTOGRAM_AGGREGATIONS),
            "Histograms over OTLP: `explicit_bucket_histogram` (semconv buckets) or"
            " `base2_exponential_bucket_histogram` (160 buckets, scale from 20 down). The"
            " Prometheus reader keeps explicit buckets either way."),
    Setting("exemplar_filter", ("OTEL_METRICS_EXEMPLAR_FILTER",), "trace_based",
            _choice(EXEMPLAR_FILTERS),
            "Which measurements become exemplars (OTLP, and OpenMetrics scrapes of /metrics):"
            " `trace_based` (inside a sampled span), `always_on`, `always_off`."),
    Setting("export_interval_ms", ("OTEL_METRIC_EXPORT_INTERVAL",), 60_000.0, _millis,
            "Milliseconds between periodic exports (otlp, console)."),
    Setting("export_timeout_ms", ("OTEL_METRIC_EXPORT_TIMEOUT",), 30_000.0, _millis,
            "Milliseconds one periodic export may take."),
    Setting("shutdown_timeout_ms", ("ROUTEMETER_SHUTDOWN_TIMEOUT",), 5_000.0, _millis,
            "Milliseconds the exit paths may spend flushing: the lifespan flush of"
            " `instrument_app`, `shutdown()` without an argument and the interpreter-exit hook."
            " A dead Collector cannot hold the process longer."),
    Setting("cardinality_limit", ("ROUTEMETER_CARDINALITY_LIMIT",), 2000,
            _int_range(1, 1_000_000),
            "Attribute sets per metric stream before new ones fold into"
            " `otel.metric.overflow=true`."),
    Setting("recorder", ("ROUTEMETER_RECORDER",), "aggregate", _choice(RECORDERS),
            "`aggregate`: routemeter aggregates its schema itself (about 20x cheaper per request);"
            " `sdk`: one OTel SDK instrument call per measurement, so SDK Views apply. A"
            " MeterProvider the application built always gets `sdk`."),
    Setting("http_instrumentation", ("ROUTEMETER_HTTP_INSTRUMENTATION",), "routemeter",
            _choice(HTTP_INSTRUMENTATIONS),
            "What records `instrument_app`'s HTTP server metrics: `routemeter` (its own"
            " middleware through the recorder: the instrumentation's stable-semconv metrics plus"
            " `http.route`, no spans) or `opentelemetry` (opentelemetry-instrumentation-asgi's"
            " middleware, for apps that want its spans: about 130 µs of CPU per request against"
            " routemeter's 6, without tracing)."),
    Setting("models", ("ROUTEMETER_MODELS",), (), _names,
            "Model names that always pass the allow-list (comma-separated)."),
    Setting("providers", ("ROUTEMETER_PROVIDERS",), (), _names,
            "Provider names that always pass the allow-list (comma-separated)."),
    Setting("max_models", ("ROUTEMETER_MAX_MODELS",), 100, _int_range(0, 100_000),
            "Other model names admitted (first seen) before the rest become `_OTHER`;"
            " exact genai-prices model ids always pass."),
    Setting("max_providers", ("ROUTEMETER_MAX_PROVIDERS",), 20, _int_range(0, 10_000),
            "Other provider names admitted (first seen) before the rest become `_OTHER`."),
    Setting("tenants", ("ROUTEMETER_TENANTS",), (), _names,
            "Tenant names (`rec.tenant(...)`, `llm.router.tenant`) that always pass the"
            " allow-list (comma-separated); key- and email-shaped names never do."),
    Setting("max_tenants", ("ROUTEMETER_MAX_TENANTS",), 20, _int_range(0, 10_000),
            "Other tenant names admitted (first seen) before the rest become `_OTHER`."),
    Setting("prices_file", ("ROUTEMETER_PRICES_FILE",), None, _text,
            "JSON or TOML file of per-million-token prices that override or add models."),
    Setting("recent_requests", ("ROUTEMETER_RECENT_REQUESTS",), 200, _int_range(0, 10_000),
            "Finished requests kept for the dashboard's recent-requests view (0: none, and no"
            " `x-request-id`); summaries hold no prompt, completion, key or client address."),
    Setting("history_retention", ("ROUTEMETER_HISTORY_RETENTION",),
            "10s:1h,1m:48h,1h:30d", _retention,
            "History tiers as `step:kept` pairs, each step a multiple of the one before:"
            " what `<metrics_path>/history` and the dashboard can show."),
    Setting("history_path", ("ROUTEMETER_HISTORY_PATH",), None, _database,
            "SQLite file (WAL) that keeps the history across restarts, shared by the worker"
            " processes of one server; unset: history in memory only."),
)  # fmt: skip

_BY_FIELD: Final = {s.field: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration: arguments to ``setup()``, then ``OTEL_*``/``ROUTEMETER_*``
    variables, then defaults, parsed once (``routemeter config`` prints it with sources)."""

    disabled: bool
    service_name: str | None
    exporters: tuple[str, ...]
    prometheus_host: str
    prometheus_port: int
    prometheus_server: bool
    metrics_path: str
    metrics_token: str | None
    prometheus_worker_ports: int
    otlp_protocol: str
    otlp_endpoint: str | None
    otlp_headers: tuple[tuple[str, str], ...]
    otlp_timeout_ms: float
    otlp_compression: str
    otlp_insecure: bool | None
    otlp_certificate: str | None
    temporality: str
    histogram_aggregation: str
    exemplar_filter: str
    export_interval_ms: float
    export_timeout_ms: float
    shutdown_timeout_ms: float
    cardinality_limit: int
    recorder: str
    http_instrumentation: str
    models: tuple[str, ...]
    providers: tuple[str, ...]
    max_models: int
    max_providers: int
    tenants: tuple[str, ...]
    max_tenants: int
    prices_file: str | None
    recent_requests: int
    history_retention: str
    history_path: str | None
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    """Where each value came from: ``argument``, ``env:NAME`` or ``default``."""

    @property
    def metrics_endpoint(self) -> str:
        """The OTLP metrics URL the exporter will use, defaults and spec suffix applied."""
        grpc = self.otlp_protocol == "grpc"
        if self.otlp_endpoint is None:
            return "http://localhost:4317" if grpc else "http://localhost:4318/v1/metrics"
        if grpc or self.sources.get("otlp_endpoint") == "env:OTEL_EXPORTER_OTLP_METRICS_ENDPOINT":
            return self.otlp_endpoint
        if self.sources.get("otlp_endpoint") == "env:OTEL_EXPORTER_OTLP_ENDPOINT":
            return self.otlp_endpoint.rstrip("/") + "/v1/metrics"
        return self.otlp_endpoint

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(setting, variable, value, source) rows for ``routemeter config``; secrets hidden."""
        rows = []
        for s in SETTINGS:
            value: Any = getattr(self, s.field)
            if s.secret and isinstance(value, str):
                shown = "<redacted>"
            elif s.secret and value:
                shown = ",".join(f"{k}=<redacted>" for k, _ in value)
            elif s.field == "otlp_endpoint" and value:
                shown = _without_userinfo(value)
            elif isinstance(value, tuple):
                shown = ",".join(value) if value else "(none)"
            else:
                shown = "(unset)" if value is None else str(value)
            rows.append((s.field, s.env[0], shown, self.sources.get(s.field, "default")))
        return rows


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"<redacted>@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_argument(setting: Setting, value: Any) -> Any:
    """Arguments are typed values; validate them with the same rules as the environment."""
    if isinstance(value, (list, tuple, set, frozenset)) and isinstance(setting.default, tuple):
        if setting.field == "otlp_headers":
            if all(isinstance(v, str) for v in value):
                try:
                    return _headers(",".join(value))
                except ValueError as e:
                    raise ConfigError(f"setup(otlp_headers={value!r}) is not valid: {e}") from None
            return tuple((str(k).lower(), str(v)) for k, v in value)
        raw = ",".join(str(v) for v in value)
    elif isinstance(value, Mapping) and setting.field == "otlp_headers":
        return tuple((str(k).lower(), str(v)) for k, v in value.items())
    elif isinstance(value, bool):
        raw = "true" if value else "false"
    else:
        raw = str(value)
    try:
        return setting.parse(raw)
    except ValueError as e:
        # a malformed header list is shown so it can be fixed; a token never is
        hidden = setting.secret and not isinstance(setting.default, tuple)
        shown = "<redacted>" if hidden else repr(value)
        raise ConfigError(f"setup({setting.field}={shown}) is not valid: {e}") from None


def load(env: Mapping[str, str] | None = None, **arguments: Any) -> Config:
    """Resolve every setting: argument, then environment, then default."""
    env = os.environ if env is None else env
    unknown = sorted(set(arguments) - set(_BY_FIELD))
    if unknown:
        raise ConfigError(
            f"unknown setup() argument(s) {', '.join(unknown)}; allowed: {', '.join(_BY_FIELD)}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        if arguments.get(s.field) is not None:
            values[s.field] = _check_argument(s, arguments[s.field])
            sources[s.field] = "argument"
            continue
        for name in s.env:
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and s.field != "disabled"):
                continue
            try:
                values[s.field] = s.parse(raw)
            except ValueError as e:
                shown = "<redacted>" if s.secret else repr(raw)
                raise ConfigError(f"{name}={shown} is not valid: {e}") from None
            sources[s.field] = f"env:{name}"
            break
        else:
            values[s.field] = s.default
            sources[s.field] = "default"
    return Config(**values, sources=sources)
