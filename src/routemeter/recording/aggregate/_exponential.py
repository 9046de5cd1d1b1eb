"""Base2 exponential histogram state that reproduces the OTel SDK's data points bit for bit.

The SDK's ``_ExponentialBucketHistogramAggregation`` has observable quirks that a textbook
implementation would not share: exported ``bucket_counts`` are the whole circular buffer (so
their length is the buffer capacity, padded with zeros), a never-used sign reports
``offset=0, bucket_counts=[0]``, an interval holding only zeros reports scale 0, and the
cumulative path merges intervals at the lowest scale seen so far. Every step below is ported
from that class and its ``Buckets``/mapping helpers so that exporters and backends see the same
points whichever path produced them.
"""

from __future__ import annotations

import struct
import sys
from math import ceil, floor, frexp, ldexp, log, log2
from typing import Any

from opentelemetry.sdk.metrics.export import Buckets as BucketsPoint
from opentelemetry.sdk.metrics.export import ExponentialHistogramDataPoint

__all__ = ["ExponentialHistogram"]

_MIN_NORMAL = sys.float_info.min
_MIN_NORMAL_EXPONENT = -1022
_MAX_NORMAL_EXPONENT = 1023
_MIN_SCALE = -10
_MAX_SCALE = 20
_MIN_MAX_SIZE = 2
_MAX_MAX_SIZE = 16384
_INV_LN2 = 1 / log(2)
_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")


def _low_index(scale: int) -> int:
    """Index the SDK gives to values at or below the smallest normal float."""
    if scale > 0:
        return (_MIN_NORMAL_EXPONENT << scale) - 1
    index = _MIN_NORMAL_EXPONENT >> -scale
    return index - 1 if -scale < 2 else index


def _index(value: float, scale: int) -> int:
    """Exact port of the SDK's map_to_index; the record fast path inlines the common cases."""
    bits: int = _UINT64.unpack(_DOUBLE.pack(float(value)))[0]
    exponent = ((bits >> 52) & 0x7FF) - 1023
    mantissa = bits & ((1 << 52) - 1)
    if scale > 0:
        if value <= _MIN_NORMAL:
            return _low_index(scale)
        if mantissa == 0:
            return (exponent << scale) - 1
        return min(
            floor(log(value) * ldexp(_INV_LN2, scale)),
            ((_MAX_NORMAL_EXPONENT + 1) << scale) - 1,
        )
    if value < _MIN_NORMAL:
        return _low_index(scale)
    return (exponent + ((mantissa - 1) >> 52)) >> -scale


def _scale_change(low: int, high: int, max_size: int) -> int:
    change = 0
    while high - low >= max_size:
        high >>= 1
        low >>= 1
        change += 1
    return change


class _Buckets:
    """The SDK's circular bucket buffer; its capacity is visible in exported points."""

    __slots__ = ("base", "counts", "end", "start")

    def __init__(self) -> None:
        self.counts = [0]
        self.base = 0
        self.start = 0
        self.end = 0

    def copy(self) -> _Buckets:
        other = _Buckets()
        other.counts = self.counts.copy()
        other.base, other.start, other.end = self.base, self.start, self.end
        return other

    def copy_empty(self) -> _Buckets:
        other = _Buckets()
        other.counts = [0] * len(self.counts)
        other.base, other.start, other.end = self.base, self.start, self.end
        return other

    def is_empty(self) -> bool:
        return self.end == self.start and self.counts[self.start - self.base] == 0

    def offset_counts(self) -> list[int]:
        bias = self.base - self.start
        return self.counts[-bias:] + self.counts[:-bias]

    def grow(self, needed: int, max_size: int) -> None:
        counts = self.counts
        bias = self.base - self.start
        old_limit = len(counts) - bias
        new_size = min(2 ** ceil(log2(needed)), max_size)
        grown = [0] * new_size
        grown[new_size - bias :] = counts[old_limit:]
        grown[0:old_limit] = counts[0:old_limit]
        self.counts = grown

    def downscale(self, amount: int) -> None:
        bias = self.base - self.start
        if bias != 0:
            self.base = self.start
            counts = self.counts[::-1]
            self.counts = counts[:bias][::-1] + counts[bias:][::-1]
        counts = self.counts
        size = 1 + self.end - self.start
        each = 1 << amount
        inpos = outpos = 0
        pos = self.start
        while pos <= self.end:
            index = pos % each
            while index < each and inpos < size:
                if outpos != inpos:
                    counts[outpos] += counts[inpos]
                    counts[inpos] = 0
                inpos += 1
                pos += 1
                index += 1
            outpos += 1
        self.start >>= amount
        self.end >>= amount
        self.base = self.start

    def add(self, index: int, increment: int, max_size: int, strict: bool) -> None:
        """Widen the window to ``index`` (growing the buffer) and count it.

        ``strict`` is the SDK's merge, which refuses a window wider than ``max_size``.
        """
        if index < self.start:
            span = self.end - index
            if strict and span >= max_size:
                raise ValueError("Incorrect merge scale")
            if span >= len(self.counts):
                self.grow(span + 1, max_size)
            self.start = index
        elif index > self.end:
            span = index - self.start
            if strict and span >= max_size:
                raise ValueError("Incorrect merge scale")
            if span >= len(self.counts):
                self.grow(span + 1, max_size)
            self.end = index
        bucket = index - self.base
        if bucket < 0:
            bucket += len(self.counts)
        self.counts[bucket] += increment

    def low_high(self, scale: int, min_scale: int) -> tuple[int, int]:
        if self.counts == [0]:
            return 0, -1
        shift = scale - min_scale
        return self.start >> shift, self.end >> shift

    def merge_from(self, current: _Buckets, current_change: int, max_size: int) -> None:
        counts = current.counts
        for position, count in enumerate(counts):
            if count == 0:
                continue
            index = current.base + position
            if index > current.end:
                index -= len(counts)
            self.add(index >> current_change, count, max_size, True)


def _low_high(
    previous: _Buckets, previous_scale: int, current: _Buckets, scale: int, min_scale: int
) -> tuple[int, int]:
    previous_low, previous_high = previous.low_high(previous_scale, min_scale)
    current_low, current_high = current.low_high(scale, min_scale)
    if current_low > current_high:
        return previous_low, previous_high
    if previous_low > previous_high:
        return current_low, current_high
    return min(previous_low, current_low), max(previous_high, current_high)


class ExponentialHistogram:
    """State of one exponential histogram point.

    Mirrors one SDK aggregation: ``reset`` is the SDK's per-collection reset, which keeps the
    mapping scale reached so far, and ``merge`` is its cumulative fold of an interval into the
    previous point. Not thread-safe: callers hold their own lock.
    """

    __slots__ = (
        "_count",
        "_factor",
        "_high_index",
        "_low_index",
        "_mapping_scale",
        "_mask",
        "_max",
        "_max_size",
        "_min",
        "_negative",
        "_positive",
        "_scale",
        "_sum",
        "_zero_count",
    )

    def __init__(self, max_size: int = 160, max_scale: int = 20) -> None:
        if not _MIN_MAX_SIZE <= max_size <= _MAX_MAX_SIZE:
            raise ValueError(f"max_size must be in [{_MIN_MAX_SIZE}, {_MAX_MAX_SIZE}]")
        if not _MIN_SCALE <= max_scale <= _MAX_SCALE:
            raise ValueError(f"max_scale must be in [{_MIN_SCALE}, {_MAX_SCALE}]")
        self._max_size = max_size
        self._mapping_scale = 0
        self._factor = 0.0
        self._low_index = 0
        self._high_index = 0
        self._mask = 0
        self._set_mapping(max_scale)
        self._positive = _Buckets()
        self._negative = _Buckets()
        self._sum: float = 0
        self._count = 0
        self._zero_count = 0
        self._min = float("inf")
        self._max = float("-inf")
        self._scale: int | None = None

    @property
    def count(self) -> int:
        """Measurements held; a delta point with none is not exported by the SDK."""
        return self._count

    def _set_mapping(self, scale: int) -> None:
        self._mapping_scale = scale
        self._low_index = _low_index(scale)
        if scale > 0:
            self._factor = ldexp(_INV_LN2, scale)
            self._high_index = ((_MAX_NORMAL_EXPONENT + 1) << scale) - 1
            self._mask = (1 << scale) - 1

    def record(self, value: float) -> None:
        """Hot path: an in-window value costs no helper call and no buffer growth."""
        self._sum += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        self._count += 1
        if value == 0:
            self._zero_count += 1
            if self._count == self._zero_count:
                self._scale = 0
            return
        if value > 0:
            buckets = self._positive
            magnitude = value
        else:
            buckets = self._negative
            magnitude = -value
        scale = self._mapping_scale
        if scale > 0:
            if magnitude <= _MIN_NORMAL:
                index = self._low_index
            else:
                try:
                    index = floor(log(magnitude) * self._factor)
                except (OverflowError, ValueError):
                    index = _index(magnitude, scale)
                else:
                    # Only a value whose log lands next to a multiple of 2**scale can be an
                    # exact power of two, which the SDK maps by its exponent instead.
                    if (index + 1) & self._mask < 2:
                        mantissa, exponent = frexp(magnitude)
                        if mantissa == 0.5:
                            index = ((exponent - 1) << scale) - 1
                    if index > self._high_index:
                        index = _index(magnitude, scale)
        elif magnitude < _MIN_NORMAL:
            index = self._low_index
        else:
            mantissa, exponent = frexp(magnitude)
            if mantissa == 0.5:
                index = (exponent - 2) >> -scale
            elif mantissa < 1.0:
                index = (exponent - 1) >> -scale
            else:
                index = _index(magnitude, scale)
        self._scale = scale
        if buckets.start <= index <= buckets.end:
            buckets.counts[index - buckets.base] += 1
        else:
            self._widen(buckets, index, magnitude)

    def _widen(self, buckets: _Buckets, index: int, magnitude: float) -> None:
        rescale = False
        low = high = 0
        if buckets.is_empty():
            buckets.start = buckets.end = buckets.base = index
        elif index < buckets.start and buckets.end - index >= self._max_size:
            rescale, low, high = True, index, buckets.end
        elif index > buckets.end and index - buckets.start >= self._max_size:
            rescale, low, high = True, buckets.start, index
        if rescale:
            change = _scale_change(low, high, self._max_size)
            self._positive.downscale(change)
            self._negative.downscale(change)
            self._set_mapping(self._mapping_scale - change)
            index = _index(magnitude, self._mapping_scale)
            self._scale = self._mapping_scale
        buckets.add(index, 1, self._max_size, False)

    def reset(self) -> None:
        """Start a new interval but keep the mapping scale, as the SDK's collect does."""
        self._positive = _Buckets()
        self._negative = _Buckets()
        self._sum = 0
        self._count = 0
        self._zero_count = 0
        self._min = float("inf")
        self._max = float("-inf")
        self._scale = None

    def merge(self, other: ExponentialHistogram) -> None:
        """Fold the later interval ``other`` into this cumulative state, as the SDK's collect does.

        The result can differ from one histogram fed every value (lower scale, zero padding).
        Like the SDK, raises ValueError("Incorrect merge scale") when a sign that was empty
        so far receives buckets too far from index 0, leaving the state as the SDK leaves it.
        """
        if self._scale is None:
            if other._scale is None:
                self._positive, self._negative = _Buckets(), _Buckets()
                self._scale = other._mapping_scale
            else:
                self._positive = other._positive.copy_empty()
                self._negative = other._negative.copy_empty()
                self._scale = other._scale
        previous_scale = self._scale
        if other._scale is None:
            positive = self._positive.copy_empty()
            negative = self._negative.copy_empty()
            scale = previous_scale
        else:
            positive, negative, scale = other._positive, other._negative, other._scale
        min_scale = min(previous_scale, scale)
        low_p, high_p = _low_high(self._positive, previous_scale, positive, scale, min_scale)
        low_n, high_n = _low_high(self._negative, previous_scale, negative, scale, min_scale)
        min_scale = min(
            min_scale - _scale_change(low_p, high_p, self._max_size),
            min_scale - _scale_change(low_n, high_n, self._max_size),
        )
        if previous_scale != min_scale:
            self._positive.downscale(previous_scale - min_scale)
            self._negative.downscale(previous_scale - min_scale)
        self._positive.merge_from(positive, scale - min_scale, self._max_size)
        self._negative.merge_from(negative, scale - min_scale, self._max_size)
        self._min = self._min if self._min < other._min else other._min
        self._max = self._max if self._max > other._max else other._max
        self._sum = other._sum + self._sum
        self._count = other._count + self._count
        self._zero_count = other._zero_count + self._zero_count
        self._scale = min_scale

    def copy(self) -> ExponentialHistogram:
        other = ExponentialHistogram.__new__(ExponentialHistogram)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other._positive = self._positive.copy()
        other._negative = self._negative.copy()
        return other

    def point(
        self, attributes: dict[str, Any], start_time_unix_nano: int, time_unix_nano: int
    ) -> ExponentialHistogramDataPoint:
        scale = self._mapping_scale if self._scale is None else self._scale
        return ExponentialHistogramDataPoint(
            attributes=attributes,
            start_time_unix_nano=start_time_unix_nano,
            time_unix_nano=time_unix_nano,
            count=self._count,
            sum=self._sum,
            scale=scale,
            zero_count=self._zero_count,
            positive=BucketsPoint(
                offset=self._positive.start, bucket_counts=self._positive.offset_counts()
            ),
            negative=BucketsPoint(
                offset=self._negative.start, bucket_counts=self._negative.offset_counts()
            ),
            flags=0,
            min=self._min,
            max=self._max,
        )
