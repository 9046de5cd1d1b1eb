"""Where requests go: the protocol every recorder implements, and the one active recorder.

The request API types against this protocol only, so it imports nothing of ``recording``;
``setup()`` installs a recorder here and ``shutdown()`` removes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from routemeter.request._record import Request


class Sink(Protocol):
    """What the request API calls: a request's begin and commit, and router events."""

    chunk_bounds: tuple[float, ...] | None
    """How the request layer keeps an attempt's upstream chunk gaps for this recorder: the
    explicit bucket bounds of ``gen_ai.client.operation.time_per_output_chunk`` when it takes
    them folded as they arrive (``request._record.ChunkGaps``: constant memory, exact counts),
    or ``None`` when it needs every gap (the chunk marks, as a list)."""

    def begin(self, rec: Request) -> None: ...

    def commit(self, rec: Request) -> None: ...

    def cooldown(
        self, provider: str, model: str, error_type: str | None, seconds: float | None
    ) -> None:
        """Out of rotation for ``seconds`` (``None``: until ``recovered``)."""

    def recovered(self, provider: str, model: str) -> None: ...

    def priced(self, model: str) -> bool:
        """Whether the price table in use has a price for ``model`` (a route's baseline)."""
        ...

    def cache_evicted(self, name: str, count: int) -> None: ...

    def cache_entries(self, name: str, delta: int) -> None: ...

    def ratelimit_remaining(self, provider: str, model: str, kind: str, value: float) -> None: ...


active: Sink | None = None
"""The active recorder; ``None`` until ``setup()`` (the decorator then only calls through)."""
