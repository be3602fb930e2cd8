"""GPU power and clocks follow the simulated load; the simulated NVML reads them exactly; the energy ledger adds up."""

from __future__ import annotations

from dataclasses import replace

import pynvml  # type: ignore[import-untyped]
import pytest

from exporter.gpu.sampler import GpuSampler
from exporter.sim.engine import EngineConfig, EngineModel, SimRequest
from exporter.sim.kv import KvCache
from exporter.sim.ledger import Ledger, RequestTruth
from exporter.sim.nvml import SimulatedNvml
from exporter.sim.power import SW_POWER_CAP, GpuSpec, GpuTimeline, idle_state, step_state
from exporter.sim.scenarios import scenario
from exporter.sim.simulation import DRIVER_UPTIME_ENERGY_J, Simulation
from exporter.sim.spec import LLAMA_8B, NodeSpec
from exporter.sim.workload import Arrival, LengthDist, Tenant

START = 1_800_000_000.0


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def energy_mj(nvml: SimulatedNvml, index: int) -> int:
    return int(nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(index)))


def test_timeline_energy_is_the_exact_integral_of_power() -> None:
    spec = GpuSpec()
    timeline = GpuTimeline(spec, 100.0)
    busy, _ = step_state(spec, 1.0, spec.max_w)
    timeline.record(100.0, 102.0, busy)
    timeline.record(103.0, 103.5, busy)  # the gap 102..103 is idle
    assert timeline.at(101.0).energy_j == pytest.approx(busy.power_w * 1.0)
    assert timeline.at(102.5).energy_j == pytest.approx(busy.power_w * 2.0 + spec.idle_w * 0.5)
    assert timeline.at(103.5).energy_j == pytest.approx(busy.power_w * 2.5 + spec.idle_w * 1.0)
    assert timeline.at(999.0).energy_j == timeline.at(103.5).energy_j  # never reads past what was recorded
    assert timeline.window(103.5, 1.0) == pytest.approx((0.5, (0.5 * busy.memory_busy)))


def test_busier_steps_draw_more_power_and_a_cap_slows_the_clock() -> None:
    spec = GpuSpec()
    idle = idle_state(spec)
    decode, _ = step_state(spec, 0.0, spec.max_w)
    prefill, full = step_state(spec, 1.0, spec.max_w)
    assert idle.power_w < decode.power_w < prefill.power_w <= spec.max_w
    assert full == 1.0 and prefill.reasons == 0
    capped, ratio = step_state(spec, 1.0, 300.0)
    assert capped.power_w == pytest.approx(300.0)
    assert ratio < 1.0 and capped.sm_clock_mhz < prefill.sm_clock_mhz
    assert capped.reasons & SW_POWER_CAP


def run(sim: Simulation, clock: Clock, until: float, step: float = 0.25) -> None:
    while clock.now < until:
        clock.now += step
        sim.advance_to(clock.now)


def test_nvml_energy_counter_equals_the_ledger_exactly_on_the_fake_clock() -> None:
    clock = Clock(START)
    sim = Simulation(NodeSpec(), scenario("steady"), seed=5, start=START)
    nvml = SimulatedNvml(sim, clock, refresh_every_s=0.0)
    nvml.nvmlInit()
    run(sim, clock, START + 20.0)
    ledger = sim.ledger
    for gpu in sim.gpus:
        clock.now = gpu.timeline.end  # read where the simulation has computed up to
        reading = energy_mj(nvml, gpu.index) / 1000.0 - DRIVER_UPTIME_ENERGY_J
        truth = ledger.attributed_j[gpu.uuid] + ledger.idle_j[gpu.uuid]
        assert reading == pytest.approx(truth, abs=0.002)  # NVML reports whole millijoules
        assert ledger.attributed_j[gpu.uuid] > ledger.idle_j[gpu.uuid] > 0
    requests = sum(t.total_energy_j for t in ledger.requests.values())
    assert requests == pytest.approx(sum(ledger.attributed_j.values()))


def test_energy_over_an_interval_is_power_times_time_as_the_sampler_sees_it() -> None:
    clock = Clock(START)
    sim = Simulation(NodeSpec(), scenario("steady"), seed=6, start=START)
    nvml = SimulatedNvml(sim, clock)
    sampler = GpuSampler(nvml=nvml, clock=clock, xid_events=False, energy_every=1)
    run(sim, clock, START + 5.0)
    first = {s.uuid: s for s in sampler.sample_once()}
    run(sim, clock, START + 10.0)
    second = {s.uuid: s for s in sampler.sample_once()}
    for gpu in sim.gpus:
        a, b = first[gpu.uuid], second[gpu.uuid]
        assert a.energy_joules is not None and b.energy_joules is not None
        measured = b.energy_joules - a.energy_joules
        truth = gpu.timeline.at(b.timestamp).energy_j - gpu.timeline.at(a.timestamp).energy_j
        assert measured == pytest.approx(truth, abs=0.002)
        assert gpu.spec.idle_w * 5 < measured < gpu.spec.max_w * 5


def test_more_load_means_more_energy_and_busier_gpus() -> None:
    def joules(rate_scale: float) -> tuple[float, float]:
        sim = Simulation(NodeSpec(rate_scale=rate_scale), scenario("steady"), seed=7, start=START)
        sim.advance_to(START + 20.0)
        gpu = sim.gpus[2]  # an 8B replica
        reading = gpu.timeline.at(START + 20.0)
        return reading.energy_j, reading.busy_s

    light, heavy = joules(0.1), joules(2.0)
    assert light[0] < heavy[0] and light[1] < heavy[1]


def test_a_power_cap_shows_in_power_clocks_reasons_and_slower_tokens() -> None:
    def run_node(capped: bool) -> tuple[Simulation, SimulatedNvml, Clock]:
        clock = Clock(START)
        events = scenario("power_throttling", at=0.0, watts=200.0, instance=0) if capped else scenario("steady")
        sim = Simulation(NodeSpec(), events, seed=8, start=START)
        nvml = SimulatedNvml(sim, clock)
        nvml.nvmlInit()
        run(sim, clock, START + 15.0)
        return sim, nvml, clock

    sim, nvml, _ = run_node(True)
    free, _, _ = run_node(False)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetPowerUsage(handle) <= 200_000
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(handle) & pynvml.nvmlClocksEventReasonSwPowerCap
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) < GpuSpec().sm_clock_max_mhz
    other = nvml.nvmlDeviceGetHandleByIndex(2)  # not capped
    assert not nvml.nvmlDeviceGetCurrentClocksEventReasons(other) & pynvml.nvmlClocksEventReasonSwPowerCap

    def decode_tpot(s: Simulation) -> float:
        h = s.instances[0].stats.histograms["vllm:request_time_per_output_token_seconds"]
        return h.sum / sum(h.counts)

    assert decode_tpot(sim) > 1.2 * decode_tpot(free)


def test_a_lost_gpu_raises_gpu_is_lost_and_the_others_answer() -> None:
    clock = Clock(START)
    sim = Simulation(NodeSpec(), scenario("gpu_lost", at=2.0, gpu=3), seed=9, start=START)
    nvml = SimulatedNvml(sim, clock)
    nvml.nvmlInit()
    run(sim, clock, START + 1.0)
    lost = nvml.nvmlDeviceGetHandleByIndex(3)
    assert nvml.nvmlDeviceGetPowerUsage(lost) > 0
    run(sim, clock, START + 3.0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetPowerUsage(lost)
    assert nvml.nvmlDeviceGetPowerUsage(nvml.nvmlDeviceGetHandleByIndex(2)) > 0


def test_utilisation_memory_and_processes_follow_the_instance() -> None:
    clock = Clock(START)
    sim = Simulation(NodeSpec(), scenario("engine_restart", at=5.0, instance=1, down_s=2.0, startup_s=2.0), 10, START)
    nvml = SimulatedNvml(sim, clock)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(2)  # instance 1's GPU
    run(sim, clock, START + 4.0)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    assert memory.used > 40 * 2**30  # weights + the KV pool vLLM preallocates
    assert len(nvml.nvmlDeviceGetComputeRunningProcesses(handle)) == 1
    assert nvml.nvmlDeviceGetUtilizationRates(handle).gpu > 50
    run(sim, clock, START + 7.0)  # down
    assert nvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2).used == 0
    assert nvml.nvmlDeviceGetComputeRunningProcesses(handle) == []
    assert nvml.nvmlDeviceGetUtilizationRates(handle).gpu == 0
    assert nvml.nvmlDeviceGetPowerUsage(handle) == GpuSpec().idle_w * 1000


def solo_node(rate: float) -> NodeSpec:
    """One 8B instance on one GPU, one tenant sending identical requests at evenly spaced times."""
    tenant = Tenant("solo", {LLAMA_8B.name: rate}, LengthDist(500, 0.0), LengthDist(50, 0.0), temperature=0.0)
    return NodeSpec(models=(replace(LLAMA_8B, replicas=1),), gpus=1, tenants=(tenant,))


def test_lone_identical_requests_are_each_charged_all_of_their_steps_energy() -> None:
    sim = Simulation(solo_node(0.5), scenario("steady", arrival="steady"), seed=11, start=START)
    sim.advance_to(START + 12.0)
    done = [t for t in sim.ledger.requests.values() if t.outcome == "finished"]
    assert len(done) >= 4
    # One at a time on an otherwise idle GPU: identical requests, identical charges, busy energy all accounted.
    energies = [t.total_energy_j for t in done]
    assert max(energies) == pytest.approx(min(energies), rel=1e-9)
    assert all(t.energy_j["prefill"] > 0 and t.energy_j["decode"] > 0 for t in done)
    gpu = sim.gpus[0].uuid
    in_flight = sum(t.total_energy_j for t in sim.ledger.requests.values() if t.outcome != "finished")
    assert sum(energies) + in_flight == pytest.approx(sim.ledger.attributed_j[gpu])


def test_concurrent_identical_requests_split_the_steps_evenly() -> None:
    engine = EngineModel(EngineConfig(LLAMA_8B.cost()), KvCache(10_000))
    ledger = Ledger()
    for rid in (1, 2):
        arrival = Arrival(0.0, "m", "t", 700, 40, 64, None, 0, 0.7, 1.0, True, rid)
        engine.add(SimRequest(rid, arrival, 0.0, 700, 40))
        ledger.open(rid, RequestTruth(f"r{rid}", bytes(24), "m", "t", "i", ("GPU-a",), 0.0))
    now = 0.0
    while (plan := engine.schedule(now)) is not None:
        now += plan.nominal_s
        engine.complete(plan, now)
        work = [(w.request.id, w.prefill_tokens, w.decode_tokens, w.cost_s) for w in plan.work]
        ledger.charge_step(work, [("GPU-a", 500.0 * plan.nominal_s)], plan.nominal_s)
    first, second = ledger.requests[1], ledger.requests[2]
    assert first.total_energy_j == pytest.approx(second.total_energy_j, rel=1e-9)
    assert first.total_energy_j + second.total_energy_j == pytest.approx(500.0 * now)
    assert first.gpu_seconds["prefill"] + first.gpu_seconds["decode"] == pytest.approx(now / 2)
