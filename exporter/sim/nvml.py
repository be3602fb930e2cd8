"""NVML for the simulated node: the package's pynvml fake, its GPUs' state read off the simulation's timelines.

Before every NVML call the fake's clock is set to `clock()` and each GPU's state is read off its timeline at that
time (clamped to what the simulation has computed, so a reading never sees the future and the energy counter
never goes back): power (the mean over the last second, as NVML reports it), energy counter, utilisation (busy
share over the last second, as the driver reports it), memory-busy share, GPM DRAM bandwidth integral, clocks,
clock-event reasons, temperature, memory and processes. A lost GPU raises NVMLError_GpuIsLost like a real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from exporter.gpu.fake_nvml import POWER_AVERAGE_S, FakeGpu, FakeNvml
from exporter.sim.simulation import DRIVER_UPTIME_ENERGY_J, Simulation

UTILISATION_WINDOW_S = 1.0  # NVML's utilisation rates cover the driver's last sample period (up to 1 s)
REFRESH_EVERY_S = 0.002  # one sampling pass makes ~15 calls per GPU within a millisecond: read the state once


class SimulatedNvml(FakeNvml):
    """A FakeNvml whose GPUs follow a Simulation; `lock` is the one the simulation is advanced under; `gpus`: the
    simulation's GPUs this NVML sees (a fleet node's own, indexed from 0 as its driver does), default all."""

    def __init__(
        self,
        sim: Simulation,
        clock: Callable[[], float] = time.time,
        lock: threading.RLock | None = None,
        refresh_every_s: float = REFRESH_EVERY_S,
        gpus: Sequence[int] | None = None,
    ) -> None:
        self.sim_gpus = [sim.gpus[i] for i in gpus] if gpus is not None else list(sim.gpus)
        fakes = [FakeGpu(index=k, uuid=g.uuid, name=g.spec.name) for k, g in enumerate(self.sim_gpus)]
        super().__init__(fakes)
        self.sim = sim
        self.clock = clock
        self.lock = lock or threading.RLock()
        self.now = sim.start
        self.refresh_every_s = refresh_every_s
        self._refreshed_at = -1.0

    def refresh(self) -> None:
        """Set every GPU's state to the simulation's at the clock's time (or as far as it has run)."""
        wall = self.clock()
        if 0 <= wall - self._refreshed_at < self.refresh_every_s:
            return
        self._refreshed_at = wall
        with self.lock:
            # max(): the fake's time never goes back, so GPM deltas stay >= 0. Each timeline clamps a reading to
            # what it has recorded, so energy never runs ahead of the simulation (nor goes back).
            t = max(self.now, wall)
            self.now = t
            for fake, gpu in zip(self.gpus, self.sim_gpus, strict=True):
                reading = gpu.timeline.at(t)
                busy, memory_busy = gpu.timeline.window(t, UTILISATION_WINDOW_S)
                fake.power_w = reading.state.power_w
                before = gpu.timeline.at(t - POWER_AVERAGE_S)
                span = reading.time - before.time
                fake.power_reading_w = (
                    (reading.energy_j - before.energy_j) / span if span > 0 else reading.state.power_w
                )
                fake.energy_mj = (DRIVER_UPTIME_ENERGY_J + reading.energy_j) * 1000.0
                fake.gpu_util_pct = round(100 * busy)
                fake.memory_util_pct = round(100 * memory_busy)
                fake.dram_bw_integral = reading.dram_bw_s * 100.0  # the fake integrates percent x seconds
                fake.dram_bw_pct = reading.state.dram_bw * 100.0
                fake.sm_clock_mhz = reading.state.sm_clock_mhz
                fake.memory_clock_mhz = gpu.spec.memory_clock_mhz
                fake.clock_reasons = reading.state.reasons
                fake.temperature_c = round(reading.temperature_c)
                fake.memory_temperature_c = round(reading.temperature_c + 6)
                fake.memory_total = gpu.spec.memory_total
                fake.memory_reserved = gpu.spec.memory_reserved
                fake.memory_used = min(gpu.memory_used, gpu.spec.memory_total - gpu.spec.memory_reserved)
                fake.processes = list(gpu.processes)
                fake.lost = gpu.lost_at is not None and t >= gpu.lost_at
