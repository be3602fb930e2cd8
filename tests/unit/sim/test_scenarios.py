"""Scenario definitions, and each scenario's effect on the pure simulation (no exporter, no sockets)."""

from __future__ import annotations

from collections import Counter

import pytest

from exporter.otlp.decode import REQUEST_SPAN_NAME
from exporter.sim import scenarios as sc
from exporter.sim import spec as sc_spec
from exporter.sim.scenarios import SCENARIOS, scenario
from exporter.sim.simulation import Simulation
from exporter.sim.spec import NodeSpec

START = 1_800_000_000.0
DOCUMENTED_SCENARIOS = {
    "steady",
    "diurnal",
    "spike",
    "latency_regression",
    "power_throttling",
    "kv_exhaustion",
    "gpu_lost",
    "engine_restart",
    "span_loss",
}


def simulate(s: sc.Scenario, seconds: float, spec: NodeSpec | None = None, seed: int = 1) -> Simulation:
    sim = Simulation(spec or NodeSpec(), s, seed=seed, start=START)
    t = START
    while t < START + seconds:
        t += 0.5
        sim.advance_to(t)
    return sim


def ttfts(sim: Simulation, sender: str = "") -> list[tuple[float, float]]:
    """(arrival, TTFT) of every llm_request span the simulation sent (from senders starting with `sender`)."""
    out = []
    for item in sim.outbox:
        if item.span.name == REQUEST_SPAN_NAME and item.sender.startswith(sender):
            ttft = next(kv.value.double_value for kv in item.span.attributes if kv.key.endswith("time_to_first_token"))
            out.append((item.span.start_time_unix_nano / 1e9 - START, ttft))
    return out


def test_every_scenario_of_the_issue_is_selectable_by_name() -> None:
    assert set(SCENARIOS) == DOCUMENTED_SCENARIOS
    for name in SCENARIOS:
        built = scenario(name)
        assert built.name == name and built.description
    assert scenario("latency-regression").name == "latency_regression"


def test_scenario_texts_name_the_instance_or_gpu_they_change_as_the_view_does() -> None:
    # The view and /metrics name instances by vllm_instance (vllm-<model>-<replica>), not by number.
    assert "vllm-llama-3.1-70b-instruct-0" in scenario("power_throttling").description  # instance 0: GPUs 0, 1
    assert "GPUs 0,1" in scenario("power_throttling").description
    assert "vllm-llama-3.1-8b-instruct-0" in scenario("kv_exhaustion").description  # instance 1
    assert "vllm-llama-3.1-70b-instruct-0" in scenario("engine_restart").description
    assert "vllm-llama-3.1-8b-instruct-1" in scenario("gpu_lost").description  # GPU 3
    assert "vllm-llama-3.1-8b-instruct-0, vllm-llama-3.1-8b-instruct-1" in scenario("latency_regression").description
    assert "vllm-llama-3.1-8b-instruct-1" in scenario("engine_restart", instance=2).description
    one_model = NodeSpec(models=(sc_spec.LLAMA_8B,), gpus=2)
    assert "vllm-llama-3.1-8b-instruct-1" in scenario("kv_exhaustion", node=one_model).description


def test_unknown_scenarios_and_knobs_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        scenario("nope")
    with pytest.raises(ValueError, match=r"no parameter.*wats"):
        scenario("power_throttling", wats=100)


def test_knobs_and_times_reach_the_events() -> None:
    assert scenario("latency_regression", at=5, factor=3, model="m").events == (sc.PrefillSlowdown(5, 3, "m"),)
    assert scenario("gpu_lost", at=1, gpu=2).events == (sc.LoseGpu(1, 2),)
    assert scenario("engine_restart", at=4, instance=2, down_s=1, startup_s=3).events == (sc.RestartEngine(4, 2, 1, 3),)
    assert scenario("span_loss", at=0, fraction=0.5).events == (sc.SpanLoss(0, 0.5),)
    kv = scenario("kv_exhaustion", at=2, instance=1, tokens=4096)
    assert kv.kv == (sc.KvCapacity(1, 4096),) and isinstance(kv.events[0], sc.AddTenant)
    assert scenario("steady", arrival="bursty").arrival == "bursty"


def test_a_spike_multiplies_arrivals_while_it_lasts() -> None:
    sim = simulate(scenario("spike", at=10.0, length=10.0, factor=4.0), 30.0)
    arrivals = Counter("spike" if 10.0 <= t.arrival - START < 20.0 else "base" for t in sim.ledger.requests.values())
    assert arrivals["spike"] / 10.0 > 2.5 * arrivals["base"] / 20.0


def test_diurnal_load_is_low_at_night_and_high_at_noon() -> None:
    sim = simulate(scenario("diurnal", period=40.0), 40.0)
    by_hour = Counter(int((t.arrival - START) // 10) for t in sim.ledger.requests.values())
    assert by_hour[0] < by_hour[1] and by_hour[2] > by_hour[3]  # night, morning, noon..afternoon, evening
    assert max(by_hour.values()) > 2 * min(by_hour.values())


def test_a_latency_regression_raises_ttft() -> None:
    sim = simulate(scenario("latency_regression", at=10.0, factor=4.0), 30.0)
    # The slowed model (the last one: the 8B replicas), arrivals well before and after the change.
    slowed = f"vllm-{sim.instances[-1].model.name}"
    before = sorted(v for t, v in ttfts(sim, slowed) if t < 9.0)
    after = sorted(v for t, v in ttfts(sim, slowed) if 11.0 < t < 20.0)
    assert len(before) > 30 and len(after) > 30
    assert after[int(0.95 * len(after))] > 2 * before[int(0.95 * len(before))]


def test_kv_exhaustion_preempts_only_where_the_cache_is_small() -> None:
    sim = simulate(scenario("kv_exhaustion", at=2.0, instance=1, tokens=16_384, rate=2.0), 15.0)
    preemptions = [i.engine.preemptions for i in sim.instances]
    assert preemptions[1] > 0 and preemptions[0] == 0 and preemptions[2] == 0
    assert sim.instances[1].stats.counters[("vllm:num_preemptions", "")] == preemptions[1]
    assert sim.instances[1].cache.num_gpu_blocks * sim.instances[1].cache.block_size == 16_384
    assert sim.instances[1].stats.histograms["vllm:request_num_preemptions"].sum > 0
    assert "longctx" in {t.tenant for t in sim.ledger.requests.values()}


def test_a_lost_gpu_kills_its_instance_and_the_other_replica_takes_the_traffic() -> None:
    sim = simulate(scenario("gpu_lost", at=5.0, gpu=3), 12.0)
    dead, alive = sim.instances[2], sim.instances[1]
    assert sim.gpus[3].lost_at == START + 5.0 and not dead.up and alive.up
    assert dead.serving(START + 4.9) and not dead.serving(START + 5.0)
    late = [t for t in sim.ledger.requests.values() if t.arrival > START + 5.0 and t.model == dead.model.name]
    assert late and {t.instance for t in late} == {alive.name}
    assert sim.ledger.outcomes["aborted"] > 0  # what was running on it is lost, without spans
    assert sim.gpus[3].memory_used == 0


def test_an_engine_restart_brings_a_new_process_with_fresh_counters_and_start_up_spans() -> None:
    sim = Simulation(NodeSpec(), scenario("engine_restart", at=3.0, instance=0, down_s=1.0, startup_s=2.0), 1, START)
    sim.advance_to(START + 2.9)
    instance = sim.instances[0]
    old_start, old_id = instance.process_start, instance.processes["api_server"].instance_id
    sim.advance_to(START + 4.0)
    assert not instance.up
    sim.advance_to(START + 6.5)
    assert instance.up and instance.starts == 2
    # What its /metrics answers when: up before the restart, down while it loads, up once it is ready.
    assert instance.serving(START + 2.9) and not instance.serving(START + 3.0)
    assert not instance.serving(START + 5.99) and instance.serving(START + 6.0)
    assert instance.process_start == pytest.approx(START + 4.0, abs=1e-6) != old_start
    assert instance.processes["api_server"].instance_id != old_id
    assert instance.stats.created == pytest.approx(START + 6.0, abs=1e-6)
    loading = [
        o.span
        for o in sim.outbox
        if o.span.name == "Overall Loading" and o.resource == instance.resources["api_server"]
    ]
    assert len(loading) == 1
    assert loading[0].start_time_unix_nano / 1e9 >= START + 4.0 - 1e-6
    assert loading[0].end_time_unix_nano / 1e9 <= START + 6.0 + 1e-6


def test_span_loss_drops_the_asked_share_of_request_spans() -> None:
    sim = simulate(scenario("span_loss", at=0.0, fraction=0.4), 30.0)
    outcomes = sim.ledger.outcomes
    assert outcomes["span_lost"] / outcomes["finished"] == pytest.approx(0.4, abs=0.08)
    sent = sum(1 for o in sim.outbox if o.span.name == REQUEST_SPAN_NAME)
    assert sent == outcomes["span_sent"] == outcomes["finished"] - outcomes["span_lost"]


def test_the_same_seed_replays_the_same_node() -> None:
    def run(seed: int) -> list[bytes]:
        sim = simulate(scenario("steady"), 5.0, seed=seed)
        return [o.span.SerializeToString() for o in sim.outbox]

    assert run(3) == run(3) != run(4)


# latency_regression with `length`: the slowdown ends, and TTFT comes back.
def test_length_adds_an_event_that_restores_the_prefill_speed() -> None:
    assert scenario("latency_regression", at=5, factor=3, model="m", length=10).events == (
        sc.PrefillSlowdown(5, 3, "m"),
        sc.PrefillSlowdown(15, 1.0, "m"),
    )
    assert "for 10 s" in scenario("latency_regression", at=5, length=10).description
    assert scenario("latency_regression", at=5).events == (sc.PrefillSlowdown(5, 5.0, None),)  # no end by default


@pytest.mark.parametrize("length", [0, -1])
def test_a_length_that_is_not_positive_is_refused(length: float) -> None:
    with pytest.raises(ValueError, match="length must be positive"):
        scenario("latency_regression", at=5, length=length)


def test_ttft_comes_back_after_the_regression_ends() -> None:
    sim = simulate(scenario("latency_regression", at=10.0, factor=4.0, length=10.0), 40.0)
    slowed = f"vllm-{sim.instances[-1].model.name}"

    def p95(lo: float, hi: float) -> float:
        values = sorted(v for t, v in ttfts(sim, slowed) if lo < t < hi)
        assert len(values) > 30
        return values[int(0.95 * len(values))]

    before, during, after = p95(0.0, 9.0), p95(11.0, 19.0), p95(28.0, 38.0)
    assert during > 2 * before
    assert after < 1.5 * before  # arrivals well after the end (the queue had 8 s to drain)
