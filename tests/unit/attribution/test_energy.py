"""Energy at any instant from energy-counter readings that come every pass or every Nth pass."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from exporter.attribution.energy import interpolate_energy
from exporter.gpu.fake_nvml import FakeNvml
from exporter.gpu.records import GpuSample
from exporter.gpu.sampler import GpuSampler
from tests.support.procs import REPO


def sample(t: float, power: float | None, energy: float | None = None, up: bool = True) -> GpuSample:
    return GpuSample(uuid="GPU-a", index=0, timestamp=t, up=up, energy_joules=energy, power_watts=power)


# 100 W for three seconds, then 300 W. NVML's power reading is the mean over the last second, so the readings
# at t=1..3 say 100 W and at t=4, 5 say 300 W; the counter is read at t=0 (0 J) and t=5 (900 J) only.
STEP = [
    sample(0, 100, 0.0),
    sample(1, 100),
    sample(2, 100),
    sample(3, 100),
    sample(4, 300),
    sample(5, 300, 900.0),
]
TRACE = json.loads((REPO / "tests" / "data" / "nvml" / "h200-energy-trace.json").read_text())


def test_adjacent_readings_interpolate_linearly() -> None:
    samples = [sample(0, 100, 0.0), sample(1, 500, 300.0)]
    assert interpolate_energy(samples, 0.25) == pytest.approx(75.0)


@pytest.mark.parametrize(("t", "want"), [(0, 0), (1, 100), (2, 200), (2.5, 250), (3.5, 450), (5, 900)])
def test_readings_apart_spread_the_delta_by_the_power_between(t: float, want: float) -> None:
    # A linear spread would say 360 J at t=2, not 200.
    assert interpolate_energy(STEP, t) == pytest.approx(want)


def test_the_delta_is_the_counters_not_the_power_integral() -> None:
    # The counter is the truth for the total: power only shapes it (here the counter says 1800 J).
    scaled = [*STEP[:-1], sample(5, 300, 1800.0)]
    assert interpolate_energy(scaled, 2.0) == pytest.approx(400.0)
    assert interpolate_energy(scaled, 5.0) == pytest.approx(1800.0)


def test_no_reading_after_t_yet_or_a_gpu_down_between_gives_nothing() -> None:
    assert interpolate_energy(STEP[:-1], 2.0) is None
    down = [*STEP[:2], sample(2, None, up=False), *STEP[3:]]
    assert interpolate_energy(down, 1.5) is None
    assert interpolate_energy(down, 3.5) is None


def test_missing_power_between_falls_back_to_linear() -> None:
    gappy = [*STEP[:2], sample(2, None), *STEP[3:]]
    assert interpolate_energy(gappy, 2.0) == pytest.approx(360.0)


@pytest.mark.parametrize("every", [5, 10])
def test_on_a_real_h200_trace_energy_between_reads_is_within_a_fraction_of_a_percent(every: int) -> None:
    # scripts/gpu-energy-trace: 41 samples at 1 Hz through matmul, copy and rest phases of uneven lengths, the
    # counter read every pass. Keep every Nth reading and check the dropped ones against the real counter.
    real = [GpuSample(uuid="GPU-a", index=0, **row) for row in TRACE["sampler"]]
    worst = 0.0
    for first in range(0, len(real) - every):
        window = real[first : first + every + 1]
        kept = [window[0], *(replace(s, energy_joules=None) for s in window[1:-1]), window[-1]]
        delta = window[-1].energy_joules - window[0].energy_joules  # type: ignore[operator]
        for truth in window[1:-1]:
            got = interpolate_energy(kept, truth.timestamp)
            assert got is not None
            worst = max(worst, abs(got - truth.energy_joules) / delta)  # type: ignore[operator]
    assert worst < 0.01  # linear in time is off by up to 39 % of the window on this trace


def test_sampler_reads_the_counter_every_nth_pass_and_the_exposed_counter_stays() -> None:
    fake = FakeNvml.with_gpus(2)
    sampler = GpuSampler(nvml=fake, clock=fake.time, energy_every=5, xid_events=False)
    energies = []
    for _ in range(11):
        fake.gpus[0].power_w = 100.0 if fake.now - 1_700_000_000.0 < 4 else 400.0
        sampler.sample_once()
        energies.append(sampler.latest(fake.gpus[0].uuid).energy_joules)  # type: ignore[union-attr]
        fake.advance(1.0)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2 * 3  # passes 0, 5, 10 of each GPU
    assert [e is not None for e in energies] == [i % 5 == 0 for i in range(11)]
    # What attribution sees between readings matches the fake's true counter where power is steady.
    samples = sampler.samples_between(fake.gpus[0].uuid, 0, fake.now)
    t0 = samples[0].timestamp
    assert interpolate_energy(samples, t0 + 2) == pytest.approx(200.0)
    assert interpolate_energy(samples, t0 + 7) == pytest.approx(4 * 100.0 + 3 * 400.0)
