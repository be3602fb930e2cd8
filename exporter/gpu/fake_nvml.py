"""A fake NVML with pynvml's face: same function names and signatures, return structures, units and errors.

Everything that is not a function (constants, ctypes structures, the `NVMLError_*` classes) IS pynvml's own,
forwarded from the real module, so the code under test cannot tell the fake apart. Handles, GPM samples and
event sets are real ctypes pointers of pynvml's types (to small buffers the fake owns).

The state is public and plain so tests and the load simulator can drive it: one `FakeGpu` per device (power,
memory, utilisation, clocks, temperatures, clock event reasons, processes, GPM bandwidth, errors to raise) and
a clock (`now`) that only `advance()` moves. Energy and GPM counters integrate the state over that clock
exactly: energy_mJ = ∫ power dt, so a test knows the true joules of any interval.

A package module (not test-only code) because the simulator (`exporter.sim`) builds its load-following NVML on
it: a subclass overrides `refresh()`, which every NVML call runs first, to bring the GPUs' state to its clock.

    fake = FakeNvml.with_gpus(8)
    sampler = GpuSampler(nvml=fake, clock=fake.time)
    fake.gpus[3].power_w = 450.0
    fake.advance(1.0)
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import pynvml  # type: ignore[import-untyped]

GIB = 1 << 30
POWER_AVERAGE_S = 1.0  # nvmlDeviceGetPowerUsage averages over this (Ampere and later, but GA100)


@dataclass
class FakeGpu:
    """The state of one fake GPU, in the units a test thinks in (W, bytes, %, MHz, C)."""

    index: int
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float = 70.0  # the power of the moment; NVML's power reading is its average over the last second
    power_reading_w: float | None = None  # set: what the power reading answers (a subclass averaging on its own)
    memory_total: int = 80 * GIB
    memory_reserved: int = 512 << 20
    memory_used: int = 0
    memory_v2: bool = True  # False: a driver before 510, without nvmlDeviceGetMemoryInfo_v2
    gpu_util_pct: int = 0
    memory_util_pct: int = 0
    dram_bw_pct: float = 0.0  # GPM DRAM_BW_UTIL, percent of peak
    sm_clock_mhz: int = 1980
    memory_clock_mhz: int = 2619
    temperature_c: int = 35
    memory_temperature_c: int | None = 40  # None: the memory-temperature field reports NOT_SUPPORTED
    clock_reasons: int = 0  # bitmask of pynvml.nvmlClocksEventReason*
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (host pid, used bytes or None)
    gpm_supported: bool = True
    errors: dict[str, type[Exception]] = field(default_factory=dict)  # function name -> NVMLError_* to raise
    lost: bool = False  # every call on its handle raises NVMLError_GpuIsLost
    energy_mj: float = 0.0  # since "driver load"; advance() integrates power into it
    dram_bw_integral: float = 0.0  # ∫ dram_bw_pct dt, what GPM samples snapshot


class FakeNvml:
    """Module-like fake of pynvml over a list of FakeGpu."""

    def __init__(self, gpus: list[FakeGpu], *, library_missing: bool = False, driver: str = "570.86.15") -> None:
        self.gpus = gpus
        self.library_missing = library_missing
        self.driver_version = driver
        self.now = 1_700_000_000.0
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self._handle_buffers = [ctypes.create_string_buffer(8) for _ in gpus]
        self._by_address = {ctypes.addressof(b): g for b, g in zip(self._handle_buffers, gpus, strict=True)}
        self._gpm: dict[int, tuple[str, float, float] | None] = {}  # sample address -> (uuid, t, integral)
        self._gpm_buffers: dict[int, Any] = {}
        self._events: deque[tuple[int, int]] = deque()  # (gpu index, xid)
        self._registered: dict[int, set[int]] = {}  # event set address -> registered gpu indexes
        self._event_buffers: dict[int, Any] = {}
        self._cond = threading.Condition()
        self._energy_log: list[deque[tuple[float, float]]] = [deque() for _ in gpus]  # (time, energy_mj)

    @classmethod
    def with_gpus(cls, count: int, **kwargs: Any) -> FakeNvml:
        """A node of `count` identical idle H100s with UUIDs GPU-00000000-...-<index>."""
        gpus = [FakeGpu(index=i, uuid=f"GPU-{i:08x}-0000-4000-8000-00000000000{i:x}") for i in range(count)]
        return cls(gpus, **kwargs)

    # --- test controls ---

    def time(self) -> float:
        """The fake's wall clock (pass as the sampler's clock)."""
        return self.now

    def advance(self, dt: float) -> None:
        """Move the clock on by dt seconds, integrating energy and GPM counters over the current state."""
        for gpu in self.gpus:
            gpu.energy_mj += gpu.power_w * dt * 1000.0
            gpu.dram_bw_integral += gpu.dram_bw_pct * dt
        self.now += dt
        self._log_energy()

    def reload_driver(self) -> None:
        """A driver reload: every energy counter starts again from 0."""
        for gpu in self.gpus:
            gpu.energy_mj = 0.0

    def inject_xid(self, index: int, xid: int) -> None:
        """The driver reports critical XID `xid` on GPU `index`."""
        with self._cond:
            self._events.append((index, xid))
            self._cond.notify_all()

    def handle_of(self, index: int) -> Any:
        """The handle NVML gives for GPU `index`."""
        return ctypes.cast(self._handle_buffers[index], pynvml.c_nvmlDevice_t)

    def __getattr__(self, name: str) -> Any:
        # Constants, structures and error classes come from pynvml itself; its functions do not (they would
        # reach for the real library), so a function the fake lacks is an AttributeError, as in an old pynvml.
        value = getattr(pynvml, name)
        if inspect.isfunction(value):
            raise AttributeError(f"FakeNvml has no {name}")
        return value

    def refresh(self) -> None:
        """Bring the GPUs' state up to date before an NVML call answers; a no-op here (tests set state directly)."""

    # --- internals ---

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        self.refresh()
        self._log_energy()
        if self.library_missing:
            raise pynvml.NVMLError_Uninitialized()
        if not self.initialised:
            raise pynvml.NVMLError_Uninitialized()

    def _log_energy(self) -> None:
        # The energy counter's recent history, for the power reading's one-second average.
        for gpu, log in zip(self.gpus, self._energy_log, strict=True):
            if log and log[-1][0] == self.now:
                continue
            log.append((self.now, gpu.energy_mj))
            while len(log) > 2 and log[1][0] <= self.now - POWER_AVERAGE_S:
                log.popleft()

    def _average_power_mw(self, gpu: FakeGpu) -> float:
        # What nvmlDeviceGetPowerUsage answers on Ampere and later (all but GA100): the mean power over the last
        # second, not the power of the moment (seen on an H200: after a load step the reading ramps for ~1 s
        # while the instantaneous field jumps). Before a second of history, or across a driver reload, the
        # power of the moment.
        log = self._energy_log[gpu.index]
        since = self.now - POWER_AVERAGE_S
        if not log or log[0][0] > since:
            return gpu.power_w * 1000.0
        for (t0, e0), (t1, e1) in itertools.pairwise(log):
            if t0 <= since <= t1:
                start = e0 + (e1 - e0) * (since - t0) / (t1 - t0) if t1 > t0 else e1
                break
        else:
            return gpu.power_w * 1000.0
        if gpu.energy_mj < start:
            return gpu.power_w * 1000.0
        return (gpu.energy_mj - start) / POWER_AVERAGE_S

    def _gpu(self, name: str, handle: Any) -> FakeGpu:
        self._enter(name)
        gpu = self._by_address.get(ctypes.cast(handle, ctypes.c_void_p).value or 0)
        if gpu is None:
            raise pynvml.NVMLError_InvalidArgument()
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        error = gpu.errors.get(name)
        if error is not None:
            raise error()
        return gpu

    # --- library ---

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.library_missing:
            raise pynvml.NVMLError_LibraryNotFound()
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        return self.handle_of(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:
        self._enter("nvmlDeviceGetHandleByUUID")
        want = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == want:
                if gpu.lost:
                    raise pynvml.NVMLError_GpuIsLost()
                return self.handle_of(gpu.index)
        raise pynvml.NVMLError_NotFound()

    # --- device queries (units as NVML: mJ, mW, bytes, percent, MHz, C) ---

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetIndex", handle).index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return int(self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetPowerUsage", handle)
        if gpu.power_reading_w is not None:
            return round(gpu.power_reading_w * 1000)
        return round(self._average_power_mw(gpu))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        free = gpu.memory_total - gpu.memory_reserved - gpu.memory_used
        if not version:
            # v1: `used` includes the reserved memory
            return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=free, used=gpu.memory_used + gpu.memory_reserved)
        if not gpu.memory_v2:
            raise pynvml.NVMLError_FunctionNotFound()
        if version != pynvml.nvmlMemory_v2:
            raise pynvml.NVMLError_ArgumentVersionMismatch()
        return pynvml.c_nvmlMemory_v2_t(
            version=version, total=gpu.memory_total, reserved=gpu.memory_reserved, free=free, used=gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.gpu_util_pct, memory=gpu.memory_util_pct)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type == pynvml.NVML_CLOCK_SM:
            return gpu.sm_clock_mhz
        if type == pynvml.NVML_CLOCK_MEM:
            return gpu.memory_clock_mhz
        raise pynvml.NVMLError_NotSupported()

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError_InvalidArgument()
        return gpu.temperature_c

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[int]) -> Any:
        gpu = self._gpu("nvmlDeviceGetFieldValues", handle)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for value, field_id in zip(values, fieldIds, strict=True):
            value.fieldId = field_id
            value.timestamp = int(self.now * 1e6)
            if field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP and gpu.memory_temperature_c is not None:
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = gpu.memory_temperature_c
            else:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        out = []
        for pid, used in gpu.processes:
            info = pynvml.c_nvmlProcessInfo_v3_t(pid=pid, usedGpuMemory=0 if used is None else used)
            obj = pynvml.nvmlStructToFriendlyObject(info)
            if used is None:
                obj.usedGpuMemory = None  # what pynvml does with NVML_VALUE_NOT_AVAILABLE
            out.append(obj)
        return out

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        self._gpu("nvmlDeviceGetPcieThroughput", device)  # counted: the sampler must never call it (blocks 20 ms)
        return 0

    # --- GPM ---

    def nvmlGpmQueryDeviceSupport(self, device: Any) -> Any:
        gpu = self._gpu("nvmlGpmQueryDeviceSupport", device)
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = 1 if gpu.gpm_supported else 0
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        self._enter("nvmlGpmSampleAlloc")
        buffer = ctypes.create_string_buffer(8)
        address = ctypes.addressof(buffer)
        self._gpm_buffers[address] = buffer
        self._gpm[address] = None
        return ctypes.cast(buffer, pynvml.c_nvmlGpmSample_t)

    def nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        self._enter("nvmlGpmSampleFree")
        address = ctypes.cast(gpmSample, ctypes.c_void_p).value or 0
        self._gpm.pop(address, None)
        self._gpm_buffers.pop(address, None)

    def nvmlGpmSampleGet(self, device: Any, gpmSample: Any) -> Any:
        gpu = self._gpu("nvmlGpmSampleGet", device)
        if not gpu.gpm_supported:
            raise pynvml.NVMLError_NotSupported()
        address = ctypes.cast(gpmSample, ctypes.c_void_p).value or 0
        if address not in self._gpm:
            raise pynvml.NVMLError_InvalidArgument()
        self._gpm[address] = (gpu.uuid, self.now, gpu.dram_bw_integral)
        return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        self._enter("nvmlGpmMetricsGet")
        first = self._gpm.get(ctypes.cast(metricsGet.sample1, ctypes.c_void_p).value or 0)
        second = self._gpm.get(ctypes.cast(metricsGet.sample2, ctypes.c_void_p).value or 0)
        if first is None or second is None or first[0] != second[0]:
            raise pynvml.NVMLError_InvalidArgument()
        for i in range(metricsGet.numMetrics):
            metric = metricsGet.metrics[i]
            if metric.metricId == pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL:
                # Samples in the wrong order (or at the same time) are no error to the real library (driver
                # 580 on an H200, scripts/nvml-probe): it answers success with a NaN rate.
                elapsed = second[1] - first[1]
                metric.value = (second[2] - first[2]) / elapsed if elapsed > 0 else math.nan
                metric.nvmlReturn = pynvml.NVML_SUCCESS
            else:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return metricsGet

    # --- events ---

    def nvmlEventSetCreate(self) -> Any:
        self._enter("nvmlEventSetCreate")
        buffer = ctypes.create_string_buffer(8)
        self._event_buffers[ctypes.addressof(buffer)] = buffer
        self._registered[ctypes.addressof(buffer)] = set()
        return ctypes.cast(buffer, pynvml.c_nvmlEventSet_t)

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        gpu = self._gpu("nvmlDeviceRegisterEvents", handle)
        if eventTypes & ~int(pynvml.nvmlEventTypeXidCriticalError):
            raise pynvml.NVMLError_NotSupported()  # the fake only knows XID events
        self._registered[ctypes.cast(eventSet, ctypes.c_void_p).value or 0].add(gpu.index)

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        self._enter("nvmlEventSetWait_v2")
        registered = self._registered.get(ctypes.cast(eventSet, ctypes.c_void_p).value or 0)
        if registered is None:
            raise pynvml.NVMLError_InvalidArgument()
        with self._cond:
            self._cond.wait_for(lambda: any(i in registered for i, _ in self._events), timeoutms / 1000.0)
            for event in list(self._events):
                if event[0] in registered:
                    self._events.remove(event)
                    data = pynvml.c_nvmlEventData_t()
                    data.device = self.handle_of(event[0])
                    data.eventType = pynvml.nvmlEventTypeXidCriticalError
                    data.eventData = event[1]
                    return data
        raise pynvml.NVMLError_Timeout()

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self._enter("nvmlEventSetFree")
        address = ctypes.cast(eventSet, ctypes.c_void_p).value or 0
        self._registered.pop(address, None)
        self._event_buffers.pop(address, None)
