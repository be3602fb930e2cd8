"""The simulator speaks vLLM 0.32's formats: its spans and /metrics are held against the real captures.

Every expectation (span name, kind, scope, attribute keys, their order and OTLP value types; metric names, types,
label names, bucket edges) is computed from the files in exporter/samples/vllm-0.32-cpu/, not typed in.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pytest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.engine.parse import parse
from exporter.otlp.decode import REQUEST_SPAN_NAME, STARTUP_PHASES, DecodeRules, flatten
from exporter.sim.metrics import render
from exporter.sim.scenarios import scenario
from exporter.sim.simulation import Outgoing, Simulation
from exporter.sim.spans import export_request
from exporter.sim.spec import NodeSpec
from tests.support.otlp import HTTP_CAPTURE, SAMPLES, load

START = 1_800_000_000.0


@cache
def simulation() -> Simulation:
    """A node that ran 30 s (shared: the tests only read it)."""
    sim = Simulation(NodeSpec(rate_scale=2.0), scenario("steady"), seed=3, start=START)
    sim.advance_to(START + 30.0)
    return sim


def sim_items(name: str | None = None) -> list[Outgoing]:
    return [o for o in simulation().outbox if name is None or o.span.name == name]


def captured() -> list[tuple[Resource, str, Span]]:
    """(resource, scope, span) of every span in the HTTP capture."""
    return [
        (rs.resource, ss.scope.name, span)
        for path in HTTP_CAPTURE
        for rs in load(path).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def kinds(attributes: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple((kv.key, kv.value.WhichOneof("value")) for kv in attributes)


def real_requests() -> list[tuple[Resource, str, Span]]:
    return [c for c in captured() if c[2].name == REQUEST_SPAN_NAME]


def test_llm_request_spans_have_the_captured_name_kind_scope_and_flags() -> None:
    real = real_requests()
    spans = sim_items(REQUEST_SPAN_NAME)
    assert len(spans) > 100
    assert {o.scope for o in spans} == {scope for _, scope, _ in real}
    assert {o.span.kind for o in spans} == {span.kind for _, _, span in real}
    # Flags as the capture has them: one value with a remote parent (traceparent given), another without.
    flags = {bool(span.parent_span_id): span.flags for _, _, span in real}
    assert {o.span.flags for o in spans if o.span.parent_span_id} == {flags[True]}
    no_parent = Simulation(NodeSpec(gateway_share=0.0), scenario("steady"), seed=3, start=START)
    no_parent.advance_to(START + 10.0)
    orphans = [o.span for o in no_parent.outbox if o.span.name == REQUEST_SPAN_NAME]
    assert orphans and {s.flags for s in orphans} == {flags[False]}
    assert all(not s.parent_span_id for s in orphans)


def test_llm_request_attributes_have_the_captured_keys_order_and_value_types() -> None:
    real = [kinds(span.attributes) for _, _, span in real_requests()]
    order = max(([k for k, _ in r] for r in real), key=len)  # the fullest span gives vLLM's order
    real_types: dict[str, set[str | None]] = defaultdict(set)
    for r in real:
        for key, kind in r:
            real_types[key].add(kind)
    always = set.intersection(*({k for k, _ in r} for r in real))
    sometimes = set(order) - always
    seen_keys: Counter[str] = Counter()
    sim_types: dict[str, set[str | None]] = defaultdict(set)
    spans = sim_items(REQUEST_SPAN_NAME)
    for item in spans:
        keys = [k for k, _ in kinds(item.span.attributes)]
        assert keys == [k for k in order if k in keys], keys  # vLLM's order, nothing else
        assert always <= set(keys)
        seen_keys.update(keys)
        for key, kind in kinds(item.span.attributes):
            sim_types[key].add(kind)
    assert sim_types == real_types
    # Optional keys (temperature, absent when 0) are present on some spans and absent on others, as in vLLM.
    assert sometimes and all(0 < seen_keys[k] < len(spans) for k in sometimes)


def test_the_api_server_resource_has_the_captured_attribute_keys_and_types() -> None:
    resource = real_requests()[0][0]
    for item in sim_items(REQUEST_SPAN_NAME):
        assert kinds(item.resource.attributes) == kinds(resource.attributes)


def test_start_up_spans_repeat_the_captured_ones_per_instance() -> None:
    real = Counter(
        (kinds(res.attributes), scope, span.name, span.kind)
        for res, scope, span in captured()
        if span.name != REQUEST_SPAN_NAME
    )
    startup = [o for o in simulation().outbox if o.span.name != REQUEST_SPAN_NAME and o.sender != "gateway"]
    got = Counter((kinds(o.resource.attributes), o.scope, o.span.name, o.span.kind) for o in startup)
    instances = len(simulation().instances)
    assert got == Counter({key: count * instances for key, count in real.items()})


def test_the_exporter_decodes_every_simulated_span_without_rejecting_one() -> None:
    sim = simulation()
    by_sender: dict[str, list[Outgoing]] = defaultdict(list)
    for item in sim.outbox:
        by_sender[item.sender].append(item)
    requests = startup = hints = 0
    for items in by_sender.values():
        batch = flatten(export_request(items[0].resource, items[0].scope, [i.span for i in items]), DecodeRules())
        assert not batch.rejected, batch.first_errors
        requests += len(batch.requests)
        startup += len(batch.startup)
        hints += len(batch.hints)
        for record in batch.requests:
            assert record.model.startswith("vllm-")  # service.name: the instance's name
            # TTFT is queue + prefill + the API server's few milliseconds, as on the real server.
            assert 0 < record.ttft_s - (record.queue_s + record.prefill_s) < 0.005
    assert requests == sim.ledger.outcomes["span_sent"] > 100
    assert hints == requests  # every request came through the gateway (default)
    phases = {s.phase for s in flatten(load(HTTP_CAPTURE[3]), DecodeRules()).startup}
    assert startup and phases <= set(STARTUP_PHASES.values()) | {"warmup"}


def test_gateway_spans_parent_the_request_spans_and_name_the_tenant() -> None:
    gateways = {(o.span.trace_id, o.span.span_id): o.span for o in sim_items() if o.sender == "gateway"}
    for item in sim_items(REQUEST_SPAN_NAME):
        parent = gateways[(item.span.trace_id, item.span.parent_span_id)]
        assert parent.start_time_unix_nano <= item.span.start_time_unix_nano
        assert parent.end_time_unix_nano >= item.span.end_time_unix_nano
        assert next(kv.key for kv in parent.attributes) == "tenant.id"


# --- /metrics ---


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@cache
def real_metrics() -> dict[str, Metric]:
    return families((SAMPLES / "metrics.txt").read_text())


def sim_metrics_text() -> str:
    instance = simulation().instances[0]
    return render(instance.stats, instance.model.name, instance.cache, instance.process_start).decode()


def label_names(family: Metric) -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = defaultdict(set)
    for sample in family.samples:
        out[sample.name].add(frozenset(k for k in sample.labels if k != "le"))
    return out


def bucket_edges(family: Metric) -> list[str]:
    return list(dict.fromkeys(s.labels["le"] for s in family.samples if s.name.endswith("_bucket")))


def compared_families() -> list[str]:
    """vLLM's own families, and the process and HTTP ones the exporter reads (restarts, API responses)."""
    return [n for n in real_metrics() if n.startswith("vllm:") or n.startswith(("process_", "http_requests"))]


def test_every_vllm_family_has_the_captured_type_help_labels_and_bucket_edges() -> None:
    sim = families(sim_metrics_text())
    names = compared_families()
    assert len(names) >= 60
    for name in names:
        real = real_metrics()[name]
        assert name in sim, name
        assert sim[name].type == real.type, name
        if name.startswith("vllm:"):
            assert sim[name].documentation == real.documentation, name
        assert label_names(sim[name]) == label_names(real), name
        assert bucket_edges(sim[name]) == bucket_edges(real), name


def test_only_interpreter_and_http_size_and_duration_families_are_left_out() -> None:
    left_out = set(real_metrics()) - set(families(sim_metrics_text()))
    assert left_out and all(n.startswith(("python_", "http_request_", "http_response_")) for n in left_out), left_out


def test_the_exporter_parses_the_simulated_metrics_into_the_engine_state() -> None:
    instance = simulation().instances[1]
    reading = parse(render(instance.stats, instance.model.name, instance.cache, instance.process_start).decode())
    model = reading.models[instance.model.name]
    assert reading.process_start_time_s == instance.process_start
    assert model.kv_capacity_tokens == instance.kv_blocks * instance.model.block_size
    assert model.kv_bytes_per_token == pytest.approx(instance.model.kv_bytes_per_token)
    assert model.running == len(instance.engine.running)
    assert model.counters["generation_tokens"] == instance.stats.counters[("vllm:generation_tokens", "")] > 0
    assert model.counters["prefix_hits"] > 0  # a tenant with a shared system prompt
    finished = sum(model.finished.values())
    ledger = simulation().ledger
    assert finished == sum(
        1 for t in ledger.requests.values() if t.instance == instance.name and t.outcome == "finished"
    )
    assert sum(reading.http_responses.values()) == finished
