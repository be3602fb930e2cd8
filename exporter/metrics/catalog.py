"""The metric catalog: every metric the exporter serves, defined once.

The collector, the dashboards, the alerts and the README all read this module, so a name or a label changes
in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """Prometheus metric type."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# What the series of a metric multiply with: one per (model, tenant) pair, per model, per GPU, per vLLM instance,
# or a fixed handful. The README's metrics table counts each metric at SHARED_PLATFORM.
PAIR, MODEL, GPU, INSTANCE, FIXED = "model x tenant", "model", "GPU", "vLLM instance", "fixed"
SHARED_PLATFORM = {PAIR: 600, MODEL: 3, GPU: 8, INSTANCE: 8, FIXED: 1}  # 200 tenants x 3 models on 8 GPUs


@dataclass(frozen=True)
class MetricSpec:
    """One exposed metric: its full name (counters end in `_total`), type, help text and label names, and what its
    series cost: `each` series per unit of `scope` (histograms: buckets + _sum + _count, times `each`)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    default_buckets: tuple[float, ...] = field(default=())
    each: int = 1  # series per scope unit (histograms: per label set)
    scope: str = ""  # PAIR, MODEL, GPU, INSTANCE or FIXED; default: from the labels

    @property
    def per(self) -> str:
        """What its series multiply with."""
        if self.scope:
            return self.scope
        if "tenant" in self.labels:
            return PAIR
        if "model" in self.labels:
            return MODEL
        if "gpu" in self.labels:
            return GPU
        if "vllm_instance" in self.labels:
            return INSTANCE
        return FIXED

    @property
    def series_each(self) -> int:
        """Series per unit of its scope with the default buckets."""
        return self.each * (len(self.default_buckets) + 3 if self.kind is Kind.HISTOGRAM else 1)

    def series_at(self, units: dict[str, int] = SHARED_PLATFORM) -> int:
        """Series it adds at `units` of each scope (default: 200 tenants x 3 models on 8 GPUs and 8 instances)."""
        return self.series_each * units[self.per]

    @property
    def family(self) -> str:
        """Name of the metric family (counters without their `_total` suffix), as prometheus_client wants it."""
        if self.kind is Kind.COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


REQUEST_LABELS = ("model", "tenant")
MODEL_LABELS = ("model",)
THROTTLE_LABELS = ("model", "throttled")

# Bucket defaults are finer than vLLM's at the low end and contain the usual SLO thresholds
# (TTFT 0.1, 0.25, 0.5, 1, 2.5 s; TPOT 0.01 .. 0.2 s), since SLO alerts need the threshold to be a bucket edge.
TTFT = MetricSpec(
    "llm_request_time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Time from request arrival at the vLLM API server to its first output token (span gen_ai.latency."
    "time_to_first_token). throttled: whether a GPU of its instance reported a clock-event reason other than "
    "idle while it ran (unknown without GPU data). Per model at full resolution; per tenant see "
    "llm_tenant_time_to_first_token_seconds.",
    THROTTLE_LABELS,
    (
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.4,
        0.5,
        0.75,
        1.0,
        1.5,
        2.0,
        2.5,
        3.0,
        4.0,
        5.0,
        7.5,
        10.0,
        15.0,
        20.0,
        30.0,
        60.0,
    ),
    each=3,  # throttled: true, false, unknown
)
TPOT = MetricSpec(
    "llm_request_time_per_output_token_seconds",
    Kind.HISTOGRAM,
    "Mean time per output token after the first: decode time / (completion tokens - 1). Not observed for "
    "sequences with at most one output token. throttled: as for TTFT. Per model at full resolution; per tenant "
    "see llm_tenant_time_per_output_token_seconds.",
    THROTTLE_LABELS,
    (
        0.001,
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.025,
        0.03,
        0.04,
        0.05,
        0.06,
        0.075,
        0.1,
        0.15,
        0.2,
        0.3,
        0.5,
        1.0,
    ),
    each=3,  # throttled: true, false, unknown
)
QUEUE = MetricSpec(
    "llm_request_queue_seconds",
    Kind.HISTOGRAM,
    "Time the request waited in the engine's queue before it was first scheduled.",
    MODEL_LABELS,
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
PREFILL = MetricSpec(
    "llm_request_prefill_seconds",
    Kind.HISTOGRAM,
    "Time from first scheduling to the first output token (prompt processing).",
    MODEL_LABELS,
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DECODE = MetricSpec(
    "llm_request_decode_seconds",
    Kind.HISTOGRAM,
    "Time from the first to the last output token.",
    MODEL_LABELS,
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
E2E = MetricSpec(
    "llm_request_e2e_seconds",
    Kind.HISTOGRAM,
    "Time from request arrival at the vLLM API server to its completion.",
    MODEL_LABELS,
    (
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.0,
        2.5,
        5.0,
        10.0,
        15.0,
        20.0,
        30.0,
        60.0,
        120.0,
        300.0,
        600.0,
    ),
)
REQUESTS = MetricSpec(
    "llm_requests_total",
    Kind.COUNTER,
    "Finished sequences seen as vLLM llm_request spans (n=2 makes two).",
    REQUEST_LABELS,
)
TOKENS = MetricSpec(
    "llm_tokens_total",
    Kind.COUNTER,
    "Tokens of finished sequences: type=input (prompt) or output (completion).",
    (*REQUEST_LABELS, "type"),
    each=2,
)
# Request lengths per model: which context window a model's traffic pays for, and how long its answers are. Powers
# of two, as context windows are. Per model only: per tenant they would cost 39 series a pair (23,400 at 200 tenants
# x 3 models, twice the whole default budget), and a tenant's mean length is llm_tokens_total / llm_requests_total.
INPUT_LENGTH = MetricSpec(
    "llm_request_input_tokens",
    Kind.HISTOGRAM,
    "Prompt tokens per finished sequence (span gen_ai.usage.prompt_tokens; cached prefix tokens included): the "
    "distribution that says which context window the traffic needs.",
    MODEL_LABELS,
    tuple(float(2**i) for i in range(4, 21)),  # 16 .. 1,048,576
)
OUTPUT_LENGTH = MetricSpec(
    "llm_request_output_tokens",
    Kind.HISTOGRAM,
    "Output tokens per finished sequence (span gen_ai.usage.completion_tokens).",
    MODEL_LABELS,
    tuple(float(2**i) for i in range(16)),  # 1 .. 32,768
)
LENGTH_HISTOGRAMS: tuple[MetricSpec, ...] = (INPUT_LENGTH, OUTPUT_LENGTH)

# Per (model, tenant) only the edges tenant questions need: every SLO threshold the chart's SLO spec uses is one
# (slo_latency_thresholds adds them), so a per-tenant SLO can count good requests. 6 series each, not ~30.
TENANT_TTFT = MetricSpec(
    "llm_tenant_time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "TTFT per model and tenant, at a few edges that hold the SLO thresholds (--buckets.tenant-ttft plus "
    "slo_latency_thresholds); full resolution per model is llm_request_time_to_first_token_seconds.",
    REQUEST_LABELS,
    (0.5, 1.0, 2.5),
)
TENANT_TPOT = MetricSpec(
    "llm_tenant_time_per_output_token_seconds",
    Kind.HISTOGRAM,
    "TPOT per model and tenant, at a few edges that hold the SLO thresholds (--buckets.tenant-tpot plus "
    "slo_latency_thresholds); full resolution per model is llm_request_time_per_output_token_seconds.",
    REQUEST_LABELS,
    (0.05, 0.1, 0.2),
)
TENANT_HISTOGRAMS: tuple[MetricSpec, ...] = (TENANT_TTFT, TENANT_TPOT)

# Prefill/decode disaggregation (exporter.requests.disagg): a request's two spans are counted once; these say what
# the split costs and what could not be joined. Served only for models with disaggregated requests.
PD_HANDOFF = MetricSpec(
    "llm_request_pd_handoff_seconds",
    Kind.HISTOGRAM,
    "Prefill/decode disaggregation: from the prefill instance's first token to the decode instance's first token "
    "(the proxy, the decode queue and loading the KV: what the split adds to TTFT), for requests whose two halves "
    "met in this exporter.",
    MODEL_LABELS,
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PD_DECODE_TTFT = MetricSpec(
    "llm_request_decode_time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Prefill/decode disaggregation: TTFT measured from the decode instance's own arrival, for requests whose "
    "prefill half this exporter did not see (it misses the prefill and the hand-off, so it is kept out of "
    "llm_request_time_to_first_token_seconds; route a trace's spans to one exporter to count the user-visible one).",
    MODEL_LABELS,
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
PD_HALVES = MetricSpec(
    "llm_pd_halves_total",
    Kind.COUNTER,
    "Prefill/decode disaggregation: request spans by side (prefill, decode) and outcome: joined (both halves met: "
    "one request) or alone (the other half did not come within --pd.join-window-seconds: a decode half is still "
    "counted as a request, a prefill half never is).",
    ("model", "side", "outcome"),
    each=4,
)
LATENCY_HISTOGRAMS: tuple[MetricSpec, ...] = (TTFT, TPOT, QUEUE, PREFILL, DECODE, E2E)
MODEL_HISTOGRAMS: tuple[MetricSpec, ...] = (*LATENCY_HISTOGRAMS, PD_HANDOFF, PD_DECODE_TTFT)
# Short names, as in the bucket settings (buckets_ttft, --buckets.ttft).
LATENCY_HISTOGRAM_SHORT_NAMES = {
    "ttft": TTFT,
    "tpot": TPOT,
    "queue": QUEUE,
    "prefill": PREFILL,
    "decode": DECODE,
    "e2e": E2E,
    "tenant_ttft": TENANT_TTFT,
    "tenant_tpot": TENANT_TPOT,
}

# Self metrics: how complete and healthy the exporter's own picture is.
BUILD_INFO = MetricSpec(
    "llm_exporter_build_info", Kind.GAUGE, "Always 1; labels carry the exporter's version.", ("version",)
)
SPANS_RECEIVED = MetricSpec(
    "llm_exporter_spans_received_total",
    Kind.COUNTER,
    "Spans in OTLP batches that decoded, of any name, by receiving protocol.",
    ("protocol",),
)
SPANS_ACCEPTED = MetricSpec(
    "llm_exporter_spans_accepted_total",
    Kind.COUNTER,
    "llm_request spans that passed validation and entered the processing queue.",
    ("protocol",),
)
SPANS_REJECTED = MetricSpec(
    "llm_exporter_spans_rejected_total",
    Kind.COUNTER,
    "llm_request spans rejected alone for a bad value (the rest of their batch is kept), by reason.",
    ("reason",),
)
SPANS_DROPPED = MetricSpec(
    "llm_exporter_spans_dropped_total",
    Kind.COUNTER,
    "Valid llm_request spans not counted: queue_full (exporter overloaded) or duplicate (re-delivered).",
    ("reason",),
)
OTHER_SPANS = MetricSpec(
    "llm_exporter_other_spans_total",
    Kind.COUNTER,
    "Spans that are not llm_request (vLLM start-up spans, gateway spans), by span name (capped).",
    ("name",),
)
BATCHES_REJECTED = MetricSpec(
    "llm_exporter_batches_rejected_total",
    Kind.COUNTER,
    "Whole OTLP export requests refused, by protocol and reason (decode_error, too_large, "
    "unsupported_media_type, unsupported_encoding; overloaded and memory_limit are retryable refusals before "
    "decoding, so their spans are not counted elsewhere).",
    ("protocol", "reason"),
)
UNAUTHORIZED = MetricSpec(
    "llm_exporter_unauthorized_requests_total",
    Kind.COUNTER,
    "Requests refused for a missing or wrong bearer token, by endpoint (otlp_http, otlp_grpc, metrics).",
    ("endpoint",),
)
TLS_RELOADS = MetricSpec(
    "llm_exporter_tls_reloads_total",
    Kind.COUNTER,
    "Certificate file changes seen by a TLS listener group (web, otlp), by result: ok (new connections use the new "
    "certificate) or failed (unreadable or unusable files: the last good certificate stays in use).",
    ("listener", "result"),
)
QUEUE_DEPTH = MetricSpec("llm_exporter_queue_spans", Kind.GAUGE, "llm_request spans waiting in the processing queue.")
QUEUE_CAPACITY = MetricSpec(
    "llm_exporter_queue_capacity_spans", Kind.GAUGE, "Capacity of the processing queue, in spans."
)
EXPORTS_IN_PROGRESS = MetricSpec(
    "llm_exporter_exports_in_progress",
    Kind.GAUGE,
    "OTLP exports admitted and not yet answered (waiting for or being decoded); past otlp.max-wait-seconds of "
    "waiting work or otlp.max-concurrent-exports, further ones are refused (overloaded).",
)
MEMORY_LIMIT = MetricSpec(
    "llm_exporter_memory_limit_bytes",
    Kind.GAUGE,
    "Memory ceiling the exporter guards (the container's limit by default; 0: none); near it, exports are "
    "refused while spans are queued (memory_limit).",
)
# Served by prometheus_client's ProcessCollector: the help texts are its own, word for word.
PROCESS_RESIDENT_MEMORY = MetricSpec("process_resident_memory_bytes", Kind.GAUGE, "Resident memory size in bytes.")
PROCESS_VIRTUAL_MEMORY = MetricSpec("process_virtual_memory_bytes", Kind.GAUGE, "Virtual memory size in bytes.")
PROCESS_CPU = MetricSpec("process_cpu_seconds_total", Kind.COUNTER, "Total user and system CPU time spent in seconds.")
PROCESS_START_TIME = MetricSpec(
    "process_start_time_seconds", Kind.GAUGE, "Start time of the process since unix epoch in seconds."
)
PROCESS_OPEN_FDS = MetricSpec("process_open_fds", Kind.GAUGE, "Number of open file descriptors.")
PROCESS_MAX_FDS = MetricSpec("process_max_fds", Kind.GAUGE, "Maximum number of open file descriptors.")
# What it lacks (exporter.service.process_collector.ProcessExtrasCollector).
PROCESS_THREADS = MetricSpec("process_threads", Kind.GAUGE, "Threads of the exporter process.")
TENANT_PENDING = MetricSpec(
    "llm_exporter_tenant_join_pending_spans",
    Kind.GAUGE,
    "llm_request spans held back waiting for their caller's span to give their tenant.",
)
TENANT_JOINS = MetricSpec(
    "llm_exporter_tenant_resolutions_total",
    Kind.COUNTER,
    "Where each request's tenant came from: span, resource, trace (the caller's span), timeout (no caller "
    "span within the join window), none (no caller), overflow (join table full).",
    ("source",),
)
LABEL_OVERFLOW = MetricSpec(
    "llm_exporter_label_overflow_total",
    Kind.COUNTER,
    "Requests whose model or tenant value was folded into 'other': reason cap (model.cap or tenant.cap distinct "
    "values) or series_max (a new (model, tenant) pair would pass the --series.max budget).",
    ("label", "reason"),
)
SERIES = MetricSpec(
    "llm_exporter_series",
    Kind.GAUGE,
    "Series each metric family had in the last /metrics answer (histograms: buckets, _sum and _count): what it "
    "costs the Prometheus that scrapes it.",
    ("family",),
    scope=FIXED,
    each=83,
)

SELF_METRICS: tuple[MetricSpec, ...] = (
    BUILD_INFO,
    SPANS_RECEIVED,
    SPANS_ACCEPTED,
    SPANS_REJECTED,
    SPANS_DROPPED,
    OTHER_SPANS,
    BATCHES_REJECTED,
    UNAUTHORIZED,
    TLS_RELOADS,
    QUEUE_DEPTH,
    QUEUE_CAPACITY,
    TENANT_PENDING,
    TENANT_JOINS,
    LABEL_OVERFLOW,
    SERIES,
)

# The exporter process itself (exporter.service.process_collector).
PROCESS_METRICS: tuple[MetricSpec, ...] = (
    EXPORTS_IN_PROGRESS,
    MEMORY_LIMIT,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_CPU,
    PROCESS_START_TIME,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_THREADS,
)

# --- Engine (vLLM /metrics scraper) ---
# Not `instance`: Prometheus renames a scraped `instance` label to `exported_instance` (it sets its own).
ENGINE_LABELS = ("vllm_instance", "model")
ENGINE_UP = MetricSpec(
    "llm_engine_up",
    Kind.GAUGE,
    "1 when the last scrape of the vLLM server's /metrics succeeded, else 0 (its other gauges are then absent).",
    ENGINE_LABELS,
)
ENGINE_RUNNING = MetricSpec(
    "llm_engine_requests_running", Kind.GAUGE, "Requests in the engine's running batch.", ENGINE_LABELS
)
ENGINE_WAITING = MetricSpec(
    "llm_engine_requests_waiting", Kind.GAUGE, "Requests waiting in the engine's queue.", ENGINE_LABELS
)
ENGINE_KV_USAGE = MetricSpec(
    "llm_engine_kv_cache_usage_ratio",
    Kind.GAUGE,
    "Fraction of KV-cache blocks in use (0..1); with several data-parallel engines, the fullest one's.",
    ENGINE_LABELS,
)
ENGINE_KV_CAPACITY = MetricSpec(
    "llm_engine_kv_cache_capacity_tokens",
    Kind.GAUGE,
    "Tokens the KV cache holds (vLLM cache_config_info: kv_cache_size_tokens, or num_gpu_blocks x block_size).",
    ENGINE_LABELS,
)
ENGINE_KV_BYTES = MetricSpec(
    "llm_engine_kv_cache_bytes_per_token",
    Kind.GAUGE,
    "Bytes of KV cache one token occupies (kv_cache_memory_bytes / kv_cache_size_tokens).",
    ENGINE_LABELS,
)
# Per engine of a data-parallel server (vLLM --data-parallel-size N runs N engine cores behind one API server): the
# gauges above fold its engines (sum, sum, the fullest's KV), which hides one engine full and preempting while the
# others idle. Served only for a server with more than one engine, so a plain server costs nothing. Their series
# multiply with vLLM instances x engines, not with tenants (nor with models: one server serves one model): one per
# engine of each data-parallel instance. An engine holds at least one GPU, so a node's engines are at most its GPUs:
# the table's 1 per instance at 8 instances (8 each, 24 for the three) is that bound on the shared platform's 8 GPUs.
ENGINE_DP_LABELS = (*ENGINE_LABELS, "engine")
_DP_ONLY = (
    "; engine = vLLM's engine label (data-parallel rank). Only for vLLM servers with more than one engine (data "
    "parallel, --data-parallel-size > 1): a server with one engine has none of these series."
)
ENGINE_DP_RUNNING = MetricSpec(
    "llm_engine_dp_requests_running",
    Kind.GAUGE,
    f"Requests in each data-parallel engine's running batch (llm_engine_requests_running is their sum){_DP_ONLY}",
    ENGINE_DP_LABELS,
    scope=INSTANCE,  # x engines: at most one per GPU
)
ENGINE_DP_WAITING = MetricSpec(
    "llm_engine_dp_requests_waiting",
    Kind.GAUGE,
    f"Requests waiting in each data-parallel engine's queue (llm_engine_requests_waiting is their sum){_DP_ONLY}",
    ENGINE_DP_LABELS,
    scope=INSTANCE,  # x engines: at most one per GPU
)
ENGINE_DP_KV_USAGE = MetricSpec(
    "llm_engine_dp_kv_cache_usage_ratio",
    Kind.GAUGE,
    "Fraction of each data-parallel engine's KV-cache blocks in use (0..1; llm_engine_kv_cache_usage_ratio is the "
    f"fullest one's){_DP_ONLY}",
    ENGINE_DP_LABELS,
    scope=INSTANCE,  # x engines: at most one per GPU
)
ENGINE_PREFIX_QUERIES = MetricSpec(
    "llm_engine_prefix_cache_queries_tokens_total",
    Kind.COUNTER,
    "Prompt tokens looked up in the prefix cache (vLLM's counter, kept monotonic across restarts).",
    ENGINE_LABELS,
)
ENGINE_PREFIX_HITS = MetricSpec(
    "llm_engine_prefix_cache_hits_tokens_total",
    Kind.COUNTER,
    "Prompt tokens found in the prefix cache (vLLM's counter, kept monotonic across restarts).",
    ENGINE_LABELS,
)
ENGINE_PREEMPTIONS = MetricSpec(
    "llm_engine_preemptions_total",
    Kind.COUNTER,
    "Requests preempted because the KV cache was full (vLLM's counter, kept monotonic across restarts).",
    ENGINE_LABELS,
)
ENGINE_PROMPT_TOKENS = MetricSpec(
    "llm_engine_prompt_tokens_total",
    Kind.COUNTER,
    "Prompt tokens the engine processed (vLLM's counter, kept monotonic across restarts).",
    ENGINE_LABELS,
)
ENGINE_GENERATION_TOKENS = MetricSpec(
    "llm_engine_generation_tokens_total",
    Kind.COUNTER,
    "Tokens the engine generated (vLLM's counter, kept monotonic across restarts).",
    ENGINE_LABELS,
)
ENGINE_FINISHED = MetricSpec(
    "llm_engine_requests_finished_total",
    Kind.COUNTER,
    "Requests vLLM finished, by finished_reason (stop, length, abort, error, ...), monotonic across restarts.",
    (*ENGINE_LABELS, "finished_reason"),
    each=4,  # stop, length, abort, error
)
ENGINE_ADMISSION_REJECTIONS = MetricSpec(
    "llm_engine_admission_rejections_total",
    Kind.COUNTER,
    "Requests vLLM refused for capacity (queue limits), by reason, monotonic across restarts.",
    (*ENGINE_LABELS, "reason"),
)
ENGINE_HTTP_RESPONSES = MetricSpec(
    "llm_engine_http_responses_total",
    Kind.COUNTER,
    "Responses of the vLLM server's OpenAI API (POST /v1/* handlers), by status_class 2xx/4xx/5xx, monotonic across "
    "restarts; model is the instance's model when it serves one.",
    (*ENGINE_LABELS, "status_class"),
    each=3,  # 2xx, 4xx, 5xx
)
ENGINE_RESTARTS = MetricSpec(
    "llm_engine_restarts_total",
    Kind.COUNTER,
    "Restarts of the vLLM server seen by the scraper (its process start time changed).",
    ("vllm_instance",),
)
ENGINE_TIME_TO_READY = MetricSpec(
    "llm_engine_time_to_ready_seconds",
    Kind.GAUGE,
    "From the vLLM process start to the first good scrape after it, for starts the exporter watched (an upper "
    "bound by up to one scrape interval).",
    ("vllm_instance",),
)
ENGINE_STARTUP_PHASE = MetricSpec(
    "llm_engine_startup_phase_seconds",
    Kind.GAUGE,
    "Duration of a phase of the last vLLM start-up, from its start-up spans: total (Overall Loading), "
    "load_model, load_weights, warmup, allocate_kv_cache, ...",
    ("model", "phase"),
)
ENGINE_SCRAPE_ERRORS = MetricSpec(
    "llm_exporter_engine_scrape_errors_total",
    Kind.COUNTER,
    "Failed scrapes of a vLLM server's /metrics, by reason: refused, timeout, http_status, parse_error, truncated, "
    "too_large, error.",
    ("vllm_instance", "reason"),
)
# What vLLM counts beyond the basics: opt-in (--enable-mfu-metrics, --kv-cache-metrics), with a KV connector, with
# speculative decoding, or only in newer versions. Each is served only where vLLM serves it: an older vLLM, or one
# without the flag, gives no series rather than zeros. One vLLM server serves one model, so these cost per instance.
_MONOTONIC = "vLLM's counter, kept monotonic across restarts"
ENGINE_ESTIMATED_FLOPS = MetricSpec(
    "llm_engine_estimated_flops_per_gpu_total",
    Kind.COUNTER,
    "Floating-point operations vLLM estimates each GPU of the instance did (vllm:estimated_flops_per_gpu, with "
    f"--enable-mfu-metrics; the mean over data-parallel engines; {_MONOTONIC}). Against the GPU's peak: "
    "llm_engine_compute_at_peak_seconds_total.",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_ESTIMATED_READ = MetricSpec(
    "llm_engine_estimated_read_bytes_per_gpu_total",
    Kind.COUNTER,
    "Bytes vLLM estimates each GPU of the instance read from device memory (vllm:estimated_read_bytes_per_gpu, "
    f"with --enable-mfu-metrics; {_MONOTONIC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_ESTIMATED_WRITE = MetricSpec(
    "llm_engine_estimated_write_bytes_per_gpu_total",
    Kind.COUNTER,
    "Bytes vLLM estimates each GPU of the instance wrote to device memory (vllm:estimated_write_bytes_per_gpu, "
    f"with --enable-mfu-metrics; {_MONOTONIC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_PROMPT_TOKENS_BY_SOURCE = MetricSpec(
    "llm_engine_prompt_tokens_by_source_total",
    Kind.COUNTER,
    "Prompt tokens by where their KV came from: source = local_compute (prefilled here), local_cache_hit (this "
    f"engine's prefix cache) or external_kv_transfer (a KV connector: another instance, LMCache, ...) ({_MONOTONIC}).",
    (*ENGINE_LABELS, "source"),
    each=3,
    scope=INSTANCE,
)
ENGINE_PROMPT_TOKENS_CACHED = MetricSpec(
    "llm_engine_prompt_tokens_cached_total",
    Kind.COUNTER,
    f"Prompt tokens not computed because their KV was cached, locally or through a KV connector ({_MONOTONIC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_PROMPT_TOKENS_CACHED_BY_SOURCE = MetricSpec(
    "llm_engine_prompt_tokens_cached_by_source_total",
    Kind.COUNTER,
    "Prefix-cache hit tokens by the tier that held them: source = device (this GPU's memory), host (offloaded to "
    "CPU memory), disk, p2p (another vLLM instance) or external_unspecified; counted at admission "
    f"({_MONOTONIC}).",
    (*ENGINE_LABELS, "source"),
    each=5,
    scope=INSTANCE,
)
ENGINE_EXTERNAL_PREFIX_QUERIES = MetricSpec(
    "llm_engine_external_prefix_cache_queries_tokens_total",
    Kind.COUNTER,
    f"Prompt tokens looked up through the KV connector (cross-instance cache: LMCache, NIXL, ...) ({_MONOTONIC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_EXTERNAL_PREFIX_HITS = MetricSpec(
    "llm_engine_external_prefix_cache_hits_tokens_total",
    Kind.COUNTER,
    f"Prompt tokens the KV connector supplied instead of a prefill ({_MONOTONIC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_WAITING_BY_REASON = MetricSpec(
    "llm_engine_requests_waiting_by_reason",
    Kind.GAUGE,
    "Requests waiting in the engine's queue by reason: capacity (no room in the batch or the KV cache) or deferred "
    "(held back by a transient constraint: LoRA budget, a KV transfer in flight); they sum to "
    "llm_engine_requests_waiting.",
    (*ENGINE_LABELS, "reason"),
    each=2,
    scope=INSTANCE,
)
ENGINE_SLEEP_STATE = MetricSpec(
    "llm_engine_sleep_state",
    Kind.GAUGE,
    "Engines of the instance in each sleep state (1 or 0 with one engine): sleep_state = awake, weights_offloaded "
    "(sleep level 1) or discard_all (level 2). A sleeping engine holds its GPUs but serves nothing.",
    (*ENGINE_LABELS, "sleep_state"),
    each=3,
    scope=INSTANCE,
)
# vLLM's own bucket edges are re-exported as they are (it lets them be configured); the costs count its defaults.
_RESIDENCY_EDGES = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0,
)  # fmt: skip
_RESIDENCY = "with --kv-cache-metrics, sampled blocks only (--kv-cache-metrics-sample, default 1 %)"
ENGINE_KV_BLOCK_LIFETIME = MetricSpec(
    "llm_engine_kv_block_lifetime_seconds",
    Kind.HISTOGRAM,
    f"KV-cache blocks from allocation until they are evicted for reuse (vllm:kv_block_lifetime_seconds, {_RESIDENCY};"
    " vLLM's bucket edges; monotonic across restarts).",
    ENGINE_LABELS,
    _RESIDENCY_EDGES,
    scope=INSTANCE,
)
ENGINE_KV_BLOCK_IDLE = MetricSpec(
    "llm_engine_kv_block_idle_before_evict_seconds",
    Kind.HISTOGRAM,
    "Time KV-cache blocks sat unused before they were evicted (vllm:kv_block_idle_before_evict_seconds, "
    f"{_RESIDENCY}): blocks evicted after a short idle time were likely to be used again, so the cache is small "
    "for the traffic's reuse.",
    ENGINE_LABELS,
    _RESIDENCY_EDGES,
    scope=INSTANCE,
)
ENGINE_KV_BLOCK_REUSE_GAP = MetricSpec(
    "llm_engine_kv_block_reuse_gap_seconds",
    Kind.HISTOGRAM,
    "Time between consecutive uses of a cached KV block, observed when it is evicted (vllm:kv_block_reuse_gap_seconds"
    f", {_RESIDENCY}).",
    ENGINE_LABELS,
    _RESIDENCY_EDGES,
    scope=INSTANCE,
)
ENGINE_PREFILL_KV_COMPUTED = MetricSpec(
    "llm_engine_request_prefill_kv_computed_tokens",
    Kind.HISTOGRAM,
    "Prompt tokens each request actually prefilled, cached ones excluded (vllm:request_prefill_kv_computed_tokens, "
    "vLLM's bucket edges; monotonic across restarts); beside llm_request_input_tokens it shows what caching saved.",
    ENGINE_LABELS,
    (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0),  # 32k context
    scope=INSTANCE,
)
_SPEC = f"with speculative decoding; {_MONOTONIC}"
ENGINE_SPEC_DRAFTS = MetricSpec(
    "llm_engine_spec_decode_drafts_total",
    Kind.COUNTER,
    f"Speculative-decoding drafts proposed ({_SPEC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_SPEC_DRAFT_TOKENS = MetricSpec(
    "llm_engine_spec_decode_draft_tokens_total",
    Kind.COUNTER,
    f"Draft tokens proposed ({_SPEC}).",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_SPEC_ACCEPTED = MetricSpec(
    "llm_engine_spec_decode_accepted_tokens_total",
    Kind.COUNTER,
    f"Draft tokens the target model accepted ({_SPEC}); over draft tokens: the acceptance rate.",
    ENGINE_LABELS,
    scope=INSTANCE,
)
ENGINE_SPEC_ACCEPTED_PER_POSITION = MetricSpec(
    "llm_engine_spec_decode_accepted_tokens_per_position_total",
    Kind.COUNTER,
    "Accepted draft tokens by position in the draft (0 = first); over llm_engine_spec_decode_drafts_total: the "
    f"acceptance rate per position ({_SPEC}).",
    (*ENGINE_LABELS, "position"),
    each=4,  # one per speculative token (--num-speculative-tokens, commonly 3 to 5)
    scope=INSTANCE,
)
# Against the peak table (exporter/gpu/peaks.py), per GPU of the instance: counters whose rate is the utilisation,
# so any window gives the mean over it. A GPU missing from the table has no series (its name is logged once).
ENGINE_GPU_LABELS = (*ENGINE_LABELS, "gpu")
ENGINE_COMPUTE_AT_PEAK = MetricSpec(
    "llm_engine_compute_at_peak_seconds_total",
    Kind.COUNTER,
    "vLLM's estimated FLOPs per GPU over the GPU's dense peak at precision (bf16 = BF16/FP16, fp8; from the peak "
    "table, by NVML product name): the seconds that work would take at peak. Its rate is the model FLOPs "
    "utilisation (MFU, 0..1). gpu = NVML UUID; absent without --enable-mfu-metrics or for a GPU not in the table.",
    (*ENGINE_GPU_LABELS, "precision"),
    each=2,  # bf16, fp8 (GPUs without FP8 units: bf16 only)
    scope=GPU,
)
ENGINE_MEMORY_TRAFFIC_AT_PEAK = MetricSpec(
    "llm_engine_memory_traffic_at_peak_seconds_total",
    Kind.COUNTER,
    "vLLM's estimated bytes read and written per GPU over the GPU's peak memory bandwidth (peak table): the "
    "seconds that traffic would take at peak. Its rate is the estimated memory-bandwidth utilisation (0..1), to "
    "set beside the measured gpu_dram_bandwidth_utilization_ratio. gpu = NVML UUID; absent as the compute one.",
    ENGINE_GPU_LABELS,
    scope=GPU,
)
ENGINE_GPU_MEMORY = MetricSpec(
    "llm_engine_gpu_memory_bytes",
    Kind.GAUGE,
    "The instance's device memory on each of its GPUs by purpose: kv_cache (vLLM's KV cache per GPU, from "
    "cache_config_info kv_cache_memory_bytes) and other (the rest of its processes' NVML memory: weights, "
    "activations, CUDA graphs). Only where vLLM reports the KV size (--kv-cache-memory-bytes; without it vLLM "
    "sizes the cache from --gpu-memory-utilization and reports no bytes) and NVML the processes' memory.",
    (*ENGINE_GPU_LABELS, "purpose"),
    each=2,
    scope=GPU,
)
ENGINE_METRICS: tuple[MetricSpec, ...] = (
    ENGINE_UP,
    ENGINE_RUNNING,
    ENGINE_WAITING,
    ENGINE_KV_USAGE,
    ENGINE_KV_CAPACITY,
    ENGINE_KV_BYTES,
    ENGINE_DP_RUNNING,
    ENGINE_DP_WAITING,
    ENGINE_DP_KV_USAGE,
    ENGINE_PREFIX_QUERIES,
    ENGINE_PREFIX_HITS,
    ENGINE_PREEMPTIONS,
    ENGINE_PROMPT_TOKENS,
    ENGINE_GENERATION_TOKENS,
    ENGINE_FINISHED,
    ENGINE_ADMISSION_REJECTIONS,
    ENGINE_HTTP_RESPONSES,
    ENGINE_RESTARTS,
    ENGINE_TIME_TO_READY,
    ENGINE_STARTUP_PHASE,
    ENGINE_SCRAPE_ERRORS,
    ENGINE_ESTIMATED_FLOPS,
    ENGINE_ESTIMATED_READ,
    ENGINE_ESTIMATED_WRITE,
    ENGINE_PROMPT_TOKENS_BY_SOURCE,
    ENGINE_PROMPT_TOKENS_CACHED,
    ENGINE_PROMPT_TOKENS_CACHED_BY_SOURCE,
    ENGINE_EXTERNAL_PREFIX_QUERIES,
    ENGINE_EXTERNAL_PREFIX_HITS,
    ENGINE_WAITING_BY_REASON,
    ENGINE_SLEEP_STATE,
    ENGINE_KV_BLOCK_LIFETIME,
    ENGINE_KV_BLOCK_IDLE,
    ENGINE_KV_BLOCK_REUSE_GAP,
    ENGINE_PREFILL_KV_COMPUTED,
    ENGINE_SPEC_DRAFTS,
    ENGINE_SPEC_DRAFT_TOKENS,
    ENGINE_SPEC_ACCEPTED,
    ENGINE_SPEC_ACCEPTED_PER_POSITION,
    ENGINE_COMPUTE_AT_PEAK,
    ENGINE_MEMORY_TRAFFIC_AT_PEAK,
    ENGINE_GPU_MEMORY,
)

# --- Attribution (who used the GPU) ---
PHASE_LABELS = ("model", "phase")
GPU_SECONDS = MetricSpec(
    "llm_gpu_seconds_total",
    Kind.COUNTER,
    "GPU time attributed to requests: each instance's GPUs x time, split over its requests by their token work. "
    "Usage basis; add llm_gpu_idle_seconds_total for allocation. By phase: llm_gpu_seconds_by_phase_total.",
    REQUEST_LABELS,
)
ENERGY = MetricSpec(
    "llm_energy_joules_total",
    Kind.COUNTER,
    "GPU energy (NVML energy counter) attributed to requests by their token work. By phase: "
    "llm_energy_by_phase_joules_total.",
    REQUEST_LABELS,
)
COST = MetricSpec(
    "llm_cost_usd_total",
    Kind.COUNTER,
    "Dollars attributed to requests: their GPU-seconds at the GPU's hourly price plus their energy at the kWh "
    "price. By phase: llm_cost_by_phase_usd_total.",
    REQUEST_LABELS,
)
KV_TOKEN_SECONDS = MetricSpec(
    "llm_kv_token_seconds_total",
    Kind.COUNTER,
    "Integral of each request's resident KV-cache tokens over its prefill and decode: the memory bill of long "
    "context. By phase: llm_kv_token_seconds_by_phase_total.",
    REQUEST_LABELS,
)
# The phase split is a per-model question (which phase dominates a model's bill): per tenant it would double the
# four counters above (2,400 series at 200 tenants x 3 models), per model it costs 8 series.
GPU_SECONDS_BY_PHASE = MetricSpec(
    "llm_gpu_seconds_by_phase_total",
    Kind.COUNTER,
    "llm_gpu_seconds_total per model by phase (prefill or decode).",
    PHASE_LABELS,
    each=2,
)
ENERGY_BY_PHASE = MetricSpec(
    "llm_energy_by_phase_joules_total",
    Kind.COUNTER,
    "llm_energy_joules_total per model by phase (prefill or decode).",
    PHASE_LABELS,
    each=2,
)
COST_BY_PHASE = MetricSpec(
    "llm_cost_by_phase_usd_total",
    Kind.COUNTER,
    "llm_cost_usd_total per model by phase (prefill or decode).",
    PHASE_LABELS,
    each=2,
)
KV_TOKEN_SECONDS_BY_PHASE = MetricSpec(
    "llm_kv_token_seconds_by_phase_total",
    Kind.COUNTER,
    "llm_kv_token_seconds_total per model by phase (prefill or decode).",
    PHASE_LABELS,
    each=2,
)
IDLE_SECONDS = MetricSpec(
    "llm_gpu_idle_seconds_total",
    Kind.COUNTER,
    "GPU time with no token work: intervals where the instance's counters did not move, or GPUs no vLLM uses.",
    ("gpu",),
)
IDLE_ENERGY = MetricSpec(
    "llm_idle_energy_joules_total", Kind.COUNTER, "GPU energy of idle time (see llm_gpu_idle_seconds_total).", ("gpu",)
)
IDLE_COST = MetricSpec("llm_idle_cost_usd_total", Kind.COUNTER, "Dollars of idle GPU time and energy.", ("gpu",))
UNATTRIBUTED_SECONDS = MetricSpec(
    "llm_gpu_unattributed_seconds_total",
    Kind.COUNTER,
    "GPU time with token work that no request was charged for: reason unclaimed (its spans never came within the "
    "retention window) or gpu_down (the GPU did not answer, so nothing could be measured).",
    ("gpu", "reason"),
)
UNATTRIBUTED_ENERGY = MetricSpec(
    "llm_unattributed_energy_joules_total",
    Kind.COUNTER,
    "GPU energy not charged to any request (reasons as llm_gpu_unattributed_seconds_total).",
    ("gpu", "reason"),
)
UNATTRIBUTED_COST = MetricSpec(
    "llm_unattributed_cost_usd_total",
    Kind.COUNTER,
    "Dollars not charged to any request (reasons as llm_gpu_unattributed_seconds_total).",
    ("gpu", "reason"),
)
# A multi-node group's worker GPUs on this node (no spans, no counters here): one series per group and model on
# the worker's node, whatever the tenants (the tenant split is a fleet recording rule): 3 models x 3 = 9 at most.
GROUP_LABELS = ("group", "model")
GROUP_GPU_SECONDS = MetricSpec(
    "llm_group_gpu_seconds_total",
    Kind.COUNTER,
    "GPU time of a multi-node group's worker GPUs on this node while they were busy, charged to the group (its "
    "leader's instance id, or the configured group) and model ('' when only the leader knows it). Per tenant: the "
    "fleet rule group_model_tenant:llm_gpu_seconds:rate5m, from the leader's tenant shares.",
    GROUP_LABELS,
)
GROUP_ENERGY = MetricSpec(
    "llm_group_energy_joules_total",
    Kind.COUNTER,
    "GPU energy of a multi-node group's worker GPUs on this node while they were busy (see "
    "llm_group_gpu_seconds_total); idle time is llm_idle_energy_joules_total.",
    GROUP_LABELS,
)
GROUP_COST = MetricSpec(
    "llm_group_cost_usd_total",
    Kind.COUNTER,
    "Dollars of a multi-node group's worker GPUs on this node while they were busy (see llm_group_gpu_seconds_total).",
    GROUP_LABELS,
)
PENDING_ENERGY = MetricSpec(
    "llm_attribution_pending_joules",
    Kind.GAUGE,
    "GPU energy measured in intervals still inside the retention window and not yet claimed by a request: it "
    "becomes attributed when spans arrive, or unattributed when the interval leaves the window.",
    ("gpu",),
)
ATTRIBUTION_SPANS = MetricSpec(
    "llm_exporter_attribution_spans_total",
    Kind.COUNTER,
    "Request spans by attribution outcome: charged, partial (part of its window was before the exporter's "
    "data), late (its window left the retention window first), no_instance, no_gpus, overflow.",
    ("outcome",),
)
FORWARDED_SPANS = MetricSpec(
    "llm_exporter_forwarded_spans_total",
    Kind.COUNTER,
    "Enriched llm_request spans re-emitted to the trace backend, by outcome: sent, dropped_queue_full, "
    "dropped_export_failed (the backend was down or slow).",
    ("outcome",),
)
ATTRIBUTION_METRICS: tuple[MetricSpec, ...] = (
    GPU_SECONDS,
    ENERGY,
    COST,
    KV_TOKEN_SECONDS,
    GPU_SECONDS_BY_PHASE,
    ENERGY_BY_PHASE,
    COST_BY_PHASE,
    KV_TOKEN_SECONDS_BY_PHASE,
    IDLE_SECONDS,
    IDLE_ENERGY,
    IDLE_COST,
    GROUP_GPU_SECONDS,
    GROUP_ENERGY,
    GROUP_COST,
    UNATTRIBUTED_SECONDS,
    UNATTRIBUTED_ENERGY,
    UNATTRIBUTED_COST,
    PENDING_ENERGY,
    ATTRIBUTION_SPANS,
    FORWARDED_SPANS,
)

# --- GPU (NVML sampler) ---
GPU_LABELS = ("gpu", "index")  # gpu = NVML UUID (stable across reboots), index = NVML index (0..N-1 on the node)
_GPU = "Labels: gpu = NVML UUID, index = NVML index."
GPU_UP = MetricSpec(
    "gpu_up",
    Kind.GAUGE,
    "1 when the GPU's last NVML reading succeeded; 0 when it is down (lost, reset required or unknown error; "
    f"retried periodically). {_GPU}",
    GPU_LABELS,
)
GPU_INFO = MetricSpec(
    "gpu_info",
    Kind.GAUGE,
    f"Always 1; identity of a GPU: name = product name, driver_version = NVIDIA driver version. {_GPU}",
    (*GPU_LABELS, "name", "driver_version"),
)
GPU_MEMORY_USED = MetricSpec(
    "gpu_memory_used_bytes",
    Kind.GAUGE,
    f"Device memory allocated by processes and the driver, excluding reserved memory (NVML memory info v2). {_GPU}",
    GPU_LABELS,
)
GPU_MEMORY_RESERVED = MetricSpec(
    "gpu_memory_reserved_bytes",
    Kind.GAUGE,
    f"Device memory reserved by the driver and firmware, unusable by processes (NVML memory info v2). {_GPU}",
    GPU_LABELS,
)
GPU_MEMORY_TOTAL = MetricSpec("gpu_memory_total_bytes", Kind.GAUGE, f"Installed device memory. {_GPU}", GPU_LABELS)
GPU_UTILIZATION = MetricSpec(
    "gpu_utilization_ratio",
    Kind.GAUGE,
    "Share of time (0..1) one or more kernels ran, over the driver's last sample period (NVML utilization.gpu). "
    f"Busy time, not how much of the GPU's compute was used. {_GPU}",
    GPU_LABELS,
)
GPU_MEMORY_BUSY = MetricSpec(
    "gpu_memory_busy_ratio",
    Kind.GAUGE,
    "Share of time (0..1) device memory was being read or written (NVML utilization.memory). A busy-time share, "
    f"NOT bandwidth: see gpu_dram_bandwidth_utilization_ratio. {_GPU}",
    GPU_LABELS,
)
GPU_DRAM_BANDWIDTH = MetricSpec(
    "gpu_dram_bandwidth_utilization_ratio",
    Kind.GAUGE,
    "DRAM bandwidth used as a share (0..1) of the GPU's peak, averaged since the previous sample (NVML GPM "
    f"DRAM_BW_UTIL). Only for GPUs with GPM (Hopper and later). {_GPU}",
    GPU_LABELS,
)
GPU_POWER = MetricSpec("gpu_power_watts", Kind.GAUGE, f"Power draw (NVML power usage). {_GPU}", GPU_LABELS)
GPU_ENERGY = MetricSpec(
    "gpu_energy_joules_total",
    Kind.COUNTER,
    "Energy consumed (NVML total energy since driver load), kept monotonic across driver reloads; the last "
    f"value stays while the GPU is down. {_GPU}",
    GPU_LABELS,
)
GPU_SM_CLOCK = MetricSpec("gpu_sm_clock_hertz", Kind.GAUGE, f"Current SM clock. {_GPU}", GPU_LABELS)
GPU_MEMORY_CLOCK = MetricSpec("gpu_memory_clock_hertz", Kind.GAUGE, f"Current memory clock. {_GPU}", GPU_LABELS)
GPU_TEMPERATURE = MetricSpec("gpu_temperature_celsius", Kind.GAUGE, f"GPU die temperature. {_GPU}", GPU_LABELS)
GPU_MEMORY_TEMPERATURE = MetricSpec(
    "gpu_memory_temperature_celsius",
    Kind.GAUGE,
    f"Memory (HBM) temperature, for GPUs that report it. {_GPU}",
    GPU_LABELS,
)
GPU_CLOCK_EVENT_REASON = MetricSpec(
    "gpu_clock_event_reason",
    Kind.GAUGE,
    "1 when the reason is now holding the clocks down or fixing them, else 0 (NVML clock event reasons). reason: "
    "idle, applications_clocks_setting, sw_power_cap, hw_slowdown, sync_boost, sw_thermal_slowdown, "
    f"hw_thermal_slowdown, hw_power_brake_slowdown, display_clock_setting. {_GPU}",
    (*GPU_LABELS, "reason"),
    each=9,  # one per decoded NVML reason (gpu.records.CLOCK_EVENT_REASONS)
)
GPU_XID_ERRORS = MetricSpec(
    "gpu_xid_errors_total",
    Kind.COUNTER,
    "Critical XID errors the driver reported since the exporter started, by XID code (xid; at most 32 codes per "
    f"GPU, then 'other'). {_GPU}",
    (*GPU_LABELS, "xid"),
)
GPU_PROCESS_MEMORY = MetricSpec(
    "gpu_process_memory_used_bytes",
    Kind.GAUGE,
    "Device memory used by a running compute process; pid = host PID (not a container's own), the 64 largest "
    f"per GPU. {_GPU}",
    (*GPU_LABELS, "pid"),
)
GPU_SAMPLER_UP = MetricSpec(
    "llm_exporter_gpu_sampler_up",
    Kind.GAUGE,
    "1 when NVML is loaded and GPUs are sampled; 0 when the GPU part is off (NVML library missing, NVML failed, "
    "no GPU, or disabled).",
)
GPU_SAMPLING_ERRORS = MetricSpec(
    "llm_exporter_gpu_sampling_errors_total",
    Kind.COUNTER,
    "Failed NVML calls, by reason: the NVML error in snake case (not_supported, no_permission, gpu_is_lost, "
    "reset_required, unknown, timeout, ...) or internal (an exporter bug).",
    ("reason",),
)
GPU_SAMPLE_DURATION = MetricSpec(
    "llm_exporter_gpu_sample_duration_seconds",
    Kind.GAUGE,
    "Wall time of the last sampling pass over all GPUs.",
)
GPU_METRICS: tuple[MetricSpec, ...] = (
    GPU_UP,
    GPU_INFO,
    GPU_MEMORY_USED,
    GPU_MEMORY_RESERVED,
    GPU_MEMORY_TOTAL,
    GPU_UTILIZATION,
    GPU_MEMORY_BUSY,
    GPU_DRAM_BANDWIDTH,
    GPU_POWER,
    GPU_ENERGY,
    GPU_SM_CLOCK,
    GPU_MEMORY_CLOCK,
    GPU_TEMPERATURE,
    GPU_MEMORY_TEMPERATURE,
    GPU_CLOCK_EVENT_REASON,
    GPU_XID_ERRORS,
    GPU_PROCESS_MEMORY,
    GPU_SAMPLER_UP,
    GPU_SAMPLING_ERRORS,
    GPU_SAMPLE_DURATION,
)

# --- Topology (instances, pods, GPUs per instance) ---
INSTANCE_INFO = MetricSpec(
    "llm_engine_instance_info",
    Kind.GAUGE,
    "Always 1 per vLLM instance discovered on this node: vllm_instance = its id (the same as the llm_engine_* "
    "series), model = configured or inferred model ('' until known), namespace and pod (Kubernetes, else ''), "
    "gpus = its GPUs as NVML UUIDs or indexes, comma-separated ('' when unknown); role = prefill, decode or both "
    "(prefill/decode disaggregation: the pod's llm-d.ai/role label, the static config's role, vLLM's "
    "--kv-transfer-config kv_role, else ''); group = the multi-node group it leads (its own id for a "
    "LeaderWorkerSet leader, the --master-addr:port rendezvous of a multi-node vLLM, the static config's group; '' "
    "when alone); mfu_metrics = whether vLLM's estimated "
    "FLOPs and bytes count: on, off (served but 0 after the engine did work: start vLLM with "
    "--enable-mfu-metrics), absent (this vLLM does not serve them) or unknown (no scrape or no work yet).",
    ("vllm_instance", "model", "namespace", "pod", "gpus", "role", "mfu_metrics", "group"),
)
GROUP_WORKER_INFO = MetricSpec(
    "llm_group_worker_info",
    Kind.GAUGE,
    "Always 1 per multi-node group worker on this node (a LeaderWorkerSet worker pod, a vllm serve --headless "
    "pod or process, or a static entry with a group and no url): worker = its id, group = the group (its "
    "leader's vllm_instance with LeaderWorkerSet, the vLLM rendezvous address, or the configured group), model ('' "
    "when only the leader knows it), namespace, pod, gpus. Its GPUs' busy time is llm_group_*_total.",
    ("worker", "group", "model", "namespace", "pod", "gpus"),
    scope=INSTANCE,
)
TOPOLOGY_INSTANCES = MetricSpec(
    "llm_exporter_topology_instances",
    Kind.GAUGE,
    "vLLM instances the topology source sees now (source = static, kubernetes or processes).",
    ("source",),
)
TOPOLOGY_STALE = MetricSpec(
    "llm_exporter_topology_stale",
    Kind.GAUGE,
    "1 when the topology source could not confirm its view lately (API server unreachable, not yet listed) and "
    "serves the last known one, else 0.",
    ("source",),
)
TOPOLOGY_OBSERVED = MetricSpec(
    "llm_exporter_topology_observed_timestamp_seconds",
    Kind.GAUGE,
    "Unix time the topology source last confirmed its view (absent before the first success).",
    ("source",),
)
TOPOLOGY_ERRORS = MetricSpec(
    "llm_exporter_topology_errors_total",
    Kind.COUNTER,
    "Topology discovery failures, by source (kubernetes, podresources, processes) and reason (unreachable, "
    "timeout, unauthorized, server_error, http_error, connection, bad_response, expired, socket_missing, "
    "unavailable, rpc_error, proc_unreadable, gpu_processes, internal).",
    ("source", "reason"),
)
TOPOLOGY_METRICS: tuple[MetricSpec, ...] = (
    INSTANCE_INFO,
    GROUP_WORKER_INFO,
    TOPOLOGY_INSTANCES,
    TOPOLOGY_STALE,
    TOPOLOGY_OBSERVED,
    TOPOLOGY_ERRORS,
)

ALL: tuple[MetricSpec, ...] = (
    *LATENCY_HISTOGRAMS,
    *TENANT_HISTOGRAMS,
    REQUESTS,
    TOKENS,
    *LENGTH_HISTOGRAMS,
    PD_HANDOFF,
    PD_DECODE_TTFT,
    PD_HALVES,
    *SELF_METRICS,
    *PROCESS_METRICS,
    *ENGINE_METRICS,
    *ATTRIBUTION_METRICS,
    *GPU_METRICS,
    *TOPOLOGY_METRICS,
)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in ALL}
