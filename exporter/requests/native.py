"""Native (exponential) histograms: sparse buckets at a fixed resolution, as Prometheus 2.40+ stores them. Pure.

A scraper that asks for the protobuf exposition with native histograms on gets the per-tenant latency histograms
this way: one series per histogram at ~9 % resolution instead of a handful of coarse classic buckets.

Bucket i covers (base^(i-1), base^i] with base = 2^(2^-SCHEMA); values at or below ZERO_THRESHOLD count in the zero
bucket. The bucket index is found the way Prometheus's Go client finds it (frexp, then the fraction's place
among the schema's bounds), so a value on a boundary lands where Prometheus expects it.
"""

from __future__ import annotations

import math
from bisect import bisect_left

SCHEMA = 3  # base 2^(1/8) ~ 1.0905: a bucket spans ~9 %, a quantile is within ~4.5 %
ZERO_THRESHOLD = 1e-9  # seconds: nothing real is this fast
_BOUNDS = [2.0 ** (j / 2**SCHEMA - 1) for j in range(2**SCHEMA)]  # the fractions in [0.5, 1) that start a bucket
_PER_OCTAVE = len(_BOUNDS)


def bucket_index(value: float) -> int:
    """The native bucket of a positive value."""
    fraction, exponent = math.frexp(value)
    return bisect_left(_BOUNDS, fraction) + (exponent - 1) * _PER_OCTAVE


def upper_bound(index: int) -> float:
    """The upper bound of bucket `index`."""
    return float(2.0 ** (index / 2**SCHEMA))


class NativeHistogram:
    """Sparse bucket counts, the zero bucket, count and sum (observations are latencies: never negative)."""

    __slots__ = ("buckets", "count", "sum", "zero_count")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        self.count += 1
        self.sum += value
        if value <= ZERO_THRESHOLD:
            self.zero_count += 1
            return
        fraction, exponent = math.frexp(value)  # bucket_index, inlined: this runs twice per request span
        index = bisect_left(_BOUNDS, fraction) + (exponent - 1) * _PER_OCTAVE
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def spans_and_deltas(self) -> tuple[list[tuple[int, int]], list[int]]:
        """The buckets as the exposition writes them: spans of consecutive indexes (offset to the end of the
        previous span, length) and each count as the difference to the one before it."""
        spans: list[tuple[int, int]] = []
        deltas: list[int] = []
        previous_count = 0
        end = 0  # one past the last index of the previous span
        for index in sorted(self.buckets):
            if spans and index == end:
                offset, length = spans[-1]
                spans[-1] = (offset, length + 1)
            else:
                spans.append((index - end if spans else index, 1))
            end = index + 1
            count = self.buckets[index]
            deltas.append(count - previous_count)
            previous_count = count
        return spans, deltas
