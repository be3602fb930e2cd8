"""The simulation's results do not depend on when `advance_to` is called: every process of a simulated fleet runs
its own copy (same seed, same start) at its own pace and must agree with the others exactly."""

from __future__ import annotations

import random

import pytest

from exporter.sim.scenarios import scenario
from exporter.sim.simulation import SimSpec, Simulation
from exporter.sim.spec import FleetSpec, NodeSpec

START = 1_800_000_000.0
CHECKS = (5.0, 12.0, 20.0)  # seconds after the start at which both copies are compared


def _snapshot(sim: Simulation, t: float) -> tuple[object, ...]:
    """What must agree at time t: every request's truth, what was sent and to whom, and each GPU's energy."""
    truths = sorted(
        (
            k,
            r.span_key,
            r.prefill_span_key,
            r.instance,
            r.outcome,
            r.finished_at,
            r.first_token,
            r.prefill_tokens,
            r.decode_tokens,
            round(r.total_energy_j, 6),
        )
        for k, r in sim.ledger.requests.items()
    )
    sent = sorted((o.time, o.node, o.sender, o.span.SerializeToString()) for o in sim.outbox)
    energy = [round(g.timeline.at(t).energy_j, 6) for g in sim.gpus]
    return tuple(truths), tuple(sent), tuple(energy), dict(sim.ledger.outcomes)


def _run(spec: SimSpec, ticks: list[float]) -> list[tuple[object, ...]]:
    sim = Simulation(spec, scenario("steady"), seed=7, start=START)
    out = []
    for check in CHECKS:
        for t in (x for x in ticks if sim.now < START + x < START + check):
            sim.advance_to(START + t)
        sim.advance_to(START + check)
        out.append(_snapshot(sim, START + check))
    return out


def _fine() -> list[float]:
    return [round(0.05 * i, 2) for i in range(1, 401)]


def _coarse(seed: int) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    while t < CHECKS[-1]:
        t += rng.uniform(0.2, 2.5)
        out.append(t)
    return out


@pytest.mark.parametrize(
    "spec",
    [FleetSpec(nodes=3, rate_scale=1.5), FleetSpec(nodes=4, rate_scale=0.7), NodeSpec(rate_scale=2.0)],
    ids=["fleet-3", "fleet-4", "node"],
)
def test_results_do_not_depend_on_the_advance_schedule(spec: SimSpec) -> None:
    fine, coarse = _run(spec, _fine()), _run(spec, _coarse(3))
    for check, a, b in zip(CHECKS, fine, coarse, strict=True):
        assert a[3] == b[3], f"outcomes differ at {check} s"
        assert a[0] == b[0], f"request truths differ at {check} s"
        assert a[1] == b[1], f"spans sent differ at {check} s"
        assert a[2] == b[2], f"GPU energy differs at {check} s"
    outcomes = fine[-1][3]
    assert isinstance(outcomes, dict) and outcomes.get("finished", 0) > 50  # the comparison saw real traffic
