"""Quantile estimates from bucketed histograms, the way PromQL's histogram_quantile computes them."""

from __future__ import annotations

from collections.abc import Sequence


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[int]) -> float | None:
    """Linear interpolation inside the bucket holding rank q·count; None without observations.

    `cumulative` has one count per bound plus the +Inf bucket last; a rank in +Inf returns the last bound.
    """
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return bounds[-1] if bounds else None
