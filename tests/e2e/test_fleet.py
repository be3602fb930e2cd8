"""A simulated fleet through Prometheus: one process and one exporter per node (`exporter.sim.fleet`), one real
Prometheus scraping them all. What Prometheus holds is compared with the truth, which this test rebuilds in its own
process by running the same seeded fleet simulation (it gives the same results whatever the advance schedule:
tests/unit/sim/test_determinism.py).

- every request counted once fleet-wide: per tenant, the sum over every exporter of llm_requests_total equals what
  the simulation finished, exactly (a P/D request's two halves included);
- the P/D pair (prefill on node-1, decode on node-2, both halves' spans routed to node-2's exporter): the user-visible
  TTFT the exporters observed, mean over the model's requests, within 1 % of the simulation's;
- the data-parallel server's /metrics has its engines apart (engine="0", engine="1"), and so do its exporter's
  llm_engine_dp_* series in Prometheus;
- the tensor-parallel group over two nodes: over a window that starts and ends idle, its leader's charges, its
  worker's group usage, and idle, unattributed and pending energy of all its GPUs add up to what NVML measured on
  them (within 0.5 %); the fleet rules' per-tenant energy of the group adds up to the leader's charges plus the
  worker's usage, the worker's part split as the leader's;
- every panel of every dashboard has data from the fleet, the fleet-only ones (a group's cost per tenant) included.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.dashboards.generate import specs as dashboard_specs
from exporter.dashboards.preview import evaluate
from exporter.metrics import catalog
from exporter.sim.fleet import Fleet, FleetNodeConfig
from exporter.sim.promstack import PROMETHEUS, PromStack, find_binary, rule_files
from exporter.sim.scenarios import scenario
from exporter.sim.simulation import Simulation
from exporter.sim.spec import FleetSpec, Placement
from tests.support.procs import free_port

pytestmark = pytest.mark.skipif(
    find_binary(PROMETHEUS) is None, reason="prometheus is not on the PATH (apt install prometheus)"
)

NODES = 3
SEED = 5
RATE_SCALE = 0.25  # about 6 requests/s over the fleet: modest, for CI's 2 cores running 3 fleet simulations
IDLE_S = 25.0  # no requests before then: every exporter is up and attributing, its GPUs idle, when measuring starts
ARRIVALS_S = 65.0  # requests arrive from IDLE_S on until this long after the start; then the fleet drains
# Panels of events: an XID, an engine restart, a firing alert.
EVENT_PANELS = {"XID errors over the range", "Cold start: time to ready", "Firing alerts"}
SETTLE_S = 4.0  # after the last request's end: the simulation's lead, the span batch delay, one scrape


@dataclass(frozen=True)
class FleetUnderTest:
    """What the group-energy assertions need: the fleet's layout, which node each server and GPU is on, and
    where Prometheus answers."""

    spec: FleetSpec
    layout: list[Placement]
    prometheus: str  # base URL
    truth: Simulation  # the same simulation, advanced past the last request


def fleet_groups(fleet: FleetUnderTest) -> dict[str, dict[str, Any]]:
    """The fleet's multi-node groups: name -> model, leader node, and the GPU UUIDs on each node (node-N labels)."""
    out: dict[str, dict[str, Any]] = {}
    for placement in fleet.layout:
        if placement.group:
            by_node: dict[str, list[str]] = {}
            for g in placement.gpus:
                by_node.setdefault(f"node-{fleet.spec.node_of_gpu(g) + 1}", []).append(fleet.truth.gpus[g].uuid)
            out[placement.group] = {
                "model": placement.model.name,
                "leader": f"node-{placement.node + 1}",
                "gpus_by_node": by_node,
            }
    return out


async def _query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict[str, Any]]:
    answer = (await client.get(f"{base}/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _truth(start: float) -> tuple[Simulation, float]:
    """The fleet's simulation advanced until every request has finished; and when the last one did."""
    sim = Simulation(
        FleetSpec(nodes=NODES, rate_scale=RATE_SCALE),
        scenario("steady"),
        SEED,
        start,
        arrivals_until=start + ARRIVALS_S,
        arrivals_from=start + IDLE_S,
    )
    t = start + ARRIVALS_S
    sim.advance_to(t)
    while any(r.outcome == "in_flight" for r in sim.ledger.requests.values()):
        t += 1.0
        sim.advance_to(t)
    assert t < start + ARRIVALS_S + 60, "the fleet takes more than a minute to drain"
    return sim, max(r.finished_at or 0.0 for r in sim.ledger.requests.values())


async def _run(work: Path) -> None:
    start = time.time() + 1.0
    configs = [
        FleetNodeConfig(
            node=k,
            nodes=NODES,
            start=start,
            web=f"127.0.0.1:{free_port()}",
            grpc=f"127.0.0.1:{free_port()}",
            seed=SEED,
            rate_scale=RATE_SCALE,
            arrivals_until=start + ARRIVALS_S,
            arrivals_from=start + IDLE_S,
            export_delay_s=1.0,
            engine_scrape_interval_s=1.0,
        )
        for k in range(NODES)
    ]
    fleet = Fleet(configs, log_dir=str(work))
    stack = PromStack(
        work,
        configs[0].web,
        f"127.0.0.1:{free_port()}",
        scrape_interval_s=1.0,
        rules=rule_files(),  # every generated rule file: the fleet rules and the SLO rules the dashboards read
        targets=[(c.web, c.label) for c in configs],
    )
    await fleet.start()
    try:
        prometheus = find_binary(PROMETHEUS)
        assert prometheus is not None
        await stack.start(prometheus, None)
        base = stack.url("prometheus")
        assert base is not None
        # Measuring starts while every GPU idles, once every exporter attributes its GPUs' energy (their idle
        # counters move in Prometheus): from then on every joule a GPU measures is accounted for somewhere.
        measure_from = await _attributing(base, start + IDLE_S - 1.0)
        truth, last_end = await asyncio.get_running_loop().run_in_executor(None, _truth, start)
        under_test = FleetUnderTest(FleetSpec(nodes=NODES, rate_scale=RATE_SCALE), truth.spec.layout(), base, truth)
        ledger = truth.ledger
        assert ledger.outcomes["aborted"] == ledger.outcomes["rejected"] == 0
        expected = Counter[str]()
        for (_, tenant), n in ledger.finished_by.items():
            expected[tenant] += n
        pd_model = under_test.spec.pd_model.name
        pd = [t for t in ledger.by_span().values() if t.model == pd_model]
        assert len(pd) > 20 and all(t.prefill_span_key for t in pd)
        await asyncio.sleep(max(0.0, last_end + SETTLE_S - time.time()))

        async with httpx.AsyncClient(timeout=5.0) as client:
            # 1. Counted once, fleet-wide, per tenant (a scrape or two may still be on its way: poll a while).
            counted: dict[str, float] = {}
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:
                rows = await _query(client, base, "sum by (tenant) (llm_requests_total)")
                counted = {r["metric"].get("tenant", ""): float(r["value"][1]) for r in rows}
                if counted == {k: float(v) for k, v in expected.items()}:
                    break
                await asyncio.sleep(1.0)
            if counted != {k: float(v) for k, v in expected.items()}:
                for q in (
                    'llm_requests_total{tenant="unknown"}',
                    "llm_exporter_tenant_resolutions_total > 0",
                    "llm_pd_halves_total",
                ):
                    print(q, [(r["metric"], r["value"][1]) for r in await _query(client, base, q)])
            assert counted == {k: float(v) for k, v in expected.items()}, (counted, dict(expected))
            nodes = await _query(client, base, "count by (node) (up == 1)")
            assert {r["metric"]["node"] for r in nodes} == {c.label for c in configs}

            # 2. The P/D pair's user-visible TTFT: the exporters' mean against the simulation's.
            where = f'model="{pd_model}"'
            sums = await _query(client, base, f"sum(llm_request_time_to_first_token_seconds_sum{{{where}}})")
            counts = await _query(client, base, f"sum(llm_request_time_to_first_token_seconds_count{{{where}}})")
            observed_count = float(counts[0]["value"][1])
            observed_mean = float(sums[0]["value"][1]) / observed_count
            true_ttfts = [t.ttft_s for t in pd if t.ttft_s is not None]
            true_mean = math.fsum(true_ttfts) / len(true_ttfts)
            assert observed_count == len(pd)
            error = abs(observed_mean - true_mean) / true_mean
            print(f"P/D: {len(pd)} requests, TTFT mean {observed_mean:.4f} s vs truth {true_mean:.4f} s ({error:.3%})")
            assert error < 0.01
            joined = await _query(client, base, 'sum(llm_pd_halves_total{outcome="joined"})')
            assert float(joined[0]["value"][1]) == 2 * len(pd)  # both halves met, in one exporter

            # 3. The data-parallel server serves its engines apart, as vLLM does.
            dp = next(p for p in under_test.layout if p.engines > 1)
            node, dp_node = fleet.processes[dp.node], f"node-{dp.node + 1}"
            server = [i["name"] for i in node.instances if "url" in i].index(dp.name)
            text = (await client.get(f"{node.metrics[server]}/metrics")).text
            for engine in ("0", "1"):
                assert f'vllm:num_requests_running{{engine="{engine}",model_name="{dp.model.name}"}}' in text
            # ... and its exporter serves each engine's queue and KV usage, through Prometheus with the node label.
            for family in (
                "llm_engine_dp_requests_running",
                "llm_engine_dp_requests_waiting",
                "llm_engine_dp_kv_cache_usage_ratio",
            ):
                rows = await _query(client, base, f'{family}{{vllm_instance="{dp.name}"}}')
                assert {r["metric"]["engine"] for r in rows} == {"0", "1"}, family
                assert {(r["metric"]["model"], r["metric"]["node"]) for r in rows} == {(dp.model.name, dp_node)}

            # 4. The multi-node group: nothing of its GPUs' energy lost across its two nodes, and its tenants' split.
            groups = fleet_groups(under_test)
            assert set(groups) == {p.group for p in under_test.layout if p.group} and groups
            for name, group in groups.items():
                await _check_group(client, base, name, group, measure_from, under_test)
            # 5. Every panel of every dashboard has data from the fleet (the fleet-only ones included), but those of
            # events a steady fleet does not have, which the single node's showcase has (test_dashboards_live.py).
            empty = []
            for spec in dashboard_specs():
                results = await asyncio.to_thread(evaluate, base, spec, time.time() - start, "1m")
                for panel, per_query in zip(spec.panels, results, strict=True):
                    if panel.title in EVENT_PANELS:
                        continue
                    empty += [
                        f"{spec.uid} / {panel.title}: {query.expr}"
                        for query, series in zip(panel.queries, per_query, strict=True)
                        if not series
                    ]
            assert not empty, "panels without data from the fleet:\n" + "\n".join(empty)
    finally:
        await stack.stop()
        await fleet.stop()


async def _attributing(base: str, deadline: float) -> float:
    """When every GPU of the fleet has an idle-energy counter that moved between two of Prometheus's scrapes."""
    gpus = len(Simulation(FleetSpec(nodes=NODES, rate_scale=RATE_SCALE), scenario("steady"), SEED, time.time()).gpus)
    query = f"count(delta({catalog.IDLE_ENERGY.name}[3s]) > 0)"
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.time() < deadline:
            rows = await _query(client, base, query)
            if rows and int(float(rows[0]["value"][1])) == gpus:
                return time.time()
            await asyncio.sleep(0.5)
    raise AssertionError(f"not every GPU's energy was attributed before the first request (of {gpus} GPUs)")


async def _sum(client: httpx.AsyncClient, base: str, promql: str, at: float) -> float:
    answer = (await client.get(f"{base}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"})).json()
    assert answer["status"] == "success", answer
    return math.fsum(float(r["value"][1]) for r in answer["data"]["result"])


async def _check_group(
    client: httpx.AsyncClient, base: str, name: str, group: dict[str, Any], since: float, fleet: FleetUnderTest
) -> None:
    """A group's energy over [since, now], both ends idle: every joule its GPUs measured is the leader's requests',
    the worker's group usage, idle, unattributed or pending; and the fleet rules split the group over tenants."""
    model = group["model"]
    assert [p.name for p in fleet.layout if p.model.name == model] == [name], "the group's model runs nowhere else"
    assert len(group["gpus_by_node"]) == 2 and group["leader"] in group["gpus_by_node"]
    gpus = "|".join(u for uuids in group["gpus_by_node"].values() for u in uuids)
    accounted = " + ".join(
        f"(sum({expr}) or vector(0))"
        for expr in (
            f'llm_energy_joules_total{{model="{model}"}}',
            f'llm_group_energy_joules_total{{group="{name}"}}',
            f'llm_idle_energy_joules_total{{gpu=~"{gpus}"}}',
            f'llm_unattributed_energy_joules_total{{gpu=~"{gpus}"}}',
            f'llm_attribution_pending_joules{{gpu=~"{gpus}"}}',
        )
    )
    measured = f'sum(gpu_energy_joules_total{{gpu=~"{gpus}"}})'
    now = time.time() - 1.0
    d_accounted = await _sum(client, base, accounted, now) - await _sum(client, base, accounted, since)
    d_measured = await _sum(client, base, measured, now) - await _sum(client, base, measured, since)
    worker = await _sum(client, base, f'llm_group_energy_joules_total{{group="{name}"}}', now)
    leader = await _sum(client, base, f'llm_energy_joules_total{{model="{model}"}}', now)
    error = abs(d_accounted - d_measured) / d_measured
    print(
        f"group {name}: measured {d_measured:.0f} J, accounted {d_accounted:.0f} J ({error:.3%}); leader's requests "
        f"{leader:.0f} J, worker busy {worker:.0f} J"
    )
    assert worker > 0 and leader > 0
    assert error < 0.005
    # The fleet rules, all from one evaluation: per tenant, the leader's charge plus the worker's usage by the
    # leader's shares; summed, the leader's charges plus all of the worker's usage.
    where = f'{{group="{name}"}}'
    tenants = await _query(client, base, f"group_model_tenant:llm_energy_joules:rate5m{where}")
    assert {r["metric"]["model"] for r in tenants} == {model} and len(tenants) >= 2
    ratio = (
        f"sum(group_model_tenant:llm_energy_joules:rate5m{where})\n/ (sum(group_model_tenant:llm_energy_joules:"
        f"leader_rate5m{where}) + sum(group_model:llm_group_energy_joules:rate5m{where}))"
    )
    assert abs(float((await _query(client, base, ratio))[0]["value"][1]) - 1.0) < 1e-9
    shares = await _query(
        client,
        base,
        f"group_model_tenant:llm_energy_joules:worker_rate5m{where}\n/ on (group, model) group_left ()\n"
        f"group_model:llm_group_energy_joules:rate5m{where}\n- group_model_tenant:llm_energy_joules:leader_rate5m"
        f"{where}\n/ on (group, model) group_left ()\nsum by (group, model) "
        f"(group_model_tenant:llm_energy_joules:leader_rate5m{where})",
    )
    assert len(shares) == len(tenants) and all(abs(float(r["value"][1])) < 1e-9 for r in shares)


def test_fleet_counts_each_request_once_and_the_pd_ttft_through_prometheus() -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-e2e-") as work:
        asyncio.run(_run(Path(work)))
