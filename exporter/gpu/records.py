"""Plain records of the GPU sampler: what one reading of one GPU holds, in base units, and a scrape's view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

# Clock event reasons we decode, as (exported name, suffix of pynvml's `nvmlClocksEventReason*` constant).
# Newer bits (board limit, reliability) exist only in recent drivers and are left out to keep the label set fixed.
CLOCK_EVENT_REASONS: tuple[tuple[str, str], ...] = (
    ("idle", "GpuIdle"),
    ("applications_clocks_setting", "ApplicationsClocksSetting"),
    ("sw_power_cap", "SwPowerCap"),
    ("hw_slowdown", "HwSlowdown"),
    ("sync_boost", "SyncBoost"),
    ("sw_thermal_slowdown", "SwThermalSlowdown"),
    ("hw_thermal_slowdown", "HwThermalSlowdown"),
    ("hw_power_brake_slowdown", "HwPowerBrakeSlowdown"),
    ("display_clock_setting", "DisplayClockSetting"),
)
CLOCK_EVENT_REASON_NAMES: tuple[str, ...] = tuple(name for name, _ in CLOCK_EVENT_REASONS)


class GpuProcess(NamedTuple):
    """A compute process on a GPU: its host PID and the device memory it uses (None when NVML cannot tell)."""

    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """Who a GPU is: NVML UUID, NVML index, product name and the node's driver version."""

    uuid: str
    index: int
    name: str
    driver_version: str


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU, in base units. A field is None when the GPU does not support it (or it failed).

    When `up` is False the GPU did not answer (lost, reset required, unknown error) and every reading is None.
    Ratios are 0..1. `dram_bandwidth_ratio` (GPM) and the utilisation ratios are averages over the time before
    `timestamp` (GPM: since the previous sample; utilisation: the driver's own last period, 1/6 s to 1 s).
    """

    uuid: str
    index: int
    timestamp: float  # wall clock, seconds since the epoch (the same clock as span timestamps)
    up: bool
    energy_joules: float | None = None  # monotonic across driver reloads (see GpuDevice)
    power_watts: float | None = None
    memory_used_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    memory_total_bytes: int | None = None
    gpu_busy_ratio: float | None = None  # share of time a kernel ran
    memory_busy_ratio: float | None = None  # share of time memory was read or written: NOT bandwidth
    dram_bandwidth_ratio: float | None = None  # GPM DRAM_BW_UTIL: bandwidth used / peak
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    temperature_celsius: float | None = None
    memory_temperature_celsius: float | None = None
    clock_event_reasons: frozenset[str] | None = None  # active reasons; empty when none, None when unsupported
    processes: tuple[GpuProcess, ...] | None = None


@dataclass(frozen=True, slots=True)
class GpuView:
    """What a scrape shows of one GPU: identity, latest sample, last known energy total and XID counts."""

    identity: GpuIdentity
    latest: GpuSample | None
    energy_joules: float | None  # kept while the GPU is down so the counter does not vanish
    xid_errors: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """A consistent copy of the sampler's state for one scrape."""

    enabled: bool
    gpus: tuple[GpuView, ...]
    errors: Mapping[str, int]  # failed NVML calls by reason
    last_pass_seconds: float | None
