"""prometheus_client Collector that renders the pipeline's state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from exporter import __version__
from exporter.metrics import catalog
from exporter.metrics.catalog import Kind, MetricSpec
from exporter.requests.aggregate import THROTTLED_HISTOGRAMS, Histogram
from exporter.requests.pipeline import SpanPipeline

TRACE_ID_LABEL = "trace_id"


def le_label(bound: float) -> str:
    """A bucket bound as Prometheus clients write `le` (1.0, 0.25, +Inf)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def counter(spec: MetricSpec) -> CounterMetricFamily:
    """An empty counter family for a catalog entry."""
    assert spec.kind is Kind.COUNTER, spec.name
    return CounterMetricFamily(spec.family, spec.help, labels=list(spec.labels))


def gauge(spec: MetricSpec) -> GaugeMetricFamily:
    """An empty gauge family for a catalog entry."""
    assert spec.kind is Kind.GAUGE, spec.name
    return GaugeMetricFamily(spec.family, spec.help, labels=list(spec.labels))


def histogram(spec: MetricSpec) -> HistogramMetricFamily:
    """An empty histogram family for a catalog entry."""
    assert spec.kind is Kind.HISTOGRAM, spec.name
    return HistogramMetricFamily(spec.family, spec.help, labels=list(spec.labels))


class PipelineCollector(Collector):
    """Exposes per-request histograms and counters plus the exporter's self metrics."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.pipeline = pipeline
        agg = pipeline.aggregator
        self._edges = {name: [le_label(b) for b in bounds] + ["+Inf"] for name, bounds in agg.buckets.items()}

    def describe(self) -> list[Metric]:
        """Nothing to describe up front (avoids a collect() at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build every family from a consistent view of the pipeline."""
        yield from self._request_families()
        yield from self._self_families()

    def _buckets(self, name: str, hist: Histogram) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        total = 0
        for edge, count, ex in zip(self._edges[name], hist.counts, hist.exemplars, strict=True):
            total += count
            if ex is None:
                buckets.append((edge, total))
            else:
                buckets.append((edge, total, Exemplar({TRACE_ID_LABEL: ex.trace_id.hex()}, ex.value, ex.timestamp_s)))
        return buckets

    def _request_families(self) -> Iterator[Metric]:
        agg = self.pipeline.aggregator
        hists = {spec.name: histogram(spec) for spec in catalog.LATENCY_HISTOGRAMS}
        requests = counter(catalog.REQUESTS)
        tokens = counter(catalog.TOKENS)
        kv = counter(catalog.KV_TOKEN_SECONDS)
        with self.pipeline.lock:
            for (model, tenant), series in agg.series.items():
                labels = [model, tenant]
                requests.add_metric(labels, series.requests)
                tokens.add_metric([model, tenant, "input"], series.input_tokens)
                tokens.add_metric([model, tenant, "output"], series.output_tokens)
                for name, hist in series.histograms.items():
                    if name not in THROTTLED_HISTOGRAMS:
                        hists[name].add_metric(labels, self._buckets(name, hist), hist.sum)
                for (name, throttled), hist in series.by_throttle.items():
                    hists[name].add_metric([*labels, throttled], self._buckets(name, hist), hist.sum)
                for phase, value in series.kv_token_seconds.items():
                    kv.add_metric([model, tenant, phase], value)
            overflow = agg.overflow
            pending = self.pipeline.joiner.pending
            startup = sorted(self.pipeline.startup.items())
        yield from hists.values()
        yield requests
        yield tokens
        yield kv
        label_overflow = counter(catalog.LABEL_OVERFLOW)
        for label, count in sorted(overflow.items()):
            label_overflow.add_metric([label], count)
        yield label_overflow
        phases = gauge(catalog.ENGINE_STARTUP_PHASE)
        for (model, phase), (_, seconds) in startup:
            phases.add_metric([model, phase], seconds)
        yield phases
        pending_family = gauge(catalog.TENANT_PENDING)
        pending_family.add_metric([], pending)
        yield pending_family

    def _self_families(self) -> Iterator[Metric]:
        stats = self.pipeline.stats
        build = gauge(catalog.BUILD_INFO)
        build.add_metric([__version__], 1)
        families: list[Metric] = [build]
        with stats.lock:
            counters = [
                (catalog.SPANS_RECEIVED, stats.received),
                (catalog.SPANS_ACCEPTED, stats.accepted),
                (catalog.SPANS_REJECTED, stats.rejected),
                (catalog.SPANS_DROPPED, stats.dropped),
                (catalog.OTHER_SPANS, stats.other_names),
                (catalog.TENANT_JOINS, stats.tenant_sources),
                (catalog.UNAUTHORIZED, stats.unauthorized),
            ]
            for spec, values in counters:
                fam = counter(spec)
                for key, value in sorted(values.items()):
                    fam.add_metric([key], value)
                families.append(fam)
            batches = counter(catalog.BATCHES_REJECTED)
            for (protocol, reason), value in sorted(stats.batches_rejected.items()):
                batches.add_metric([protocol, reason], value)
            families.append(batches)
            reloads = counter(catalog.TLS_RELOADS)
            for (listener, result), value in sorted(stats.tls_reloads.items()):
                reloads.add_metric([listener, result], value)
            families.append(reloads)
        depth = gauge(catalog.QUEUE_DEPTH)
        depth.add_metric([], self.pipeline.queue_depth)
        capacity = gauge(catalog.QUEUE_CAPACITY)
        capacity.add_metric([], self.pipeline.options.queue_capacity_spans)
        yield from (*families, depth, capacity)
