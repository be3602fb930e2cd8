"""A simulated vLLM 0.32 server's /metrics: the same families, types, labels and bucket edges as the real one.

`VllmStats` accumulates what an engine did (pure); `render` writes it with prometheus_client, the library vLLM
uses, so the text has vLLM's exact shape (`_total` counters with `_created` gauges, label order, float format).
The reference is the real capture in `exporter/samples/vllm-0.32-cpu/metrics.txt`; a test holds the two together.
Families left out: python_gc_*, python_info, and the HTTP size/duration summaries and histograms of the
instrumentator (nothing reads them).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.sim.engine import SimRequest, StepOutcome

_TOKENS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
# vLLM's bucket edges, written as rows (one per line would be ~60 lines).
_SLOW: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
_PER_TOKEN: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_TTFT: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip

_RESIDENCY: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0,
)  # fmt: skip
_SAMPLED = "Sampled metrics (controlled by --kv-cache-metrics-sample)."

# name -> (help, bucket upper bounds), in vLLM's order. The last three are vLLM's with --kv-cache-metrics, as the
# simulated node runs (exporter/samples/vllm-0.32-cpu/metrics-mfu-kv-cache-metrics.txt is a real capture).
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "vllm:request_prompt_tokens": ("Number of prefill tokens processed.", _TOKENS),
    "vllm:request_generation_tokens": ("Number of generation tokens processed.", _TOKENS),
    "vllm:iteration_tokens_total": (
        "Histogram of number of tokens per engine_step.",
        (1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0),
    ),
    "vllm:request_max_num_generation_tokens": (
        "Histogram of maximum number of requested generation tokens.",
        _TOKENS,
    ),
    "vllm:request_params_n": ("Histogram of the n request parameter.", (1.0, 2.0, 5.0, 10.0, 20.0)),
    "vllm:request_params_max_tokens": ("Histogram of the max_tokens request parameter.", _TOKENS),
    "vllm:time_to_first_token_seconds": ("Histogram of time to first token in seconds.", _TTFT),
    "vllm:inter_token_latency_seconds": ("Histogram of inter-token latency in seconds.", _PER_TOKEN),
    "vllm:request_time_per_output_token_seconds": (
        "Histogram of time_per_output_token_seconds per request.",
        _PER_TOKEN,
    ),
    "vllm:e2e_request_latency_seconds": ("Histogram of e2e request latency in seconds.", _SLOW),
    "vllm:request_queue_time_seconds": ("Histogram of time spent in WAITING phase for request.", _SLOW),
    "vllm:request_inference_time_seconds": ("Histogram of time spent in RUNNING phase for request.", _SLOW),
    "vllm:request_prefill_time_seconds": ("Histogram of time spent in PREFILL phase for request.", _SLOW),
    "vllm:request_decode_time_seconds": ("Histogram of time spent in DECODE phase for request.", _SLOW),
    "vllm:request_num_preemptions": (
        "Histogram of the number of times a request was preempted.",
        (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0),
    ),
    "vllm:request_prefill_kv_computed_tokens": (
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        _TOKENS,
    ),
    "vllm:kv_block_lifetime_seconds": (
        f"Histogram of KV cache block lifetime from allocation to eviction. {_SAMPLED}",
        _RESIDENCY,
    ),
    "vllm:kv_block_idle_before_evict_seconds": (
        f"Histogram of idle time before KV cache block eviction. {_SAMPLED}",
        _RESIDENCY,
    ),
    "vllm:kv_block_reuse_gap_seconds": (
        "Histogram of time gaps between consecutive KV cache block accesses. Only the most recent accesses are "
        f"recorded (ring buffer). {_SAMPLED}",
        _RESIDENCY,
    ),
}
# With speculative decoding (vllm/v1/spec_decode/metrics.py): name -> help; per position has a `position` label.
SPEC_DECODE: dict[str, str] = {
    "vllm:spec_decode_num_drafts": "Number of spec decoding drafts.",
    "vllm:spec_decode_num_draft_tokens": "Number of draft tokens.",
    "vllm:spec_decode_num_accepted_tokens": "Number of accepted tokens.",
    "vllm:spec_decode_num_accepted_tokens_per_pos": "Accepted tokens per draft position.",
}

# name (without _total) -> (help, extra label, its values); labels engine and model_name are always there.
COUNTERS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "vllm:estimated_flops_per_gpu": (
        "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations).",
        None,
        (),
    ),
    "vllm:estimated_read_bytes_per_gpu": (
        "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations).",
        None,
        (),
    ),
    "vllm:estimated_write_bytes_per_gpu": (
        "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations).",
        None,
        (),
    ),
    "vllm:prefix_cache_queries": ("Prefix cache queries, in terms of number of queried tokens.", None, ()),
    "vllm:prefix_cache_hits": ("Prefix cache hits, in terms of number of cached tokens.", None, ()),
    "vllm:external_prefix_cache_queries": (
        "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of "
        "queried tokens.",
        None,
        (),
    ),
    "vllm:external_prefix_cache_hits": (
        "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached "
        "tokens.",
        None,
        (),
    ),
    "vllm:mm_cache_queries": ("Multi-modal cache queries, in terms of number of queried items.", None, ()),
    "vllm:mm_cache_hits": ("Multi-modal cache hits, in terms of number of cached items.", None, ()),
    "vllm:num_preemptions": ("Cumulative number of preemption from the engine.", None, ()),
    "vllm:prompt_tokens": ("Number of prefill tokens processed.", None, ()),
    "vllm:prompt_tokens_by_source": (
        "Number of prompt tokens by source.",
        "source",
        ("local_compute", "local_cache_hit", "external_kv_transfer"),
    ),
    "vllm:prompt_tokens_cached": ("Number of cached prompt tokens (local + external).", None, ()),
    "vllm:prompt_tokens_cached_by_source": (
        "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to "
        "DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; "
        "sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
        "source",
        ("device", "host", "p2p", "disk", "external_unspecified"),
    ),
    "vllm:generation_tokens": ("Number of generation tokens processed.", None, ()),
    "vllm:request_success": (
        "Count of successfully processed requests.",
        "finished_reason",
        ("stop", "length", "abort", "error", "repetition"),
    ),
}
ADMISSION_REJECTIONS = "vllm:admission_rejections"
ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")
API_HANDLERS = ("/v1/completions", "/v1/chat/completions")


class Histogram:
    """Per-bucket counts (last bucket +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count a value `times` times (Prometheus `le` semantics)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last."""
        out, total = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


@dataclass(frozen=True)
class ModelShape:
    """What the flops and bytes estimates need: parameters and KV bytes per token, per GPU; and, with speculative
    decoding, the draft length and the chance each draft token is accepted given the ones before it were."""

    params: float
    tp: int
    kv_bytes_per_token: float
    spec_tokens: int = 0  # --num-speculative-tokens; 0: no speculative decoding (and no spec_decode series)
    spec_acceptance: float = 0.7


@dataclass
class VllmStats:
    """Everything a vLLM engine counts, fed by the simulated engine's step outcomes."""

    created: float  # unix time the process registered its metrics
    shape: ModelShape
    counters: defaultdict[tuple[str, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )  # by (family, label)
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {n: Histogram(b) for n, (_, b) in HISTOGRAMS.items()}
    )
    http: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (handler, method, status)
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    spec_expected: defaultdict[int, float] = field(default_factory=lambda: defaultdict(float))  # by position

    def step(self, outcome: StepOutcome, decode_context: int) -> None:
        """Count one engine step; `decode_context` is the KV tokens its decodes read (their context when it ended)."""
        plan = outcome.plan
        tokens = plan.tokens
        self.histograms["vllm:iteration_tokens_total"].observe(tokens)
        self.counters[("vllm:generation_tokens", "")] += outcome.generation_tokens
        itl = self.histograms["vllm:inter_token_latency_seconds"]
        for value in outcome.inter_token_s:
            itl.observe(value)
        shape = self.shape
        # 2 flops per parameter per token; weights read once per step, KV read per decode token.
        self.counters[("vllm:estimated_flops_per_gpu", "")] += 2.0 * shape.params * tokens / shape.tp
        self.counters[("vllm:estimated_read_bytes_per_gpu", "")] += (
            shape.params / shape.tp + decode_context * shape.kv_bytes_per_token / shape.tp
        )
        self.counters[("vllm:estimated_write_bytes_per_gpu", "")] += tokens * shape.kv_bytes_per_token / shape.tp
        self.counters[("vllm:prefix_cache_queries", "")] += plan.prefix_queries
        self.counters[("vllm:prefix_cache_hits", "")] += plan.prefix_hits
        self.counters[("vllm:num_preemptions", "")] += len(plan.preempted)
        for eviction in plan.kv_evictions:  # vLLM observes each block of an evicted cached prefix
            h = self.histograms
            h["vllm:kv_block_lifetime_seconds"].observe(eviction.lifetime_s, eviction.blocks)
            h["vllm:kv_block_idle_before_evict_seconds"].observe(eviction.idle_s, eviction.blocks)
            for gap in eviction.reuse_gaps_s:
                h["vllm:kv_block_reuse_gap_seconds"].observe(gap, eviction.blocks)
        if shape.spec_tokens:
            self._speculate(sum(w.decode_tokens for w in plan.work))
        for request in outcome.first_tokens:
            self._first_token(request)
        for request in outcome.finished:
            self._finished(request)

    def _speculate(self, drafts: int) -> None:
        """One draft of `spec_tokens` per decode token; position i is accepted with spec_acceptance^(i+1) (every
        earlier one must be too), counted in whole tokens that track that expectation exactly. The step's timing
        stays one token per decode: only the counters are simulated."""
        shape, counters = self.shape, self.counters
        counters[("vllm:spec_decode_num_drafts", "")] += drafts
        counters[("vllm:spec_decode_num_draft_tokens", "")] += drafts * shape.spec_tokens
        for position in range(shape.spec_tokens):
            key = ("vllm:spec_decode_num_accepted_tokens_per_pos", str(position))
            self.spec_expected[position] += drafts * shape.spec_acceptance ** (position + 1)
            accepted = math.floor(self.spec_expected[position]) - counters[key]
            counters[key] += accepted
            counters[("vllm:spec_decode_num_accepted_tokens", "")] += accepted

    def _first_token(self, request: SimRequest) -> None:
        arrival = request.arrival
        assert request.first_token is not None
        self.histograms["vllm:time_to_first_token_seconds"].observe(request.first_token - arrival.time)
        cached = max(request.cached_tokens, 0)
        self.counters[("vllm:prompt_tokens", "")] += request.prompt_tokens
        external = request.external_tokens  # a P/D decode half: the prompt's KV came from the prefill instance
        local = request.prompt_tokens - cached - external
        self.counters[("vllm:prompt_tokens_by_source", "local_compute")] += local
        self.counters[("vllm:prompt_tokens_by_source", "local_cache_hit")] += cached
        self.counters[("vllm:prompt_tokens_by_source", "external_kv_transfer")] += external
        self.counters[("vllm:prompt_tokens_cached", "")] += cached
        self.counters[("vllm:prompt_tokens_cached_by_source", "device")] += cached

    def _finished(self, request: SimRequest) -> None:
        arrival = request.arrival
        assert request.first_scheduled is not None and request.first_token is not None
        assert request.finished_at is not None
        h = self.histograms
        decode = request.finished_at - request.first_token
        h["vllm:e2e_request_latency_seconds"].observe(request.finished_at - arrival.time)
        h["vllm:request_queue_time_seconds"].observe(request.first_scheduled - request.queued_at)
        h["vllm:request_inference_time_seconds"].observe(request.finished_at - request.first_scheduled)
        h["vllm:request_prefill_time_seconds"].observe(request.first_token - request.first_scheduled)
        h["vllm:request_decode_time_seconds"].observe(decode)
        # vLLM observes 0 for sequences with at most one output token (docs/design.md §2).
        tpot = decode / (request.generated - 1) if request.generated > 1 else 0.0
        h["vllm:request_time_per_output_token_seconds"].observe(tpot)
        h["vllm:request_prompt_tokens"].observe(request.prompt_tokens)
        h["vllm:request_generation_tokens"].observe(request.generated)
        h["vllm:request_max_num_generation_tokens"].observe(arrival.max_tokens)
        h["vllm:request_params_n"].observe(1)
        h["vllm:request_params_max_tokens"].observe(arrival.max_tokens)
        h["vllm:request_num_preemptions"].observe(request.preemptions)
        h["vllm:request_prefill_kv_computed_tokens"].observe(request.prompt_tokens - max(request.cached_tokens, 0))
        self.counters[("vllm:request_success", request.finish_reason)] += 1
        handler = API_HANDLERS[1] if arrival.chat else API_HANDLERS[0]
        self.http[(handler, "POST", "2xx")] += 1

    def gauges(self, running: int, waiting: int, kv_usage: float) -> None:
        """The engine's current queue and cache state."""
        self.running, self.waiting, self.kv_usage = running, waiting, kv_usage


@dataclass(frozen=True)
class CacheConfig:
    """The labels of vllm:cache_config_info that matter (the rest are fixed, as a default vLLM reports them)."""

    block_size: int
    num_gpu_blocks: int
    kv_cache_memory_bytes: int  # the instance's whole KV pool; vLLM reports it per GPU (labels divides by TP)
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256

    def labels(self, tp: int = 1) -> dict[str, str]:
        """Every label of vllm:cache_config_info (engine excepted), as vLLM 0.32 writes them for one of `tp`
        tensor-parallel GPUs (kv_cache_memory_bytes is vLLM's per-GPU setting)."""
        tokens = self.num_gpu_blocks * self.block_size
        return {
            "_block_size_resolved": "True",
            "block_size": str(self.block_size),
            "cache_dtype": "auto",
            "cache_hit_alignment_tokens": "None",
            "effective_attention_block_size": str(self.block_size),
            "enable_mamba_shared_prefix_checkpoint": "False",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": str(self.gpu_memory_utilization),
            "hash_block_size": "None",
            "is_attention_free": "False",
            "kv_cache_dtype_skip_layers": "[]",
            "kv_cache_layout": "None",
            "kv_cache_max_concurrency": repr(float(self.max_num_seqs)),
            "kv_cache_memory_bytes": str(self.kv_cache_memory_bytes // tp),
            "kv_cache_size_tokens": str(tokens),
            "kv_offloading_backend": "native",
            "kv_offloading_size": "None",
            "kv_sharing_fast_prefill": "False",
            "mamba_block_size": "None",
            "mamba_cache_dtype": "auto",
            "mamba_cache_mode": "none",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "float32",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(self.num_gpu_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_cache_retention_interval": "0",
            "prefix_caching_hash_algo": "sha256",
            "prefix_match_unit": "None",
            "replayssm_buffer_len": "16",
            "skip_page_size_padded": "None",
            "sliding_window": "None",
            "swa_bounded_replay": "True",
            "use_kda_recoverssm": "False",
            "use_replayssm": "False",
            "user_specified_block_size": "False",
        }


def _metric(name: str, help_text: str, kind: str) -> Metric:
    return Metric(name, help_text, kind)


class _StatsCollector(Collector):
    """One scrape of one server's engines' stats (one engine, or several with data parallelism: each sample then
    comes once per engine, labelled engine="0", "1", ... as vLLM's PrometheusStatLogger writes them)."""

    def __init__(self, engines: Sequence[VllmStats], model_name: str, cache: CacheConfig, process_start: float) -> None:
        self.engines, self.model_name, self.cache, self.process_start = engines, model_name, cache, process_start

    def describe(self) -> list[Metric]:
        return []

    def _bases(self) -> list[tuple[VllmStats, dict[str, str]]]:
        return [(stats, {"engine": str(k), "model_name": self.model_name}) for k, stats in enumerate(self.engines)]

    def collect(self) -> Iterator[Metric]:
        first = self.engines[0]
        created = first.created
        yield from _process_metrics(self.process_start)
        for name, help_text in (
            ("vllm:estimated_flops_per_gpu", None),
            ("vllm:estimated_read_bytes_per_gpu", None),
            ("vllm:estimated_write_bytes_per_gpu", None),
        ):
            yield self._counter(name, help_text)
        yield from self._gauges()
        for name in COUNTERS:
            if not name.startswith("vllm:estimated_"):
                yield self._counter(name, None)
        rejections = _metric(
            ADMISSION_REJECTIONS, "Number of admission attempts rejected by a queue limit, by reason.", "counter"
        )
        for reason in ADMISSION_REASONS:
            labels = {"model_name": self.model_name, "reason": reason}
            rejections.add_sample(ADMISSION_REJECTIONS + "_total", labels, 0.0)
            rejections.add_sample(ADMISSION_REJECTIONS + "_created", labels, created)
        yield rejections
        for name, (help_text, _bounds) in HISTOGRAMS.items():
            yield self._histogram(name, help_text)
        if first.shape.spec_tokens:
            yield from self._spec_decode()
        info = _metric("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", "gauge")
        for k, stats in enumerate(self.engines):
            labels = {**self.cache.labels(stats.shape.tp), "engine": str(k)}
            info.add_sample("vllm:cache_config_info", dict(sorted(labels.items())), 1.0)
        yield info
        yield self._http(created)

    def _counter(self, name: str, help_text: str | None) -> Metric:
        doc, extra, values = COUNTERS[name]
        metric = _metric(name, help_text or doc, "counter")
        for stats, base in self._bases():
            for value in values or ("",):
                labels = dict(sorted({**base, **({extra: value} if extra else {})}.items()))
                metric.add_sample(name + "_total", labels, float(stats.counters[(name, value)]))
                metric.add_sample(name + "_created", labels, stats.created)
        return metric

    def _spec_decode(self) -> Iterator[Metric]:
        for name, help_text in SPEC_DECODE.items():
            metric = _metric(name, help_text, "counter")
            for stats, base in self._bases():
                positions = [str(p) for p in range(stats.shape.spec_tokens)] if name.endswith("_per_pos") else [""]
                for position in positions:
                    labels = {**base, "position": position} if position else base
                    metric.add_sample(name + "_total", labels, float(stats.counters[(name, position)]))
                    metric.add_sample(name + "_created", labels, stats.created)
            yield metric

    def _gauges(self) -> Iterator[Metric]:
        bases = self._bases()
        running = _metric("vllm:num_requests_running", "Number of requests in model execution batches.", "gauge")
        for stats, base in bases:
            running.add_sample("vllm:num_requests_running", base, float(stats.running))
        yield running
        waiting = _metric("vllm:num_requests_waiting", "Number of requests waiting to be processed.", "gauge")
        for stats, base in bases:
            waiting.add_sample("vllm:num_requests_waiting", base, float(stats.waiting))
        yield waiting
        by_reason = _metric(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
            "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all "
            "reasons equals vllm:num_requests_waiting.",
            "gauge",
        )
        for stats, base in bases:
            for reason, value in (("capacity", stats.waiting), ("deferred", 0)):
                by_reason.add_sample("vllm:num_requests_waiting_by_reason", {**base, "reason": reason}, float(value))
        yield by_reason
        sleep = _metric(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            "gauge",
        )
        for _, base in bases:
            for state, flag in (("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)):
                sleep.add_sample("vllm:engine_sleep_state", {**base, "sleep_state": state}, flag)
        yield sleep
        kv = _metric("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "gauge")
        for stats, base in bases:
            kv.add_sample("vllm:kv_cache_usage_perc", base, stats.kv_usage)
        yield kv

    def _histogram(self, name: str, help_text: str) -> Metric:
        metric = _metric(name, help_text, "histogram")
        for stats, base in self._bases():
            h = stats.histograms[name]
            total = 0.0
            for le, count in h.cumulative():
                metric.add_sample(
                    name + "_bucket", {"engine": base["engine"], "le": le, "model_name": self.model_name}, count
                )
                total = count
            metric.add_sample(name + "_count", base, total)
            metric.add_sample(name + "_sum", base, h.sum)
            metric.add_sample(name + "_created", base, stats.created)
        return metric

    def _http(self, created: float) -> Metric:
        # One API server, whatever its engines: its HTTP counters are the sum of what each engine finished.
        metric = _metric("http_requests", "Total number of requests by method, status and handler.", "counter")
        rows: Counter[tuple[str, str, str]] = Counter({("/v1/models", "GET", "2xx"): 1})
        for stats in self.engines:
            rows.update(stats.http)
        for (handler, method, status), value in sorted(rows.items()):
            labels = {"handler": handler, "method": method, "status": status}
            metric.add_sample("http_requests_total", labels, float(value))
            metric.add_sample("http_requests_created", labels, created)
        return metric


def _process_metrics(start: float) -> Iterator[Metric]:
    for name, kind, help_text, value in (
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", 2.2e10),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", 3.1e9),
        ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start),
        ("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.", 120.0),
        ("process_open_fds", "gauge", "Number of open file descriptors.", 91.0),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.", 1048576.0),
    ):
        metric = _metric(name, help_text, kind)
        metric.add_sample(name + ("_total" if kind == "counter" else ""), {}, value)
        yield metric


def render(stats: VllmStats | Sequence[VllmStats], model_name: str, cache: CacheConfig, process_start: float) -> bytes:
    """The /metrics body of one simulated vLLM server (Prometheus text format 0.0.4, as vLLM serves it); several
    stats: a data-parallel server's engines, in engine order."""
    engines = [stats] if isinstance(stats, VllmStats) else list(stats)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(engines, model_name, cache, process_start))
    return generate_latest(registry)
