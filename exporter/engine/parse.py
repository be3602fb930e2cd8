"""vLLM's /metrics text to a plain EngineReading, with names normalised across vLLM 0.6 .. 0.33. Pure.

Only the series we use are parsed (a cheap name check skips the rest), so a 1,000-line scrape costs little.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field


def _counter(name: str) -> tuple[str, str]:
    return name + "_total", name


# Canonical field <- every name vLLM has used for it (with and without `_total`: prometheus_client before 0.19
# and vLLM's own old exporters wrote counters without the suffix).
_ALIASES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prefix_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_queries",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries",
    ),
    "prefix_hits": (
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_hits",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits",
    ),
    "preemptions": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
    "generation_tokens": ("vllm:generation_tokens_total", "vllm:generation_tokens"),
    "finished": ("vllm:request_success_total", "vllm:request_success"),
    "cache_config": ("vllm:cache_config_info",),
    "admission_rejections": ("vllm:admission_rejections_total", "vllm:admission_rejections"),
    "http": ("http_requests_total",),
    "process_start": ("process_start_time_seconds",),
    # Newer and opt-in series (docs/design.md §3); absent from older versions, and then absent here too.
    "flops": _counter("vllm:estimated_flops_per_gpu"),  # --enable-mfu-metrics
    "read_bytes": _counter("vllm:estimated_read_bytes_per_gpu"),
    "write_bytes": _counter("vllm:estimated_write_bytes_per_gpu"),
    "prompt_cached": _counter("vllm:prompt_tokens_cached"),
    "external_queries": _counter("vllm:external_prefix_cache_queries"),  # KV connectors (LMCache, NIXL, ...)
    "external_hits": _counter("vllm:external_prefix_cache_hits"),
    "spec_drafts": _counter("vllm:spec_decode_num_drafts"),  # speculative decoding
    "spec_draft_tokens": _counter("vllm:spec_decode_num_draft_tokens"),
    "spec_accepted": _counter("vllm:spec_decode_num_accepted_tokens"),
    "prompt_by_source": _counter("vllm:prompt_tokens_by_source"),
    "cached_by_source": _counter("vllm:prompt_tokens_cached_by_source"),
    "spec_accepted_per_pos": _counter("vllm:spec_decode_num_accepted_tokens_per_pos"),
    "waiting_by_reason": ("vllm:num_requests_waiting_by_reason",),
    "sleep_state": ("vllm:engine_sleep_state",),
}
# Histograms vLLM keeps that the exporter re-exports (its own bucket edges, whatever they are): canonical field <-
# vLLM's family name. The residency ones need --kv-cache-metrics.
HISTOGRAM_FIELDS: dict[str, str] = {
    "kv_block_lifetime": "vllm:kv_block_lifetime_seconds",
    "kv_block_idle_before_evict": "vllm:kv_block_idle_before_evict_seconds",
    "kv_block_reuse_gap": "vllm:kv_block_reuse_gap_seconds",
    "prefill_kv_computed": "vllm:request_prefill_kv_computed_tokens",
}
_FIELD_OF: dict[str, str] = {name: key for key, names in _ALIASES.items() for name in names}
_HISTOGRAM_OF: dict[str, tuple[str, str]] = {
    f"{family}_{part}": (key, part) for key, family in HISTOGRAM_FIELDS.items() for part in ("bucket", "sum", "count")
}
COUNTER_FIELDS = (
    "prefix_queries",
    "prefix_hits",
    "preemptions",
    "prompt_tokens",
    "generation_tokens",
    "flops",
    "read_bytes",
    "write_bytes",
    "prompt_cached",
    "external_queries",
    "external_hits",
    "spec_drafts",
    "spec_draft_tokens",
    "spec_accepted",
)
# vLLM counts these per GPU of an engine: over data-parallel engines the instance's value is their mean, not sum.
PER_GPU_FIELDS = frozenset({"flops", "read_bytes", "write_bytes"})
# Counters with one label beside model and engine: canonical field -> that label's name.
LABELLED_COUNTERS = {"prompt_by_source": "source", "cached_by_source": "source", "spec_accepted_per_pos": "position"}
# Gauges with one label: field -> label name (summed over engines: with one engine, vLLM's values).
LABELLED_GAUGES = {"waiting_by_reason": "reason", "sleep_state": "sleep_state"}
# Gauges also kept per engine (data-parallel rank): the folded values hide one engine full while the others idle.
PER_ENGINE_FIELDS = frozenset({"running", "waiting", "kv_usage"})
# The engine a line without an `engine` label belongs to: vLLM before data parallelism had one engine, and vLLM
# numbers a lone engine "0".
DEFAULT_ENGINE = "0"


class EngineParseError(ValueError):
    """The scrape body is not usable Prometheus text from a vLLM server."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EngineGauges:
    """One engine's (data-parallel rank's) queue and KV cache, folded over its lines as ModelReading folds engines."""

    running: float | None = None
    waiting: float | None = None
    kv_usage_ratio: float | None = None


@dataclass(frozen=True)
class ModelReading:
    """What one vLLM server reported for one served model, summed over its engines (data-parallel ranks)."""

    model: str
    running: float | None = None
    waiting: float | None = None
    kv_usage_ratio: float | None = None  # the fullest engine's: the pressure that preempts
    kv_capacity_tokens: float | None = None
    kv_bytes_per_token: float | None = None
    counters: dict[str, float] = field(default_factory=dict)  # COUNTER_FIELDS, raw as vLLM reports them
    finished: dict[str, float] = field(default_factory=dict)  # by finished_reason, raw
    rejected: dict[str, float] = field(default_factory=dict)  # admission rejections by reason, raw
    labelled: dict[tuple[str, str], float] = field(default_factory=dict)  # (LABELLED_COUNTERS field, value), raw
    gauges: dict[tuple[str, str], float] = field(default_factory=dict)  # (LABELLED_GAUGES field, value)
    histograms: dict[str, HistogramReading] = field(default_factory=dict)  # HISTOGRAM_FIELDS, raw
    kv_memory_bytes: float | None = None  # KV cache per GPU (cache_config_info), when vLLM reports it
    # By the `engine` label's value (DEFAULT_ENGINE for lines without one): running, waiting and KV usage of each
    # engine; the fields above stay the folded ones (sum, sum, max) that dashboards and alerts read.
    per_engine: dict[str, EngineGauges] = field(default_factory=dict)


@dataclass(frozen=True)
class HistogramReading:
    """One of vLLM's histograms summed over engines: cumulative count per bucket (`le` as vLLM writes it, +Inf
    last), sum and count."""

    buckets: tuple[tuple[str, float], ...]
    sum: float
    count: float


@dataclass(frozen=True)
class EngineReading:
    """One successful scrape of one vLLM server."""

    models: dict[str, ModelReading]
    process_start_time_s: float | None
    http_responses: dict[str, float] = field(default_factory=dict)  # OpenAI API (/v1/*) responses by 2xx/4xx/5xx


def _parse_labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            raise EngineParseError("parse_error", f"bad labels in line: {line[:200]!r}")
        name = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2
        value: list[str] = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                j += 1
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(text[j], text[j]))
            else:
                value.append(text[j])
            j += 1
        if j >= n:
            raise EngineParseError("parse_error", f"unterminated label value in line: {line[:200]!r}")
        labels[name] = "".join(value)
        i = j + 1
        while i < n and text[i] in ", ":
            i += 1
    return labels


def _split(line: str) -> tuple[str, dict[str, str], float]:
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        if close < brace:
            raise EngineParseError("parse_error", f"unbalanced braces in line: {line[:200]!r}")
        name, labels, rest = line[:brace], _parse_labels(line[brace + 1 : close], line), line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = {}
    parts = rest.split()
    if not parts:
        raise EngineParseError("parse_error", f"no value in line: {line[:200]!r}")
    try:
        value = float(parts[0])
    except ValueError:
        raise EngineParseError("parse_error", f"bad value in line: {line[:200]!r}") from None
    return name.strip(), labels, value


def parse(text: str) -> EngineReading:
    """Parse a vLLM /metrics body; raise EngineParseError(reason) for truncated or malformed text."""
    if not text.strip():
        raise EngineParseError("parse_error", "empty body")
    if not text.endswith("\n"):
        raise EngineParseError("truncated", "body does not end with a newline: truncated scrape")
    per_model: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    # model -> engine -> PER_ENGINE_FIELDS field -> its values (a field can have two names in one body)
    engines: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    finished: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rejected: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    labelled: dict[str, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    gauges: dict[str, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    # model -> HISTOGRAM_FIELDS field -> its samples, summed over engines
    histograms: dict[str, dict[str, _HistogramSums]] = defaultdict(dict)
    http: dict[str, float] = defaultdict(float)
    kv_capacity: dict[str, float] = defaultdict(float)
    kv_bytes: dict[str, float] = defaultdict(float)
    kv_memory: dict[str, float] = {}
    process_start: float | None = None
    seen_vllm = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = line.find("{")
        if end < 0:
            end = line.find(" ")
        name = line[:end] if end >= 0 else line
        key = _FIELD_OF.get(name)
        if key is None:
            part = _HISTOGRAM_OF.get(name)
            if part is None:
                seen_vllm = seen_vllm or line.startswith("vllm:")
                continue
            seen_vllm = True
            _, labels, value = _split(line)
            if not math.isnan(value):
                model = labels.get("model_name", "")
                sums = histograms[model].setdefault(part[0], _HistogramSums())
                sums.add(part[1], labels.get("le", ""), value)
            continue
        _, labels, value = _split(line)
        if key == "process_start":
            process_start = value
            continue
        if key == "http":
            # prometheus-fastapi-instrumentator's counter; only inference calls (POST /v1/*), not /metrics,
            # /health or model listings.
            if (
                labels.get("method") == "POST"
                and labels.get("handler", "").startswith("/v1/")
                and not math.isnan(value)
            ):
                http[labels.get("status", "unknown")] += value
            continue
        seen_vllm = True
        if math.isnan(value):
            continue
        model = labels.get("model_name", "")
        if key == "finished":
            finished[model][labels.get("finished_reason", "unknown")] += value
        elif key == "admission_rejections":
            rejected[model][labels.get("reason", "unknown")] += value
        elif key == "cache_config":
            capacity, per_token = _kv_capacity(labels)
            if capacity is not None:
                kv_capacity[model] += capacity
                if per_token is not None:
                    kv_bytes[model] = per_token
            memory = _number(labels.get("kv_cache_memory_bytes"))
            if memory is not None:
                # Per GPU by vLLM's definition; data-parallel engines have the same setting.
                kv_memory[model] = max(memory, kv_memory.get(model, 0.0))
        elif key in LABELLED_COUNTERS:
            labelled[model][(key, labels.get(LABELLED_COUNTERS[key], ""))] += value
        elif key in LABELLED_GAUGES:
            gauges[model][(key, labels.get(LABELLED_GAUGES[key], ""))] += value
        else:
            per_model[model][key].append(value)
            if key in PER_ENGINE_FIELDS:
                engines[model][labels.get("engine", DEFAULT_ENGINE)][key].append(value)
    if not seen_vllm:
        raise EngineParseError("parse_error", "no vllm: series in the body: not a vLLM /metrics endpoint")
    models: dict[str, ModelReading] = {}
    for model in set(per_model) | set(finished) | set(rejected) | set(labelled) | set(gauges) | set(histograms):
        if not model:
            continue  # cache_config_info of old versions has no model label; it is attached below
        values = per_model.get(model, {})
        models[model] = ModelReading(
            model=model,
            running=sum(values["running"]) if values.get("running") else None,
            waiting=sum(values["waiting"]) if values.get("waiting") else None,
            kv_usage_ratio=max(values["kv_usage"]) if values.get("kv_usage") else None,
            kv_capacity_tokens=kv_capacity.get(model) or kv_capacity.get("") or None,
            kv_bytes_per_token=kv_bytes.get(model) or kv_bytes.get("") or None,
            counters={
                k: sum(values[k]) / (len(values[k]) if k in PER_GPU_FIELDS else 1)
                for k in COUNTER_FIELDS
                if values.get(k)
            },
            finished=dict(finished.get(model, {})),
            rejected=dict(rejected.get(model, {})),
            labelled=dict(labelled.get(model, {})),
            gauges=dict(gauges.get(model, {})),
            histograms={k: h.reading() for k, h in histograms.get(model, {}).items() if h.complete},
            kv_memory_bytes=kv_memory.get(model) or kv_memory.get("") or None,
            per_engine={engine: _engine_gauges(fields) for engine, fields in engines.get(model, {}).items()},
        )
    return EngineReading(models, process_start, dict(http))


def _engine_gauges(values: dict[str, list[float]]) -> EngineGauges:
    """One engine's gauges, folded as the model's are (sum, sum, max), so that the engines add up to the model."""
    return EngineGauges(
        running=sum(values["running"]) if values.get("running") else None,
        waiting=sum(values["waiting"]) if values.get("waiting") else None,
        kv_usage_ratio=max(values["kv_usage"]) if values.get("kv_usage") else None,
    )


class _HistogramSums:
    """A histogram's samples as they are read, summed over engines (one engine's lines follow another's)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets: dict[str, float] = {}  # le as written -> cumulative count
        self.sum: float | None = None
        self.count: float | None = None

    def add(self, part: str, le: str, value: float) -> None:
        if part == "bucket":
            self.buckets[le] = self.buckets.get(le, 0.0) + value
        elif part == "sum":
            self.sum = (self.sum or 0.0) + value
        else:
            self.count = (self.count or 0.0) + value

    @property
    def complete(self) -> bool:
        """Numeric bucket edges up to +Inf, a sum and a count: anything less is not re-exported."""
        return (
            "+Inf" in self.buckets
            and all(le == "+Inf" or _number(le) is not None for le in self.buckets)
            and self.sum is not None
            and self.count is not None
        )

    def reading(self) -> HistogramReading:
        """The edges in increasing order (+Inf last), as `le` was written."""
        buckets = sorted(self.buckets.items(), key=lambda item: _edge(item[0]))
        return HistogramReading(tuple(buckets), self.sum or 0.0, self.count or 0.0)


def _kv_capacity(labels: dict[str, str]) -> tuple[float | None, float | None]:
    """KV capacity in tokens and bytes per KV token from cache_config_info's labels (None where absent)."""
    tokens = _number(labels.get("kv_cache_size_tokens"))
    if tokens is None:
        blocks, block_size = _number(labels.get("num_gpu_blocks")), _number(labels.get("block_size"))
        tokens = blocks * block_size if blocks is not None and block_size is not None else None
    memory = _number(labels.get("kv_cache_memory_bytes"))
    per_token = memory / tokens if memory is not None and tokens else None
    return tokens, per_token


def _edge(le: str) -> float:
    """A bucket's upper bound as a number (+Inf, and anything else not finite, last)."""
    value = _number(le)
    return math.inf if value is None else value


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
