"""/metrics render time at about 1,000 and 5,000 exposed series, in the classic text and OpenMetrics formats.

A SpanPipeline's aggregator is filled in-process, through the same path the receivers use (otlp_decode.flatten,
pipeline.submit, pipeline.process_available), with real captured vLLM llm_request spans spread over enough
(model, tenant) pairs to reach each target. Latencies are scaled by a random factor per span so the
histograms fill many buckets (and so carry many exemplars in OpenMetrics). Then RequestCollector, registered
in a CollectorRegistry(auto_describe=False) as the exporter does, is rendered repeatedly by
prometheus_client's generate_latest for each format. "Series" = sample lines of the text exposition (lines
not starting with #).

    .venv/bin/python -m benchmarks.bench_render [--targets 1000,5000] [--runs 30]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as generate_text
from prometheus_client.openmetrics import exposition as openmetrics

from exporter.otlp.decode import DecodeRules, flatten
from exporter.requests.collector import RequestCollector
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.sim.replay import Replayer

LATENCY_PREFIX = "gen_ai.latency."
MODELS_MAX = 4  # pairs are spread over up to this many models, the rest as tenants


def pair_labels(index: int, pairs: int) -> tuple[str, str]:
    """(model, tenant) of pair `index` out of `pairs`."""
    models = min(MODELS_MAX, pairs)
    return f"model-{index % models}", f"tenant-{index // models:04d}"


def build_request(
    replayer: Replayer, rng: random.Random, pairs: range, total_pairs: int, spans_per_pair: int
) -> ExportTraceServiceRequest:
    """An export request with `spans_per_pair` request spans for each pair, one ResourceSpans per model."""
    by_model: dict[str, list[Span]] = {}
    for index in pairs:
        model, tenant = pair_labels(index, total_pairs)
        spans = by_model.setdefault(model, [])
        for _ in range(spans_per_pair):
            span = Span()
            span.CopyFrom(rng.choice(replayer.templates))
            span.trace_id = rng.randbytes(16)
            span.span_id = rng.randbytes(8)
            factor = math.exp(rng.uniform(math.log(0.2), math.log(50.0)))  # spread over the buckets
            for kv in span.attributes:
                if kv.key.startswith(LATENCY_PREFIX) and kv.value.WhichOneof("value") == "double_value":
                    kv.value.double_value *= factor
            span.attributes.append(KeyValue(key="tenant.id", value=AnyValue(string_value=tenant)))
            spans.append(span)
    resource_spans = []
    for model, spans in by_model.items():
        resource = Resource()
        resource.CopyFrom(replayer.resource)
        for kv in resource.attributes:
            if kv.key == "service.name":
                kv.value.string_value = model
        resource_spans.append(ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)]))
    return ExportTraceServiceRequest(resource_spans=resource_spans)


def filled_registry(pairs: int, spans_per_pair: int, seed: int) -> CollectorRegistry:
    """A registry whose RequestCollector exposes `pairs` (model, tenant) series sets."""
    pipeline = SpanPipeline(
        PipelineOptions(queue_capacity_spans=1 << 24, tenant_cap=max(200, pairs), model_cap=64, dedup_capacity=1 << 20)
    )
    replayer = Replayer(seed)
    rng = random.Random(seed)
    rules = DecodeRules()
    chunk = max(1, 512 // spans_per_pair)  # about 512 spans per export request
    for start in range(0, pairs, chunk):
        request = build_request(replayer, rng, range(start, min(pairs, start + chunk)), pairs, spans_per_pair)
        batch = flatten(request, rules)
        if batch.rejected:
            raise RuntimeError(f"spans rejected while filling: {dict(batch.rejected)}")
        pipeline.submit(batch, "bench")
        pipeline.process_available()
    if pipeline.stats.dropped or len(pipeline.aggregator.series) != pairs:
        raise RuntimeError(f"expected {pairs} series sets, got {len(pipeline.aggregator.series)}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    return registry


def sample_lines(registry: CollectorRegistry) -> int:
    """Sample lines (not # lines) of the text exposition."""
    return sum(1 for line in generate_text(registry).splitlines() if line and not line.startswith(b"#"))


def pairs_for(target: int, spans_per_pair: int, seed: int) -> int:
    """The number of (model, tenant) pairs whose exposition has about `target` sample lines."""
    one = sample_lines(filled_registry(MODELS_MAX, spans_per_pair, seed))
    per_pair = (sample_lines(filled_registry(2 * MODELS_MAX, spans_per_pair, seed)) - one) / MODELS_MAX
    return max(1, round(MODELS_MAX + (target - one) / per_pair))


def time_render(render: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry, runs: int) -> list[float]:
    """Milliseconds of each of `runs` renders (after one untimed warm-up)."""
    render(registry)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        render(registry)
        times.append((time.perf_counter() - t) * 1000)
    return times


def generate_openmetrics(registry: CollectorRegistry) -> bytes:
    """The OpenMetrics exposition (with exemplars), as /metrics serves it to an OpenMetrics Accept header."""
    body: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
    return body


def collect_only(registry: CollectorRegistry) -> bytes:
    """Only build the metric families (RequestCollector.collect, the part that holds the pipeline lock)."""
    for _ in registry.collect():
        pass
    return b""


def p95(values: list[float]) -> float:
    """95th percentile (inclusive method)."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="1000,5000", help="series counts to aim for (default 1000,5000)")
    p.add_argument("--runs", type=int, default=30, help="timed renders per format (default 30)")
    p.add_argument("--spans-per-pair", type=int, default=200, help="spans observed per (model, tenant) pair")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    targets = [int(t) for t in args.targets.split(",") if t]

    rows = [
        [
            "series",
            "text render ms (median/p95)",
            "OpenMetrics render ms (median/p95)",
            "bytes",
            "of which collect() ms (median/p95)",
            "(model, tenant) pairs",
        ]
    ]
    for target in targets:
        pairs = pairs_for(target, args.spans_per_pair, args.seed)
        registry = filled_registry(pairs, args.spans_per_pair, args.seed)
        series = sample_lines(registry)
        gc.collect()
        text = time_render(generate_text, registry, args.runs)
        om = time_render(generate_openmetrics, registry, args.runs)
        collect = time_render(collect_only, registry, args.runs)
        text_bytes, om_bytes = len(generate_text(registry)), len(generate_openmetrics(registry))
        rows.append(
            [
                f"{series:,}",
                f"{statistics.median(text):.1f} / {p95(text):.1f}",
                f"{statistics.median(om):.1f} / {p95(om):.1f}",
                f"{text_bytes:,} text / {om_bytes:,} OpenMetrics",
                f"{statistics.median(collect):.1f} / {p95(collect):.1f}",
                str(pairs),
            ]
        )
        print(f"target {target}: {pairs} pairs, {series} series rendered {args.runs}x per format", flush=True)

    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    print(f"## /metrics render time ({args.runs} runs each, {args.spans_per_pair} spans per pair, one thread)")
    print()
    print(
        "collect() = building the metric families only (the part of a render that holds the pipeline lock, "
        "so the span worker waits for it); the rest is prometheus_client formatting."
    )
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
