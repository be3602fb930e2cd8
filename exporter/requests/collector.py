"""prometheus_client Collectors of the span pipeline: the per-request families (histograms and counters by model and
tenant, start-up phases; they change only when requests are counted, so their render is cached between changes),
and the pipeline's live state (queue, joins waiting)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge, histogram, le_label
from exporter.requests.aggregate import THROTTLED_HISTOGRAMS, Histogram
from exporter.requests.pipeline import SpanPipeline

TRACE_ID_LABEL = "trace_id"


class RequestCollector(Collector):
    """The per-request families: latency histograms, request, token and KV counters, label overflow, start-up
    phases. They change only with `pipeline.generation`."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.pipeline = pipeline
        agg = pipeline.aggregator
        self._edges = {name: [le_label(b) for b in bounds] + ["+Inf"] for name, bounds in agg.buckets.items()}

    def collect(self) -> Iterator[Metric]:
        """Build every family from a consistent view of the pipeline."""
        yield from self._request_families()

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
        hists = {
            spec.name: histogram(spec)
            for spec in (*catalog.LATENCY_HISTOGRAMS, *catalog.TENANT_HISTOGRAMS, *catalog.LENGTH_HISTOGRAMS)
        }
        requests = counter(catalog.REQUESTS)
        tokens = counter(catalog.TOKENS)
        kv = counter(catalog.KV_TOKEN_SECONDS)
        kv_by_phase = counter(catalog.KV_TOKEN_SECONDS_BY_PHASE)
        tenant_ttft, tenant_tpot = hists[catalog.TENANT_TTFT.name], hists[catalog.TENANT_TPOT.name]
        with self.pipeline.lock:
            for model, series in agg.models.items():
                for name, hist in series.histograms.items():
                    if name not in THROTTLED_HISTOGRAMS:
                        hists[name].add_metric([model], self._buckets(name, hist), hist.sum)
                for (name, throttled), hist in series.by_throttle.items():
                    hists[name].add_metric([model, throttled], self._buckets(name, hist), hist.sum)
                for phase, value in series.kv_token_seconds.items():
                    kv_by_phase.add_metric([model, phase], value)
            for (model, tenant), pair in agg.series.items():
                labels = [model, tenant]
                requests.add_metric(labels, pair.requests)
                tokens.add_metric([model, tenant, "input"], pair.input_tokens)
                tokens.add_metric([model, tenant, "output"], pair.output_tokens)
                kv.add_metric(labels, pair.kv_token_seconds)
                tenant_ttft.add_metric(labels, self._buckets(catalog.TENANT_TTFT.name, pair.ttft), pair.ttft.sum)
                if pair.tpot.count:
                    tenant_tpot.add_metric(labels, self._buckets(catalog.TENANT_TPOT.name, pair.tpot), pair.tpot.sum)
            overflow = agg.overflow
            startup = sorted(self.pipeline.startup.items())
        yield from hists.values()
        yield from (requests, tokens, kv, kv_by_phase)
        label_overflow = counter(catalog.LABEL_OVERFLOW)
        for (label, reason), count in sorted(overflow.items()):
            label_overflow.add_metric([label, reason], count)
        yield label_overflow
        phases = gauge(catalog.ENGINE_STARTUP_PHASE)
        for (model, phase), (_, seconds) in startup:
            phases.add_metric([model, phase], seconds)
        yield phases


class QueueCollector(Collector):
    """The pipeline's live state: spans queued, the queue's capacity, request spans waiting for their tenant."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        """Three gauges."""
        depth = gauge(catalog.QUEUE_DEPTH)
        depth.add_metric([], self.pipeline.queue_depth)
        capacity = gauge(catalog.QUEUE_CAPACITY)
        capacity.add_metric([], self.pipeline.options.queue_capacity_spans)
        with self.pipeline.lock:
            waiting = self.pipeline.joiner.pending
        pending = gauge(catalog.TENANT_PENDING)
        pending.add_metric([], waiting)
        yield from (depth, capacity, pending)
