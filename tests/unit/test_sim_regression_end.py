"""latency_regression with `length`: the slowdown ends, and TTFT comes back."""

from __future__ import annotations

import pytest

from exporter.sim import scenarios as sc
from exporter.sim.scenarios import scenario
from tests.unit.test_sim_scenario_defs import simulate, ttfts


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
