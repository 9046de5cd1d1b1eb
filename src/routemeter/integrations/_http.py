"""HTTP server metrics at routemeter's cost: the ``http.server.*`` metrics
opentelemetry-instrumentation-asgi records in the stable HTTP semconv mode, recorded through
routemeter's recorder, with no spans.

The attributes, values and rules are the instrumentation's (0.66b2): the method upper-cased and
anything outside the known methods ``_OTHER`` (unless
``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS`` is set), ``url.scheme`` and
``network.protocol.version`` from the scope, ``http.response.status_code`` from the response
start, ``error.type`` for a status of 500 and above (or below 100), body sizes from the request's
and the response's ``content-length`` headers, active requests by method and scheme, nothing
for websockets or lifespan. ``tests/integrations/test_http.py`` runs the same requests through
both and compares the exported data.

Three differences, each where the instrumentation departs from semconv:

- ``http.route``: the template the router matched (``scope["route"].path_format`` under
  ``root_path``, which Starlette and FastAPI set). The instrumentation reads the same template
  but only as the span's ``url.path``, so its metrics never carry a route.
- ``error.type`` is the exception's class name when the app raises, unless a 5xx status already
  set it; the instrumentation records such a request without ``error.type``.
- The response body size is this response's own ``content-length``, 0 included. The
  instrumentation keeps the last value it saw on the middleware: a response without the header
  records the previous response's size (another request's, under concurrency), and 0 is never
  recorded.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any, Final

from routemeter._report import report
from routemeter.export import _setup
from routemeter.recording._http import KNOWN_METHODS, Raw
from routemeter.recording._semconv import OTHER
from routemeter.request import _recent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_clock: Callable[[], float] = perf_counter
"""What durations are measured with (the instrumentation's ``timeit.default_timer`` is
``perf_counter``); the equivalence test gives both the same deterministic clock."""

CAPTURE_ALL_METHODS: Final = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"
_METHODS: Final[dict[Any, str]] = {m: m for m in KNOWN_METHODS}
"""The fast path: a method already in its normal form."""
_CONTENT_LENGTH: Final = b"content-length"
_REQUEST_ID: Final = b"x-request-id"
_STATUSES: Final = {code: (code, None) for code in range(100, 500)}
"""The fast path of ``status_attributes``: statuses that are not errors."""


class HttpMetrics:
    """ASGI middleware: ``http.server.request.duration``, ``http.server.active_requests``,
    ``http.server.request.body.size`` and ``http.server.response.body.size`` for every HTTP
    request but those to ``excluded_path``, into the active recorder (``setup()``'s). Recording
    never raises into the app; the app's own exceptions pass through unchanged."""

    __slots__ = ("all_methods", "app", "excluded_path", "request_ids")

    def __init__(
        self, app: ASGIApp, *, excluded_path: str | None = None, request_ids: bool = False
    ) -> None:
        self.app = app
        self.excluded_path = excluded_path
        self.request_ids = request_ids
        """Also give each request an id (``x-request-id``, ``request/_recent.request_id``) while the
        recent-requests view keeps requests: done here, it shares this middleware's ``send``."""
        self.all_methods = bool(os.environ.get(CAPTURE_ALL_METHODS))
        """Read once, as the instrumentation reads it when it is built."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.excluded_path is not None and scope.get("path") == self.excluded_path
        ):
            await self.app(scope, receive, send)
            return
        handle = _setup.current_handle()
        recorder = None if handle is None else handle.recorder
        if recorder is None:  # routemeter is shut down or disabled
            await self.app(scope, receive, send)
            return
        start = _clock()
        status: Any = None
        response_size: int | None = None
        request_id: str | None = None
        try:
            method = scope.get("method")
            method = _METHODS.get(method) or normal_method(method, self.all_methods)
            scheme = scope.get("scheme") or None
            request_size, request_id = request_headers(
                scope.get("headers"), self.request_ids and _recent.ring is not None
            )
        except Exception as e:
            report("http metrics", e)
            await self.app(scope, receive, send)
            return

        def measured_send(message: Message) -> Awaitable[None]:
            # a plain function returning the server's awaitable: no coroutine of its own
            nonlocal status, response_size
            if message.get("type") == "http.response.start":
                try:
                    status = message.get("status")
                    response_size, message = response_start(message, request_id)
                except Exception as e:
                    report("http metrics", e)
            return send(message)

        began = recorder.http_begin(method, scheme, measured_send)  # the closure: a token
        error: str | None = None
        current = None if request_id is None else _recent.request_id.set(request_id)
        try:
            await self.app(scope, receive, measured_send)
        except BaseException as e:
            error = type(e).__name__  # the class name only: no traceback kept alive
            raise
        finally:
            if current is not None:
                _recent.request_id.reset(current)
            duration = 0.0
            raw: Raw = (method, scheme, None, None, None, None)
            try:
                duration = _clock() - start
                found = _STATUSES.get(status) if type(status) is int else None
                code, error_type = found or status_attributes(status)
                if error is not None and error_type is None:
                    error_type = error
                version = scope.get("http_version") or None
                raw = (method, scheme, version, code, route(scope), error_type)
            except Exception as e:
                report("http metrics", e)
            recorder.http_end(
                began, measured_send, raw, duration if duration > 0.0 else 0.0,
                request_size, response_size,
            )  # fmt: skip


def request_headers(headers: Iterable[Any] | None, want_id: bool) -> tuple[int | None, str | None]:
    """A request's body size and, when ``want_id``, its id: the client's ``x-request-id`` when
    that is a plain token, else a new one."""
    size: int | None = None
    request_id: str | None = None
    try:
        size, given = _read(headers)
        if want_id and given is not None:
            request_id = _recent.client_id(given)
    except Exception as e:
        report("request id" if want_id else "http metrics", e)
    if want_id and request_id is None:
        request_id = _recent.new_id()
    return size, request_id


def response_start(message: Message, request_id: str | None) -> tuple[int | None, Message]:
    """A response start's body size and the message to send: with ``x-request-id`` added when
    there is an id and the app did not set its own."""
    headers = message.get("headers")
    size, own = _read(headers)
    if own is not None or request_id is None:
        return size, message
    message = dict(message)
    message["headers"] = [*(headers or ()), (_REQUEST_ID, request_id.encode("ascii"))]
    return size, message


def _read(headers: Iterable[Any] | None) -> tuple[int | None, Any]:
    """One pass over headers, names in any case: the first ``content-length`` as a size (None
    when absent, not a number or negative) and the first ``x-request-id``'s raw value."""
    size: int | None = None
    found: Any = None
    sized = False
    for name, value in headers or ():
        n = len(name)
        if n == 14 and not sized and name.lower() == _CONTENT_LENGTH:
            size, sized = _size(value), True
        elif n == 12 and found is None and name.lower() == _REQUEST_ID:
            found = value
    return size, found


def _size(value: Any) -> int | None:
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size >= 0 else None


def request_id_of(scope: Scope) -> str:
    """The request's id: its ``x-request-id`` when that is a plain token, else a new one."""
    return request_headers(scope.get("headers"), True)[1] or _recent.new_id()


def normal_method(method: Any, all_methods: bool = False) -> str | None:
    """``http.request.method`` as the instrumentation sets it: upper-cased, ``_OTHER`` unless
    known (or all methods are captured), absent when the scope has none."""
    found = _METHODS.get(method)
    if found is not None:
        return found
    if not method:
        return None
    upper = str(method).upper()
    if upper in KNOWN_METHODS or all_methods:
        return upper.strip() or None
    return OTHER


def status_attributes(status: Any) -> tuple[int | None, str | None]:
    """``(http.response.status_code, error.type)`` of a response start's status, by the
    instrumentation's rules: nothing for a missing or zero status; a status that is not an
    integer is only an ``error.type``; 500 and above, and below 100, are errors."""
    if not status:
        return None, None
    text = str(status)
    try:
        code = int(status)
    except (TypeError, ValueError):
        code = -1
    if code < 0:
        return None, text
    if code < 100 or code > 499:
        return code, text
    return code, None


def route(scope: Scope) -> str | None:
    """``http.route``: the template the app's router matched (Starlette and FastAPI leave the
    route in the scope), under the ``root_path`` it was mounted at."""
    try:
        path_format = getattr(scope.get("route"), "path_format", None)
    except Exception:  # a route object whose attribute lookup fails: no route
        return None
    if path_format and type(path_format) is str:
        return f"{scope.get('root_path', '')}{path_format}"
    return None
