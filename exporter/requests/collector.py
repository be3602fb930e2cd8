"""prometheus_client Collectors of the span pipeline: the per-request families (histograms and counters by model and
tenant, start-up phases; they change only when requests are counted, so their render is cached between changes),
and the pipeline's live state (queue, joins waiting)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge, histogram, le_label
from exporter.metrics.protobuf import NATIVE, ClassicBucket, NativeHistogramFamily
from exporter.requests.aggregate import THROTTLED_HISTOGRAMS, Histogram
from exporter.requests.pipeline import SpanPipeline

TRACE_ID_LABEL = "trace_id"
PD_HISTOGRAMS = (catalog.PD_HANDOFF.name, catalog.PD_DECODE_TTFT.name)  # served only where P/D requests were seen


class RequestCollector(Collector):
    """The per-request families: latency histograms, request, token and KV counters, label overflow, start-up
    phases. They change only with `pipeline.generation`."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.pipeline = pipeline
        agg = pipeline.aggregator
        self._edges = {name: [le_label(b) for b in bounds] + ["+Inf"] for name, bounds in agg.buckets.items()}
        self._bounds = agg.buckets

    def collect(self) -> Iterator[Metric]:
        """Build every family from a consistent view of the pipeline."""
        yield from self._request_families()

    def _buckets(self, name: str, hist: Histogram) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        """Classic buckets as prometheus_client takes them: (le label, cumulative count[, exemplar])."""
        return [
            (edge, total) if exemplar is None else (edge, total, exemplar)
            for edge, (_, total, exemplar) in zip(self._edges[name], self._classic(name, hist), strict=True)
        ]

    def _classic(self, name: str, hist: Histogram) -> list[ClassicBucket]:
        """Classic buckets as the protobuf exposition takes them: (upper bound, cumulative count, exemplar)."""
        out: list[ClassicBucket] = []
        total = 0
        for bound, count, ex in zip((*self._bounds[name], math.inf), hist.counts, hist.exemplars, strict=True):
            total += count
            exemplar = None if ex is None else Exemplar({TRACE_ID_LABEL: ex[0].hex()}, ex[1], ex[2])
            out.append((bound, total, exemplar))
        return out

    def _request_families(self) -> Iterator[Metric]:
        agg = self.pipeline.aggregator
        hists = {
            spec.name: histogram(spec)
            for spec in (*catalog.MODEL_HISTOGRAMS, *catalog.TENANT_HISTOGRAMS, *catalog.LENGTH_HISTOGRAMS)
        }
        halves = counter(catalog.PD_HALVES)
        requests = counter(catalog.REQUESTS)
        tokens = counter(catalog.TOKENS)
        kv = counter(catalog.KV_TOKEN_SECONDS)
        kv_by_phase = counter(catalog.KV_TOKEN_SECONDS_BY_PHASE)
        native = NATIVE.get()  # a protobuf answer: the per-tenant histograms as native ones
        tenant: dict[str, Metric] = {
            spec.name: NativeHistogramFamily(spec.name, spec.help, spec.labels) if native else hists.pop(spec.name)
            for spec in catalog.TENANT_HISTOGRAMS
        }
        with self.pipeline.lock:
            for model, series in agg.models.items():
                for name, hist in series.histograms.items():
                    if name not in THROTTLED_HISTOGRAMS and (name not in PD_HISTOGRAMS or hist.count):
                        hists[name].add_metric([model], self._buckets(name, hist), hist.sum)
                for (side, outcome), count in sorted(series.halves.items()):
                    halves.add_metric([model, side, outcome], count)
                for (name, throttled), hist in series.by_throttle.items():
                    hists[name].add_metric([model, throttled], self._buckets(name, hist), hist.sum)
                for phase, value in series.kv_token_seconds.items():
                    kv_by_phase.add_metric([model, phase], value)
            for (model, tenant_label), pair in agg.series.items():
                labels = [model, tenant_label]
                requests.add_metric(labels, pair.requests)
                tokens.add_metric([model, tenant_label, "input"], pair.input_tokens)
                tokens.add_metric([model, tenant_label, "output"], pair.output_tokens)
                kv.add_metric(labels, pair.kv_token_seconds)
                for spec, classic, native_hist in (
                    (catalog.TENANT_TTFT, pair.ttft, pair.native_ttft),
                    (catalog.TENANT_TPOT, pair.tpot, pair.native_tpot),
                ):
                    if not classic.count:
                        continue
                    family = tenant[spec.name]
                    if isinstance(family, NativeHistogramFamily):
                        family.add(labels, native_hist, self._classic(spec.name, classic))
                    else:
                        assert isinstance(family, HistogramMetricFamily)
                        family.add_metric(labels, self._buckets(spec.name, classic), classic.sum)
            overflow = agg.overflow
            startup = sorted(self.pipeline.startup.items())
        yield from hists.values()
        yield from tenant.values()
        yield from (requests, tokens, kv, kv_by_phase, halves)
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
