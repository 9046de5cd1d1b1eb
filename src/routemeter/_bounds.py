"""Bounded attribute values: every value an attribute can take is finite and non-secret.

A value passes when the application declared it, or when it is among the first ``limit``
distinct well-formed values seen; everything else becomes ``_OTHER``. Secret-shaped values
(API keys, emails, IP addresses, bearer tokens) never pass, even when declared by mistake.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from routemeter._semconv import OTHER

MAX_VALUE_LENGTH: Final = 128

_WELL_FORMED: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,127}")
_SECRET_SHAPED: Final = re.compile(
    r"""
    (?:^|[^a-z0-9])(?:sk|pk|rk|ak)[-_][a-z0-9_-]{12,}   # OpenAI/Anthropic/Stripe-style keys
    | (?:^|[^a-z0-9])(?:AKIA|ASIA)[A-Z0-9]{12,}      # AWS access keys
    | (?:^|[^a-z0-9])(?:ghp|gho|ghs|ghu|github_pat|hf)_[A-Za-z0-9_]{10,}
    | (?:^|[^a-z0-9])(?:xox[abprs]|glpat)-[A-Za-z0-9_-]{10,}   # Slack, GitLab
    | (?:^|[^a-z0-9])AIza[0-9A-Za-z_-]{20,}           # Google API keys
    | (?:^|[^a-z0-9])ey[A-Za-z0-9_-]{10,}\.ey[A-Za-z0-9_-]{10,}  # JWTs
    | [^@\s]+@[^@\s]+\.[a-z]{2,}                       # emails
    | ^\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?$               # IPv4 (client addresses)
    | ^[0-9a-f]{32,}$                                  # bare hashes (key hashes, request ids)
    | ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$  # UUIDs (request ids)
    """,
    re.VERBOSE | re.IGNORECASE,
)


def acceptable(value: str) -> bool:
    """Whether a string may ever become an attribute value."""
    return (
        len(value) <= MAX_VALUE_LENGTH
        and _WELL_FORMED.fullmatch(value) is not None
        and _SECRET_SHAPED.search(value) is None
    )


class Bounded:
    """An allow-list for one attribute dimension: declared or known values, plus the first
    ``limit`` others seen.

    Lookups of admitted values are one dict access; the lock is taken only to admit.
    """

    __slots__ = ("_known", "_lock", "_seen", "_used", "limit", "name", "rejected")

    def __init__(
        self,
        name: str,
        declared: Iterable[str] = (),
        limit: int = 100,
        known: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.limit = limit
        self._known = known
        self._seen: dict[str, str] = {v: v for v in declared if acceptable(v)}
        self._lock = threading.Lock()
        self._used = 0
        self.rejected = 0

    def __call__(self, value: object) -> str:
        if type(value) is str:
            hit = self._seen.get(value)
            if hit is not None:
                return hit
            return self._admit(value)
        return OTHER

    def _admit(self, value: str) -> str:
        if not acceptable(value):
            self.rejected += 1
            return OTHER
        known = self._known is not None and self._known(value)
        with self._lock:
            if value in self._seen:
                return value
            if not known:
                if self._used >= self.limit:
                    self.rejected += 1
                    return OTHER
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
