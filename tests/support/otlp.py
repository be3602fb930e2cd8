"""Building OTLP export requests for tests, from the real vLLM capture shipped as package data."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

SAMPLES = Path(str(resources.files("exporter").joinpath("samples", "vllm-0.32-cpu")))
HTTP_CAPTURE = sorted(SAMPLES.glob("spans-*.pb"), key=lambda p: int(p.stem.split("-")[1]))
GRPC_CAPTURE = sorted((SAMPLES / "grpc-capture").glob("spans-*.pb"), key=lambda p: int(p.stem.split("-")[1]))


def load(path: Path) -> ExportTraceServiceRequest:
    """A captured export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(path.read_bytes())
    return request


def sample_request_spans() -> list[Span]:
    """The 20 real llm_request spans of the HTTP capture."""
    return [s for rs in load(HTTP_CAPTURE[-1]).resource_spans for ss in rs.scope_spans for s in ss.spans]


def sample_resource() -> Resource:
    """The resource vLLM's API server sends its llm_request spans with."""
    return load(HTTP_CAPTURE[-1]).resource_spans[0].resource


def kv(key: str, value: Any) -> KeyValue:
    """An attribute with the OTLP value type Python's type implies."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def with_attribute(span: Span, key: str, value: Any) -> Span:
    """A copy of `span` whose attribute `key` is replaced by `value` (or removed when value is None)."""
    out = Span()
    out.CopyFrom(span)
    del out.attributes[:]
    out.attributes.extend(a for a in span.attributes if a.key != key)
    if value is not None:
        out.attributes.append(kv(key, value))
    return out


def fresh(span: Span, rng: random.Random, parent: bytes = b"", trace_id: bytes | None = None) -> Span:
    """A copy of `span` with new ids (so it is a different span), optionally under `parent`."""
    out = Span()
    out.CopyFrom(span)
    out.trace_id = trace_id or rng.randbytes(16)
    out.span_id = rng.randbytes(8)
    out.parent_span_id = parent
    return out


def gateway_span(trace_id: bytes, span_id: bytes, tenant: str, key: str = "tenant.id") -> Span:
    """A caller's span naming the tenant."""
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name="gateway",
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        attributes=[kv(key, tenant)],
    )


def request_of(spans: Iterable[Span], resource: Resource | None = None) -> ExportTraceServiceRequest:
    """An export request with one resource and one scope holding `spans`."""
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource or sample_resource(), scope_spans=[ScopeSpans(spans=spans)])]
    )


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP-JSON encoding: protobuf's JSON mapping with trace and span ids in hex, as the OTLP spec says."""
    doc = json_format.MessageToDict(request)

    def hexify(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    obj[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(obj, list):
            for v in obj:
                hexify(v)

    hexify(doc)
    return json.dumps(doc).encode()
