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


@dataclass(frozen=True)
class MetricSpec:
    """One exposed metric: its full name (counters end in `_total`), type, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    default_buckets: tuple[float, ...] = field(default=())

    @property
    def family(self) -> str:
        """Name of the metric family (counters without their `_total` suffix), as prometheus_client wants it."""
        if self.kind is Kind.COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


REQUEST_LABELS = ("model", "tenant")

# Bucket defaults are finer than vLLM's at the low end and contain the usual SLO thresholds
# (TTFT 0.1, 0.25, 0.5, 1, 2.5 s; TPOT 0.01 .. 0.2 s), since SLO alerts need the threshold to be a bucket edge.
TTFT = MetricSpec(
    "llm_request_time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Time from request arrival at the vLLM API server to its first output token (span gen_ai.latency."
    "time_to_first_token).",
    REQUEST_LABELS,
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
)
TPOT = MetricSpec(
    "llm_request_time_per_output_token_seconds",
    Kind.HISTOGRAM,
    "Mean time per output token after the first: decode time / (completion tokens - 1). Not observed for "
    "sequences with at most one output token.",
    REQUEST_LABELS,
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
)
QUEUE = MetricSpec(
    "llm_request_queue_seconds",
    Kind.HISTOGRAM,
    "Time the request waited in the engine's queue before it was first scheduled.",
    REQUEST_LABELS,
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
PREFILL = MetricSpec(
    "llm_request_prefill_seconds",
    Kind.HISTOGRAM,
    "Time from first scheduling to the first output token (prompt processing).",
    REQUEST_LABELS,
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DECODE = MetricSpec(
    "llm_request_decode_seconds",
    Kind.HISTOGRAM,
    "Time from the first to the last output token.",
    REQUEST_LABELS,
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
E2E = MetricSpec(
    "llm_request_e2e_seconds",
    Kind.HISTOGRAM,
    "Time from request arrival at the vLLM API server to its completion.",
    REQUEST_LABELS,
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
)

LATENCY_HISTOGRAMS: tuple[MetricSpec, ...] = (TTFT, TPOT, QUEUE, PREFILL, DECODE, E2E)

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
    "unsupported_media_type, unsupported_encoding).",
    ("protocol", "reason"),
)
QUEUE_DEPTH = MetricSpec("llm_exporter_queue_spans", Kind.GAUGE, "llm_request spans waiting in the processing queue.")
QUEUE_CAPACITY = MetricSpec(
    "llm_exporter_queue_capacity_spans", Kind.GAUGE, "Capacity of the processing queue, in spans."
)
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
    "Requests whose model or tenant value was folded into 'other' because its cap of distinct values was hit.",
    ("label",),
)

SELF_METRICS: tuple[MetricSpec, ...] = (
    BUILD_INFO,
    SPANS_RECEIVED,
    SPANS_ACCEPTED,
    SPANS_REJECTED,
    SPANS_DROPPED,
    OTHER_SPANS,
    BATCHES_REJECTED,
    QUEUE_DEPTH,
    QUEUE_CAPACITY,
    TENANT_PENDING,
    TENANT_JOINS,
    LABEL_OVERFLOW,
)

# --- Engine (vLLM /metrics scraper) ---
ENGINE_METRICS: tuple[MetricSpec, ...] = ()

# --- GPU (NVML sampler) ---
GPU_METRICS: tuple[MetricSpec, ...] = ()

# --- Topology (instances, pods, GPUs per instance) ---
TOPOLOGY_METRICS: tuple[MetricSpec, ...] = ()

ALL: tuple[MetricSpec, ...] = (
    *LATENCY_HISTOGRAMS,
    REQUESTS,
    TOKENS,
    *SELF_METRICS,
    *ENGINE_METRICS,
    *GPU_METRICS,
    *TOPOLOGY_METRICS,
)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in ALL}
