"""Resolution where it is needed: full histograms per model, a few edges per (model, tenant), a series budget that
folds new pairs into `other` (counted, never lost), and what each family costs reported on /metrics."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from exporter.attribution.attributor import Amount, Attributor, Pricing
from exporter.metrics import catalog
from exporter.requests.aggregate import RequestAggregator, series_per_pair
from exporter.requests.collector import RequestCollector
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.requests.records import OTHER, RequestSpan
from exporter.service import components
from exporter.service.exposition import SeriesCounting
from exporter.service.settings import load_settings
from tests.support.prom import by_label, samples, total


def span(model: str, i: int, ttft: float = 0.3, decode: float = 1.0, completion: int = 21) -> RequestSpan:
    """A finished request of `model` (the i-th: distinct ids)."""
    ids = i.to_bytes(8, "big")
    return RequestSpan(
        ids * 2, ids, b"", 1_800_000_000 * 10**9, 1_800_000_002 * 10**9, model, None, "", f"r{i}",
        ttft, ttft + decode, 0.01, ttft - 0.01, decode, 100, completion,
    )  # fmt: skip


def render(pipeline: SpanPipeline) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    return generate_latest(SeriesCounting(registry)).decode()


def fed(pairs: int, models: int = 3, **options: object) -> SpanPipeline:
    """A pipeline that has counted two requests of each of `pairs` (model, tenant) pairs."""
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0, **options))  # type: ignore[arg-type]
    aggregator = pipeline.aggregator
    for i in range(2 * pairs):
        pair = i % pairs
        aggregator.observe(span(f"model-{pair % models}", i), f"tenant-{pair // models}", "false", now=1.0)
    return pipeline


def family_series(text: str) -> Counter[str]:
    """Samples per family in an exposition (histograms: buckets, _sum and _count)."""
    counts: Counter[str] = Counter()
    for name, _, _ in samples(text):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in catalog.BY_NAME:
                name = name.removesuffix(suffix)
        counts[name] += 1
    return counts


def test_a_pair_costs_its_counters_and_two_coarse_histograms_and_a_model_its_full_ones() -> None:
    text = render(fed(600))
    counts = family_series(text)
    pair_families = {s.name for s in catalog.ALL if s.per == catalog.PAIR}
    per_pair = sum(n for family, n in counts.items() if family in pair_families) / 600
    # No GPUs here: the three attribution counters are absent, the rest is what series_per_pair counts.
    assert per_pair == series_per_pair({s.name: s.default_buckets for s in catalog.TENANT_HISTOGRAMS}) - 3 == 16
    for spec in catalog.LATENCY_HISTOGRAMS:
        assert "tenant" not in spec.labels
        assert counts[spec.name] == 3 * spec.series_each / (spec.each if "throttled" in spec.labels else 1)
    assert sum(counts.values()) < 12_000  # the budget of docs/design.md §8 at 600 pairs
    reported = by_label(text, catalog.SERIES.name, "family")
    assert reported[catalog.TENANT_TTFT.name] == counts[catalog.TENANT_TTFT.name] == 600 * 6
    assert reported[catalog.REQUESTS.name] == 600


def test_past_the_series_budget_new_pairs_count_as_other_and_nothing_is_lost() -> None:
    per_pair = series_per_pair({s.name: s.default_buckets for s in catalog.TENANT_HISTOGRAMS})
    pipeline = fed(100, series_max=per_pair * 40)
    text = render(pipeline)
    tenants = {tenant for _, tenant in pipeline.aggregator.series}
    assert len(pipeline.aggregator.series) == 40 + 3  # 40 pairs, then one `other` per model
    assert OTHER in tenants
    assert total(text, catalog.REQUESTS.name) == 200  # every request counted
    folded = total(text, catalog.REQUESTS.name, {"tenant": OTHER})
    assert folded == 2 * 60
    overflow = total(text, catalog.LABEL_OVERFLOW.name, {"label": "tenant", "reason": "series_max"})
    assert overflow == folded
    assert total(text, catalog.LABEL_OVERFLOW.name, {"label": "tenant", "reason": "cap"}) == 0


def test_a_pair_that_exists_keeps_counting_under_its_own_name_past_the_budget() -> None:
    aggregator = RequestAggregator(series_max=series_per_pair({}) * 1 + 30)  # room for one pair
    assert aggregator.max_pairs == 1
    assert aggregator.observe(span("m", 1), "a") == ("m", "a")
    assert aggregator.observe(span("m", 2), "b") == ("m", OTHER)
    assert aggregator.observe(span("m", 3), "a") == ("m", "a")
    assert aggregator.overflow[("tenant", "series_max")] == 1


def test_model_histograms_and_phase_totals_outlive_a_forgotten_tenant() -> None:
    aggregator = RequestAggregator()
    aggregator.observe(span("m", 1), "a", now=0.0)
    aggregator.observe(span("m", 2), "b", now=100.0)
    kv = dict(aggregator.models["m"].kv_token_seconds)
    assert aggregator.expire(now=150.0, idle_s=100.0) == [("m", "a")]
    assert aggregator.models["m"].overall(catalog.TTFT.name).count == 2  # per model: nothing goes backwards
    assert aggregator.models["m"].kv_token_seconds == kv
    assert aggregator.expire(now=250.0, idle_s=100.0) == [("m", "b")]
    assert "m" not in aggregator.models  # the model's slot is free once all its tenants are gone


def test_attributed_phase_totals_per_model_survive_forgetting_a_tenant() -> None:
    attributor = Attributor(Pricing(), lambda _: "")
    attributor.attributed[("m", "a", "decode")] = Amount(1.0, 2.0, 3.0)
    attributor.attributed[("m", "b", "decode")] = Amount(1.0, 2.0, 3.0)
    attributor.by_phase[("m", "decode")] = Amount(2.0, 4.0, 6.0)
    attributor.forget({("m", "a")})
    assert attributor.by_phase[("m", "decode")].joules == 4.0  # monotonic while tenant b remains
    attributor.forget({("m", "b")})
    assert ("m", "decode") not in attributor.by_phase


def test_slo_thresholds_become_edges_per_model_and_per_tenant() -> None:
    settings = load_settings({"slo_latency_thresholds": '{"time_to_first_token": [0.8], "e2e": [42]}'})
    buckets = components.pipeline_options(settings).buckets
    assert buckets is not None
    assert 0.8 in buckets[catalog.TTFT.name] and 0.8 in buckets[catalog.TENANT_TTFT.name]
    assert 42 in buckets[catalog.E2E.name]
    assert list(buckets[catalog.TENANT_TTFT.name]) == sorted(buckets[catalog.TENANT_TTFT.name])
    pipeline = SpanPipeline(components.pipeline_options(settings))
    pipeline.aggregator.observe(span("m", 1, ttft=0.7), "a")
    text = render(pipeline)
    assert total(text, catalog.TENANT_TTFT.name + "_bucket", {"le": "0.8"}) == 1
    assert total(text, catalog.TENANT_TTFT.name + "_bucket", {"le": "0.5"}) == 0


def test_request_lengths_are_per_model_histograms_that_add_up_to_the_token_counters() -> None:
    text = render(fed(600))
    counts = family_series(text)
    for spec in catalog.LENGTH_HISTOGRAMS:
        assert "tenant" not in spec.labels
        assert counts[spec.name] == 3 * spec.series_each  # 3 models, whatever the tenants
    for spec, kind in ((catalog.INPUT_LENGTH, "input"), (catalog.OUTPUT_LENGTH, "output")):
        assert total(text, spec.name + "_sum") == total(text, catalog.TOKENS.name, {"type": kind}) > 0
        assert total(text, spec.name + "_count") == total(text, catalog.REQUESTS.name) == 1200
    # Every span has 100 prompt tokens and 21 output tokens: the first edge at or above each holds them all.
    buckets = by_label(text, catalog.INPUT_LENGTH.name + "_bucket", "le", {"model": "model-0"})
    assert buckets["64.0"] == 0 and buckets["128.0"] == buckets["+Inf"] == 400
    buckets = by_label(text, catalog.OUTPUT_LENGTH.name + "_bucket", "le", {"model": "model-0"})
    assert buckets["16.0"] == 0 and buckets["32.0"] == 400
