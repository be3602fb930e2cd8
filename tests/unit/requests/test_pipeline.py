"""The pipeline: duplicates counted once, a full queue drops and counts, label values stay bounded."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import catalog
from exporter.otlp.decode import DecodeRules, flatten
from exporter.requests.collector import QueueCollector, RequestCollector
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.service.exposition import SeriesCounting
from exporter.service.stats import StatsCollector
from tests.support.otlp import fresh, gateway_span, request_of, sample_request_spans, with_attribute
from tests.support.prom import by_label, samples, total


class FakeClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _requests(pipeline: SpanPipeline) -> dict[tuple[str, str], int]:
    return {key: s.requests for key, s in pipeline.aggregator.series.items()}


def test_a_span_delivered_twice_is_counted_once() -> None:
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    batch = flatten(request_of(sample_request_spans()), DecodeRules())
    pipeline.submit(batch, "http")
    pipeline.submit(flatten(request_of(sample_request_spans()), DecodeRules()), "grpc")
    pipeline.process_available()
    assert _requests(pipeline) == {("vllm-tiny", "unknown"): 20}
    assert pipeline.stats.dropped == {"duplicate": 20}


def test_n2_spans_share_a_request_id_but_both_count() -> None:
    spans = sample_request_spans()
    n2 = [
        s
        for s in spans
        if any(a.key == "gen_ai.request.id" and a.value.string_value.startswith("cmpl-88d7") for a in s.attributes)
    ]
    assert len(n2) == 2
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    pipeline.submit(flatten(request_of(n2), DecodeRules()), "http")
    pipeline.process_available()
    assert _requests(pipeline) == {("vllm-tiny", "unknown"): 2}


def test_full_queue_drops_whole_batches_and_counts_them() -> None:
    pipeline = SpanPipeline(PipelineOptions(queue_capacity_spans=30, tenant_join_window_s=0))
    rng = random.Random(0)
    dropped = [
        pipeline.submit(flatten(request_of([fresh(s, rng) for s in sample_request_spans()]), DecodeRules()), "http")
        for _ in range(3)
    ]
    assert dropped == [0, 20, 20]
    assert pipeline.queue_depth == 20
    pipeline.process_available()
    assert pipeline.stats.dropped == {"queue_full": 40}
    assert pipeline.stats.accepted == {"http": 20}
    assert _requests(pipeline) == {("vllm-tiny", "unknown"): 20}


def test_tenant_join_through_the_pipeline_in_either_order() -> None:
    clock = FakeClock()
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=5), clock=clock)
    rng = random.Random(1)
    template = sample_request_spans()[0]
    first_trace, second_trace, orphan_trace = rng.randbytes(16), rng.randbytes(16), rng.randbytes(16)
    parent_a, parent_b = rng.randbytes(8), rng.randbytes(8)
    # parent first
    pipeline.submit(flatten(request_of([gateway_span(first_trace, parent_a, "acme")]), DecodeRules()), "http")
    pipeline.process_available()
    pipeline.submit(flatten(request_of([fresh(template, rng, parent_a, first_trace)]), DecodeRules()), "http")
    # child first, and an orphan whose caller never reports
    pipeline.submit(flatten(request_of([fresh(template, rng, parent_b, second_trace)]), DecodeRules()), "http")
    pipeline.submit(flatten(request_of([fresh(template, rng, rng.randbytes(8), orphan_trace)]), DecodeRules()), "http")
    pipeline.process_available()
    assert _requests(pipeline) == {("vllm-tiny", "acme"): 1}
    clock.now = 2.0
    pipeline.submit(flatten(request_of([gateway_span(second_trace, parent_b, "globex")]), DecodeRules()), "http")
    pipeline.process_available()
    assert _requests(pipeline) == {("vllm-tiny", "acme"): 1, ("vllm-tiny", "globex"): 1}
    clock.now = 5.1
    pipeline.process_available()
    assert _requests(pipeline) == {("vllm-tiny", "acme"): 1, ("vllm-tiny", "globex"): 1, ("vllm-tiny", "unknown"): 1}
    assert pipeline.stats.tenant_sources == {"trace": 2, "timeout": 1}


def test_hundred_thousand_tenants_stay_under_the_cap() -> None:
    pipeline = SpanPipeline(PipelineOptions(tenant_cap=50, tenant_join_window_s=0))
    rng = random.Random(2)
    template = sample_request_spans()[0]
    for chunk in range(100):
        spans = [with_attribute(fresh(template, rng), "tenant.id", f"t{chunk * 1000 + i}") for i in range(1000)]
        pipeline.submit(flatten(request_of(spans), DecodeRules()), "http")
        pipeline.process_available()
    tenants = {tenant for _, tenant in pipeline.aggregator.series}
    assert len(tenants) == 51 and "other" in tenants
    assert sum(_requests(pipeline).values()) == 100_000
    assert pipeline.aggregator.overflow[("tenant", "cap")] == 100_000 - 50
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    text = generate_latest(registry).decode()
    assert total(text, catalog.LABEL_OVERFLOW.name, {"label": "tenant"}) == 100_000 - 50
    assert len(by_label(text, catalog.REQUESTS.name, "tenant")) == 51


def test_models_are_capped_too() -> None:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    from tests.support.otlp import kv

    pipeline = SpanPipeline(PipelineOptions(model_cap=2, tenant_join_window_s=0))
    rng = random.Random(3)
    for name in ("a", "b", "c", "d"):
        resource = Resource(attributes=[kv("service.name", name)])
        pipeline.submit(flatten(request_of([fresh(sample_request_spans()[0], rng)], resource), DecodeRules()), "http")
    pipeline.process_available()
    assert _requests(pipeline) == {("a", "unknown"): 1, ("b", "unknown"): 1, ("other", "unknown"): 2}


def test_other_span_names_are_capped() -> None:
    pipeline = SpanPipeline(PipelineOptions())
    rng = random.Random(4)
    for i in range(150):
        span = gateway_span(rng.randbytes(16), rng.randbytes(8), "t")
        span.name = f"name-{i}"
        pipeline.submit(flatten(request_of([span]), DecodeRules()), "http")
    pipeline.process_available()
    assert len(pipeline.stats.other_names) == 101
    assert pipeline.stats.other_names["other"] == 50


def test_every_span_metric_of_the_catalog_is_exposed() -> None:
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    pipeline.submit(flatten(request_of(sample_request_spans()), DecodeRules()), "http")
    pipeline.process_available()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    registry.register(QueueCollector(pipeline))
    registry.register(StatsCollector(pipeline.stats))
    text = generate_latest(SeriesCounting(registry)).decode()
    for spec in (*catalog.LATENCY_HISTOGRAMS, catalog.REQUESTS, catalog.TOKENS, *catalog.SELF_METRICS):
        assert f"# TYPE {spec.name} {spec.kind.value}\n" in text, spec.name  # text format keeps _total
    names = {n for n, _, _ in samples(text)}
    for spec in catalog.LATENCY_HISTOGRAMS:
        assert {spec.name + "_bucket", spec.name + "_count", spec.name + "_sum"} <= names
    assert total(text, catalog.REQUESTS.name) == 20


class Hook:
    """A stand-in attribution stage recording what the pipeline hands it."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []
        self.forgotten: list[tuple[str, str]] = []

    def throttled(self, span: object) -> str:
        return "false"

    def submit(self, span: object, tenant: str, throttled: str) -> None:
        self.submitted.append((span.model, tenant))  # type: ignore[attr-defined]

    def forget(self, series: list[tuple[str, str]]) -> None:
        self.forgotten.extend(series)

    def tick(self, force: bool = False) -> None:
        pass


def test_attribution_gets_the_capped_labels_so_hostile_tenants_stay_bounded_there_too() -> None:
    hook = Hook()
    pipeline = SpanPipeline(PipelineOptions(tenant_cap=3, tenant_join_window_s=0), attribution=hook)
    rng = random.Random(5)
    template = sample_request_spans()[0]
    spans = [with_attribute(fresh(template, rng), "tenant.id", f"hostile-{i}") for i in range(200)]
    pipeline.submit(flatten(request_of(spans), DecodeRules()), "http")
    pipeline.process_available()
    assert len(hook.submitted) == 200
    assert len(set(hook.submitted)) == 4  # three tenants and other


def test_idle_series_are_forgotten_and_their_slots_freed() -> None:
    clock = [1000.0]
    hook = Hook()
    options = PipelineOptions(tenant_cap=2, tenant_join_window_s=0, series_idle_s=60)
    pipeline = SpanPipeline(options, attribution=hook, clock=lambda: clock[0])
    rng = random.Random(6)
    template = sample_request_spans()[0]

    def send(*tenants: str) -> None:
        spans = [with_attribute(fresh(template, rng), "tenant.id", t) for t in tenants]
        pipeline.submit(flatten(request_of(spans), DecodeRules()), "http")
        pipeline.process_available()

    send("a", "b", "c")
    model = template_model = next(iter(pipeline.aggregator.series))[0]
    assert set(_requests(pipeline)) == {(model, "a"), (model, "b"), (model, "other")}
    clock[0] += 40
    send("b")
    clock[0] += 30  # a and other idle 70 s, b 30 s
    send()
    assert set(_requests(pipeline)) == {(template_model, "b")}
    assert sorted(hook.forgotten) == [(model, "a"), (model, "other")]
    send("c")  # the slot a held is free again: c gets its own series
    assert set(_requests(pipeline)) == {(model, "b"), (model, "c")}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    assert set(by_label(generate_latest(registry).decode(), catalog.REQUESTS.name, "tenant")) == {"b", "c"}
