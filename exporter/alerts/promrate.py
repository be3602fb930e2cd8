"""Prometheus 2.42's rate() arithmetic, so generated promtool tests can state the exact values they will see."""

from __future__ import annotations

from collections.abc import Sequence

Points = Sequence[tuple[float, float]]  # (seconds, value), oldest first


def rate(points: Points, t: float, window: float) -> float | None:
    """rate(series[window]) evaluated at t, as promql.extrapolatedRate computes it (range closed at both ends)."""
    inside = [(ts, v) for ts, v in points if t - window <= ts <= t]
    if len(inside) < 2:
        return None
    (first_t, first_v), (last_t, last_v) = inside[0], inside[-1]
    result = last_v - first_v
    previous = 0.0
    for _, value in inside:
        if value < previous:  # a counter reset
            result += previous
        previous = value
    to_start, to_end = first_t - (t - window), t - last_t
    sampled = last_t - first_t
    average = sampled / (len(inside) - 1)
    if result > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / result))  # a counter does not extrapolate below zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled) / window


def sum_rates(series: Sequence[Points], t: float, window: float) -> float | None:
    """sum(rate(...)) over several series; None when any has too few samples (none do in our tests)."""
    total: float | None = None
    for points in series:
        value = rate(points, t, window)
        if value is None:
            return None
        total = value if total is None else total + value
    return total
