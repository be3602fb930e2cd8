"""GPU power, clocks and the piecewise-constant timeline of each simulated GPU. Pure.

Power follows the load: idle when no step runs; during a step, idle plus a dynamic part that grows with how
compute-bound the step is (prefill) and less with memory-bound work (decode reads weights and KV). A power cap
below the demand lowers the SM clock until the dynamic power fits (dynamic power ~ clock^2 here), which slows
the step by the same ratio and raises the SW power cap clock-event reason, as a real GPU does.

A `GpuTimeline` records, per GPU, segments of constant state and keeps exact running integrals (energy,
busy time, memory-busy time, DRAM bandwidth), so any reading at any time t is exact: energy(t) = ∫ power dt.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import pynvml  # type: ignore[import-untyped]

GIB = 1 << 30
SW_POWER_CAP = int(pynvml.nvmlClocksEventReasonSwPowerCap)
GPU_IDLE = int(pynvml.nvmlClocksEventReasonGpuIdle)


@dataclass(frozen=True)
class GpuSpec:
    """The GPU product: power envelope, memory and clocks."""

    name: str = "NVIDIA H100 80GB HBM3"
    idle_w: float = 70.0
    max_w: float = 700.0
    memory_total: int = 80 * GIB
    memory_reserved: int = 512 << 20
    sm_clock_max_mhz: int = 1980
    sm_clock_idle_mhz: int = 345
    memory_clock_mhz: int = 2619
    ambient_c: float = 30.0
    celsius_per_watt: float = 0.06  # steady-state temperature rise over ambient per watt


@dataclass(frozen=True, slots=True)
class GpuState:
    """What one GPU is doing during a segment of time."""

    power_w: float
    busy: bool  # a kernel runs
    memory_busy: float  # share of time memory is read or written, 0..1
    dram_bw: float  # DRAM bandwidth as a share of peak, 0..1
    sm_clock_mhz: int
    reasons: int  # clock-event reasons bitmask (pynvml.nvmlClocksEventReason*)


def idle_state(spec: GpuSpec) -> GpuState:
    """A GPU with nothing running."""
    return GpuState(spec.idle_w, False, 0.0, 0.0, spec.sm_clock_idle_mhz, GPU_IDLE)


def step_state(spec: GpuSpec, compute_share: float, power_cap_w: float) -> tuple[GpuState, float]:
    """The state of a GPU during a step whose time is `compute_share` compute-bound (the rest memory-bound), under
    `power_cap_w`; and its clock ratio (1.0 at full clock, lower when the cap holds it down)."""
    compute = min(max(compute_share, 0.0), 1.0)
    memory = 1.0 - compute
    dynamic = (spec.max_w - spec.idle_w) * (0.92 * compute + 0.55 * memory)
    ratio, reasons = 1.0, 0
    headroom = max(power_cap_w - spec.idle_w, 1.0)
    if dynamic > headroom:
        ratio = math.sqrt(headroom / dynamic)
        dynamic, reasons = headroom, SW_POWER_CAP
    return (
        GpuState(
            power_w=spec.idle_w + dynamic,
            busy=True,
            memory_busy=min(1.0, 0.35 + 0.6 * memory),
            dram_bw=min(1.0, (0.25 + 0.6 * memory) * ratio),
            sm_clock_mhz=round(spec.sm_clock_max_mhz * ratio),
            reasons=reasons,
        ),
        ratio,
    )


@dataclass(frozen=True, slots=True)
class GpuReading:
    """A GPU at one instant: its state then and the integrals since the timeline began."""

    time: float
    state: GpuState
    energy_j: float
    busy_s: float
    memory_busy_s: float
    dram_bw_s: float  # ∫ dram_bw dt (share of peak x seconds)
    temperature_c: float


@dataclass
class GpuTimeline:
    """Segments of constant state, appended in time order, with integrals at each segment's start."""

    spec: GpuSpec
    start: float
    retention_s: float = 30.0
    _starts: list[float] = field(default_factory=list)
    _states: list[GpuState] = field(default_factory=list)
    _integrals: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # E, busy, mem, dram, T
    end: float = 0.0

    def __post_init__(self) -> None:
        self._starts.append(self.start)
        self._states.append(idle_state(self.spec))
        self._integrals.append((0.0, 0.0, 0.0, 0.0, self.spec.ambient_c))
        self.end = self.start

    def record(self, t0: float, t1: float, state: GpuState) -> None:
        """The GPU was in `state` over [t0, t1]; a gap since the last record is idle."""
        if t1 <= t0:
            return
        if t0 > self.end:
            self._append(self.end, idle_state(self.spec))
            self._close(t0)
        self._append(t0, state)
        self._close(t1)

    def _append(self, t0: float, state: GpuState) -> None:
        last = len(self._starts) - 1
        if self._states[last] == state and self._starts[last] <= t0:
            return  # same state continues: one segment
        integrals = self._at_index(last, t0)
        if self._starts[last] == t0:
            self._states[last] = state
            return
        self._starts.append(t0)
        self._states.append(state)
        self._integrals.append(integrals)
        self._trim()

    def _close(self, t1: float) -> None:
        self.end = max(self.end, t1)

    def _at_index(self, i: int, t: float) -> tuple[float, float, float, float, float]:
        energy, busy, memory, dram, temp = self._integrals[i]
        state, dt = self._states[i], max(0.0, t - self._starts[i])
        target = self.spec.ambient_c + self.spec.celsius_per_watt * state.power_w
        temp = target + (temp - target) * math.exp(-dt / 20.0)  # 20 s thermal time constant
        return (
            energy + state.power_w * dt,
            busy + (dt if state.busy else 0.0),
            memory + state.memory_busy * dt,
            dram + state.dram_bw * dt,
            temp,
        )

    def _trim(self) -> None:
        # Keep what windowed readings need; the integrals of the first kept segment carry the history. Cut in
        # chunks (when the oldest segment is twice the retention old) so trimming stays amortised O(1).
        newest = self._starts[-1]
        if len(self._starts) > 2 and self._starts[1] < newest - 2 * self.retention_s:
            cut = bisect.bisect_left(self._starts, newest - self.retention_s) - 1
            if cut > 0:
                del self._starts[:cut], self._states[:cut], self._integrals[:cut]

    def at(self, t: float) -> GpuReading:
        """The GPU at time t, clamped to what has been recorded (never reads the future)."""
        t = min(max(t, self._starts[0]), self.end)
        i = bisect.bisect_right(self._starts, t) - 1
        energy, busy, memory, dram, temp = self._at_index(i, t)
        return GpuReading(t, self._states[i], energy, busy, memory, dram, temp)

    def window(self, t: float, seconds: float) -> tuple[float, float]:
        """Busy share and memory-busy share over (t - seconds, t], as NVML's utilisation rates report them."""
        now, before = self.at(t), self.at(t - seconds)
        span = now.time - before.time
        if span <= 0:
            return (1.0 if now.state.busy else 0.0), now.state.memory_busy
        return (now.busy_s - before.busy_s) / span, (now.memory_busy_s - before.memory_busy_s) / span
