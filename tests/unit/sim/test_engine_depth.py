"""The simulator serves what the exporter now carries, shaped like vLLM's, with a truth to hold the exporter to: KV
block residency from its evicted prefixes, speculative-decoding counters, estimated FLOPs and bytes against the
simulated H100s' peak, and the KV cache's share of each GPU's memory."""

from __future__ import annotations

import asyncio
from functools import cache

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.engine.collector import EngineCollector
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.engine.usage import placements
from exporter.gpu.peaks import PEAKS
from exporter.gpu.sampler import GpuSampler
from exporter.metrics import catalog
from exporter.sim.metrics import ModelShape, VllmStats, render
from exporter.sim.nvml import SimulatedNvml
from exporter.sim.scenarios import scenario
from exporter.sim.simulation import Simulation
from exporter.sim.spec import NodeSpec
from exporter.topology.model import Instance, Topology
from tests.support.otlp import SAMPLES
from tests.support.prom import by_label, samples, total
from tests.unit.sim.test_engine import engine, request, run
from tests.unit.sim.test_formats import bucket_edges, families, label_names, simulation

START = 1_800_000_000.0
CAPTURE = (SAMPLES / "metrics-mfu-kv-cache-metrics.txt").read_text()  # vLLM 0.32 with --kv-cache-metrics
RESIDENCY = (
    "vllm:kv_block_lifetime_seconds",
    "vllm:kv_block_idle_before_evict_seconds",
    "vllm:kv_block_reuse_gap_seconds",
)


def _sim_text(instance: int = 0, shape: ModelShape | None = None) -> str:
    runtime = simulation().instances[instance]
    stats = runtime.stats
    if shape is not None:
        stats = VllmStats(stats.created, shape)
    return render(stats, runtime.model.name, runtime.cache, runtime.process_start).decode()


@pytest.mark.parametrize("name", RESIDENCY)
def test_residency_histograms_have_the_captured_type_help_labels_and_edges(name: str) -> None:
    real, sim = families(CAPTURE)[name], families(_sim_text())[name]
    assert (sim.type, sim.documentation) == (real.type, real.documentation)
    assert label_names(sim) == label_names(real)
    assert bucket_edges(sim) == bucket_edges(real)


def test_an_evicted_prefix_is_observed_per_block_with_its_lifetime_idle_time_and_reuse_gaps() -> None:
    e = engine(blocks=70, block_size=16)
    first = request(200, 2, prefix="a", prefix_tokens=160)  # 10 blocks become prefix "a"
    e.add(first)
    _, now = run(e)
    born = first.first_token
    assert born is not None
    uses = []
    for at in (now + 1.0, now + 3.0):  # two hits on "a"
        e.add(request(200, 2, at=at, prefix="a", prefix_tokens=160))
        plan = e.schedule(at)
        assert plan is not None and plan.prefix_hits == 160
        uses.append(at)
        _, now = run(e, at)
    e.add(request(61 * 16, 1, at=now + 5.0))  # 61 of 70 blocks: needs some of the 10 "a" holds
    plan = e.schedule(now + 5.0)
    assert plan is not None and "a" not in e.kv.prefixes
    [eviction] = plan.kv_evictions
    assert eviction.blocks == 10
    assert eviction.lifetime_s == pytest.approx(now + 5.0 - born)
    assert eviction.idle_s == pytest.approx(now + 5.0 - uses[-1])
    assert eviction.reuse_gaps_s == pytest.approx((uses[1] - uses[0],))
    stats = VllmStats(START, ModelShape(8e9, 1, 131072.0))
    stats.step(e.complete(plan, now + 6.0), 0)
    lifetime = stats.histograms["vllm:kv_block_lifetime_seconds"]
    assert sum(lifetime.counts) == 10 and lifetime.sum == pytest.approx(10 * eviction.lifetime_s)
    assert sum(stats.histograms["vllm:kv_block_reuse_gap_seconds"].counts) == 10


def test_speculative_decoding_counters_are_served_only_with_it_and_accept_as_configured() -> None:
    assert "vllm:spec_decode_num_drafts" not in families(_sim_text())  # no speculative config: no series
    plain = simulation().instances[1].stats
    shape = ModelShape(plain.shape.params, plain.shape.tp, plain.shape.kv_bytes_per_token, 3, 0.8)
    stats = VllmStats(START, shape)
    stats._speculate(1000)  # 1,000 decode tokens, one draft each
    stats._speculate(1)
    text = render(stats, "m", simulation().instances[1].cache, START).decode()
    drafts = total(text, "vllm:spec_decode_num_drafts_total")
    assert drafts == 1001 and total(text, "vllm:spec_decode_num_draft_tokens_total") == 3003
    per_position = by_label(text, "vllm:spec_decode_num_accepted_tokens_per_pos_total", "position")
    assert per_position == {"0": 800.0, "1": 640.0, "2": 512.0}  # 0.8, 0.8^2, 0.8^3 of the drafts, whole tokens
    assert total(text, "vllm:spec_decode_num_accepted_tokens_total") == sum(per_position.values())
    labels = {
        frozenset(k for k in labels if k != "position")
        for name, labels, _ in samples(text)
        if name.startswith("vllm:spec_decode")
    }
    assert labels == {frozenset({"engine", "model_name"})}


@cache
def _exporter_on_the_sim() -> tuple[Simulation, str]:
    """The exporter's engine series for a node that ran 30 s: its scraper reading the simulated /metrics, its
    sampler the simulated NVML, the instances and GPUs as the demo configures them (static, GPU indexes)."""
    sim = Simulation(NodeSpec(rate_scale=2.0), scenario("steady"), seed=3, start=START)
    sim.advance_to(START + 30.0)
    nvml = SimulatedNvml(sim, clock=lambda: START + 30.0)
    sampler = GpuSampler(nvml=nvml, xid_events=False, clock=lambda: START + 30.0)
    sampler.sample_once()
    bodies = {i.name: render(i.stats, i.model.name, i.cache, i.process_start) for i in sim.instances}
    scraper = EngineScraper(
        lambda: [ScrapeTarget(name, f"http://{name}") for name in bodies],
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=bodies[r.url.host])),
    )
    asyncio.run(scraper.scrape_once())
    topology = Topology(
        tuple(Instance(i.name, f"http://{i.name}", gpus=tuple(map(str, i.gpus))) for i in sim.instances)
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(scraper, placements(lambda: topology, sampler.snapshot)))
    return sim, generate_latest(registry).decode()


def test_utilisation_on_the_simulated_h100s_is_the_simulated_estimate_over_their_peak() -> None:
    sim, text = _exporter_on_the_sim()
    peak = PEAKS["nvidia h100 80gb hbm3"]
    for instance in sim.instances:
        counters = instance.stats.counters
        flops = counters[("vllm:estimated_flops_per_gpu", "")]
        traffic = (
            counters[("vllm:estimated_read_bytes_per_gpu", "")] + counters[("vllm:estimated_write_bytes_per_gpu", "")]
        )
        assert flops > 0
        for index in instance.gpus:
            where = {"vllm_instance": instance.name, "gpu": sim.gpus[index].uuid}
            compute = by_label(text, catalog.ENGINE_COMPUTE_AT_PEAK.name, "precision", where)
            assert compute == {"bf16": flops / peak.bf16_flops, "fp8": flops / peak.fp8_flops}  # type: ignore[operator]
            assert total(text, catalog.ENGINE_MEMORY_TRAFFIC_AT_PEAK.name, where) == traffic / peak.memory_bandwidth


def test_each_gpus_memory_splits_into_the_instances_kv_cache_and_the_rest() -> None:
    sim, text = _exporter_on_the_sim()
    for instance in sim.instances:
        per_gpu_kv = instance.cache.kv_cache_memory_bytes // instance.model.tp
        for index in instance.gpus:
            gpu = sim.gpus[index]
            where = {"vllm_instance": instance.name, "gpu": gpu.uuid}
            purposes = by_label(text, catalog.ENGINE_GPU_MEMORY.name, "purpose", where)
            [(_, process_memory)] = gpu.processes
            assert process_memory is not None
            assert purposes == {"kv_cache": per_gpu_kv, "other": process_memory - per_gpu_kv}
            assert 0 < purposes["other"] < purposes["kv_cache"]  # weights and activations beside a big KV pool
