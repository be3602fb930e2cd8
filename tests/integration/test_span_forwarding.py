"""Enriched spans re-emitted to a trace backend keep their ids; a backend that is down costs drops, not time."""

from __future__ import annotations

import random
import time

import httpx

from exporter.metrics import catalog
from tests.support.otlp import fresh, gateway_span, request_of, sample_request_spans
from tests.support.otlp_capture import CapturingBackend, attributes
from tests.support.procs import ExporterProcess, free_port, wait_for
from tests.support.prom import by_label, total

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_forwarded_spans_keep_their_ids_and_carry_what_the_exporter_learned() -> None:
    backend = CapturingBackend()
    try:
        with ExporterProcess(
            [
                "--forward.traces-endpoint",
                backend.endpoint,
                "--model.map",
                "vllm-tiny=tiny",
                "--tenant.join-window-seconds",
                "5",
            ]
        ) as exporter:
            rng = random.Random(3)
            trace, parent = rng.randbytes(16), rng.randbytes(8)
            child = fresh(sample_request_spans()[5], rng, parent=parent, trace_id=trace)
            body = request_of([child, gateway_span(trace, parent, "acme")]).SerializeToString()
            assert httpx.post(exporter.otlp_http_url, content=body, headers=PROTOBUF).status_code == 200
            wait_for(lambda: len(backend.spans()) == 1, 15, "the enriched span at the backend")
            text = exporter.scrape()
    finally:
        backend.stop()
    [(resource, span)] = backend.spans()
    assert (span.trace_id, span.span_id, span.parent_span_id) == (trace, child.span_id, parent)
    assert span.name == "llm_request" and span.start_time_unix_nano == child.start_time_unix_nano
    attrs = attributes(span)
    original = {kv.key: kv.value for kv in child.attributes}
    assert attrs["gen_ai.usage.prompt_tokens"] == original["gen_ai.usage.prompt_tokens"].int_value
    assert attrs["gen_ai.latency.time_to_first_token"] == original["gen_ai.latency.time_to_first_token"].double_value
    assert (attrs["llm.model"], attrs["llm.tenant"]) == ("tiny", "acme")
    assert attrs["llm.gpu.throttled"] == "unknown" and attrs["llm.kv.token_seconds"] > 0
    assert resource["service.name"] == "vllm-tiny"
    assert total(text, catalog.FORWARDED_SPANS.name, {"outcome": "sent"}) == 1


def test_a_backend_that_is_down_costs_dropped_spans_not_time() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ExporterProcess(["--forward.traces-endpoint", dead, "--forward.queue-spans", "50"]) as exporter:
        rng = random.Random(4)
        slowest = 0.0
        for _ in range(20):
            body = request_of([fresh(s, rng) for s in sample_request_spans()]).SerializeToString()
            started = time.monotonic()
            assert httpx.post(exporter.otlp_http_url, content=body, headers=PROTOBUF).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        wait_for(lambda: total(exporter.scrape(), catalog.REQUESTS.name) == 400, 15, "all 400 requests counted")
        wait_for(
            lambda: sum(by_label(exporter.scrape(), catalog.FORWARDED_SPANS.name, "outcome").values()) >= 400,
            30,
            "every span forwarded or dropped",
        )
        outcomes = by_label(exporter.scrape(), catalog.FORWARDED_SPANS.name, "outcome")
        assert outcomes.get("sent", 0) == 0
        assert outcomes.get("dropped_queue_full", 0) > 0 and outcomes.get("dropped_export_failed", 0) > 0
        assert slowest < 1.0  # acknowledgements did not wait for the backend
        assert exporter.proc.poll() is None
