"""A multi-node group's worker GPUs: busy time is the group's and its model's, idle time idle, nothing lost."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.attribution.attributor import Attributor, Pricing
from exporter.attribution.collector import AttributionCollector
from exporter.attribution.stage import AttributionOptions, AttributionStage
from exporter.engine.state import CounterPoint
from exporter.gpu.fake_nvml import FakeNvml
from exporter.gpu.sampler import GpuSampler
from exporter.topology.static import InstanceConfig, StaticTopology


class NoEngine:
    """A worker node has no vLLM /metrics: no counter history."""

    def counter_points(self, instance: str) -> tuple[CounterPoint, ...]:
        return ()


def worker_node(gpus: int = 2) -> tuple[FakeNvml, GpuSampler, AttributionStage]:
    fake = FakeNvml.with_gpus(gpus)
    sampler = GpuSampler(nvml=fake, clock=fake.time, xid_events=False, energy_every=1)
    assert sampler.open()
    worker = InstanceConfig.model_validate(
        {"group": "llm/big-0", "model": "llama-405b", "gpus": ["0"], "name": "llm/big-0-1"}
    )
    stage = AttributionStage(
        AttributionOptions(gpu_price_per_hour={"H100": 3.6}, energy_price_per_kwh=0.0),
        StaticTopology([worker]),
        NoEngine(),
        sampler,
        clock=fake.time,
    )
    return fake, sampler, stage


def run(fake: FakeNvml, sampler: GpuSampler, stage: AttributionStage, seconds: int) -> None:
    for _ in range(seconds):
        fake.advance(1.0)
        sampler.sample_once()
        stage.tick(force=True)


def test_busy_worker_gpu_is_charged_to_its_group_and_idle_time_is_idle() -> None:
    fake, sampler, stage = worker_node()
    run(fake, sampler, stage, 1)  # the first readings: a baseline, nothing counted yet
    busy, spare = fake.gpus
    busy.power_w, busy.gpu_util_pct = 500.0, 80
    run(fake, sampler, stage, 10)
    busy.power_w, busy.gpu_util_pct = 90.0, 0
    run(fake, sampler, stage, 5)
    a = stage.attributor
    uuid = busy.uuid
    charged = a.group[("llm/big-0", "llama-405b")]
    # The first busy reading covers the second in which utilisation rose; then 9 more busy seconds.
    assert charged.gpu_seconds == pytest.approx(10.0)
    assert charged.joules == pytest.approx(10 * 500.0)
    assert charged.usd == pytest.approx(10 * 3.6 / 3600)
    assert a.idle[uuid].joules == pytest.approx(5 * 90.0)
    assert a.measured[uuid].joules == pytest.approx(10 * 500.0 + 5 * 90.0)
    assert a.attributed_by_gpu[uuid].joules + a.idle[uuid].joules == pytest.approx(a.measured[uuid].joules)
    # The GPU no instance or worker uses stays idle, as before.
    assert a.measured[spare.uuid].joules > 0
    assert a.idle[spare.uuid].joules == pytest.approx(a.measured[spare.uuid].joules)
    assert spare.uuid not in a.attributed_by_gpu


def test_group_energy_is_exposed_per_group_and_model() -> None:
    fake, sampler, stage = worker_node()
    run(fake, sampler, stage, 1)
    fake.gpus[0].power_w, fake.gpus[0].gpu_util_pct = 400.0, 50
    run(fake, sampler, stage, 4)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AttributionCollector(stage))
    text = generate_latest(registry).decode()
    assert 'llm_group_energy_joules_total{group="llm/big-0",model="llama-405b"} 1600.0' in text
    assert 'llm_group_gpu_seconds_total{group="llm/big-0",model="llama-405b"} 4.0' in text


def test_count_group_without_utilisation_counts_the_gpu_as_busy() -> None:
    attributor = Attributor(Pricing(), lambda gpu: "H100")
    readings = iter([(0.0, 0.0), (2.0, 600.0)])
    attributor.count_group("g", "m", ["GPU-a"], lambda gpu: next(readings), lambda gpu, a, b: True)
    attributor.count_group("g", "m", ["GPU-a"], lambda gpu: next(readings), lambda gpu, a, b: True)
    assert attributor.group[("g", "m")].joules == 600.0
    assert attributor.group[("g", "m")].gpu_seconds == 2.0


def test_a_gpu_leaving_a_worker_for_an_instance_stops_being_counted_by_its_readings() -> None:
    attributor = Attributor(Pricing(), lambda gpu: "H100")
    readings = iter([(0.0, 0.0), (1.0, 100.0), (5.0, 900.0)])
    attributor.count_group("g", "m", ["GPU-a"], lambda gpu: next(readings), lambda gpu, a, b: True)
    attributor.count_group("g", "m", ["GPU-a"], lambda gpu: next(readings), lambda gpu, a, b: True)
    attributor.forget_assigned(["GPU-a"])  # now an instance's: its intervals count it
    attributor.count_group("g", "m", ["GPU-a"], lambda gpu: next(readings), lambda gpu, a, b: True)
    assert attributor.group[("g", "m")].joules == 100.0  # the reading after forgetting is a new baseline
