"""``instrument_app``: HTTP server metrics (routemeter's middleware, ``integrations/_http``, or
opentelemetry-instrumentation-asgi's with ``ROUTEMETER_HTTP_INSTRUMENTATION=opentelemetry``), a
mounted /metrics, and a lifespan hook that flushes every reader before the server exits.

The mounted endpoint asks for the bearer token when ``ROUTEMETER_METRICS_TOKEN`` is set, and
refuses (503) when sibling worker processes share the app's port: a scrape would reach one of
them at random. Apps that do not speak the lifespan protocol (Django's ASGI handler, bare ASGI
callables) get it spoken for them, so the flush at shutdown still happens."""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from routemeter._report import report
from routemeter.export import _setup
from routemeter.export._exposition import Exposition, render
from routemeter.export._guard import (
    TOKEN_HINT,
    UNAUTHORIZED_BODY,
    authorized,
    challenge,
    is_loopback,
    warn_once,
)
from routemeter.integrations._http import (
    ASGIApp,
    HttpMetrics,
    Message,
    Receive,
    Scope,
    Send,
    request_id_of,
    response_start,
)
from routemeter.integrations._workers import WorkerCheck, shared_port_body
from routemeter.recording import _otel_private
from routemeter.request import _recent
from routemeter.tools import _pages

_log = logging.getLogger("routemeter")


def instrument_app(app: ASGIApp, *, metrics_path: str | None = None) -> ASGIApp:
    """Wrap any ASGI app: stable HTTP server metrics, ``GET /metrics`` and the pages beside it
    (``/metrics/stats``, ``/metrics/dashboard``, ...) when the Prometheus reader is on, an
    ``x-request-id`` on every response, and a flush of every reader at lifespan shutdown (so
    SIGTERM loses no tail)."""
    handle = _setup.current_handle() or _setup.setup()
    _pages.start(handle)
    path = metrics_path or handle.config.metrics_path
    exposition: ASGIApp | None = None
    pages: ASGIApp | None = None
    if handle.prometheus is not None:
        exposition = _metrics_app(handle.prometheus.registry, handle.exposition)
        pages = _pages_app(path.rstrip("/") + "/")
    prefix = path.rstrip("/") + "/"
    excluded = path if exposition is not None else None
    instrumented: ASGIApp
    if handle.config.http_instrumentation == "opentelemetry":
        instrumented = _opentelemetry_middleware(app, excluded, handle.meter_provider)
    else:
        instrumented = HttpMetrics(app, excluded_path=excluded, request_ids=True)
    with_ids = not isinstance(instrumented, HttpMetrics)
    token = handle.config.metrics_token
    workers = WorkerCheck()

    async def routemeter_app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and exposition is not None and scope["method"] in ("GET", "HEAD"):
            where = scope["path"]
            if where == path:
                await _expose(exposition, scope, receive, send, token, workers)
                return
            if (
                pages is not None
                and where.startswith(prefix)
                and _pages.serves(where[len(prefix) :])
            ):
                sub = where[len(prefix) :]
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                alone = None if _pages.whole_server(sub, query) else workers
                await _expose(pages, scope, receive, send, token, alone)
                return
        if kind == "lifespan":
            await _lifespan(app, scope, receive, send)
            return
        if with_ids and kind == "http" and _recent.ring is not None:
            await _with_request_id(instrumented, scope, receive, send)
            return
        await instrumented(scope, receive, send)

    return routemeter_app


async def _with_request_id(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """What ``HttpMetrics(request_ids=True)`` does for opentelemetry-instrumentation-asgi's
    middleware: the request's id current while it runs, and on the response."""
    request_id = request_id_of(scope)

    async def send_with_id(message: Message) -> None:
        if message.get("type") == "http.response.start":
            try:
                message = response_start(message, request_id)[1]
            except Exception as e:
                report("request id", e)
        await send(message)

    token = _recent.request_id.set(request_id)
    try:
        await app(scope, receive, send_with_id)
    finally:
        _recent.request_id.reset(token)


def _pages_app(prefix: str) -> ASGIApp:
    """The pages under the metrics path, computed on a worker thread (``tools/_pages``)."""

    async def pages_app(scope: Scope, receive: Receive, send: Send) -> None:
        current = _pages.current()
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = dict(reversed(parse_qsl(raw_query, max_num_fields=20)))
        page = None
        if current is not None:
            page = await asyncio.to_thread(current, scope["path"][len(prefix) :], query)
        if page is None:
            await _answer(scope, send, 404, b"routemeter: no such page\n")
            return
        await send(
            {
                "type": "http.response.start",
                "status": page.status,
                "headers": [
                    (b"content-type", page.content_type.encode()),
                    (b"content-length", str(len(page.body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        body = b"" if scope["method"] == "HEAD" else page.body
        await send({"type": "http.response.body", "body": body})

    return pages_app


def _opentelemetry_middleware(app: ASGIApp, excluded: str | None, meter_provider: Any) -> ASGIApp:
    """opentelemetry-instrumentation-asgi's middleware, built in the stable HTTP semconv mode
    (its spans too, for apps that want them)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import ExcludeList

    # it matches the patterns against the whole URL (scheme://host/path), not the path
    skip = ExcludeList([f"^[^:/]+://[^/]*{re.escape(excluded)}$"]) if excluded else None
    with _otel_private.stable_http_semconv() as stable:
        middleware: ASGIApp = OpenTelemetryMiddleware(
            app, excluded_urls=skip, meter_provider=meter_provider
        )
    if not stable:
        warn_once(
            "http-semconv",
            "routemeter: this opentelemetry-instrumentation has changed how it selects HTTP"
            " semantic conventions (checked against %s); set OTEL_SEMCONV_STABILITY_OPT_IN=http"
            " for http.server.request.duration in seconds",
            _otel_private.CHECKED_AGAINST,
        )
    return middleware


def _metrics_app(registry: Any, ours: Exposition | None) -> ASGIApp:
    """``GET /metrics``, rendered on a worker thread and sent in chunks: a scrape never holds the
    event loop for longer than one chunk's send. One render at a time; others wait their turn."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routemeter-render")

    async def metrics_app(scope: Scope, receive: Receive, send: Send) -> None:
        encoding = accept = b""
        for name, value in scope.get("headers", ()):
            if name == b"accept-encoding":
                encoding = value
            elif name == b"accept":
                accept = value
        loop = asyncio.get_running_loop()
        try:
            chunks, headers = await loop.run_in_executor(
                executor,
                render,
                registry,
                ours,
                encoding.decode("latin-1"),
                accept.decode("latin-1"),
            )
            status = 200
        except Exception as e:
            report("render", e)
            chunks, headers, status = [b"routemeter: render failed\n"], [], 500
        size = sum(len(c) for c in chunks)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(size).encode())],
            }
        )
        if scope["method"] == "HEAD":
            chunks = []
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return metrics_app


async def _expose(
    exposition: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    token: str | None,
    workers: WorkerCheck | None,
) -> None:
    """The mounted endpoint: the token when one is set, never one worker's numbers for all
    (``workers`` is ``None`` for a page that answers for the whole server)."""
    if token is not None:
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        if not authorized(header, token):
            await _answer(scope, send, 401, UNAUTHORIZED_BODY, challenge(scope["path"]))
            return
    else:
        _warn_if_exposed(scope)
    shared = None
    if workers is not None:
        shared = workers.workers or await asyncio.to_thread(workers.shared)
    if shared:
        body = shared_port_body(shared)
        warn_once("shared-port", "%s", body.decode().strip())
        await _answer(scope, send, 503, body)
        return
    await exposition(scope, receive, send)


def _warn_if_exposed(scope: Scope) -> None:
    for end in ("client", "server"):
        address = scope.get(end)
        host = address[0] if address else None
        if host and not is_loopback(str(host)):
            warn_once(
                "mounted-exposed",
                "routemeter: the app's %s answered %s beyond loopback without authentication;"
                " %s, or serve the app on loopback only",
                scope.get("path"),
                host,
                TOKEN_HINT,
            )
            return


async def _answer(
    scope: Scope, send: Send, status: int, body: bytes, challenge: str | None = None
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if challenge is not None:
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _lifespan(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the app's lifespan with a flush before ``lifespan.shutdown.complete``. An app that
    refuses the protocol (raises or returns without a word), or stops speaking it, has it spoken
    for it: otherwise the server skips the lifespan and with it the flush."""
    consumed: list[str] = []
    sent: list[str] = []

    async def app_receive() -> Message:
        message = await receive()
        consumed.append(str(message.get("type")))
        return message

    async def app_send(message: Message) -> None:
        kind = str(message.get("type"))
        sent.append(kind)
        if kind == "lifespan.shutdown.complete":
            await _flush()
        await send(message)

    try:
        await app(scope, app_receive, app_send)
    except Exception:
        if "lifespan.shutdown" in consumed and "lifespan.shutdown.complete" not in sent:
            await _flush()  # the app failed in its own shutdown: the tail still goes out
        if sent:  # the app speaks lifespan and failed: the server reports it
            raise
        _log.debug("routemeter: the app refused the lifespan protocol; routemeter speaks it")
    if "lifespan.shutdown.complete" in sent or any(k.endswith(".failed") for k in sent):
        return
    if "lifespan.startup.complete" not in sent:
        if "lifespan.startup" not in consumed:
            await receive()
        await send({"type": "lifespan.startup.complete"})
    if "lifespan.shutdown" not in consumed:
        await receive()
    await _flush()
    await send({"type": "lifespan.shutdown.complete"})


async def _flush() -> None:
    handle = _setup.current_handle()
    if handle is not None:
        await asyncio.to_thread(handle.force_flush)
