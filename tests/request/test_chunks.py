"""Upstream chunk timing: folded as chunks arrive when the recorder gives bounds, else marked."""

from __future__ import annotations

import tracemalloc

import pytest

from routemeter.recording import _instruments as ins
from routemeter.request import _record
from routemeter.request._record import MAX_CHUNK_MARKS, Attempt, Request
from support.clock import clock

BOUNDS = ins.CLIENT_TIME_PER_OUTPUT_CHUNK.buckets
assert BOUNDS is not None
CHUNKS = 200_000


def test_long_stream_keeps_attempt_memory_constant(monkeypatch: pytest.MonkeyPatch):
    """200,000 folded chunks take no more memory than 10: no per-chunk container grows."""
    a = Attempt("openai", "gpt-4o-mini", chunk_bounds=BOUNDS)
    monkeypatch.setattr(_record, "perf_counter", clock())
    for _ in range(10):
        a.chunk()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(CHUNKS - 10):
            a.chunk()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 512, grown
    assert a.chunk_marks is None


def test_long_stream_folds_exact_buckets_sum_and_count(monkeypatch: pytest.MonkeyPatch):
    """200,000 folded chunks keep exact bucket counts, sum, min, max, first mark, last gaps."""
    a = Attempt("openai", "gpt-4o-mini", chunk_bounds=BOUNDS)
    monkeypatch.setattr(_record, "perf_counter", clock())
    for _ in range(CHUNKS):
        a.chunk()
    gaps = a.chunk_gaps
    assert gaps is not None
    assert gaps.count == CHUNKS - 1
    total, low, high, *buckets = gaps.state
    # 39,999 full cycles and the first four gaps again: 40,000 of each but the 0.0 gap
    expected = [0] * (len(BOUNDS) + 1)
    expected[0] = 40_000 + 39_999  # 2^-8 and 0.0: at or below 0.01
    expected[1] = 40_000  # 2^-6: (0.01, 0.02]
    expected[6] = 40_000  # 0.5: (0.32, 0.64]
    expected[8] = 40_000  # 2.0: (1.28, 2.56]
    assert buckets == expected
    assert total == 40_000 * (2**-8 + 2**-6 + 0.5 + 2.0) == 100_781.25
    assert (low, high) == (0.0, 2.0)
    assert gaps.first == 1.0
    assert [g for g in gaps.last_gaps if g is not None] == [2**-8, 2**-6, 0.5, 2.0]


def test_without_bounds_chunks_are_marked_up_to_the_cap(monkeypatch: pytest.MonkeyPatch):
    """A recorder that needs every gap (no bounds) gets the raw marks, at most MAX_CHUNK_MARKS."""
    a = Attempt("openai", "gpt-4o-mini")
    monkeypatch.setattr(_record, "perf_counter", clock())
    for _ in range(MAX_CHUNK_MARKS + 5):
        a.chunk()
    assert a.chunk_gaps is None
    assert a.chunk_marks is not None
    assert len(a.chunk_marks) == MAX_CHUNK_MARKS


class _Sink:
    """Just enough of a recorder for ``Request.attempt``."""

    def __init__(self, chunk_bounds: tuple[float, ...] | None) -> None:
        self.chunk_bounds = chunk_bounds


@pytest.mark.parametrize("bounds", [BOUNDS, None], ids=["folding", "marking"])
def test_attempt_takes_the_bounds_of_the_recorder_that_began_the_request(bounds):
    """``Request.attempt()`` hands the beginning recorder's ``chunk_bounds`` to the attempt."""
    rec = Request(("default", "chat"), _Sink(bounds))  # type: ignore[arg-type]
    a = rec.attempt("openai", "gpt-4o-mini")
    a.chunk()
    a.chunk()
    assert a.chunk_bounds is bounds
    assert (a.chunk_gaps is not None) is (bounds is not None)
    assert (a.chunk_marks is not None) is (bounds is None)
    assert Request(("default", "chat")).attempt("openai", "m").chunk_bounds is None
