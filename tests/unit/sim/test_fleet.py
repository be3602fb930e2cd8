"""The fleet's layout, and a P/D request run as two halves on two nodes."""

from __future__ import annotations

import pytest

from exporter.sim.metrics import render
from exporter.sim.scenarios import scenario
from exporter.sim.simulation import ROLE_ATTRIBUTE, Simulation
from exporter.sim.spans import FIRST_TOKEN_OVERHEAD_S
from exporter.sim.spec import DECODE, PREFILL, FleetSpec

START = 1_800_000_000.0


def _attrs(span: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:  # type: ignore[attr-defined]
        value = kv.value
        out[kv.key] = value.double_value if value.HasField("double_value") else value.int_value
    return out


def test_the_layout_places_each_shape_where_the_docstring_says() -> None:
    spec = FleetSpec(nodes=4)
    layout = spec.layout()
    prefill = next(p for p in layout if p.role == PREFILL)
    decode = next(p for p in layout if p.role == DECODE)
    assert prefill.model == decode.model and prefill.node != decode.node
    (tp,) = [p for p in layout if p.group]
    assert tp.model.tp == len(tp.gpus) == 4
    assert {spec.node_of_gpu(g) for g in tp.gpus} == {tp.node, tp.node + 1}
    assert spec.node_of_gpu(tp.gpus[0]) == tp.node  # the leader's GPUs first, its API server there
    (dp,) = [p for p in layout if p.engines > 1]
    assert dp.engines == 2 and len(dp.gpus) == 2
    used = [g for p in layout for g in p.gpus]
    assert sorted(used) == list(range(spec.gpus))  # every GPU used once
    assert len({p.name for p in layout}) == len(layout)
    assert [p for p in layout if p.node == 3]  # a fourth node of plain replicas
    with pytest.raises(ValueError, match="at least 3"):
        FleetSpec(nodes=2)


def test_a_pd_request_runs_as_two_halves_and_the_truth_is_the_users_ttft() -> None:
    sim = Simulation(FleetSpec(nodes=3, rate_scale=0.5), scenario("steady"), seed=3, start=START)
    sim.advance_to(START + 20.0)
    prefill = next(i for i in sim.instances if i.role == PREFILL)
    decode = next(i for i in sim.instances if i.role == DECODE)
    pd = [t for t in sim.ledger.by_span().values() if t.model == prefill.model.name]
    assert len(pd) > 5
    spans = {o.span.trace_id + o.span.span_id: o for o in sim.outbox if o.span.name == "llm_request"}
    for truth in pd:
        first, second = spans[truth.prefill_span_key], spans[truth.span_key]
        assert first.span.trace_id == second.span.trace_id
        assert first.span.parent_span_id == second.span.parent_span_id != b""
        # Both halves go to the decode node's exporter; each carries its role.
        assert first.node == second.node == decode.node != prefill.node
        roles = {kv.key: kv.value.string_value for kv in first.resource.attributes}
        assert roles[ROLE_ATTRIBUTE] == PREFILL
        assert {kv.key: kv.value.string_value for kv in second.resource.attributes}[ROLE_ATTRIBUTE] == DECODE
        a, b = _attrs(first.span), _attrs(second.span)
        assert a["gen_ai.usage.completion_tokens"] == 1
        assert b["gen_ai.usage.prompt_tokens"] == a["gen_ai.usage.prompt_tokens"]
        # The user's TTFT: prefill start -> the decode side's first token, as the exporter joins it.
        joined = (second.span.start_time_unix_nano - first.span.start_time_unix_nano) / 1e9 + float(
            b["gen_ai.latency.time_to_first_token"]  # type: ignore[arg-type]
        )
        assert truth.ttft_s == pytest.approx(joined, abs=2e-6)
        assert truth.prefill_first_token is not None and truth.first_token is not None
        assert truth.first_token > truth.prefill_first_token
        # The decode half computed no prefill: its only prefill tokens are the prefill half's prompt.
        assert truth.prefill_tokens <= int(a["gen_ai.usage.prompt_tokens"])  # type: ignore[call-overload]
        assert truth.decode_tokens == b["gen_ai.usage.completion_tokens"]
        assert truth.ttft_s is not None and truth.ttft_s > FIRST_TOKEN_OVERHEAD_S
    # Counted once: the finished count is one per request, not per half.
    assert sum(n for (m, _), n in sim.ledger.finished_by.items() if m == prefill.model.name) == len(pd)
    # The decode engine loaded the prompts' KV: external tokens, no local prefill of them.
    counters = decode.stats.counters
    assert counters[("vllm:prompt_tokens_by_source", "external_kv_transfer")] > 0
    assert counters[("vllm:prompt_tokens_by_source", "local_compute")] == 0


def test_a_data_parallel_server_balances_its_engines_and_labels_them() -> None:
    sim = Simulation(FleetSpec(nodes=3, rate_scale=0.5), scenario("steady"), seed=3, start=START)
    sim.advance_to(START + 20.0)
    (server,) = [s for s in sim.servers if len(s.engines) > 1]
    done = [e.stats.histograms["vllm:e2e_request_latency_seconds"].counts for e in server.engines]
    totals = [sum(c) for c in done]
    assert min(totals) > 0 and abs(totals[0] - totals[1]) <= max(totals) * 0.3
    text = render([e.stats for e in server.engines], server.model.name, server.engines[0].cache, START).decode()
    for engine in ("0", "1"):
        for family in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
            assert f'{family}{{engine="{engine}",model_name="{server.model.name}"}}' in text
    assert text.count("# TYPE vllm:num_requests_running gauge") == 1
    one = render(sim.servers[0].engines[0].stats, "m", sim.servers[0].engines[0].cache, START).decode()
    assert 'engine="0"' in one and 'engine="1"' not in one


def test_a_tp_group_spans_two_nodes_and_its_worker_gpus_work() -> None:
    spec = FleetSpec(nodes=3, rate_scale=0.5)
    sim = Simulation(spec, scenario("steady"), seed=3, start=START)
    sim.advance_to(START + 15.0)
    (server,) = [s for s in sim.servers if s.placement.group]
    worker = [g for g in server.gpus if spec.node_of_gpu(g) != server.node]
    assert len(worker) == 2
    idle_j = 15.0 * sim.spec.gpu.idle_w
    for g in worker:  # busy with the group's steps: more than an idle GPU's energy
        assert sim.gpus[g].timeline.at(START + 15.0).energy_j > idle_j * 1.05
