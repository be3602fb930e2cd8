"""One GPU's NVML reader: turns NVML calls into a GpuSample, skipping unsupported fields and keeping energy monotonic.

The NVML module is injected (pynvml, or the test fake): every call, constant and error class is looked up on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from exporter.gpu.records import CLOCK_EVENT_REASONS, GpuIdentity, GpuProcess, GpuSample

log = logging.getLogger("exporter.gpu")

T = TypeVar("T")

MAX_PROCESSES_PER_GPU = 64  # keeps samples (and the pid label) bounded on a GPU shared by many processes
_MHZ = 1_000_000.0
# Field value union member per NVML_VALUE_TYPE_* constant name.
_VALUE_MEMBERS = {
    "NVML_VALUE_TYPE_DOUBLE": "dVal",
    "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal",
    "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal",
}


class GpuDown(Exception):
    """The GPU did not answer (lost, reset required, unknown error): mark it down, retry later."""


class NvmlErrors:
    """The NVML error classes the sampler sorts errors by, looked up once on the injected module."""

    def __init__(self, nvml: Any) -> None:
        def classes(*names: str) -> tuple[type[BaseException], ...]:
            return tuple(getattr(nvml, n) for n in names if hasattr(nvml, n))

        self.base: type[BaseException] = nvml.NVMLError
        # Retrying these is futile: the GPU, driver or our privileges will not change while we run.
        self.skip = classes("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission")
        self.down = classes("NVMLError_GpuIsLost", "NVMLError_ResetRequired", "NVMLError_Unknown")
        self.library_missing = classes("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")
        self.timeout = classes("NVMLError_Timeout")
        self.version_mismatch = classes("NVMLError_ArgumentVersionMismatch")


def error_reason(exc: BaseException) -> str:
    """A bounded label for a failed call: the NVML error class in snake case (`gpu_is_lost`), else `internal`."""
    name = type(exc).__name__
    if not name.startswith("NVMLError_"):
        return "internal"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name[len("NVMLError_") :]).lower()


def handle_key(handle: Any) -> int:
    """A hashable key for an NVML device handle (a ctypes pointer): its address, so event data can be matched."""
    try:
        address = ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)
    return address or 0


def text(value: str | bytes) -> str:
    """pynvml returns str on recent versions and bytes on old ones."""
    return value.decode() if isinstance(value, bytes) else value


class GpuDevice:
    """Reads one GPU. Used by one thread at a time (the sampler's); the sampler publishes what it returns."""

    def __init__(
        self, nvml: Any, errors: NvmlErrors, handle: Any, identity: GpuIdentity, energy_every: int = 1
    ) -> None:
        self.nvml = nvml
        self.energy_every = energy_every
        self._passes = 0
        self.errors = errors
        self.handle = handle
        self.identity = identity
        self.unsupported: set[str] = set()
        self.failures: Counter[str] = Counter()  # failed calls since the sampler last drained them
        self._warned: set[tuple[str, str]] = set()
        self._energy_offset_j = 0.0
        self._energy_last_raw_j: float | None = None
        self._memory_v2 = hasattr(nvml, "nvmlMemory_v2")
        self._gpm_samples: list[Any] = []  # [previous, current] while GPM is in use
        self._gpm_primed = False
        self._reason_bits = self._clock_reason_bits()
        self._reasons_by_mask: dict[int, frozenset[str]] = {}
        self._last_processes: tuple[GpuProcess, ...] = ()
        self._setup_gpm()

    @property
    def label(self) -> str:
        """`GPU <index> (<uuid>)` for log lines."""
        return f"GPU {self.identity.index} ({self.identity.uuid})"

    def read(self, now: float, clock: Callable[[], float] | None = None) -> GpuSample:
        """Read every supported field; raises GpuDown when the GPU does not answer. With a `clock`, the sample is
        stamped when it is read (the energy read's midpoint), not at `now`."""
        nvml, h = self.nvml, self.handle
        # One energy read busy-waits ~3 ms in the driver (H200, driver 580), 30x the rest of a pass: it may be
        # read every Nth pass only; attribution spreads the counter's delta between reads by the power samples.
        read_energy = self._passes % self.energy_every == 0
        self._passes += 1
        # Attribution interpolates energy at the samples' stamps: a GPU read 20 ms into a pass (after other GPUs'
        # energy reads, or a thread switch) stamped at the pass's start would shift its energy by 20 ms of power.
        before = now if clock is None else clock()
        energy_mj = self._field("energy", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)) if read_energy else None
        if clock is not None:
            now = (before + clock()) / 2.0 if read_energy else before
        power_mw = self._field("power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        memory = self._field("memory", self._memory)
        util = self._field("utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        dram = self._field("dram_bandwidth", self._dram_bandwidth)
        sm_mhz = self._field("sm_clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        mem_mhz = self._field("memory_clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))
        temp = self._field("temperature", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        mem_temp = self._field("memory_temperature", self._memory_temperature)
        reasons = self._field("clock_event_reasons", self._clock_event_reasons)
        processes = self._field("processes", self._processes)
        return GpuSample(
            uuid=self.identity.uuid,
            index=self.identity.index,
            timestamp=now,
            up=True,
            energy_joules=None if energy_mj is None else self._monotonic_energy(int(energy_mj) / 1000.0),
            power_watts=None if power_mw is None else int(power_mw) / 1000.0,
            memory_used_bytes=None if memory is None else memory[0],
            memory_reserved_bytes=None if memory is None else memory[1],
            memory_total_bytes=None if memory is None else memory[2],
            gpu_busy_ratio=None if util is None else int(util.gpu) / 100.0,
            memory_busy_ratio=None if util is None else int(util.memory) / 100.0,
            dram_bandwidth_ratio=dram,
            sm_clock_hz=None if sm_mhz is None else int(sm_mhz) * _MHZ,
            memory_clock_hz=None if mem_mhz is None else int(mem_mhz) * _MHZ,
            temperature_celsius=None if temp is None else float(temp),
            memory_temperature_celsius=mem_temp,
            clock_event_reasons=reasons,
            processes=processes,
        )

    def down_sample(self, now: float) -> GpuSample:
        """The record of a reading that did not happen because the GPU is down."""
        return GpuSample(uuid=self.identity.uuid, index=self.identity.index, timestamp=now, up=False)

    def reacquire(self) -> None:
        """Look the GPU up again by UUID (a reset can change its handle); raises GpuDown if it still fails."""
        try:
            self.handle = self.nvml.nvmlDeviceGetHandleByUUID(self.identity.uuid)
        except self.errors.base as exc:
            self.failures[error_reason(exc)] += 1
            raise GpuDown(str(exc)) from exc
        self._gpm_primed = False  # the previous GPM sample is from before the outage
        self._passes = 0  # read the energy counter at once

    def close(self) -> None:
        """Free the GPM sample buffers."""
        for sample in self._gpm_samples:
            with contextlib.suppress(self.errors.base):  # shutting down: nothing useful to do with a failure
                self.nvml.nvmlGpmSampleFree(sample)
        self._gpm_samples = []

    def _field(self, name: str, read: Callable[[], T]) -> T | None:
        if name in self.unsupported:
            return None
        try:
            return read()
        except self.errors.down as exc:
            self.failures[error_reason(exc)] += 1
            raise GpuDown(str(exc)) from exc
        except self.errors.skip as exc:
            self.failures[error_reason(exc)] += 1
            self._give_up(name, str(exc))
        except AttributeError as exc:  # an older nvidia-ml-py without this function: as FunctionNotFound
            self.failures["function_not_found"] += 1
            self._give_up(name, f"not in this nvidia-ml-py ({exc})")
        except Exception as exc:  # NVML errors worth retrying (timeout, no data...) and bugs: skip this reading
            reason = error_reason(exc)
            self.failures[reason] += 1
            if (name, reason) not in self._warned:
                self._warned.add((name, reason))
                log.warning("%s: reading %s failed (%s); will retry, logged once", self.label, name, exc)
        return None

    def _give_up(self, name: str, why: str) -> None:
        self.unsupported.add(name)
        log.info("%s: %s is not available (%s); not sampled again", self.label, name, why)

    def _monotonic_energy(self, raw_j: float) -> float:
        # The counter is "since driver load": a drop means the driver reloaded. Carry what we had; the energy
        # between our last reading and the reload is lost (at most one interval).
        last = self._energy_last_raw_j
        if last is not None and raw_j < last:
            self._energy_offset_j += last
            log.warning(
                "%s: energy counter went back from %.3f J to %.3f J (driver reloaded); continuing from %.3f J",
                self.label,
                last,
                raw_j,
                self._energy_offset_j,
            )
        self._energy_last_raw_j = raw_j
        return self._energy_offset_j + raw_j

    def _memory(self) -> tuple[int, int | None, int]:
        nvml, h = self.nvml, self.handle
        if self._memory_v2:
            try:
                m = nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2)
                return int(m.used), int(m.reserved), int(m.total)
            except (*self.errors.skip, *self.errors.version_mismatch) as exc:
                # Drivers before 510 have no v2; v1's `used` then includes the reserved memory.
                self._memory_v2 = False
                log.info("%s: memory info v2 not available (%s); using v1 (no reserved)", self.label, exc)
        m = nvml.nvmlDeviceGetMemoryInfo(h)
        return int(m.used), None, int(m.total)

    def _memory_temperature(self) -> float:
        nvml = self.nvml
        value = nvml.nvmlDeviceGetFieldValues(self.handle, [nvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(value.nvmlReturn)  # field values report errors per field, not by raising
        for type_name, member in _VALUE_MEMBERS.items():
            if value.valueType == getattr(nvml, type_name, None):
                return float(getattr(value.value, member))
        return float(value.value.uiVal)

    def _clock_reason_bits(self) -> tuple[tuple[str, int], ...]:
        bits = []
        for name, suffix in CLOCK_EVENT_REASONS:
            # nvidia-ml-py 12.535+ has the "Event" names; older ones only the "Throttle" spelling.
            bit = getattr(self.nvml, "nvmlClocksEventReason" + suffix, None)
            if bit is None:
                bit = getattr(self.nvml, "nvmlClocksThrottleReason" + suffix, None)
            if bit is not None:
                bits.append((name, int(bit)))
        return tuple(bits)

    def _clock_event_reasons(self) -> frozenset[str]:
        nvml = self.nvml
        get = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if get is None:
            get = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = int(get(self.handle))
        reasons = self._reasons_by_mask.get(mask)
        if reasons is None:  # one frozenset per distinct mask, shared by the samples in the ring
            reasons = self._reasons_by_mask[mask] = frozenset(n for n, bit in self._reason_bits if mask & bit)
        return reasons

    def _processes(self) -> tuple[GpuProcess, ...]:
        procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        out = [GpuProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]
        out.sort(key=lambda p: -(p.used_memory_bytes or 0))
        processes = tuple(out[:MAX_PROCESSES_PER_GPU])
        if processes != self._last_processes:  # unchanged most of the time: share the previous tuple
            self._last_processes = processes
        return self._last_processes

    def _setup_gpm(self) -> None:
        nvml = self.nvml
        try:
            supported = bool(nvml.nvmlGpmQueryDeviceSupport(self.handle).isSupportedDevice)
            if supported:
                self._gpm_samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        except (self.errors.base, AttributeError) as exc:
            self.failures[error_reason(exc)] += 1
            self.close()
            self._give_up("dram_bandwidth", f"GPM: {exc}")
            return
        if not supported:
            self._give_up("dram_bandwidth", "no GPM support on this GPU (Hopper and later have it)")

    def _dram_bandwidth(self) -> float | None:
        nvml = self.nvml
        previous, current = self._gpm_samples
        nvml.nvmlGpmSampleGet(self.handle, current)
        primed, self._gpm_primed = self._gpm_primed, True
        self._gpm_samples = [current, previous]
        if not primed:
            return None  # GPM metrics are rates between two samples: the first reading only primes
        mg = nvml.c_nvmlGpmMetricsGet_t()
        mg.version = nvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = 1
        mg.sample1 = previous
        mg.sample2 = current
        mg.metrics[0].metricId = nvml.NVML_GPM_METRIC_DRAM_BW_UTIL
        nvml.nvmlGpmMetricsGet(mg)
        metric = mg.metrics[0]
        if metric.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(metric.nvmlReturn)
        value = float(metric.value)
        if not math.isfinite(value):
            return None  # the real library answers NaN (with success) for samples it cannot rate
        return value / 100.0  # NVML gives percent of peak
