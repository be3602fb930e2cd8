"""Span validation: a bad value rejects that span alone, with a reason; the rest of its batch is kept."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporter.otlp.decode import BodyDecodeError, DecodeRules, flatten, parse_json, parse_protobuf
from exporter.requests.records import UNKNOWN
from tests.support.otlp import (
    fresh,
    gateway_span,
    kv,
    request_of,
    sample_request_spans,
    sample_resource,
    to_otlp_json,
    with_attribute,
)

TTFT = "gen_ai.latency.time_to_first_token"
PROMPT = "gen_ai.usage.prompt_tokens"

BAD_VALUES: list[tuple[str, Any, str]] = [
    (TTFT, "0.5", "wrong_type"),
    (TTFT, True, "wrong_type"),
    (TTFT, -0.001, "invalid_value"),
    (TTFT, float("nan"), "invalid_value"),
    (TTFT, float("inf"), "invalid_value"),
    ("gen_ai.latency.time_in_model_decode", -1, "invalid_value"),
    (PROMPT, -5, "invalid_value"),
    (PROMPT, 5.0, "wrong_type"),
    (PROMPT, "12", "wrong_type"),
    ("gen_ai.usage.completion_tokens", None, "missing_attribute"),
    ("gen_ai.latency.e2e", None, "missing_attribute"),
]


@pytest.mark.parametrize(("key", "value", "reason"), BAD_VALUES)
def test_bad_value_rejects_only_that_span(key: str, value: Any, reason: str) -> None:
    good = sample_request_spans()
    bad = with_attribute(good[0], key, value)
    bad.span_id = b"\x01" * 8
    batch = flatten(request_of([bad, *good[1:]]), DecodeRules())
    assert batch.rejected == {reason: 1}
    assert len(batch.requests) == len(good) - 1
    assert all(r.span_id != bad.span_id for r in batch.requests)
    assert batch.first_errors and key in batch.first_errors[0]


def test_integer_durations_are_accepted_as_seconds() -> None:
    span = with_attribute(sample_request_spans()[0], TTFT, 2)
    [record] = flatten(request_of([span]), DecodeRules()).requests
    assert record.ttft_s == 2.0


@pytest.mark.parametrize(
    ("trace_id", "span_id"), [(b"", b"\x01" * 8), (b"\x01" * 16, b""), (b"\x01" * 15, b"\x02" * 8)]
)
def test_bad_ids_are_rejected(trace_id: bytes, span_id: bytes) -> None:
    span = sample_request_spans()[0]
    span.trace_id, span.span_id = trace_id, span_id
    assert flatten(request_of([span]), DecodeRules()).rejected == {"invalid_id": 1}


def test_span_with_ten_thousand_attributes_is_rejected_alone() -> None:
    spans = sample_request_spans()
    huge = spans[0]
    huge.attributes.extend(kv(f"junk.{i}", i) for i in range(10_000))
    batch = flatten(request_of(spans), DecodeRules(max_attributes=256))
    assert batch.rejected == {"too_many_attributes": 1}
    assert len(batch.requests) == len(spans) - 1


def test_model_from_resource_attribute_with_map_and_unknown() -> None:
    span = sample_request_spans()[0]
    assert flatten(request_of([span]), DecodeRules()).requests[0].model == "vllm-tiny"
    mapped = flatten(request_of([span]), DecodeRules(model_map={"vllm-tiny": "tiny"}))
    assert mapped.requests[0].model == "tiny"
    other_key = flatten(request_of([span]), DecodeRules(model_attribute="k8s.deployment.name"))
    assert other_key.requests[0].model == UNKNOWN


def test_tenant_from_span_then_resource() -> None:
    span = sample_request_spans()[0]
    resource = Resource()
    resource.CopyFrom(sample_resource())
    resource.attributes.append(kv("tenant.id", "from-resource"))
    [on_resource] = flatten(request_of([span], resource), DecodeRules()).requests
    assert (on_resource.tenant, on_resource.tenant_source) == ("from-resource", "resource")
    tagged = with_attribute(span, "tenant.id", "from-span")
    [on_span] = flatten(request_of([tagged], resource), DecodeRules()).requests
    assert (on_span.tenant, on_span.tenant_source) == ("from-span", "span")
    custom = with_attribute(span, "org", "from-org")
    [by_key] = flatten(request_of([custom]), DecodeRules(tenant_keys=("org",))).requests
    assert by_key.tenant == "from-org"


def test_gateway_spans_become_tenant_hints() -> None:
    rng = random.Random(0)
    trace = rng.randbytes(16)
    batch = flatten(request_of([gateway_span(trace, rng.randbytes(8), "acme")]), DecodeRules())
    assert [(h.trace_id, h.tenant) for h in batch.hints] == [(trace, "acme")]
    assert batch.other_names == {"gateway": 1}


def test_long_label_values_are_truncated() -> None:
    span = with_attribute(sample_request_spans()[0], "tenant.id", "x" * 10_000)
    [record] = flatten(request_of([span]), DecodeRules()).requests
    assert record.tenant == "x" * 128


def test_json_and_protobuf_decode_to_the_same_request() -> None:
    rng = random.Random(1)
    spans = [fresh(s, rng, parent=rng.randbytes(8)) for s in sample_request_spans()]
    request = request_of(spans)
    assert parse_json(to_otlp_json(request)) == parse_protobuf(request.SerializeToString())


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"resourceSpans": 5}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_bad_json_bodies_raise_decode_errors(body: bytes) -> None:
    with pytest.raises(BodyDecodeError):
        parse_json(body)


def test_truncated_protobuf_raises() -> None:
    body = request_of(sample_request_spans()).SerializeToString()
    with pytest.raises(BodyDecodeError):
        parse_protobuf(body[: len(body) // 2])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(body: bytes) -> None:
    try:
        request = parse_protobuf(body)
    except BodyDecodeError:
        return
    batch = flatten(request, DecodeRules())
    assert batch.received >= len(batch.requests) + sum(batch.rejected.values())


any_values = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=20)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.just(AnyValue()),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([TTFT, PROMPT, "gen_ai.latency.e2e", "tenant.id", "x"]), any_values), max_size=8)
)
def test_any_attribute_values_give_a_record_or_one_counted_rejection(changes: list[tuple[str, AnyValue]]) -> None:
    span = sample_request_spans()[0]
    for key, value in changes:
        span.attributes.append(KeyValue(key=key, value=value))
    batch = flatten(request_of([span]), DecodeRules())
    assert len(batch.requests) + sum(batch.rejected.values()) == 1
    for record in batch.requests:
        assert record.ttft_s >= 0 and record.prompt_tokens >= 0


def test_topology_names_the_model_of_a_known_sender_before_the_resource_attribute() -> None:
    seen: list[tuple[dict[str, str], str | None]] = []

    def sender(resource: dict[str, str], peer: str | None) -> tuple[str, str | None, str | None] | None:
        seen.append((resource, peer))
        return ("pod-a", "llama-3-8b", None) if resource.get("vllm.process_id") == "14512" else None

    rules = DecodeRules(
        sender=sender,
        instance_of_model=lambda m: "only-one" if m == "mapped" else "",
        model_map={"vllm-tiny": "mapped"},
    )
    [known] = flatten(request_of([sample_request_spans()[0]]), rules, peer="ipv4:10.1.2.3:5555").requests
    assert (known.model, known.instance) == ("llama-3-8b", "pod-a")
    assert seen == [(seen[0][0], "ipv4:10.1.2.3:5555")] and seen[0][0]["service.name"] == "vllm-tiny"
    other = Resource(attributes=[kv("service.name", "vllm-tiny"), kv("vllm.process_id", "999")])
    [unknown_sender] = flatten(request_of([sample_request_spans()[0]], other), rules).requests
    # No instance matched: the attribute through the map names the model, and the model its instance.
    assert (unknown_sender.model, unknown_sender.instance) == ("mapped", "only-one")


def test_the_role_comes_from_the_resource_attribute_else_the_instance() -> None:
    def sender(resource: dict[str, str], peer: str | None) -> tuple[str, str | None, str | None] | None:
        return ("pod-p", "m", "prefill") if resource.get("service.name") == "from-topology" else None

    rules = DecodeRules(sender=sender)
    declared = Resource(attributes=[kv("service.name", "vllm-tiny"), kv("llm.role", "decode")])
    [record] = flatten(request_of([sample_request_spans()[0]], declared), rules).requests
    assert record.role == "decode"
    [record] = flatten(
        request_of([sample_request_spans()[0]], Resource(attributes=[kv("service.name", "from-topology")])), rules
    ).requests
    assert (record.role, record.instance) == ("prefill", "pod-p")
    nonsense = Resource(attributes=[kv("service.name", "vllm-tiny"), kv("llm.role", "chef")])
    [record] = flatten(request_of([sample_request_spans()[0]], nonsense), rules).requests
    assert record.role == ""
    custom = DecodeRules(role_attribute="my.role")
    mine = Resource(attributes=[kv("service.name", "vllm-tiny"), kv("my.role", "prefill")])
    [record] = flatten(request_of([sample_request_spans()[0]], mine), custom).requests
    assert record.role == "prefill"
