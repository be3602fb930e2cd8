"""GPU and KV cache: memory and its purposes, utilisation against the peak, bandwidth, power, energy, clocks and their
reasons, XIDs, request lengths, KV cache (also per data-parallel engine) and cold starts."""

from __future__ import annotations

from exporter.alerts import fleet
from exporter.dashboards import promql as q
from exporter.dashboards.builder import DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import FILTERS, VARIABLES
from exporter.metrics import catalog as c
from exporter.metrics import promql as base

UID = "llm-gpu-kv"


def _per_gpu(spec: c.MetricSpec, legend: str = "GPU {{index}}", **match: str) -> Query:
    return Query(f"max by (index) ({q.sel(spec, **match)})", legend)


def _by_index(expr: str, by: str) -> str:
    """`expr` (one series per GPU UUID, plus `by`) with each GPU's NVML index, for legends like the gpu_* panels'."""
    return f"max by (index, {by}) ({expr} * on (gpu) group_left (index) {q.sel(c.GPU_INFO)})"


_MFU_HOW = (
    " No series: vLLM was started without --enable-mfu-metrics (see 'vLLM estimates per instance'), or the GPU is not"
    " in the exporter's peak table (exporter/gpu/peaks.py; the exporter logs its product name once)."
)


def _xid_errors() -> str:
    """XIDs per GPU and code over the range. A code's counter appears with its first error, already at 1, and
    increase() never counts a series' first sample: a code first seen in the range counts in full (as the
    LLMGPUXidErrors alert does), an older one by its increase."""
    xids = q.sel(c.GPU_XID_ERRORS)
    return (
        f"sum by (index, xid) ({xids} unless {xids} offset {q.RANGE})\nor\n{q.increase(c.GPU_XID_ERRORS, 'index, xid')}"
    )


def _by_engine(dp: c.MetricSpec, folded: c.MetricSpec, aggregate: str) -> str:
    """Each data-parallel engine's `dp` series, or for a server with one engine (which has none: the exporter serves
    them only for data parallelism) its `folded` series as engine 0, so that every instance has a line and a
    data-parallel one a line per engine. `or` keeps a left-hand engine 0 over the right-hand one of the same
    instance, so a data-parallel server is never drawn twice."""
    by = "model, vllm_instance"
    return (
        f"{aggregate} by ({by}, engine) ({q.sel(dp)})\nor\n"
        f'label_replace({aggregate} by ({by}) ({q.sel(folded)}), "engine", "0", "", "")'
    )


_DP = (
    " A server started with --data-parallel-size N runs N engine cores behind one API server, each with its own "
    "queue and KV cache; the per-instance panels fold them (queues summed, KV usage the fullest engine's). A "
    "server with one engine shows as its engine 0."
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
            "GPU memory by purpose: KV cache vs the rest",
            "Each GPU's memory used by its vLLM instance: kv_cache is the KV cache vLLM allocated on it (the bill of "
            "long context: how many tokens can be resident), other is the rest of the instance's processes' memory "
            "(weights, activations, CUDA graphs); total is the GPU's installed memory. vLLM reports the KV size in "
            "bytes only when started with --kv-cache-memory-bytes (it otherwise sizes the cache from "
            "--gpu-memory-utilization and reports blocks and tokens only): without it there is no split." + FILTERS,
            (
                Query(
                    _by_index(base.sum_by("gpu, purpose", q.sel(c.ENGINE_GPU_MEMORY)), "purpose"),
                    "GPU {{index}} {{purpose}}",
                ),
                _per_gpu(c.GPU_MEMORY_TOTAL, "total GPU {{index}}"),
            ),
            unit="bytes",
        ),
        PanelSpec(
            "Memory bandwidth: vLLM's estimate vs measured (GPM)",
            "Estimated: the bytes vLLM estimates each GPU read and wrote, over the GPU's peak bandwidth from the peak "
            "table. Measured: GPM's DRAM bandwidth utilisation of the same GPU (Hopper and later). Decode streams "
            "weights and KV, so a decode-heavy GPU near 1 here is at its ceiling: batch more or quantize. A large "
            "gap is a finding: another process on the GPU, a wrong peak, or traffic the estimate misses (attention "
            "kernels, communication)." + _MFU_HOW + FILTERS,
            (
                Query(
                    _by_index(base.sum_by("gpu", base.rate(q.sel(c.ENGINE_MEMORY_TRAFFIC_AT_PEAK), q.RATE)), "gpu"),
                    "estimated GPU {{index}}",
                ),
                _per_gpu(c.GPU_DRAM_BANDWIDTH, "measured GPU {{index}}"),
            ),
            unit="percentunit",
        ),
        PanelSpec(
            "Model FLOPs utilisation (MFU)",
            "vLLM's estimated FLOPs per GPU over the GPU's dense peak (BF16/FP16, and FP8 for models that run their "
            "matmuls in FP8), averaged over each instance's GPUs. Prefill is compute-bound: a prefill-heavy instance "
            "far below its peak has room to batch more; decode is bandwidth-bound and sits low here by nature (see "
            "bandwidth beside). The split by phase is not in vLLM's counters; with prefill/decode disaggregation, "
            "the prefill instances' line is prefill's." + _MFU_HOW + FILTERS,
            (
                Query(
                    f"avg by ({engine}) ({base.rate(q.sel(c.ENGINE_COMPUTE_AT_PEAK, precision='bf16'), q.RATE)})",
                    "{{vllm_instance}} (BF16 peak)",
                ),
                Query(
                    f"avg by ({engine}) ({base.rate(q.sel(c.ENGINE_COMPUTE_AT_PEAK, precision='fp8'), q.RATE)})",
                    "{{vllm_instance}} (FP8 peak)",
                ),
            ),
            unit="percentunit",
            w=18,
        ),
        PanelSpec(
            "vLLM estimates per instance",
            "Instances by whether vLLM counts estimated FLOPs and bytes (llm_engine_instance_info mfu_metrics): on; "
            "off = vLLM serves the counters but they stay 0 after work: add --enable-mfu-metrics to the vLLM command "
            "line (vllm serve ... --enable-mfu-metrics); absent = this vLLM version does not have them; unknown = "
            "not scraped yet or no work yet." + FILTERS,
            (Query(f"count by (mfu_metrics) ({q.sel(c.INSTANCE_INFO)})", "{{mfu_metrics}}"),),
            kind="stat",
            unit="count:instances",
            w=6,
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
            "Prompt tokens by source",
            "Prompt tokens per second by where their KV came from: computed here (local_compute), this engine's "
            "prefix cache (local_cache_hit), or a KV connector (external_kv_transfer: another instance, LMCache, a "
            "prefill server in a prefill/decode split). Only computed tokens cost prefill." + FILTERS,
            (Query(q.rate(c.ENGINE_PROMPT_TOKENS_BY_SOURCE, "source"), "{{source}}"),),
            unit="count:tok/s",
            w=8,
        ),
        PanelSpec(
            "External KV cache hit ratio",
            "Share of the prompt tokens looked up through a KV connector (cross-instance cache) that it supplied. "
            "No connector: no lookups, so no ratio." + FILTERS,
            (
                Query(
                    q.ratio(
                        q.rate(c.ENGINE_EXTERNAL_PREFIX_HITS, "model"),
                        q.rate(c.ENGINE_EXTERNAL_PREFIX_QUERIES, "model"),
                    ),
                    "{{model}}",
                ),
            ),
            unit="percentunit",
            w=8,
        ),
        PanelSpec(
            "Waiting requests by reason",
            "Requests in each engine's queue: capacity (no room in the batch or KV cache: more replicas or a bigger "
            "cache) or deferred (a transient hold: LoRA budget, a KV transfer in flight)." + FILTERS,
            (Query(f"sum by (reason) ({q.sel(c.ENGINE_WAITING_BY_REASON)})", "{{reason}}"),),
            unit="count:req",
            w=8,
        ),
        PanelSpec(
            "KV cache by data-parallel engine",
            "Share of each engine's KV-cache blocks in use, per instance and engine. Engines of one instance far "
            "apart (one near 1 and preempting while the others idle) is an imbalanced data-parallel server: its "
            "load balancing, not its KV cache size, is the problem." + _DP + FILTERS,
            (
                Query(
                    _by_engine(c.ENGINE_DP_KV_USAGE, c.ENGINE_KV_USAGE, "max"),
                    "{{vllm_instance}} engine {{engine}}",
                ),
            ),
            unit="percentunit",
        ),
        PanelSpec(
            "Queue by data-parallel engine",
            "Requests waiting in and running on each engine, per instance and engine. Requests waiting on one engine "
            "while another has room is an imbalanced data-parallel server." + _DP + FILTERS,
            (
                Query(
                    _by_engine(c.ENGINE_DP_WAITING, c.ENGINE_WAITING, "sum"),
                    "waiting {{vllm_instance}} engine {{engine}}",
                ),
                Query(
                    _by_engine(c.ENGINE_DP_RUNNING, c.ENGINE_RUNNING, "sum"),
                    "running {{vllm_instance}} engine {{engine}}",
                ),
            ),
            unit="count:req",
        ),
        PanelSpec(
            "KV block residency",
            "How long KV-cache blocks live before they are evicted for reuse, and how long they sat unused before "
            "that (p50 and p90 per model, vLLM's --kv-cache-metrics, sampled blocks). Blocks evicted after a short "
            "idle time were likely to be reused: the cache is small for the traffic's reuse. No series: vLLM runs "
            "without --kv-cache-metrics." + FILTERS,
            (
                Query(q.quantile(0.5, c.ENGINE_KV_BLOCK_LIFETIME, "model"), "{{model}} lifetime p50"),
                Query(q.quantile(0.9, c.ENGINE_KV_BLOCK_LIFETIME, "model"), "{{model}} lifetime p90"),
                Query(q.quantile(0.5, c.ENGINE_KV_BLOCK_IDLE, "model"), "{{model}} idle before eviction p50"),
            ),
            unit="s",
        ),
        PanelSpec(
            "Request lengths",
            "Prompt and output tokens per request, percentiles per model (from the request spans): the prompt "
            "length is which context window the traffic pays for, and with the output length what each request "
            "holds in the KV cache." + FILTERS,
            (
                Query(q.quantile(0.5, c.INPUT_LENGTH, "model"), "{{model}} prompt p50"),
                Query(q.quantile(0.95, c.INPUT_LENGTH, "model"), "{{model}} prompt p95"),
                Query(q.quantile(0.95, c.OUTPUT_LENGTH, "model"), "{{model}} output p95"),
            ),
            unit="count:tok",
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
        "GPU memory (and the KV cache's share of it), MFU and memory bandwidth (vLLM's estimate against the GPU's "
        "peak, and measured), power, energy, clocks and clock-event reasons, XID errors, request lengths, KV-cache "
        "usage, headroom, residency and prompt tokens by source, KV usage and queues by data-parallel engine, "
        "preemptions, prefix-cache hits and cold-start times.",
        panels,
        VARIABLES,
    )
