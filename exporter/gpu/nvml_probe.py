"""The NVML conformance probe: one script of NVML calls, each answer reduced to its shape.

The same script runs against the real library (scripts/nvml-probe, on a GPU machine) and against FakeNvml, so
a test can hold the fake to the shapes the real library gave (recorded in tests/data/nvml/probe-*.json). The
calls are the GPU sampler's plus their error paths: a bad index, an unknown UUID, a bad clock type or sensor,
an unsupported field, GPM samples in the wrong order, an event wait that times out, a call after nvmlShutdown.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

from exporter.gpu.fake_nvml import FakeNvml

UNKNOWN_UUID = "GPU-00000000-1111-2222-3333-444444444444"
UNSUPPORTED_FIELD = 250  # a field id past the end of every driver's table


def shape(value: Any) -> str:
    """The kind of an answer, without its values (what the fake must match)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return type(value).__name__
    if isinstance(value, list):
        return f"list[{shape(value[0])}]" if value else "list[]"
    if isinstance(value, ctypes.Array):
        return f"array[{', '.join(shape(v) for v in value)}]"
    if isinstance(value, ctypes.Structure):
        names = [name for name, *_ in type(value)._fields_]
        if "nvmlReturn" in names:  # field values and GPM metrics: the return code is part of the shape
            return f"{type(value).__name__}(nvmlReturn={value.nvmlReturn})"
        return f"{type(value).__name__}({', '.join(names)})"
    if isinstance(value, ctypes._Pointer):
        return f"pointer[{type(value).__name__}]"
    if hasattr(value, "__dict__"):  # pynvml's friendly objects
        return "object(" + ", ".join(f"{k}:{type(v).__name__}" for k, v in sorted(vars(value).items())) + ")"
    return type(value).__name__


def brief(value: Any) -> str:
    """A short text of an answer's value, for reading units off the real column."""
    if isinstance(value, ctypes.Structure):
        parts = []
        for name, *_ in type(value)._fields_:
            field = getattr(value, name)
            if isinstance(field, int | float | bytes):
                parts.append(f"{name}={field!r}")
        return " ".join(parts)[:110]
    if isinstance(value, ctypes.Array):
        return "; ".join(brief(v) for v in value)[:110]
    if isinstance(value, list):
        return f"{len(value)} item(s)" + (f": {vars(value[0])}" if value and hasattr(value[0], "__dict__") else "")
    return repr(value)[:110]


class Probe:
    """Runs the script of calls against one NVML and keeps each answer's shape and value."""

    def __init__(self, nvml: Any, pause: Callable[[float], None], *, after_shutdown: bool = True) -> None:
        self.nvml = nvml
        self.pause = pause
        self.after_shutdown = after_shutdown  # False where another user (torch) holds NVML open in this process
        self.shapes: dict[str, str] = {}
        self.values: dict[str, str] = {}

    def call(self, step: str, fn: Callable[[], Any]) -> Any:
        """Run one call; record what came back or what was raised."""
        try:
            value = fn()
        except Exception as error:  # the class of the error is the point
            self.shapes[step] = f"raises {type(error).__name__}"
            self.values[step] = str(error)
            return None
        self.shapes[step] = shape(value)
        self.values[step] = brief(value)
        return value

    def run(self) -> None:
        """The script: the sampler's calls in its order, then the error paths."""
        n = self.nvml
        self.call("nvmlInit", n.nvmlInit)
        self.call("nvmlSystemGetDriverVersion", n.nvmlSystemGetDriverVersion)
        count = self.call("nvmlDeviceGetCount", n.nvmlDeviceGetCount) or 0
        handle = self.call("nvmlDeviceGetHandleByIndex(0)", lambda: n.nvmlDeviceGetHandleByIndex(0))
        self.call("nvmlDeviceGetHandleByIndex(count)", lambda: n.nvmlDeviceGetHandleByIndex(count))
        uuid = self.call("nvmlDeviceGetUUID", lambda: n.nvmlDeviceGetUUID(handle))
        self.call("nvmlDeviceGetHandleByUUID(str)", lambda: n.nvmlDeviceGetHandleByUUID(uuid))
        self.call("nvmlDeviceGetHandleByUUID(bytes)", lambda: n.nvmlDeviceGetHandleByUUID(str(uuid).encode()))
        self.call("nvmlDeviceGetHandleByUUID(unknown)", lambda: n.nvmlDeviceGetHandleByUUID(UNKNOWN_UUID))
        self.call("nvmlDeviceGetName", lambda: n.nvmlDeviceGetName(handle))
        self.call("nvmlDeviceGetIndex", lambda: n.nvmlDeviceGetIndex(handle))
        self.call("nvmlDeviceGetTotalEnergyConsumption", lambda: n.nvmlDeviceGetTotalEnergyConsumption(handle))
        self.call("nvmlDeviceGetPowerUsage", lambda: n.nvmlDeviceGetPowerUsage(handle))
        self.call("nvmlDeviceGetMemoryInfo(v1)", lambda: n.nvmlDeviceGetMemoryInfo(handle))
        self.call("nvmlDeviceGetMemoryInfo(v2)", lambda: n.nvmlDeviceGetMemoryInfo(handle, version=n.nvmlMemory_v2))
        self.call("nvmlDeviceGetUtilizationRates", lambda: n.nvmlDeviceGetUtilizationRates(handle))
        self.call("nvmlDeviceGetClockInfo(SM)", lambda: n.nvmlDeviceGetClockInfo(handle, n.NVML_CLOCK_SM))
        self.call("nvmlDeviceGetClockInfo(MEM)", lambda: n.nvmlDeviceGetClockInfo(handle, n.NVML_CLOCK_MEM))
        self.call("nvmlDeviceGetClockInfo(bad type)", lambda: n.nvmlDeviceGetClockInfo(handle, 99))
        self.call("nvmlDeviceGetTemperature(GPU)", lambda: n.nvmlDeviceGetTemperature(handle, n.NVML_TEMPERATURE_GPU))
        self.call("nvmlDeviceGetTemperature(bad sensor)", lambda: n.nvmlDeviceGetTemperature(handle, 99))
        self.call(
            "nvmlDeviceGetFieldValues(memory temp)",
            lambda: n.nvmlDeviceGetFieldValues(handle, [n.NVML_FI_DEV_MEMORY_TEMP]),
        )
        self.call(
            "nvmlDeviceGetFieldValues(unsupported id)",
            lambda: n.nvmlDeviceGetFieldValues(handle, [UNSUPPORTED_FIELD]),
        )
        self.call("nvmlDeviceGetCurrentClocksEventReasons", lambda: n.nvmlDeviceGetCurrentClocksEventReasons(handle))
        self.call("nvmlDeviceGetComputeRunningProcesses", lambda: n.nvmlDeviceGetComputeRunningProcesses(handle))
        self.gpm(handle)
        self.events(handle)
        self.call("nvmlShutdown", n.nvmlShutdown)
        if self.after_shutdown:  # NVML counts its users: after our shutdown it still answers while torch holds it
            self.call("nvmlDeviceGetCount after nvmlShutdown", n.nvmlDeviceGetCount)

    def gpm(self, handle: Any) -> None:
        """GPM: support, two samples apart in time, DRAM bandwidth, the samples in the wrong order."""
        n = self.nvml
        support = self.call("nvmlGpmQueryDeviceSupport", lambda: n.nvmlGpmQueryDeviceSupport(handle))
        if support is None or not support.isSupportedDevice:
            return
        first = self.call("nvmlGpmSampleAlloc", n.nvmlGpmSampleAlloc)
        second = n.nvmlGpmSampleAlloc()
        self.call("nvmlGpmSampleGet", lambda: n.nvmlGpmSampleGet(handle, first))
        self.pause(0.2)
        n.nvmlGpmSampleGet(handle, second)

        def metrics(a: Any, b: Any) -> Any:
            get = n.c_nvmlGpmMetricsGet_t()
            get.version = n.NVML_GPM_METRICS_GET_VERSION
            get.numMetrics = 1
            get.sample1, get.sample2 = a, b
            get.metrics[0].metricId = n.NVML_GPM_METRIC_DRAM_BW_UTIL
            return n.nvmlGpmMetricsGet(get).metrics[0]

        self.call("nvmlGpmMetricsGet(DRAM_BW_UTIL)", lambda: metrics(first, second))
        self.call("nvmlGpmMetricsGet(samples reversed)", lambda: metrics(second, first))
        self.call("nvmlGpmSampleFree", lambda: n.nvmlGpmSampleFree(first))
        n.nvmlGpmSampleFree(second)

    def events(self, handle: Any) -> None:
        """XID events: register, a wait that times out, free."""
        n = self.nvml
        events = self.call("nvmlEventSetCreate", n.nvmlEventSetCreate)
        self.call(
            "nvmlDeviceRegisterEvents(XID)",
            lambda: n.nvmlDeviceRegisterEvents(handle, n.nvmlEventTypeXidCriticalError, events),
        )
        self.call("nvmlEventSetWait_v2(timeout)", lambda: n.nvmlEventSetWait_v2(events, 50))
        self.call("nvmlEventSetFree", lambda: n.nvmlEventSetFree(events))


def fake_probe() -> Probe:
    """The script against FakeNvml with one GPU (holding this process, as the real run may)."""
    fake = FakeNvml.with_gpus(1)
    fake.gpus[0].processes = [(os.getpid(), 512 << 20)]
    return Probe(fake, fake.advance)


def differences(real: dict[str, str], fake: dict[str, str]) -> list[str]:
    """The steps whose shapes differ, or that only one side ran."""
    return [step for step in {**real, **fake} if real.get(step) != fake.get(step)]
