"""Prefill/decode disaggregation: the two halves of a request are counted once, with the user-visible TTFT."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import catalog
from exporter.requests.collector import RequestCollector
from exporter.requests.disagg import DisaggJoiner, Kind, merged
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.requests.records import DecodedBatch, RequestSpan
from exporter.requests.tenancy import Resolved
from tests.support.prom import by_label, total

T0 = 1_800_000_000 * 10**9
PARENT = b"\x01" * 8


def half(
    role: str, trace: int, start_s: float, ttft: float, e2e: float, completion: int, **more: object
) -> RequestSpan:
    """One half of a P/D request (or a plain span with role "")."""
    span = RequestSpan(
        trace.to_bytes(16, "big"), role.encode().ljust(8, b"-")[:8], PARENT, T0 + int(start_s * 1e9),
        T0 + int((start_s + e2e) * 1e9), "m", "acme", "span", f"r-{role}", ttft, e2e, 0.01, ttft - 0.01,
        e2e - ttft, 200, completion, f"vllm-{role}", "", role,
    )  # fmt: skip
    return span


def prefill(trace: int = 1) -> RequestSpan:
    # Arrives at 0, its one token at 0.2 s.
    return half("prefill", trace, 0.0, 0.2, 0.2, 1)


def decode(trace: int = 1) -> RequestSpan:
    # Arrives at 0.25 s (the proxy), loads the KV, first token 0.1 s later; 16 tokens by 1.25 s.
    return half("decode", trace, 0.25, 0.1, 1.0, 16)


def test_the_merged_request_is_what_the_user_saw() -> None:
    request, handoff = merged(prefill(), decode())
    assert request.ttft_s == pytest.approx(0.35)  # decode start + decode TTFT - prefill start
    assert request.e2e_s == pytest.approx(1.25)
    assert handoff == pytest.approx(0.15)  # decode's first token (0.35) - prefill's (0.2)
    assert (request.prompt_tokens, request.completion_tokens) == (200, 16)  # input once, the decode side's output
    assert (request.queue_s, request.prefill_s) == (prefill().queue_s, prefill().prefill_s)
    assert request.decode_s == decode().decode_s and request.instance == "vllm-decode"


@pytest.mark.parametrize("first", ["prefill", "decode"])
def test_halves_join_in_either_order(first: str) -> None:
    joiner = DisaggJoiner(window_s=10)
    halves = [Resolved(prefill(), "acme", "span"), Resolved(decode(), "acme", "span")]
    if first == "decode":
        halves.reverse()
    assert joiner.add(halves[0], now=0.0) == []
    [done] = joiner.add(halves[1], now=1.0)
    assert done.kind is Kind.JOINED and done.span.ttft_s == pytest.approx(0.35) and joiner.pending == 0


def test_a_half_alone_leaves_after_the_window_and_plain_spans_pass_through() -> None:
    joiner = DisaggJoiner(window_s=10)
    assert joiner.add(Resolved(prefill(1), "acme", "span"), 0.0) == []
    assert joiner.add(Resolved(decode(2), "acme", "span"), 5.0) == []
    [plain] = joiner.add(Resolved(half("", 3, 0, 0.1, 1, 8), "acme", "span"), 5.0)
    assert plain.kind is Kind.PLAIN
    [alone_prefill] = joiner.expire(10.0)
    assert alone_prefill.kind is Kind.PREFILL_ALONE
    [alone_decode] = joiner.expire(15.0)
    assert alone_decode.kind is Kind.DECODE_ALONE and joiner.pending == 0
    assert joiner.add(Resolved(decode(4)._replace(parent_span_id=b""), "acme", "span"), 20.0)[0].kind is (
        Kind.DECODE_ALONE  # no caller span: nothing can pair it
    )


def render(pipeline: SpanPipeline) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RequestCollector(pipeline))
    return generate_latest(registry).decode()


def test_the_pipeline_counts_a_disaggregated_request_once_with_its_user_visible_ttft() -> None:
    clock = [0.0]
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0, pd_join_window_s=10), clock=lambda: clock[0])
    pipeline.submit(DecodedBatch(requests=[decode(1), decode(2), prefill(3)]), "http")
    pipeline.process_available()
    pipeline.submit(DecodedBatch(requests=[prefill(1)]), "http")
    pipeline.process_available()
    text = render(pipeline)
    assert total(text, catalog.REQUESTS.name) == 1  # trace 1 joined; 2 and 3 still wait for their other halves
    assert total(text, catalog.TOKENS.name, {"type": "input"}) == 200
    assert total(text, catalog.TOKENS.name, {"type": "output"}) == 16
    assert total(text, catalog.TTFT.name + "_sum") == pytest.approx(0.35)
    assert total(text, catalog.PD_HANDOFF.name + "_sum") == pytest.approx(0.15)
    clock[0] = 11.0
    pipeline.process_available()
    text = render(pipeline)
    # Trace 2's decode half alone: a request, its TTFT apart; trace 3's prefill half alone: never a request.
    assert total(text, catalog.REQUESTS.name) == 2
    assert total(text, catalog.TTFT.name + "_count") == 1
    assert total(text, catalog.PD_DECODE_TTFT.name + "_count") == 1
    assert total(text, catalog.QUEUE.name + "_count") == 2  # trace 1 (its prefill side) and trace 3's prefill half
    assert by_label(text, catalog.PD_HALVES.name, "outcome", {"side": "prefill"}) == {"joined": 1.0, "alone": 1.0}
    assert by_label(text, catalog.PD_HALVES.name, "outcome", {"side": "decode"}) == {"joined": 1.0, "alone": 1.0}
    assert total(text, catalog.TENANT_TTFT.name + "_count") == 1  # the tenant's TTFT is the user-visible one only


def test_a_model_without_disaggregation_serves_no_pd_series() -> None:
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    pipeline.submit(DecodedBatch(requests=[half("", 1, 0, 0.1, 1, 8)]), "http")
    pipeline.process_available()
    text = render(pipeline)
    assert total(text, catalog.REQUESTS.name) == 1
    assert f"{catalog.PD_HANDOFF.name}_count" not in text and f"{catalog.PD_HALVES.name}{{" not in text
