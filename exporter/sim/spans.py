"""OTLP trace export requests shaped exactly like vLLM 0.32's (checked against the real capture by a test).

- `llm_request`: one SERVER span per finished sequence, scope `vllm.tracing.otel`, from the API server's resource
  (`service.name`, `service.instance.id`, `vllm.process_id`, ...), latencies as doubles in seconds, token counts
  as intValue, `gen_ai.request.*` parameters only when truthy (temperature 0 is left off), in vLLM's order.
- Start-up spans (`Overall Loading`, `Load model`, ...): copied from the real capture's structure (processes,
  scopes, names, attributes, parent links) with fresh ids and times fitted to the simulated start-up.
- A gateway's SERVER span carrying `tenant.id`, parent of `llm_request` (vLLM honours an incoming traceparent; the
  span's flags then mark a remote parent, as in the capture).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

REQUEST_SPAN = "llm_request"
SCOPE = "vllm.tracing.otel"
SDK_VERSION = "1.45.2"  # the OpenTelemetry SDK of the captured vLLM
FLAGS_LOCAL_PARENT = 0x100  # W3C sampled bit unset, "has is_remote" set: what vLLM's SDK writes
FLAGS_REMOTE_PARENT = 0x300  # ... and the parent came from an incoming traceparent
SAMPLE = "vllm-0.32-cpu"
STARTUP_CAPTURE = tuple(f"spans-{i}.pb" for i in range(1, 7))  # the captured start-up exports, in send order
GATEWAY_SERVICE = "llm-gateway"
TENANT_KEY = "tenant.id"


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


@dataclass(frozen=True)
class VllmProcess:
    """One simulated vLLM process as its spans' resource names it."""

    service_name: str
    instance_id: str  # service.instance.id: a UUID per process start
    pid: int
    kind: str = "api_server"  # api_server, engine_core, worker

    def resource(self) -> Resource:
        """The resource vLLM's tracer sets, in the capture's attribute order."""
        attributes = [
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", SDK_VERSION),
            _kv("service.instance.id", self.instance_id),
            _kv("service.name", self.service_name),
        ]
        if self.kind == "api_server":
            attributes += [
                _kv("vllm.instrumenting_module_name", "vllm.llm_engine"),
                _kv("vllm.process_id", str(self.pid)),
            ]
        elif self.kind == "engine_core":
            attributes += [
                _kv("vllm.instrumenting_module_name", "vllm.engine_core"),
                _kv("vllm.process_id", str(self.pid)),
                _kv("vllm.process_kind", "engine_core"),
                _kv("vllm.process_name", "EngineCore"),
            ]
        else:
            attributes += [
                _kv("vllm.instrumenting_module_name", "vllm.worker"),
                _kv("vllm.process_id", str(self.pid)),
                _kv("vllm.process_kind", "worker"),
                _kv("vllm.process_name", "Worker_0"),
            ]
        return Resource(attributes=attributes)


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """A finished sequence as the API server and engine saw it (unix seconds) and its request parameters."""

    arrival: float
    queued: float
    scheduled: float
    first_token: float
    finished: float
    prompt_tokens: int
    completion_tokens: int
    request_id: str
    max_tokens: int
    temperature: float
    top_p: float
    n: int = 1


# API-server overheads around the engine's own times: detokenising and streaming the first token, finishing the
# response. They make TTFT a little more than queue + prefill, as on the real server.
FIRST_TOKEN_OVERHEAD_S = 0.0004
RESPONSE_OVERHEAD_S = 0.0006


def request_span(timing: RequestTiming, trace_id: bytes, span_id: bytes, parent_span_id: bytes = b"") -> Span:
    """The llm_request span vLLM 0.32 writes for one finished sequence."""
    ttft = timing.first_token - timing.arrival + FIRST_TOKEN_OVERHEAD_S
    e2e = timing.finished - timing.arrival + RESPONSE_OVERHEAD_S
    prefill = timing.first_token - timing.scheduled
    decode = timing.finished - timing.first_token
    attributes = [
        _kv("gen_ai.latency.time_to_first_token", float(ttft)),
        _kv("gen_ai.latency.e2e", float(e2e)),
        _kv("gen_ai.latency.time_in_queue", float(timing.scheduled - timing.queued)),
        _kv("gen_ai.usage.prompt_tokens", int(timing.prompt_tokens)),
        _kv("gen_ai.usage.completion_tokens", int(timing.completion_tokens)),
        _kv("gen_ai.latency.time_in_model_prefill", float(prefill)),
        _kv("gen_ai.latency.time_in_model_decode", float(decode)),
        _kv("gen_ai.latency.time_in_model_inference", float(prefill + decode)),
        _kv("gen_ai.request.id", timing.request_id),
    ]
    # vLLM sets these only when truthy: temperature 0 (greedy) is simply absent.
    for key, value in (
        ("gen_ai.request.top_p", float(timing.top_p)),
        ("gen_ai.request.max_tokens", int(timing.max_tokens)),
        ("gen_ai.request.temperature", float(timing.temperature)),
        ("gen_ai.request.n", int(timing.n)),
    ):
        if value:
            attributes.append(_kv(key, value))
    start_ns = round(timing.arrival * 1e9)
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=REQUEST_SPAN,
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + round((e2e + 0.0005) * 1e9),
        attributes=attributes,
        flags=FLAGS_REMOTE_PARENT if parent_span_id else FLAGS_LOCAL_PARENT,
    )


def gateway_span(trace_id: bytes, span_id: bytes, tenant: str, route: str, start: float, end: float) -> Span:
    """The caller's span: an API gateway that authenticated the tenant and forwarded the request to vLLM."""
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name=f"POST {route}",
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        start_time_unix_nano=round(start * 1e9),
        end_time_unix_nano=round(end * 1e9),
        attributes=[_kv(TENANT_KEY, tenant), _kv("http.route", route), _kv("http.response.status_code", 200)],
        flags=FLAGS_LOCAL_PARENT,
    )


def gateway_resource(instance_id: str) -> Resource:
    """The gateway's resource."""
    return Resource(
        attributes=[
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", SDK_VERSION),
            _kv("service.instance.id", instance_id),
            _kv("service.name", GATEWAY_SERVICE),
        ]
    )


def export_request(resource: Resource, scope: str, spans: Sequence[Span]) -> ExportTraceServiceRequest:
    """One export request from one process: one resource, one scope (as vLLM's BatchSpanProcessor sends)."""
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=resource, scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=spans)]
            )
        ]
    )


@cache
def _startup_capture() -> tuple[ExportTraceServiceRequest, ...]:
    folder = resources.files("exporter").joinpath("samples", SAMPLE)
    out = []
    for name in STARTUP_CAPTURE:
        request = ExportTraceServiceRequest()
        request.ParseFromString(folder.joinpath(name).read_bytes())
        out.append(request)
    return tuple(out)


def _attribute(resource: Resource, key: str) -> str:
    for kv in resource.attributes:
        if kv.key == key:
            return kv.value.string_value
    return ""


def startup_requests(
    processes: dict[str, VllmProcess], process_start: float, ready: float, rng: random.Random
) -> list[tuple[VllmProcess, ExportTraceServiceRequest]]:
    """vLLM's start-up spans for a start from `process_start` to `ready`, one export request per captured one,
    each with the process (`api_server`, `engine_core`, `worker` in `processes`) that sends it."""
    captured = _startup_capture()
    spans = [s for r in captured for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    first = min(s.start_time_unix_nano for s in spans)
    last = max(s.end_time_unix_nano for s in spans)
    scale = (ready - process_start) * 1e9 / (last - first)
    trace_id = rng.randbytes(16)
    new_ids: dict[bytes, bytes] = {}

    def remap(span_id: bytes) -> bytes:
        if not span_id:
            return b""
        if span_id not in new_ids:
            new_ids[span_id] = rng.randbytes(8)
        return new_ids[span_id]

    def when(ns: int) -> int:
        return round(process_start * 1e9 + (ns - first) * scale)

    out: list[tuple[VllmProcess, ExportTraceServiceRequest]] = []
    for request in captured:
        copy = ExportTraceServiceRequest()
        copy.CopyFrom(request)
        sender: VllmProcess | None = None
        for rs in copy.resource_spans:
            kind = _attribute(rs.resource, "vllm.process_kind") or "api_server"
            sender = processes[kind]
            rs.resource.CopyFrom(sender.resource())
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.trace_id = trace_id
                    span.span_id = remap(span.span_id)
                    span.parent_span_id = remap(span.parent_span_id)
                    span.start_time_unix_nano = when(span.start_time_unix_nano)
                    span.end_time_unix_nano = when(span.end_time_unix_nano)
        if sender is not None:
            out.append((sender, copy))
    return out
