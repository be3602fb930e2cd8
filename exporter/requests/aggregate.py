"""Per-request aggregation: full-resolution latency histograms per model, and per (model, tenant) what tenant
questions ask (requests, tokens, KV token-seconds, coarse TTFT and TPOT histograms), with bounded label values.
Pure.

Resolution goes where it is needed: a (model, tenant) pair costs ~20 series, not ~130, so a shared platform's
200 tenants x 3 models fit a Prometheus budget on every node (docs/design.md §8).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.metrics import catalog
from exporter.requests.disagg import Kind
from exporter.requests.native import NativeHistogram
from exporter.requests.records import OTHER, UNKNOWN, RequestSpan

RESERVED_LABEL_VALUES = frozenset({UNKNOWN, OTHER})


# The latest observation in a bucket, with the trace that produced it: (trace id, value, unix seconds). A plain
# tuple: one is made per histogram observation on the worker's hot path, where a NamedTuple costs ~3x as much.
Exemplar = tuple[bytes, float, float]


class Histogram:
    """Non-cumulative bucket counts, a sum and one exemplar per bucket (the last bucket is +Inf)."""

    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.exemplars: list[Exemplar | None] = [None] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, trace_id: bytes, timestamp_s: float) -> None:
        """Count `value` in the first bucket whose upper bound is >= value (Prometheus `le` semantics)."""
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.sum += value
        self.exemplars[i] = (trace_id, value, timestamp_s)

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Cumulative counts per bucket, +Inf last."""
        total, out = 0, []
        for c in self.counts:
            total += c
            out.append(total)
        return out


THROTTLED_HISTOGRAMS = (catalog.TTFT.name, catalog.TPOT.name)
# Names looked up once per observation on the worker's hot path.
_TTFT, _TPOT, _QUEUE, _PREFILL, _DECODE, _E2E = (s.name for s in catalog.LATENCY_HISTOGRAMS)
_PD_HANDOFF, _PD_DECODE_TTFT = catalog.PD_HANDOFF.name, catalog.PD_DECODE_TTFT.name
_INPUT_LENGTH, _OUTPUT_LENGTH = catalog.INPUT_LENGTH.name, catalog.OUTPUT_LENGTH.name
TENANT_CAP = 200  # distinct tenants per model
MODEL_CAP = 64
SERIES_MAX = 12_000  # 600 (model, tenant) pairs at ~19 series: 200 tenants x 3 models
PHASES = ("prefill", "decode")


@dataclass(slots=True)
class ModelSeries:
    """Everything observed for one model: every latency histogram at full resolution over all its requests (TTFT
    and TPOT only per throttled value, which is how they are exposed: `overall` adds them up), the request-length
    histograms, and KV token-seconds by phase."""

    histograms: dict[str, Histogram]
    by_throttle: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    kv_token_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    halves: Counter[tuple[str, str]] = field(default_factory=Counter)  # P/D halves by (side, joined or alone)
    last_seen: float = 0.0

    def overall(self, name: str) -> Histogram:
        """A histogram over all requests: TTFT and TPOT summed over their throttled values."""
        if name not in THROTTLED_HISTOGRAMS:
            return self.histograms[name]
        parts = [hist for (hist_name, _), hist in self.by_throttle.items() if hist_name == name]
        out = Histogram(parts[0].bounds if parts else ())
        for part in parts:
            out.counts = [a + b for a, b in zip(out.counts, part.counts, strict=True)]
            out.sum += part.sum
        return out


@dataclass(slots=True)
class TenantSeries:
    """Everything observed for one (model, tenant): counters, and TTFT and TPOT twice: at the coarse classic edges
    (text formats) and in native buckets (the protobuf exposition: one series each, ~9 % resolution)."""

    ttft: Histogram
    tpot: Histogram
    native_ttft: NativeHistogram = field(default_factory=NativeHistogram)
    native_tpot: NativeHistogram = field(default_factory=NativeHistogram)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    kv_token_seconds: float = 0.0


@dataclass(slots=True)
class LabelCap:
    """Bounded set of distinct label values; past the cap new values become `other`."""

    cap: int
    seen: set[str] = field(default_factory=set)
    overflowed: int = 0

    def admit(self, value: str, count: bool = True) -> str:
        """The value to use as a label: itself if already seen or room remains, else `other` (counted unless
        `count` is false: the same request asked again)."""
        if value in self.seen or value in RESERVED_LABEL_VALUES:
            return value
        if len(self.seen) < self.cap:
            self.seen.add(value)
            return value
        self.overflowed += count
        return OTHER


def series_per_pair(tenant_buckets: Mapping[str, Sequence[float]]) -> int:
    """What one (model, tenant) pair costs in exposed series: llm_requests_total, llm_tokens_total (2), the KV,
    GPU-second, energy and cost counters (4), and each tenant histogram's buckets, +Inf, _sum and _count."""
    return 1 + 2 + 4 + sum(len(bounds) + 3 for bounds in tenant_buckets.values())


class RequestAggregator:
    """Turns resolved request spans into the per-request metrics of the catalog."""

    def __init__(
        self,
        buckets: Mapping[str, Sequence[float]] | None = None,
        tenant_cap: int = TENANT_CAP,
        model_cap: int = MODEL_CAP,
        series_max: int = SERIES_MAX,
    ) -> None:
        given = buckets or {}
        self.buckets: dict[str, tuple[float, ...]] = {
            spec.name: tuple(given.get(spec.name, spec.default_buckets))
            for spec in (*catalog.MODEL_HISTOGRAMS, *catalog.TENANT_HISTOGRAMS, *catalog.LENGTH_HISTOGRAMS)
        }
        self.models: dict[str, ModelSeries] = {}
        self.series: dict[tuple[str, str], TenantSeries] = {}
        self.last_seen: dict[tuple[str, str], float] = {}  # series -> when it last counted a request
        self.model_labels = LabelCap(model_cap)
        self.tenant_cap = tenant_cap
        self.tenants: dict[str, LabelCap] = {}
        self.per_pair = series_per_pair({s.name: self.buckets[s.name] for s in catalog.TENANT_HISTOGRAMS})
        self.max_pairs = max(1, series_max // self.per_pair)
        self.over_budget = 0  # requests of new pairs folded into `other` by the series budget

    def _model(self, model: str) -> ModelSeries:
        series = self.models.get(model)
        if series is None:
            histograms = {
                s.name: Histogram(self.buckets[s.name])
                for s in (*catalog.MODEL_HISTOGRAMS, *catalog.LENGTH_HISTOGRAMS)
                if s.name not in THROTTLED_HISTOGRAMS
            }
            series = self.models[model] = ModelSeries(histograms)
        return series

    def _tenant(self, key: tuple[str, str]) -> TenantSeries:
        series = self.series.get(key)
        if series is None:
            b = self.buckets
            series = self.series[key] = TenantSeries(
                Histogram(b[catalog.TENANT_TTFT.name]), Histogram(b[catalog.TENANT_TPOT.name])
            )
        return series

    def _throttle_histogram(self, series: ModelSeries, name: str, throttled: str) -> Histogram:
        hist = series.by_throttle.get((name, throttled))
        if hist is None:
            hist = series.by_throttle[(name, throttled)] = Histogram(self.buckets[name])
        return hist

    def labels(self, model: str, tenant: str, count: bool = True) -> tuple[str, str]:
        """The (model, tenant) label values a request is counted under: itself, or `other` past a cap or past the
        series budget (a new pair when `max_pairs` exist already). A fold is counted unless `count` is false."""
        if (model, tenant) in self.series:
            return model, tenant
        model = self.model_labels.admit(model, count)
        cap = self.tenants.get(model)
        if cap is None:
            cap = self.tenants[model] = LabelCap(self.tenant_cap)
        tenant = cap.admit(tenant, count)
        if (model, tenant) not in self.series and tenant != OTHER and len(self.series) >= self.max_pairs:
            cap.seen.discard(tenant)
            self.over_budget += count
            tenant = OTHER
        return model, tenant

    def expire(self, now: float, idle_s: float) -> list[tuple[str, str]]:
        """Forget the series that counted nothing for `idle_s` (departed tenants and models), freeing their
        label slots; returns their (model, tenant)."""
        gone = [key for key, seen in self.last_seen.items() if now - seen >= idle_s]
        for key in gone:
            model, tenant = key
            del self.series[key], self.last_seen[key]
            cap = self.tenants.get(model)
            if cap is not None:
                cap.seen.discard(tenant)
        if gone:
            # Once for the whole batch: a model's slot is free when none of its series is left.
            remaining = {m for m, _ in self.series}
            for model in {m for m, _ in gone} - remaining:
                self.tenants.pop(model, None)
                self.models.pop(model, None)
                self.model_labels.seen.discard(model)
        return gone

    def observe(
        self,
        span: RequestSpan,
        tenant: str,
        throttled: str = "unknown",
        now: float = 0.0,
        kind: Kind = Kind.PLAIN,
        handoff_s: float | None = None,
    ) -> tuple[str, str]:
        """Count one finished sequence under its model and tenant (and, for TTFT and TPOT, throttled or not);
        returns the (model, tenant) labels it was counted under (`other` past a cap or the series budget).

        A prefilled/decoded request (`kind`, exporter.requests.disagg) counts as what it is: a prefill half alone
        only in the model's queue and prefill histograms; a decode half alone as a request whose TTFT (from the
        decode instance's arrival) goes to its own family, not the user-visible TTFT."""
        trace_id = span.trace_id
        ts = span.end_time_ns / 1e9
        if kind is Kind.PREFILL_ALONE:
            model = self._model(self.model_labels.admit(span.model))
            model.last_seen = now
            model.histograms[_QUEUE].observe(span.queue_s, trace_id, ts)
            model.histograms[_PREFILL].observe(span.prefill_s, trace_id, ts)
            model.halves[("prefill", "alone")] += 1
            return span.model, tenant
        key = self.labels(span.model, tenant)
        model = self._model(key[0])
        pair = self.series.get(key) or self._tenant(key)
        self.last_seen[key] = model.last_seen = now
        pair.requests += 1
        pair.input_tokens += span.prompt_tokens
        pair.output_tokens += span.completion_tokens
        h = model.histograms
        h[_INPUT_LENGTH].observe(span.prompt_tokens, trace_id, ts)
        h[_OUTPUT_LENGTH].observe(span.completion_tokens, trace_id, ts)
        kv = model.kv_token_seconds
        prefill_kv, decode_kv = span.kv_token_seconds().values()
        kv["prefill"] += prefill_kv
        kv["decode"] += decode_kv
        pair.kv_token_seconds += prefill_kv + decode_kv
        by_throttle = model.by_throttle
        if kind is Kind.DECODE_ALONE:
            model.halves[("decode", "alone")] += 1
            h[_PD_DECODE_TTFT].observe(span.ttft_s, trace_id, ts)
        else:
            if kind is Kind.JOINED:
                model.halves[("prefill", "joined")] += 1
                model.halves[("decode", "joined")] += 1
                if handoff_s is not None:
                    h[_PD_HANDOFF].observe(max(0.0, handoff_s), trace_id, ts)
            ttft = span.ttft_s
            (by_throttle.get((_TTFT, throttled)) or self._throttle_histogram(model, _TTFT, throttled)).observe(
                ttft, trace_id, ts
            )
            pair.ttft.observe(ttft, trace_id, ts)
            pair.native_ttft.observe(ttft)
            h[_QUEUE].observe(span.queue_s, trace_id, ts)
            h[_PREFILL].observe(span.prefill_s, trace_id, ts)
            h[_E2E].observe(span.e2e_s, trace_id, ts)
        h[_DECODE].observe(span.decode_s, trace_id, ts)
        tpot = span.tpot_s
        if tpot is not None:
            (by_throttle.get((_TPOT, throttled)) or self._throttle_histogram(model, _TPOT, throttled)).observe(
                tpot, trace_id, ts
            )
            pair.tpot.observe(tpot, trace_id, ts)
            pair.native_tpot.observe(tpot)
        return key

    @property
    def overflow(self) -> dict[tuple[str, str], int]:
        """How many requests had a label folded into `other`, by (label, reason: cap or series_max)."""
        return {
            ("model", "cap"): self.model_labels.overflowed,
            ("tenant", "cap"): sum(c.overflowed for c in self.tenants.values()),
            ("tenant", "series_max"): self.over_budget,
        }
