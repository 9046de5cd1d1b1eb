"""OpenTelemetry-native metrics for LLM routers, gateways and proxies.

``setup()`` once, ``@route("label")`` on the handler that routes, ``current()`` inside it to
record the decision, the upstream attempts and their usage; ``instrument_app(app)`` for HTTP
metrics and a mounted /metrics.

Importing routemeter loads the OTel API only: the SDK and exporters load in ``setup()``, so a
library that just decorates its handlers stays cheap (and a no-op) until an application sets up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from routemeter._config import Config, ConfigError
from routemeter.request._events import (
    cache_entries,
    cache_evicted,
    cooldown,
    ratelimit_remaining,
    recovered,
)
from routemeter.request._policy import SLO
from routemeter.request._ratelimit import ratelimit_from_headers
from routemeter.request._record import Attempt, Decision, Request, current
from routemeter.request._route import route

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

    from routemeter.export._setup import Handle
    from routemeter.integrations._http import ASGIApp
    from routemeter.tools._stats import Stats

__all__ = [
    "SLO",
    "Attempt",
    "Config",
    "ConfigError",
    "Decision",
    "Handle",
    "Request",
    "Stats",
    "cache_entries",
    "cache_evicted",
    "cooldown",
    "current",
    "instrument_app",
    "ratelimit_from_headers",
    "ratelimit_remaining",
    "recovered",
    "route",
    "setup",
    "shutdown",
    "stats",
]


def setup(
    *,
    readers: Sequence[MetricReader] = (),
    meter_provider: MeterProvider | None = None,
    set_global: bool = True,
    **settings: Any,
) -> Handle:
    """Configure metrics from ``OTEL_*``/``ROUTEMETER_*`` variables; keyword arguments win.

    Idempotent: a second call returns the first handle. See docs/configuration.md.
    """
    from routemeter.export._setup import setup as _setup
    from routemeter.tools import _pages

    handle = _setup(
        readers=readers, meter_provider=meter_provider, set_global=set_global, **settings
    )
    _pages.start(handle)  # the history sampler and the pages beside /metrics
    return handle


def shutdown(timeout_s: float | None = None) -> None:
    """Flush every reader and stop the /metrics server; safe to call twice. Returns within
    ``timeout_s`` (default ``ROUTEMETER_SHUTDOWN_TIMEOUT``, 5 s) even if the Collector is down."""
    from routemeter.export._setup import shutdown as _shutdown
    from routemeter.tools import _pages

    _pages.stop()  # the history's last step first, while the recorder still answers
    _shutdown(timeout_s)


def instrument_app(app: ASGIApp, *, metrics_path: str | None = None) -> ASGIApp:
    """HTTP server metrics, ``GET /metrics`` and a flush at lifespan shutdown for an ASGI app."""
    from routemeter.integrations._asgi import instrument_app as _instrument_app

    return _instrument_app(app, metrics_path=metrics_path)


def stats(*, since: Literal["start", "previous"] = "start") -> Stats:
    """Per route, provider and model: requests, errors, latency percentiles, tokens, cost,
    fallbacks and cache hits, since start or since the previous call. See docs/stats.md."""
    from routemeter.tools._stats import stats as _stats

    return _stats(since=since)


def __getattr__(name: str) -> Any:
    if name == "Handle":
        from routemeter.export._setup import Handle

        return Handle
    if name == "Stats":
        from routemeter.tools._stats import Stats

        return Stats
    raise AttributeError(f"module 'routemeter' has no attribute {name!r}")
