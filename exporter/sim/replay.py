"""Replays of the real vLLM 0.32 llm_request spans shipped in the package, with fresh ids and times and gateway
parents naming tenants. The ingest and render benchmarks build their load from it.
"""

from __future__ import annotations

import random
from importlib import resources

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporter.otlp.decode import REQUEST_SPAN_NAME

SAMPLE = "vllm-0.32-cpu"
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")


def sample_request(name: str = "spans-7.pb") -> ExportTraceServiceRequest:
    """A real export request captured from vLLM 0.32 (package data)."""
    data = resources.files("exporter").joinpath("samples", SAMPLE, name).read_bytes()
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


class Replayer:
    """Builds export requests from the captured llm_request spans: fresh ids and times, gateway parents."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        captured = sample_request().resource_spans[0]
        self.resource = captured.resource
        self.scope = captured.scope_spans[0].scope
        self.templates = [s for s in captured.scope_spans[0].spans if s.name == REQUEST_SPAN_NAME]

    def batch(self, count: int, now_ns: int) -> ExportTraceServiceRequest:
        """`count` request spans ending about now; four in five get a gateway parent span naming a tenant."""
        requests: list[Span] = []
        gateways: list[Span] = []
        for _ in range(count):
            span = Span()
            span.CopyFrom(self.rng.choice(self.templates))
            duration = span.end_time_unix_nano - span.start_time_unix_nano
            span.trace_id = self.rng.randbytes(16)
            span.span_id = self.rng.randbytes(8)
            span.end_time_unix_nano = now_ns
            span.start_time_unix_nano = now_ns - duration
            if self.rng.random() < 0.8:
                gateway = Span(
                    trace_id=span.trace_id,
                    span_id=self.rng.randbytes(8),
                    name="gateway /v1/completions",
                    kind=Span.SpanKind.SPAN_KIND_SERVER,
                    start_time_unix_nano=span.start_time_unix_nano - 1_000_000,
                    end_time_unix_nano=now_ns + 1_000_000,
                    attributes=[KeyValue(key="tenant.id", value=AnyValue(string_value=self.rng.choice(TENANTS)))],
                )
                span.parent_span_id = gateway.span_id
                gateways.append(gateway)
            requests.append(span)
        return ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=self.resource, scope_spans=[ScopeSpans(scope=self.scope, spans=requests)]),
                ResourceSpans(scope_spans=[ScopeSpans(spans=gateways)]),
            ]
        )
