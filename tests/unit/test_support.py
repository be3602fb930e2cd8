"""The harness's own helpers (tests/support), where a shortcut must give what the plain way gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.support.prom import total


def test_summing_only_a_metrics_lines_gives_what_parsing_everything_gives() -> None:
    registry = CollectorRegistry()
    requests = Counter("llm_requests", "Requests.", ["model", "tenant"], registry=registry)
    longer = Counter("llm_requests_total_by_hand", "A name that starts like another.", registry=registry)
    latency = Histogram("llm_latency_seconds", "Latency.", ["model"], registry=registry)
    bare = Gauge("llm_bare", "No labels.", registry=registry)
    requests.labels("m", 'odd {"} tenant').inc(3)
    requests.labels("n", "b").inc(4)
    longer.inc(100)
    latency.labels("m").observe(0.2)
    latency.labels("n").observe(7.0)
    bare.set(5)
    text = generate_latest(registry).decode()
    for name, where in (
        ("llm_requests_total", {}),
        ("llm_requests_total", {"model": "m"}),
        ("llm_requests_total_by_hand_total", {}),
        ("llm_latency_seconds_bucket", {"le": "0.25"}),
        ("llm_latency_seconds_count", {}),
        ("llm_bare", {}),
        ("llm_absent", {}),
    ):
        assert total(text, name, where, parse_all=False) == total(text, name, where), name
    assert total(text, "llm_requests_total", parse_all=False) == 7
    assert total(text, "llm_latency_seconds_bucket", {"le": "0.25"}, parse_all=False) == 1
