"""Tenants' request mixes and the arrival processes (steady, Poisson, bursty), driven by a seeded generator."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from exporter.sim.workload import ArrivalKind, LengthDist, Tenant, Workload, default_tenants


def tenant(rate: float = 10.0, **kwargs: object) -> Tenant:
    return Tenant("t", {"m": rate}, LengthDist(500, 0.5, 10, 4000), LengthDist(100, 0.5, 1, 1000), 256, **kwargs)  # type: ignore[arg-type]


def arrivals(kind: ArrivalKind, seconds: float, rate: float = 10.0, seed: int = 1) -> list[float]:
    workload = Workload([tenant(rate)], kind, random.Random(seed), 0.0)
    return [a.time for a in workload.until(seconds)]


@pytest.mark.parametrize("kind", list(ArrivalKind))
def test_every_arrival_process_keeps_the_mean_rate(kind: ArrivalKind) -> None:
    times = arrivals(kind, 5000.0)  # long enough for bursts to average out
    assert len(times) == pytest.approx(50_000, rel=0.1)
    assert times == sorted(times) and all(0 <= t < 5000.0 for t in times)


def test_steady_arrivals_are_evenly_spaced_and_poisson_ones_are_not() -> None:
    def gaps(kind: ArrivalKind) -> list[float]:
        times = arrivals(kind, 100.0)
        return [b - a for a, b in itertools.pairwise(times)]

    assert statistics.pstdev(gaps(ArrivalKind.STEADY)) < 1e-9
    poisson = gaps(ArrivalKind.POISSON)
    assert statistics.pstdev(poisson) == pytest.approx(statistics.mean(poisson), rel=0.15)  # exponential: sd = mean


def test_bursty_arrivals_cluster_more_than_poisson() -> None:
    def per_second_variance(kind: ArrivalKind) -> float:
        counts = [0] * 300
        for t in arrivals(kind, 300.0):
            counts[int(t)] += 1
        return statistics.pvariance(counts)

    assert per_second_variance(ArrivalKind.BURSTY) > 2 * per_second_variance(ArrivalKind.POISSON)


def test_a_rate_profile_shapes_arrivals() -> None:
    workload = Workload(
        [tenant(10.0)],
        ArrivalKind.POISSON,
        random.Random(2),
        0.0,
        lambda t: 3.0 if t >= 50 else 0.5,
        max_multiplier=3.0,
    )
    times = [a.time for a in workload.until(100.0)]
    low, high = sum(t < 50 for t in times), sum(t >= 50 for t in times)
    assert low == pytest.approx(250, rel=0.2) and high == pytest.approx(1500, rel=0.1)


def test_requests_follow_the_tenants_mix_and_limits() -> None:
    prefixed = tenant(20.0, shared_prefix_tokens=300, temperature=0.0)
    workload = Workload([prefixed], ArrivalKind.POISSON, random.Random(3), 0.0)
    items = list(workload.until(50.0))
    assert all(10 <= a.prompt_tokens <= 4000 and a.prompt_tokens > 300 for a in items)
    assert all(1 <= a.output_tokens <= a.max_tokens == 256 for a in items)
    assert {a.prefix_id for a in items} == {"t/system"} and {a.prefix_tokens for a in items} == {300}
    assert statistics.median(a.prompt_tokens for a in items) == pytest.approx(500, rel=0.15)
    assert len({a.seq for a in items}) == len(items)


def test_the_same_seed_gives_the_same_requests() -> None:
    def run(seed: int) -> list[tuple[float, int, int]]:
        w = Workload(default_tenants(["a", "b"]), ArrivalKind.BURSTY, random.Random(seed), 0.0)
        return [(a.time, a.prompt_tokens, a.output_tokens) for a in w.until(30.0)]

    assert run(4) == run(4) != run(5)


def test_a_tenant_added_later_starts_then() -> None:
    workload = Workload([tenant(1.0)], ArrivalKind.POISSON, random.Random(6), 0.0)
    workload.add(Tenant("late", {"m": 50.0}, LengthDist(10), LengthDist(10)), 20.0)
    late = [a.time for a in workload.until(30.0) if a.tenant == "late"]
    assert late and min(late) >= 20.0 and len(late) == pytest.approx(500, rel=0.2)


def test_default_tenants_are_five_with_distinct_mixes_over_the_models() -> None:
    tenants = default_tenants(["big", "small"])
    assert len({t.name for t in tenants}) == 5
    assert {m for t in tenants for m in t.rates} == {"big", "small"}
    assert any(t.shared_prefix_tokens for t in tenants) and any(t.temperature == 0 for t in tenants)
    assert len({t.prompt.median for t in tenants}) == 5
