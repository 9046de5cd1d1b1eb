"""HTTP server measurements: the ``http.server.*`` points of one request.

The middleware (``integrations/_http``) reads the semconv values from the ASGI scope and
messages and hands them over raw: ``(method, scheme, protocol version, status code, route,
error.type)``. Here they are bounded and turned into cells once per distinct tuple, so a request
whose combination was seen before costs one dict lookup. Method, scheme, protocol version and
status code are low-cardinality by nature; route templates come from the app's router and pass
an allow-list (``Bounds.http_routes``), exception names the ``error.type`` one.
"""

from __future__ import annotations

import threading
from time import time_ns
from typing import Any, Final

from routemeter.recording import _instruments as ins
from routemeter.recording import _semconv as sc
from routemeter.recording._bounds import Bounds
from routemeter.recording._measurements import Cell, Keys

_INDEX: Final = {spec.name: i for i, spec in enumerate(ins.ALL)}
DURATION: Final = _INDEX[sc.HTTP_SERVER_REQUEST_DURATION]
ACTIVE: Final = _INDEX[sc.HTTP_SERVER_ACTIVE_REQUESTS]
REQUEST_SIZE: Final = _INDEX[sc.HTTP_SERVER_REQUEST_BODY_SIZE]
RESPONSE_SIZE: Final = _INDEX[sc.HTTP_SERVER_RESPONSE_BODY_SIZE]

KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
"""The methods opentelemetry-util-http's ``sanitize_method`` keeps (RFC 9110, 5789 and the
QUERY method); any other is ``_OTHER`` unless all methods are captured."""

Raw = tuple[str | None, str | None, str | None, int | None, str | None, str | None]
"""``(method, scheme, protocol version, status code, route, error.type)`` as the middleware read
them (the method already normalised); ``None`` is an absent attribute."""


class ActiveCell(Cell):
    """The ``http.server.active_requests`` point of one (method, scheme): the aggregate recorder
    counts the requests in flight as the members of ``inflight`` (``set.add`` is atomic, so a
    request's start takes no lock)."""

    __slots__ = ("inflight", "start_ns")

    def __init__(self, key: tuple[Any, ...]) -> None:
        super().__init__(ACTIVE, key)
        self.inflight: set[object] = set()
        self.start_ns = time_ns()


class HttpCells:
    """The histogram points a finished request with one raw combination feeds."""

    __slots__ = ("duration", "request_size", "response_size")

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.duration = Cell(DURATION, key)
        self.request_size = Cell(REQUEST_SIZE, key)
        self.response_size = Cell(RESPONSE_SIZE, key)


class HttpKeys:
    """Cells per raw combination, size-capped like ``_measurements.Keys``: past the cap cells are
    built per request (slower, still bounded: the recorder finds the point by its key)."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.cells: dict[Raw, HttpCells] = {}
        self.active: dict[tuple[Any, ...], ActiveCell] = {}
        """By raw (method, scheme)."""
        self.points: dict[tuple[Any, ...], ActiveCell] = {}
        """By bounded key: the one cell of each ``http.server.active_requests`` point."""
        self._lock = threading.Lock()

    def finished(self, raw: Raw) -> HttpCells:
        """The cells of a finished request (the slow path: ``cells.get(raw)`` missed)."""
        method, scheme, version, status, route, error = raw
        key = (
            self._method(method),
            scheme if type(scheme) is str else None,
            version if type(version) is str else None,
            status if type(status) is int else None,
            None if route is None else self.bounds.http_routes(route),
            self._error(error),
        )
        cells = HttpCells(key)
        if len(self.cells) < Keys.LIMIT:
            self.cells[raw] = cells
        return cells

    def begun(self, method: str | None, scheme: str | None) -> ActiveCell:
        """The in-flight point of a request that began, one cell per point."""
        raw = (method, scheme)
        cell = self.active.get(raw)
        if cell is None:
            key = (self._method(method), scheme if type(scheme) is str else None)
            with self._lock:
                cell = self.points.get(key)
                if cell is None:
                    cell = self.points[key] = ActiveCell(key)
                if len(self.active) < Keys.LIMIT:
                    self.active[raw] = cell
        return cell

    def _method(self, method: str | None) -> str | None:
        if method is None or method in KNOWN_METHODS or method == sc.OTHER:
            return method
        return self.bounds.http_methods(method)

    def _error(self, error: str | None) -> str | None:
        if error is None:
            return None
        if type(error) is str and error.isdecimal() and len(error) <= 3:
            return error  # a status code, as text
        return self.bounds.errors(error)
