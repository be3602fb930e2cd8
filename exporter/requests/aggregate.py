"""Per-request aggregation: histograms and counters by model and tenant, with bounded label values. Pure."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter.metrics import catalog
from exporter.requests.records import OTHER, UNKNOWN, RequestSpan

RESERVED_LABEL_VALUES = frozenset({UNKNOWN, OTHER})


class Exemplar(NamedTuple):
    """The latest observation in a bucket, with the trace that produced it."""

    trace_id: bytes
    value: float
    timestamp_s: float


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
        self.exemplars[i] = Exemplar(trace_id, value, timestamp_s)

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


@dataclass(slots=True)
class RequestSeries:
    """Everything observed for one (model, tenant).

    `histograms` holds every latency histogram over all requests; `by_throttle` holds TTFT and TPOT again, split
    by whether the GPU was throttled, which is how they are exposed."""

    histograms: dict[str, Histogram]
    by_throttle: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    kv_token_seconds: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})


@dataclass(slots=True)
class LabelCap:
    """Bounded set of distinct label values; past the cap new values become `other`."""

    cap: int
    seen: set[str] = field(default_factory=set)
    overflowed: int = 0

    def admit(self, value: str) -> str:
        """The value to use as a label: itself if already seen or room remains, else `other`."""
        if value in self.seen or value in RESERVED_LABEL_VALUES:
            return value
        if len(self.seen) < self.cap:
            self.seen.add(value)
            return value
        self.overflowed += 1
        return OTHER


class RequestAggregator:
    """Turns resolved request spans into the per-request metrics of the catalog."""

    def __init__(
        self,
        buckets: Mapping[str, Sequence[float]] | None = None,
        tenant_cap: int = 200,
        model_cap: int = 64,
    ) -> None:
        given = buckets or {}
        self.buckets: dict[str, tuple[float, ...]] = {
            spec.name: tuple(given.get(spec.name, spec.default_buckets)) for spec in catalog.LATENCY_HISTOGRAMS
        }
        self.series: dict[tuple[str, str], RequestSeries] = {}
        self.last_seen: dict[tuple[str, str], float] = {}  # series -> when it last counted a request
        self.models = LabelCap(model_cap)
        self.tenant_cap = tenant_cap
        self.tenants: dict[str, LabelCap] = {}

    def _series(self, key: tuple[str, str]) -> RequestSeries:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = RequestSeries({name: Histogram(b) for name, b in self.buckets.items()})
        return series

    def _throttle_histogram(self, series: RequestSeries, name: str, throttled: str) -> Histogram:
        hist = series.by_throttle.get((name, throttled))
        if hist is None:
            hist = series.by_throttle[(name, throttled)] = Histogram(self.buckets[name])
        return hist

    def labels(self, model: str, tenant: str) -> tuple[str, str]:
        """The (model, tenant) label values a request is counted under: itself, or `other` past a cap."""
        if (model, tenant) in self.series:
            return model, tenant
        model = self.models.admit(model)
        cap = self.tenants.get(model)
        if cap is None:
            cap = self.tenants[model] = LabelCap(self.tenant_cap)
        return model, cap.admit(tenant)

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
                self.models.seen.discard(model)
        return gone

    def observe(self, span: RequestSpan, tenant: str, throttled: str = "unknown", now: float = 0.0) -> tuple[str, str]:
        """Count one finished sequence under its model and tenant (and, for TTFT and TPOT, throttled or not);
        returns the (model, tenant) labels it was counted under (`other` past a cap)."""
        key = self.labels(span.model, tenant)
        series = self._series(key)
        self.last_seen[key] = now
        series.requests += 1
        series.input_tokens += span.prompt_tokens
        series.output_tokens += span.completion_tokens
        kv = series.kv_token_seconds
        for phase, value in span.kv_token_seconds().items():
            kv[phase] += value
        h = series.histograms
        trace_id = span.trace_id
        ts = span.end_time_ns / 1e9
        h[catalog.TTFT.name].observe(span.ttft_s, trace_id, ts)
        self._throttle_histogram(series, catalog.TTFT.name, throttled).observe(span.ttft_s, trace_id, ts)
        h[catalog.QUEUE.name].observe(span.queue_s, trace_id, ts)
        h[catalog.PREFILL.name].observe(span.prefill_s, trace_id, ts)
        h[catalog.DECODE.name].observe(span.decode_s, trace_id, ts)
        h[catalog.E2E.name].observe(span.e2e_s, trace_id, ts)
        tpot = span.tpot_s
        if tpot is not None:
            h[catalog.TPOT.name].observe(tpot, trace_id, ts)
            self._throttle_histogram(series, catalog.TPOT.name, throttled).observe(tpot, trace_id, ts)
        return key

    @property
    def overflow(self) -> dict[str, int]:
        """How many requests had a model or tenant folded into `other`."""
        return {"model": self.models.overflowed, "tenant": sum(c.overflowed for c in self.tenants.values())}
