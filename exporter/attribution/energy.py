"""GPU energy at any moment from the sampler's counter readings. Pure.

NVML's energy counter is read every Nth sampling pass (a read busy-waits ~3 ms of CPU, docs/design.md §4); between
reads the counter's exact delta is spread over the passes by their power readings.
"""

from __future__ import annotations

import itertools

from exporter.gpu.records import GpuSample


def interpolate_energy(samples: list[GpuSample], t: float) -> float | None:
    """Energy at `t` from the counter readings around it; None unless every sample between them is up.

    Adjacent readings: linear in time. Readings further apart (the counter is read every Nth pass): the
    counter's delta is spread over the sampling steps between them by power, linear within a step. NVML's power
    reading is the mean over the last second (Ampere and later but GA100; seen on an H200), so a step [a, b]
    weighs power(b) x (b - a): on a recorded H200 trace this put the energy between reads 5 s apart within
    ~1.4 J (0.1 % of the window) where a linear spread was off by ~260 J and trapezoids by ~100 J.
    """
    before = after = None
    between: list[GpuSample] = []
    for sample in samples:
        if sample.timestamp <= t:
            if sample.energy_joules is not None or not sample.up:
                before, between = sample, []
            else:
                between.append(sample)
        else:
            if sample.energy_joules is not None or not sample.up:
                after = sample
                break
            between.append(sample)
    if before is None or before.energy_joules is None or not before.up:
        return None
    if before.timestamp == t:
        return before.energy_joules
    if after is None or after.energy_joules is None or not after.up:
        return None
    delta = after.energy_joules - before.energy_joules
    steps = list(itertools.pairwise([before, *between, after]))
    weights = [b.power_watts * (b.timestamp - a.timestamp) if b.power_watts is not None else None for a, b in steps]
    total = sum(w or 0.0 for w in weights)
    if len(steps) == 1 or None in weights or total <= 0:
        return before.energy_joules + delta * (t - before.timestamp) / (after.timestamp - before.timestamp)
    done = 0.0
    for (a, b), weight in zip(steps, weights, strict=True):
        if t < b.timestamp:
            done += (weight or 0.0) * (t - a.timestamp) / (b.timestamp - a.timestamp)
            break
        done += weight or 0.0
    return before.energy_joules + delta * done / total
