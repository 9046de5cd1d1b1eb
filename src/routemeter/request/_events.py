"""Router events outside any one request: cooldowns, cache size and evictions, rate-limit
headroom. Each records at once; like everything else here, none of them can raise."""

from __future__ import annotations

import math
from typing import Final

from routemeter._report import report
from routemeter.request import _sink
from routemeter.request._record import error_value

MAX_COUNT: Final = 1 << 32
"""Largest count or size change one event may report. Sums are exported as OTLP int64: a
single larger value could make every later export fail to encode, and no real cache moves
4 billion entries at once."""


MAX_COOLDOWN_S: Final = 366 * 86_400.0
"""Longest cooldown a ``seconds`` may state (a year); longer, NaN or negative: until
``recovered()``."""


def cooldown(
    provider: str,
    model: str,
    error_type: str | int | BaseException | None = None,
    *,
    seconds: float | None = None,
) -> None:
    """A provider/model was taken out of rotation (``llm.router.cooldowns`` +1, and
    ``llm.router.upstream.available`` 0 until ``seconds`` pass, or until ``recovered()`` when
    ``seconds`` is ``None``)."""
    recorder = _sink.active
    if recorder is not None:
        try:
            error = error_type if error_type is None else error_value(error_type)
            recorder.cooldown(provider, model, error, _seconds(seconds))
        except Exception as e:
            report("cooldown", e)


def recovered(provider: str, model: str) -> None:
    """A provider/model is back in rotation: ``llm.router.upstream.available`` 1 again."""
    recorder = _sink.active
    if recorder is not None:
        try:
            recorder.recovered(provider, model)
        except Exception as e:
            report("cooldown", e)


def _seconds(value: object) -> float | None:
    """A cooldown's length: a finite number of seconds from 0 to a year, else ``None``."""
    if (type(value) is int or type(value) is float) and 0 <= value <= MAX_COOLDOWN_S:
        return float(value)
    return None


def cache_evicted(name: str, count: int = 1) -> None:
    """``count`` entries left the cache ``name`` (``llm.router.cache.evictions``)."""
    recorder = _sink.active
    if recorder is not None and type(count) is int and 0 < count < MAX_COUNT:
        try:
            recorder.cache_evicted(name, count)
        except Exception as e:
            report("cache eviction", e)


def cache_entries(name: str, delta: int) -> None:
    """The cache ``name`` grew (positive) or shrank (negative) by ``delta`` entries."""
    recorder = _sink.active
    if recorder is not None and type(delta) is int and delta and -MAX_COUNT < delta < MAX_COUNT:
        try:
            recorder.cache_entries(name, delta)
        except Exception as e:
            report("cache size", e)


def ratelimit_remaining(
    provider: str,
    model: str,
    *,
    requests: float | None = None,
    tokens: float | None = None,
) -> None:
    """Upstream headroom last reported by ``provider`` for ``model``: ``requests`` left
    (``llm.router.ratelimit.remaining.requests``) and ``tokens`` left
    (``llm.router.ratelimit.remaining.tokens``)."""
    recorder = _sink.active
    if recorder is None:
        return
    try:
        for kind, value in (("requests", requests), ("tokens", tokens)):
            if _headroom(value):
                recorder.ratelimit_remaining(provider, model, kind, float(value))  # type: ignore[arg-type]
    except Exception as e:
        report("rate-limit headroom", e)


def _headroom(value: object) -> bool:
    """A finite, non-negative number (NaN, infinities and ints beyond a double are not)."""
    if type(value) is int:
        return 0 <= value < MAX_COUNT * MAX_COUNT
    return type(value) is float and 0.0 <= value < math.inf
