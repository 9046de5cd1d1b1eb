"""A fake ``perf_counter`` for chunk timing: readings exact in binary, so gap sums are exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator

GAPS = (2**-8, 2**-6, 0.5, 2.0, 0.0)
"""A cycle of gaps exact in binary: every reading is a multiple of 2^-8 well below 2^45, so each
difference, and the sum of any of them, is exact."""


def clock(start: float = 1.0) -> Callable[[], float]:
    """A perf_counter whose successive readings are ``start`` then ``GAPS`` apart, cycling."""

    def readings() -> Iterator[float]:
        now = start
        i = 0
        while True:
            yield now
            now += GAPS[i % len(GAPS)]
            i += 1

    return readings().__next__
