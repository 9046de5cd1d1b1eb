"""Bounded attribute values: every value an attribute can take is finite and non-secret.

A value passes when the application declared it, or when it is among the first ``limit``
distinct well-formed values seen; everything else becomes ``_OTHER``. Secret-shaped values
(API keys, emails, IP addresses, bearer tokens) never pass, even when declared by mistake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Final

from routemeter.recording._semconv import OTHER
from routemeter.request._safe import acceptable


class Bounded:
    """An allow-list for one attribute dimension: declared or known values, plus the first
    ``limit`` others seen.

    Lookups of admitted values are one dict access; the lock is taken only to admit.
    """

    __slots__ = (
        "_accept",
        "_known",
        "_lock",
        "_refused",
        "_seen",
        "_used",
        "limit",
        "name",
        "rejected",
    )

    def __init__(
        self,
        name: str,
        declared: Iterable[str] = (),
        limit: int = 100,
        known: Callable[[str], bool] | None = None,
        accept: Callable[[str], bool] = acceptable,
    ) -> None:
        self.name = name
        self.limit = limit
        self._known = known
        self._accept = accept
        """Which strings may pass at all (``acceptable``: short names, never secret-shaped)."""
        self._seen: dict[str, str] = {v: v for v in declared if accept(v)}
        self._lock = threading.Lock()
        self._used = 0
        self.rejected = 0
        """Distinct values folded into ``_OTHER`` (``routemeter.attribute.rejected``); past
        ``MAX_REFUSED_KEPT`` of them, every fold counts."""
        self._refused: set[int] = set()
        """Hashes of the values refused, never the values: a refused value may be a secret."""

    def __call__(self, value: object) -> str:
        if type(value) is str:
            hit = self._seen.get(value)
            if hit is not None:
                return hit
            return self._admit(value)
        return OTHER

    def _refuse(self, value: str) -> str:
        refused = self._refused
        h = hash(value)
        if h not in refused:
            self.rejected += 1
            if len(refused) < MAX_REFUSED_KEPT:
                refused.add(h)
        return OTHER

    def _admit(self, value: str) -> str:
        if not self._accept(value):
            with self._lock:
                return self._refuse(value)
        known = self._known is not None and self._known(value)
        with self._lock:
            if value in self._seen:
                return value
            if not known:
                if self._used >= self.limit:
                    return self._refuse(value)
                self._used += 1
            self._seen[value] = value
            return value

    @property
    def admitted(self) -> frozenset[str]:
        return frozenset(self._seen)

    @property
    def seen(self) -> dict[str, str]:
        """The admitted values (read-only use): a plain dict, for lookups on the hot path."""
        return self._seen


@dataclass(slots=True)
class Bounds:
    """One allow-list per attribute dimension whose values come from outside the code."""

    providers: Bounded
    models: Bounded
    requested_models: Bounded
    servers: Bounded = field(default_factory=lambda: Bounded("server.address", limit=100))
    reasons: Bounded = field(default_factory=lambda: Bounded("llm.router.reason", limit=50))
    errors: Bounded = field(default_factory=lambda: Bounded("error.type", limit=100))
    caches: Bounded = field(default_factory=lambda: Bounded("llm.router.cache.name", limit=20))
    http_routes: Bounded = field(
        default_factory=lambda: Bounded("http.route", limit=HTTP_ROUTE_LIMIT, accept=route_shaped)
    )
    http_methods: Bounded = field(
        default_factory=lambda: Bounded("http.request.method", limit=HTTP_METHOD_LIMIT)
    )
    """Methods beyond the known ones, which only pass when
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS`` is set (else they are ``_OTHER``)."""
    tenants: Bounded = field(default_factory=lambda: Bounded(TENANT, limit=20))
    """``llm.router.tenant``: ``ROUTEMETER_TENANTS`` always pass, then the first
    ``ROUTEMETER_MAX_TENANTS`` others seen (``setup()`` builds it from the config)."""

    def all(self) -> tuple[Bounded, ...]:
        """Every allow-list, for ``routemeter.attribute.rejected``."""
        return tuple(getattr(self, f.name) for f in fields(self))


MAX_REFUSED_KEPT: Final = 10_000
TENANT: Final = "llm.router.tenant"
HTTP_ROUTE_LIMIT: Final = 200
"""Distinct ``http.route`` templates before the rest become ``_OTHER``: they come from the app's
router, so an app reaches this only with path parameters mounted into its prefixes."""
HTTP_METHOD_LIMIT: Final = 20


def route_shaped(value: str) -> bool:
    """An ``http.route`` template may pass: an absolute path of at most 256 characters whose
    every segment (``{param}`` braces and leading ``._-~`` aside) is an acceptable value. A
    mounted prefix carrying a request's id, key or address is refused like any other value."""
    if len(value) > 256 or not value.startswith("/"):
        return False
    for segment in value[1:].split("/"):
        name = segment.strip("{}").lstrip("._-~")
        if name and not acceptable(name):
            return False
    return True
