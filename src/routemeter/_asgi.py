"""``instrument_app``: HTTP server metrics from opentelemetry-instrumentation-asgi, a mounted
/metrics, and a lifespan hook that flushes every reader before the server exits."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from routemeter import _setup

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def _opt_in_stable_http() -> None:
    """The instrumentation emits the stable ``http.server.request.duration`` (s) only when opted in
    before it initialises; without it, the deprecated millisecond ``http.server.duration``."""
    current = os.environ.get(_OPT_IN, "")
    modes = {m.strip() for m in current.split(",") if m.strip()}
    if not modes & {"http", "http/dup"}:
        os.environ[_OPT_IN] = ",".join(sorted(modes | {"http"}))


def instrument_app(app: ASGIApp, *, metrics_path: str | None = None) -> ASGIApp:
    """Wrap any ASGI app: stable HTTP server metrics, ``GET /metrics`` when the Prometheus reader
    is on, and a flush of every reader at lifespan shutdown (so SIGTERM loses no tail)."""
    handle = _setup.current_handle() or _setup.setup()
    _opt_in_stable_http()
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    path = metrics_path or handle.config.metrics_path
    exposition: ASGIApp | None = None
    if handle.prometheus is not None:
        from prometheus_client import make_asgi_app

        exposition = make_asgi_app(handle.prometheus.registry)
    instrumented = OpenTelemetryMiddleware(
        app,
        excluded_urls=f"^{path}$" if exposition is not None else None,
        meter_provider=handle.meter_provider,
    )

    async def routemeter_app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            kind == "http"
            and exposition is not None
            and scope["path"] == path
            and scope["method"] in ("GET", "HEAD")
        ):
            await exposition(scope, receive, send)
            return
        if kind == "lifespan":
            await app(scope, receive, _flush_before_shutdown_complete(send))
            return
        await instrumented(scope, receive, send)

    return routemeter_app


def _flush_before_shutdown_complete(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            handle = _setup.current_handle()
            if handle is not None:
                await asyncio.to_thread(handle.force_flush)
        await send(message)

    return wrapped
