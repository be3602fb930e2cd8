"""Cause alerts about GPUs: down, memory near capacity, throttled, XID errors."""

from __future__ import annotations

from exporter.alerts.alert import Alert
from exporter.alerts.cause import MEMORY_FULL, THROTTLE_REASONS, Case, Cause, gpu_labels, series
from exporter.alerts.testfile import INSTANCE
from exporter.metrics import catalog


def gpu_down() -> Cause:
    """The gpu down alert and its cases."""
    name = catalog.GPU_UP.name
    alert = Alert(
        name="LLMGPUDown",
        severity="page",
        expr=f"{name} == 0",
        for_="5m",
        summary="GPU {{ $labels.index }} ({{ $labels.gpu }}) on {{ $labels.instance }} is down",
        meaning="NVML reports the GPU lost or needing a reset (e.g. XID 79, fallen off the bus). Every engine on it "
        "is down or about to be, and the GPU does not come back by itself.",
        threshold=f"{name} == 0 for 5 minutes: the sampler retries, so a transient NVML error clears well before.",
        action="Cordon the node and move its engines; read `dmesg` and LLMGPUXidErrors; reset the GPU "
        "(`nvidia-smi -r`) or reboot; replace hardware that keeps falling off.",
    )
    labels = gpu_labels()
    summary = f"GPU 0 ({labels['gpu']}) on {INSTANCE} is down"
    return Cause(
        alert,
        (
            Case("lost for 10 minutes: page", ((series(name, labels), "1 0x10"),), "10m", ((labels, summary),)),
            Case("healthy: silent", ((series(name, labels), "1x10"),), "10m"),
        ),
    )


def gpu_memory() -> Cause:
    """The gpu memory alert and its cases."""
    used, total, reserved = (
        catalog.GPU_MEMORY_USED.name,
        catalog.GPU_MEMORY_TOTAL.name,
        catalog.GPU_MEMORY_RESERVED.name,
    )
    alert = Alert(
        name="LLMGPUMemoryNearCapacity",
        severity="ticket",
        expr=f"{used}\n/\n({total} - ({reserved} or {total} * 0))\n>= {MEMORY_FULL}",
        for_="15m",
        summary="GPU {{ $labels.index }} on {{ $labels.instance }}: {{ $value | humanizePercentage }} of usable "
        "memory used",
        meaning="Almost no device memory is left: the next CUDA graph capture, NCCL buffer, a second process or an "
        "engine restart can fail with CUDA out of memory.",
        threshold=f"Used >= {MEMORY_FULL:.0%} of usable memory (total minus driver-reserved) for 15 minutes. vLLM "
        "takes gpu_memory_utilization (0.9 by default) of the GPU at start by design, so 90-95% is normal.",
        action=f"See which processes hold memory (`{catalog.GPU_PROCESS_MEMORY.name}`); lower gpu_memory_utilization, "
        "or move the stray process off the GPU.",
    )
    gpu0, gpu1 = gpu_labels("0"), gpu_labels("1")
    return Cause(
        alert,
        (
            Case(
                "79 of 79.5 GB usable, and 79 of 80 GB on a GPU without a reserved reading: ticket for both",
                (
                    (series(used, gpu0), "79e9x20"),
                    (series(total, gpu0), "80e9x20"),
                    (series(reserved, gpu0), "0.5e9x20"),
                    (series(used, gpu1), "79e9x20"),
                    (series(total, gpu1), "80e9x20"),
                ),
                "20m",
                (
                    (gpu0, f"GPU 0 on {INSTANCE}: 99.37% of usable memory used"),
                    (gpu1, f"GPU 1 on {INSTANCE}: 98.75% of usable memory used"),
                ),
            ),
            Case(
                "72 of 80 GB (vLLM's default 0.9): silent",
                (
                    (series(used, gpu0), "72e9x20"),
                    (series(total, gpu0), "80e9x20"),
                    (series(reserved, gpu0), "0.5e9x20"),
                ),
                "20m",
            ),
        ),
    )


def gpu_throttled() -> Cause:
    """The gpu throttled alert and its cases."""
    name = catalog.GPU_CLOCK_EVENT_REASON.name
    alert = Alert(
        name="LLMGPUThrottled",
        severity="ticket",
        expr=f'avg_over_time({name}{{reason=~"{THROTTLE_REASONS}"}}[10m]) >= 0.5',
        for_="5m",
        summary="GPU {{ $labels.index }} on {{ $labels.instance }}: clocks held down by {{ $labels.reason }} "
        "{{ $value | humanizePercentage }} of the last 10m",
        meaning="A thermal, hardware-slowdown or power-brake event is holding the GPU's clocks down: every request "
        "on it is slower (TPOT first) and the GPU is running hot or short of power.",
        threshold="Held down at least half of the last 10 minutes, for 5 minutes: brief events are normal. Power "
        "capping at full load (sw_power_cap) is expected and not counted.",
        action=f"Check cooling (fans, inlet temperature, `{catalog.GPU_TEMPERATURE.name}`), power supply and "
        "power-brake signals; compare with the node's other GPUs. Move load off until fixed.",
    )
    hot, capped, idle = (
        gpu_labels(reason="hw_thermal_slowdown"),
        gpu_labels(reason="sw_power_cap"),
        gpu_labels(reason="idle"),
    )
    blip = gpu_labels(reason="hw_slowdown")
    return Cause(
        alert,
        (
            Case(
                "thermal slowdown throughout: ticket",
                ((series(name, hot), "1x20"),),
                "15m",
                ((hot, f"GPU 0 on {INSTANCE}: clocks held down by hw_thermal_slowdown 100% of the last 10m"),),
            ),
            Case(
                "power-capped and idle throughout, a 2-minute hardware slowdown: silent",
                ((series(name, capped), "1x20"), (series(name, idle), "1x20"), (series(name, blip), "0 1 1 0x17")),
                "15m",
            ),
        ),
    )


def xid() -> Cause:
    """The xid alert and its cases."""
    name = catalog.GPU_XID_ERRORS.name
    alert = Alert(
        name="LLMGPUXidErrors",
        severity="ticket",
        # The counter's series appears with the first error of a code: `increase` cannot see that one.
        expr=f"increase({name}[15m]) > 0\nor\n({name} unless {name} offset 15m)",
        summary="GPU {{ $labels.index }} ({{ $labels.gpu }}) on {{ $labels.instance }}: XID {{ $labels.xid }} error",
        meaning="The driver reported a critical XID error on the GPU in the last 15 minutes (memory ECC, row "
        "remapping, NVLink, fallen off the bus, ...): requests on it may have failed, and some codes need a reset.",
        threshold="Any new critical XID in 15 minutes: they are rare on healthy hardware and each one matters.",
        action="Look the code up in NVIDIA's XID catalogue: 48/63/64/94/95 (memory) need a GPU reset and, if "
        "repeated, an RMA; 79 means the GPU is lost (LLMGPUDown); 74 is NVLink. Drain the node when it repeats.",
    )
    new, more, old = gpu_labels(xid="48"), gpu_labels(xid="63"), gpu_labels(xid="13")

    def summary(labels: dict[str, str]) -> str:
        return f"GPU 0 ({labels['gpu']}) on {INSTANCE}: XID {labels['xid']} error"

    return Cause(
        alert,
        (
            Case(
                "a first XID 48 (new series) and one more XID 63: ticket for each",
                ((series(name, new), "_x20 1x20"), (series(name, more), "2x20 3x20")),
                "25m",
                ((new, summary(new)), (more, summary(more))),
            ),
            Case("errors from long ago, none since: silent", ((series(name, old), "5x40"),), "30m"),
        ),
    )
