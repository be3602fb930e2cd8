"""The protobuf exposition: native bucket math, content negotiation, and what the messages hold."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog, protobuf
from exporter.metrics.proto.prometheus import metrics_pb2 as pb
from exporter.requests.collector import RequestCollector
from exporter.requests.native import SCHEMA, NativeHistogram, bucket_index, upper_bound
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from tests.unit.requests.test_series_budget import span

# What Prometheus 2.42 sends: with --enable-feature=native-histograms, and without.
WITH_NATIVE = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,"
    "application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
WITHOUT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def parse(body: bytes) -> dict[str, pb.MetricFamily]:
    """Delimited MetricFamily messages by name."""
    out: dict[str, pb.MetricFamily] = {}
    i = 0
    while i < len(body):
        size = shift = 0
        while True:
            byte = body[i]
            i += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        family = pb.MetricFamily.FromString(body[i : i + size])
        out[family.name] = family
        i += size
    return out


def buckets_of(histogram: pb.Histogram) -> dict[int, int]:
    """Native bucket counts back from spans and deltas."""
    out: dict[int, int] = {}
    index, count, deltas = 0, 0, iter(histogram.positive_delta)
    for n, bucket_span in enumerate(histogram.positive_span):
        index = bucket_span.offset if n == 0 else index + bucket_span.offset
        for _ in range(bucket_span.length):
            count += next(deltas)
            out[index] = count
            index += 1
    return out


def test_a_value_falls_in_the_bucket_whose_upper_bound_is_the_first_at_or_above_it() -> None:
    assert (bucket_index(1.0), bucket_index(2.0), bucket_index(0.5)) == (0, 2**SCHEMA, -(2**SCHEMA))
    assert bucket_index(1.0000001) == 1
    rng = random.Random(3)
    values = [math.exp(rng.uniform(-12, 6)) for _ in range(10_000)] + [upper_bound(i) for i in range(-40, 40)]
    hist = NativeHistogram()
    for value in values:
        index = bucket_index(value)
        assert upper_bound(index - 1) < value <= upper_bound(index) * (1 + 1e-12)
        hist.observe(value)
    assert hist.buckets == Counter(bucket_index(v) for v in values)  # observe's inlined index is bucket_index


def test_spans_and_deltas_give_back_every_bucket() -> None:
    hist = NativeHistogram()
    rng = random.Random(4)
    for _ in range(500):
        hist.observe(rng.choice([rng.uniform(0.01, 0.02), rng.uniform(0.4, 3.0), 0.0]))
    spans, deltas = hist.spans_and_deltas()
    message = pb.Histogram(positive_span=[pb.BucketSpan(offset=o, length=n) for o, n in spans], positive_delta=deltas)
    assert buckets_of(message) == hist.buckets
    assert len(spans) >= 2  # the two clusters are apart
    assert sum(hist.buckets.values()) + hist.zero_count == hist.count == 500


def test_protobuf_is_chosen_only_when_the_scraper_prefers_it() -> None:
    assert protobuf.accepts(WITH_NATIVE)
    assert not protobuf.accepts(WITHOUT)
    assert not protobuf.accepts("")
    assert not protobuf.accepts("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily")  # no delim
    assert not protobuf.accepts(WITH_NATIVE.replace("encoding=delimited", "encoding=delimited;q=0.2"))


def test_every_family_is_a_message_and_tenant_histograms_are_native() -> None:
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    rng = random.Random(5)
    for i in range(300):
        pipeline.aggregator.observe(span("m", i, ttft=rng.uniform(0.1, 2.0)), f"t{i % 3}", "false")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    families = parse(protobuf.generate(registry))

    tenant = families[catalog.TENANT_TTFT.name]
    assert tenant.type == pb.HISTOGRAM and len(tenant.metric) == 3
    for metric in tenant.metric:
        h = metric.histogram
        assert h.schema == SCHEMA and h.sample_count == 100
        assert sum(buckets_of(h).values()) + h.zero_count == 100
        assert {label.name for label in metric.label} == {"model", "tenant"}
        assert any(b.HasField("exemplar") for b in h.bucket)  # exemplars ride on the classic buckets
    model = families[catalog.TTFT.name]
    assert model.type == pb.HISTOGRAM
    [classic] = model.metric
    assert classic.histogram.sample_count == 300 and not classic.histogram.positive_span  # classic only
    bounds = [b.upper_bound for b in classic.histogram.bucket]
    assert bounds == sorted(bounds) and 1.0 in bounds and not any(math.isinf(b) for b in bounds)
    requests = families[catalog.REQUESTS.name]
    assert requests.type == pb.COUNTER and sum(m.counter.value for m in requests.metric) == 300


def test_plain_collectors_convert_with_their_types_and_values() -> None:
    registry = CollectorRegistry(auto_describe=False)
    gauge = GaugeMetricFamily("g", "A gauge.", labels=["x"])
    gauge.add_metric(["a"], 1.5)
    counter = CounterMetricFamily("c", "A counter.", labels=[])
    counter.add_metric([], 7)
    histogram = HistogramMetricFamily("h", "A histogram.", labels=[])
    histogram.add_metric([], [("0.5", 1), ("1.0", 3), ("+Inf", 4)], 2.5)

    class Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from (gauge, counter, histogram)

    registry.register(Fixed())
    families = parse(protobuf.generate(registry))
    assert families["g"].metric[0].gauge.value == 1.5 and families["g"].metric[0].label[0].value == "a"
    assert families["c_total"].type == pb.COUNTER and families["c_total"].metric[0].counter.value == 7
    h = families["h"].metric[0].histogram
    assert (h.sample_count, h.sample_sum) == (4, 2.5)
    assert [(b.upper_bound, b.cumulative_count) for b in h.bucket] == [(0.5, 1), (1.0, 3)]
