"""OTLP trace export bodies (protobuf or OTLP-JSON) to plain records, validating each span on its own."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.requests.records import UNKNOWN, DecodedBatch, RequestSpan, StartupSpan, TenantHint

REQUEST_SPAN_NAME = "llm_request"
MAX_LABEL_VALUE_LENGTH = 128

# vLLM 0.32 llm_request attributes: key -> (slot, kind). Every one of these is set on every request span.
_TTFT, _E2E, _QUEUE, _PREFILL, _DECODE, _PROMPT, _COMPLETION = range(7)
_REQUIRED: dict[str, tuple[int, str]] = {
    "gen_ai.latency.time_to_first_token": (_TTFT, "seconds"),
    "gen_ai.latency.e2e": (_E2E, "seconds"),
    "gen_ai.latency.time_in_queue": (_QUEUE, "seconds"),
    "gen_ai.latency.time_in_model_prefill": (_PREFILL, "seconds"),
    "gen_ai.latency.time_in_model_decode": (_DECODE, "seconds"),
    "gen_ai.usage.prompt_tokens": (_PROMPT, "tokens"),
    "gen_ai.usage.completion_tokens": (_COMPLETION, "tokens"),
}
_SLOT_NAMES = {slot: key for key, (slot, _) in _REQUIRED.items()}
_REQUEST_ID = "gen_ai.request.id"

# vLLM's start-up spans (0.32) -> phase label. "Worker init" is left out: two nested spans share that name.
STARTUP_PHASES = {
    "Overall Loading": "total",
    "Executor init": "executor_init",
    "Initialize model": "initialize_model",
    "Load weights": "load_weights",
    "Load model": "load_model",
    "Allocate KV cache": "allocate_kv_cache",
    "Prepare model": "prepare_model",
}


class BodyDecodeError(ValueError):
    """The export request body as a whole could not be decoded."""


# (resource attributes, peer address) -> (instance id, its model or None, its role or None), or None when no
# instance matches.
SenderLookup = Callable[[dict[str, str], str | None], tuple[str, str | None, str | None] | None]
ROLES = ("prefill", "decode", "both")


@dataclass(frozen=True)
class DecodeRules:
    """How to read model and tenant from a span and its resource, and the per-span attribute limit.

    `sender` maps a sender (resource attributes, peer address) to the vLLM instance it is and that instance's
    model, from the topology; when it knows no model, `model_attribute` (through `model_map`) names it, and
    `instance_of_model` finds the instance of a sender the topology did not recognise by that model.
    """

    sender: SenderLookup | None = None
    instance_of_model: Callable[[str], str] | None = None
    model_attribute: str = "service.name"
    model_map: Mapping[str, str] = field(default_factory=dict)
    tenant_keys: Sequence[str] = ("tenant.id",)
    max_attributes: int = 256
    role_attribute: str = "llm.role"  # resource attribute naming the sender's prefill/decode role


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise BodyDecodeError(f"invalid protobuf ExportTraceServiceRequest: {exc}") from exc
    return request


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP-JSON ExportTraceServiceRequest (ids in hex, as the OTLP JSON encoding specifies)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BodyDecodeError(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BodyDecodeError(f"OTLP-JSON body must be an object, got {type(doc).__name__}")
    try:
        _hex_ids_to_base64(doc)
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise BodyDecodeError(f"JSON is not an ExportTraceServiceRequest: {exc}") from exc


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """Rewrite hex trace/span ids to the base64 that protobuf's JSON mapping expects; bad hex becomes empty."""
    for rs in _list(doc, "resourceSpans", "resource_spans"):
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            for span in _list(ss, "spans"):
                if not isinstance(span, dict):
                    continue
                for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    value = span.get(key)
                    if isinstance(value, str):
                        try:
                            span[key] = base64.b64encode(bytes.fromhex(value)).decode()
                        except ValueError:
                            span[key] = ""  # rejected later as invalid_id, alone


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def _label(value: str) -> str:
    return value[:MAX_LABEL_VALUE_LENGTH]


def _string_value(any_value: Any) -> str | None:
    """A tenant or model value: strings and integers count; anything else (or empty) is absent."""
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return _label(any_value.string_value) or None
    if kind == "int_value":
        return str(any_value.int_value)
    return None


def _find(attributes: Any, keys: Sequence[str], limit: int) -> str | None:
    """The first of `keys` present (with a usable value) among the first `limit` attributes."""
    found: dict[str, str] = {}
    for i, kv in enumerate(attributes):
        if i >= limit:
            break
        if kv.key in keys:
            value = _string_value(kv.value)
            if value is not None:
                found.setdefault(kv.key, value)
    for key in keys:
        if key in found:
            return found[key]
    return None


def _resource_dict(attributes: Any, limit: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, kv in enumerate(attributes):
        if i >= limit:
            break
        value = _string_value(kv.value)
        if value is not None:
            out.setdefault(kv.key, value)
    return out


def _sender(resource_attrs: Any, rules: DecodeRules, peer: str | None) -> tuple[str, str, str]:
    """(model, instance, role) of a resource's spans: from the topology's instance when the sender matches one,
    else from the model attribute; the role from the resource attribute, else the instance's, else ''."""
    resource = _resource_dict(resource_attrs, rules.max_attributes)
    found = rules.sender(resource, peer) if rules.sender else None
    declared = resource.get(rules.role_attribute, "")
    role = declared if declared in ROLES else (found[2] or "") if found is not None else ""
    if found is not None and found[1] is not None:
        return _label(found[1]), found[0], role
    raw = _find(resource_attrs, (rules.model_attribute,), rules.max_attributes)
    model = UNKNOWN if raw is None else _label(rules.model_map.get(raw, raw))
    if found is not None:
        return model, found[0], role
    return model, rules.instance_of_model(model) if rules.instance_of_model else "", role


def _service_name(resource_attrs: Any, limit: int) -> str:
    return _find(resource_attrs, ("service.name",), limit) or ""


def flatten(request: ExportTraceServiceRequest, rules: DecodeRules, peer: str | None = None) -> DecodedBatch:
    """Turn a decoded export request into request records, tenant hints and counts, rejecting bad spans alone.

    `peer` is the sender's address as the transport saw it (for matching the sender to a vLLM instance)."""
    batch = DecodedBatch()
    tenant_keys = tuple(rules.tenant_keys)
    limit = rules.max_attributes
    for resource_spans in request.resource_spans:
        resource_attrs = resource_spans.resource.attributes
        model, instance, role = _sender(resource_attrs, rules, peer)
        service = _service_name(resource_attrs, limit)
        resource_tenant = _find(resource_attrs, tenant_keys, limit) if tenant_keys else None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                batch.received += 1
                if span.name != REQUEST_SPAN_NAME:
                    batch.other_names[_label(span.name)] += 1
                    phase = STARTUP_PHASES.get(span.name) or ("warmup" if span.name.startswith("Warmup") else None)
                    if phase is not None and span.end_time_unix_nano >= span.start_time_unix_nano:
                        seconds = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
                        batch.startup.append(StartupSpan(model, phase, seconds, span.end_time_unix_nano))
                    tenant = _find(span.attributes, tenant_keys, limit) if tenant_keys else None
                    if tenant is not None and len(span.trace_id) == 16:
                        batch.hints.append(TenantHint(span.trace_id, tenant))
                    continue
                record = _request_record(span, model, instance, service, resource_tenant, tenant_keys, limit, batch)
                if record is not None:
                    batch.requests.append(record._replace(role=role) if role else record)
    return batch


def _request_record(
    span: Any,
    model: str,
    instance: str,
    service: str,
    resource_tenant: str | None,
    tenant_keys: tuple[str, ...],
    limit: int,
    batch: DecodedBatch,
) -> RequestSpan | None:
    """Validate one llm_request span; on a bad value count the reason in `batch` and return None."""
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or len(span_id) != 8 or len(parent_id) not in (0, 8):
        batch.reject("invalid_id", f"span {span_id.hex() or '(none)'}: trace id must be 16 bytes and span id 8")
        return None
    attributes = span.attributes
    if len(attributes) > limit:
        batch.reject("too_many_attributes", f"span {span_id.hex()}: {len(attributes)} attributes, limit {limit}")
        return None
    # Hot path (one pass per span over ~14 attributes): locals, no per-attribute allocation beyond protobuf's own.
    values: list[float | int | None] = [None, None, None, None, None, None, None]
    request_id = ""
    tenant = None
    for kv in attributes:
        key = kv.key
        spec = _REQUIRED.get(key)
        if spec is None:
            if key == _REQUEST_ID:
                request_id = kv.value.string_value
            elif tenant is None and key in tenant_keys:
                tenant = _string_value(kv.value)
            continue
        value = kv.value
        kind = value.WhichOneof("value")
        if spec[1] == "seconds":
            if kind == "double_value":
                seconds = value.double_value
            elif kind == "int_value":
                seconds = float(value.int_value)
            else:
                batch.reject("wrong_type", f"span {span_id.hex()}: {key} must be a number, got {kind}")
                return None
            if not (0.0 <= seconds < math.inf):
                batch.reject("invalid_value", f"span {span_id.hex()}: {key} = {seconds} is not a finite duration >= 0")
                return None
            values[spec[0]] = seconds
        else:
            if kind != "int_value":
                batch.reject("wrong_type", f"span {span_id.hex()}: {key} must be an integer, got {kind}")
                return None
            count = value.int_value
            if count < 0:
                batch.reject("invalid_value", f"span {span_id.hex()}: {key} = {count} is negative")
                return None
            values[spec[0]] = count
    if None in values:
        missing = _SLOT_NAMES[values.index(None)]
        batch.reject("missing_attribute", f"span {span_id.hex()}: missing attribute {missing}")
        return None
    if tenant is not None:
        source = "span"
    elif resource_tenant is not None:
        tenant, source = resource_tenant, "resource"
    else:
        source = ""
    ttft, e2e, queue, prefill, decode = cast(list[float], values[:_PROMPT])
    prompt, completion = cast(list[int], values[_PROMPT:])
    return RequestSpan(
        trace_id,
        span_id,
        parent_id,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        model,
        tenant,
        source,
        request_id[:MAX_LABEL_VALUE_LENGTH],
        ttft,
        e2e,
        queue,
        prefill,
        decode,
        prompt,
        completion,
        instance,
        service,
    )
