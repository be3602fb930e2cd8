"""Every llm_request span of the real vLLM captures gives exactly the observations its attributes imply.

The expectations are computed here from the decoded capture (spans.json, read as plain JSON), not typed in.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from exporter.metrics import catalog
from exporter.otlp.decode import DecodeRules, flatten
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from tests.support.otlp import GRPC_CAPTURE, HTTP_CAPTURE, SAMPLES, load

ATTRIBUTE_OF = {
    catalog.TTFT.name: "gen_ai.latency.time_to_first_token",
    catalog.QUEUE.name: "gen_ai.latency.time_in_queue",
    catalog.PREFILL.name: "gen_ai.latency.time_in_model_prefill",
    catalog.DECODE.name: "gen_ai.latency.time_in_model_decode",
    catalog.E2E.name: "gen_ai.latency.e2e",
}


def _json_request_spans() -> list[dict[str, Any]]:
    out = []
    for item in json.loads((SAMPLES / "spans.json").read_text()):
        for rs in item["request"].get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    if span["name"] == "llm_request":
                        out.append({a["key"]: next(iter(a["value"].values())) for a in span["attributes"]})
    return out


def expected_observations() -> dict[str, list[float]]:
    """Per histogram, the values the capture's spans imply (TPOT only where completion tokens > 1)."""
    spans = _json_request_spans()
    out = {name: [float(s[attr]) for s in spans] for name, attr in ATTRIBUTE_OF.items()}
    out[catalog.TPOT.name] = [
        s["gen_ai.latency.time_in_model_decode"] / (int(s["gen_ai.usage.completion_tokens"]) - 1)
        for s in spans
        if int(s["gen_ai.usage.completion_tokens"]) > 1
    ]
    return out


def _pipeline_fed_with(paths: list[Any]) -> SpanPipeline:
    pipeline = SpanPipeline(PipelineOptions(tenant_join_window_s=0))
    for path in paths:
        pipeline.submit(flatten(load(path), DecodeRules()), "http")
    pipeline.process_available()
    return pipeline


def test_capture_has_the_expected_shape() -> None:
    spans = _json_request_spans()
    assert len(spans) == 20
    assert any(int(s["gen_ai.usage.completion_tokens"]) > 1 for s in spans)


@pytest.mark.parametrize("name", [spec.name for spec in catalog.LATENCY_HISTOGRAMS])
def test_each_histogram_holds_exactly_the_implied_observations(name: str) -> None:
    values = expected_observations()[name]
    pipeline = _pipeline_fed_with(HTTP_CAPTURE)
    [labels] = pipeline.aggregator.series
    assert labels == ("vllm-tiny", "unknown")
    hist = pipeline.aggregator.models["vllm-tiny"].overall(name)
    assert hist.count == len(values)
    assert math.isclose(hist.sum, math.fsum(values), rel_tol=1e-12)
    bounds = pipeline.aggregator.buckets[name]
    assert hist.cumulative()[:-1] == [sum(1 for v in values if v <= b) for b in bounds]


def test_request_and_token_counters_match_the_capture() -> None:
    spans = _json_request_spans()
    series = next(iter(_pipeline_fed_with(HTTP_CAPTURE).aggregator.series.values()))
    assert series.requests == len(spans)
    assert series.input_tokens == sum(int(s["gen_ai.usage.prompt_tokens"]) for s in spans)
    assert series.output_tokens == sum(int(s["gen_ai.usage.completion_tokens"]) for s in spans)


def test_startup_spans_are_counted_by_name_not_as_requests() -> None:
    pipeline = _pipeline_fed_with(HTTP_CAPTURE[:-1])
    assert pipeline.aggregator.series == {}
    names = pipeline.stats.other_names
    assert names["Overall Loading"] == 1 and names["Load model"] == 1 and names["Warmup (CPU)"] == 1
    assert sum(names.values()) == sum(
        len(ss.spans) for p in HTTP_CAPTURE[:-1] for rs in load(p).resource_spans for ss in rs.scope_spans
    )


def test_grpc_capture_decodes_every_span() -> None:
    requests = [load(p) for p in GRPC_CAPTURE]
    spans = [s for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    pipeline = _pipeline_fed_with(GRPC_CAPTURE)
    assert sum(pipeline.stats.received.values()) == len(spans)
    assert sum(pipeline.stats.rejected.values()) == 0
    counted = sum(s.requests for s in pipeline.aggregator.series.values())
    assert counted == sum(1 for s in spans if s.name == "llm_request") > 0
