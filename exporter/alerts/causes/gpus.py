"""Cause alerts about GPUs: down, memory near capacity, throttled, XID errors."""

from __future__ import annotations

from exporter.alerts.causes.row import Case, Cause, gpu_labels, series
from exporter.alerts.testfile import INSTANCE
from exporter.metrics import catalog

# Clock-event reasons that mean trouble. Not sw_power_cap (normal at full load: the GPU runs at its power limit),
# not idle, sync_boost, applications_clocks_setting or display_clock_setting (configuration, not faults).
THROTTLE_REASONS = "hw_slowdown|hw_thermal_slowdown|hw_power_brake_slowdown|sw_thermal_slowdown"
MEMORY_FULL = 0.98

_UP, _REASON, _XID = catalog.GPU_UP.name, catalog.GPU_CLOCK_EVENT_REASON.name, catalog.GPU_XID_ERRORS.name
_USED, _TOTAL = catalog.GPU_MEMORY_USED.name, catalog.GPU_MEMORY_TOTAL.name
_RESERVED = catalog.GPU_MEMORY_RESERVED.name

_GPU0, _GPU1 = gpu_labels("0"), gpu_labels("1")
_HOT, _BLIP = gpu_labels(reason="hw_thermal_slowdown"), gpu_labels(reason="hw_slowdown")
_CAPPED, _IDLE = gpu_labels(reason="sw_power_cap"), gpu_labels(reason="idle")
_NEW_XID, _MORE_XID, _OLD_XID = gpu_labels(xid="48"), gpu_labels(xid="63"), gpu_labels(xid="13")

GPU_DOWN = Cause(
    name="LLMGPUDown",
    severity="page",
    expr=f"{_UP} == 0",
    for_="5m",
    summary="GPU {{ $labels.index }} ({{ $labels.gpu }}) on {{ $labels.instance }} is down",
    meaning="NVML reports the GPU lost or needing a reset (e.g. XID 79, fallen off the bus). Every engine on it "
    "is down or about to be, and the GPU does not come back by itself.",
    threshold=f"{_UP} == 0 for 5 minutes: the sampler retries, so a transient NVML error clears well before.",
    action="Cordon the node and move its engines; read `dmesg` and LLMGPUXidErrors; reset the GPU "
    "(`nvidia-smi -r`) or reboot; replace hardware that keeps falling off.",
    cases=(
        Case(
            "lost for 10 minutes: page",
            {series(_UP, _GPU0): "1 0x10"},
            "10m",
            ((_GPU0, f"GPU 0 ({_GPU0['gpu']}) on {INSTANCE} is down"),),
        ),
        Case("healthy: silent", {series(_UP, _GPU0): "1x10"}, "10m"),
    ),
)

GPU_MEMORY = Cause(
    name="LLMGPUMemoryNearCapacity",
    severity="ticket",
    expr=f"{_USED}\n/\n({_TOTAL} - ({_RESERVED} or {_TOTAL} * 0))\n>= {MEMORY_FULL}",
    for_="15m",
    summary="GPU {{ $labels.index }} on {{ $labels.instance }}: {{ $value | humanizePercentage }} of usable "
    "memory used",
    meaning="Almost no device memory is left: the next CUDA graph capture, NCCL buffer, a second process or an "
    "engine restart can fail with CUDA out of memory.",
    threshold=f"Used >= {MEMORY_FULL:.0%} of usable memory (total minus driver-reserved) for 15 minutes. vLLM "
    "takes gpu_memory_utilization (0.9 by default) of the GPU at start by design, so 90-95% is normal.",
    action=f"See which processes hold memory (`{catalog.GPU_PROCESS_MEMORY.name}`); lower gpu_memory_utilization, "
    "or move the stray process off the GPU.",
    cases=(
        Case(
            "79 of 79.5 GB usable, and 79 of 80 GB on a GPU without a reserved reading: ticket for both",
            {
                series(_USED, _GPU0): "79e9x20",
                series(_TOTAL, _GPU0): "80e9x20",
                series(_RESERVED, _GPU0): "0.5e9x20",
                series(_USED, _GPU1): "79e9x20",
                series(_TOTAL, _GPU1): "80e9x20",
            },
            "20m",
            (
                (_GPU0, f"GPU 0 on {INSTANCE}: 99.37% of usable memory used"),
                (_GPU1, f"GPU 1 on {INSTANCE}: 98.75% of usable memory used"),
            ),
        ),
        Case(
            "72 of 80 GB (vLLM's default 0.9): silent",
            {
                series(_USED, _GPU0): "72e9x20",
                series(_TOTAL, _GPU0): "80e9x20",
                series(_RESERVED, _GPU0): "0.5e9x20",
            },
            "20m",
        ),
    ),
)

GPU_THROTTLED = Cause(
    name="LLMGPUThrottled",
    severity="ticket",
    expr=f'avg_over_time({_REASON}{{reason=~"{THROTTLE_REASONS}"}}[10m]) >= 0.5',
    for_="5m",
    summary="GPU {{ $labels.index }} on {{ $labels.instance }}: clocks held down by {{ $labels.reason }} "
    "{{ $value | humanizePercentage }} of the last 10m",
    meaning="A thermal, hardware-slowdown or power-brake event is holding the GPU's clocks down: every request "
    "on it is slower (TPOT first) and the GPU is running hot or short of power.",
    threshold="Held down at least half of the last 10 minutes, for 5 minutes: brief events are normal. Power "
    "capping at full load (sw_power_cap) is expected and not counted.",
    action=f"Check cooling (fans, inlet temperature, `{catalog.GPU_TEMPERATURE.name}`), power supply and "
    "power-brake signals; compare with the node's other GPUs. Move load off until fixed.",
    cases=(
        Case(
            "thermal slowdown throughout: ticket",
            {series(_REASON, _HOT): "1x20"},
            "15m",
            ((_HOT, f"GPU 0 on {INSTANCE}: clocks held down by hw_thermal_slowdown 100% of the last 10m"),),
        ),
        Case(
            "power-capped and idle throughout, a 2-minute hardware slowdown: silent",
            {series(_REASON, _CAPPED): "1x20", series(_REASON, _IDLE): "1x20", series(_REASON, _BLIP): "0 1 1 0x17"},
            "15m",
        ),
    ),
)

GPU_XID = Cause(
    name="LLMGPUXidErrors",
    severity="ticket",
    # The counter's series appears with the first error of a code: `increase` cannot see that one.
    expr=f"increase({_XID}[15m]) > 0\nor\n({_XID} unless {_XID} offset 15m)",
    summary="GPU {{ $labels.index }} ({{ $labels.gpu }}) on {{ $labels.instance }}: XID {{ $labels.xid }} error",
    meaning="The driver reported a critical XID error on the GPU in the last 15 minutes (memory ECC, row "
    "remapping, NVLink, fallen off the bus, ...): requests on it may have failed, and some codes need a reset.",
    threshold="Any new critical XID in 15 minutes: they are rare on healthy hardware and each one matters.",
    action="Look the code up in NVIDIA's XID catalogue: 48/63/64/94/95 (memory) need a GPU reset and, if "
    "repeated, an RMA; 79 means the GPU is lost (LLMGPUDown); 74 is NVLink. Drain the node when it repeats.",
    cases=(
        Case(
            "a first XID 48 (new series) and one more XID 63: ticket for each",
            {series(_XID, _NEW_XID): "_x20 1x20", series(_XID, _MORE_XID): "2x20 3x20"},
            "25m",
            (
                (_NEW_XID, f"GPU 0 ({_NEW_XID['gpu']}) on {INSTANCE}: XID 48 error"),
                (_MORE_XID, f"GPU 0 ({_MORE_XID['gpu']}) on {INSTANCE}: XID 63 error"),
            ),
        ),
        Case("errors from long ago, none since: silent", {series(_XID, _OLD_XID): "5x40"}, "30m"),
    ),
)
