"""GPU and KV cache: memory, bandwidth, power, energy, clocks and their reasons, XIDs, KV cache and cold starts."""

from __future__ import annotations

from exporter.alerts import fleet
from exporter.dashboards import promql as q
from exporter.dashboards.builder import DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import FILTERS, VARIABLES
from exporter.metrics import catalog as c

UID = "llm-gpu-kv"


def _per_gpu(spec: c.MetricSpec, legend: str = "GPU {{index}}", **match: str) -> Query:
    return Query(f"max by (index) ({q.sel(spec, **match)})", legend)


def _xid_errors() -> str:
    """XIDs per GPU and code over the range. A code's counter appears with its first error, already at 1, and
    increase() never counts a series' first sample: a code first seen in the range counts in full (as the
    LLMGPUXidErrors alert does), an older one by its increase."""
    xids = q.sel(c.GPU_XID_ERRORS)
    return (
        f"sum by (index, xid) ({xids} unless {xids} offset {q.RANGE})\nor\n{q.increase(c.GPU_XID_ERRORS, 'index, xid')}"
    )


def spec() -> DashboardSpec:
    """The GPU and KV-cache dashboard."""
    engine = "model, vllm_instance"
    panels = (
        PanelSpec(
            "GPU memory used / reserved / total",
            "Device memory per GPU (NVML memory info v2): used by processes and the driver, reserved by firmware "
            "(unusable), and installed. vLLM takes its share up front, so used stays flat while serving." + FILTERS,
            (
                _per_gpu(c.GPU_MEMORY_USED, "used GPU {{index}}"),
                _per_gpu(c.GPU_MEMORY_RESERVED, "reserved GPU {{index}}"),
                _per_gpu(c.GPU_MEMORY_TOTAL, "total GPU {{index}}"),
            ),
            unit="bytes",
        ),
        PanelSpec(
            "Memory busy and DRAM bandwidth",
            "Memory busy = share of time memory was read or written (NVML utilization.memory; not bandwidth). DRAM "
            "bandwidth = share of peak bandwidth used (GPM, Hopper and later): decode is bandwidth-bound, so this "
            "is how close the GPU is to its decode ceiling." + FILTERS,
            (
                _per_gpu(c.GPU_MEMORY_BUSY, "busy GPU {{index}}"),
                _per_gpu(c.GPU_DRAM_BANDWIDTH, "DRAM BW GPU {{index}}"),
            ),
            unit="percentunit",
        ),
        PanelSpec(
            "Power",
            "Power draw per GPU (NVML). Flat at a cap with a sw_power_cap clock event means the GPU is power-limited."
            + FILTERS,
            (_per_gpu(c.GPU_POWER),),
            unit="watt",
            w=8,
        ),
        PanelSpec(
            "Energy over the range",
            "Joules each GPU consumed over the dashboard's time range (NVML energy counter, monotonic across driver "
            "reloads)." + FILTERS,
            (Query(q.increase(c.GPU_ENERGY, "index"), "GPU {{index}}", instant=True),),
            kind="stat",
            unit="joule",
            w=8,
        ),
        PanelSpec(
            "Clocks",
            "SM and memory clocks per GPU. SM clocks dropping under load, with a reason below, is throttling."
            + FILTERS,
            (_per_gpu(c.GPU_SM_CLOCK, "SM GPU {{index}}"), _per_gpu(c.GPU_MEMORY_CLOCK, "mem GPU {{index}}")),
            unit="hertz",
            w=8,
        ),
        PanelSpec(
            "Clock-event reasons",
            "Which reasons hold each GPU's clocks down (1 = active, 0 = not). idle is harmless; sw_power_cap, "
            "hw_slowdown, thermal or power-brake under load cost TPOT (see the Latency dashboard's throttling panels)."
            + FILTERS,
            (Query(f"max by (index, reason) ({q.sel(c.GPU_CLOCK_EVENT_REASON)})", "GPU {{index}} {{reason}}"),),
            unit="bool_on_off",
            w=12,
        ),
        PanelSpec(
            "XID errors over the range",
            "Critical XID errors the driver reported per GPU and code over the time range (0 when none). Any XID "
            "deserves a look: 79 = fallen off the bus, 48/63/64 = memory ECC, 13/31/43 = application faults." + FILTERS,
            (Query(_xid_errors(), "GPU {{index}} XID {{xid}}", instant=True),),
            kind="stat",
            unit="count:errors",
            w=12,
        ),
        PanelSpec(
            "KV-cache usage and headroom",
            "Usage: share of each engine's KV blocks in use. Headroom: share of each model's KV capacity still free, "
            "across its engines (fleet recording rule; filtered by model only)." + FILTERS,
            (
                Query(f"max by ({engine}) ({q.sel(c.ENGINE_KV_USAGE)})", "usage {{vllm_instance}}"),
                Query(q.sel(fleet.KV_HEADROOM), "headroom {{model}}"),
            ),
            unit="percentunit",
            w=8,
        ),
        PanelSpec(
            "Preemptions/s",
            "Requests vLLM preempted because the KV cache was full (recomputed or swapped later: slow). Anything "
            "above 0 for long means the KV cache is too small for the traffic." + FILTERS,
            (Query(q.rate(c.ENGINE_PREEMPTIONS, engine), "{{vllm_instance}}"),),
            unit="reqps",
            w=8,
        ),
        PanelSpec(
            "Prefix-cache hit ratio",
            "Share of prompt tokens found in vLLM's prefix cache: high means shared system prompts or multi-turn "
            "chats are reused and prefill is saved." + FILTERS,
            (
                Query(
                    q.ratio(q.rate(c.ENGINE_PREFIX_HITS, "model"), q.rate(c.ENGINE_PREFIX_QUERIES, "model")),
                    "{{model}}",
                ),
            ),
            unit="percentunit",
            w=8,
        ),
        PanelSpec(
            "Cold start: start-up phases",
            "Duration of each phase of the last vLLM start-up per model (from its start-up spans): total, model "
            "and weight loading, warm-up, KV-cache allocation." + FILTERS,
            (Query(f"max by (model, phase) ({q.sel(c.ENGINE_STARTUP_PHASE)})", "{{model}} {{phase}}"),),
            kind="stat",
            unit="s",
        ),
        PanelSpec(
            "Cold start: time to ready",
            "From each vLLM process start to its first good /metrics scrape, for starts the exporter watched (an "
            "upper bound by one scrape interval)." + FILTERS,
            (Query(f"max by (vllm_instance) ({q.sel(c.ENGINE_TIME_TO_READY)})", "{{vllm_instance}}"),),
            kind="stat",
            unit="s",
        ),
    )
    return DashboardSpec(
        UID,
        "LLM / GPU and KV cache",
        "GPU memory, bandwidth, power, energy, clocks and clock-event reasons, XID errors, KV-cache usage and "
        "headroom, preemptions, prefix-cache hits and cold-start times.",
        panels,
        VARIABLES,
    )
