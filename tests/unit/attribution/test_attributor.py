"""Attribution on timelines where the truth is known: conservation, lone and concurrent requests, TP, late spans."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.attribution.attributor import (
    Amount,
    Attributor,
    InstanceInputs,
    Pricing,
    request_work,
    throttled,
)
from exporter.engine.state import CounterPoint
from exporter.requests.records import RequestSpan

T0 = 1_800_000_000.0
POWER = {"GPU-a": 300.0, "GPU-b": 200.0}  # watts, constant: energy(t) = P * (t - T0)
PRICING = Pricing({"H100": 3.6}, default_gpu_hour_usd=1.8, energy_kwh_usd=0.36)


@dataclass(frozen=True)
class Req:
    """A request on the timeline: prefill window, decode window, tokens (spread uniformly, as vLLM's counters see
    them in these tests)."""

    prefill_start: float
    prefill_s: float
    decode_s: float
    prompt: int
    output: int
    tenant: str = "t"

    def span(self, rng: random.Random) -> RequestSpan:
        first_token = T0 + self.prefill_start + self.prefill_s
        arrival = first_token - self.prefill_s - 0.01  # 10 ms of queue
        end = first_token + self.decode_s
        return RequestSpan(
            rng.randbytes(16),
            rng.randbytes(8),
            b"",
            int(arrival * 1e9),
            int(end * 1e9),
            "m",
            self.tenant,
            "span",
            "id",
            first_token - arrival,
            end - arrival,
            0.01,
            self.prefill_s,
            self.decode_s,
            self.prompt,
            self.output,
        )


def counters(reqs: list[Req], times: list[float], weight: float = 1.0) -> list[CounterPoint]:
    """vLLM's cumulative token counters at `times`, if tokens flowed exactly as the spans say."""
    rng = random.Random(0)
    spans = [r.span(rng) for r in reqs]
    points = []
    for t in times:
        prompt = sum(request_work(s, 0.0, t, 1.0)["prefill"] for s in spans)
        generated = sum(request_work(s, 0.0, t, 1.0)["decode"] for s in spans)
        points.append(CounterPoint(t, prompt, generated))
    return points


def energy_at(gpu: str, t: float) -> float:
    return POWER[gpu] * (t - T0)


def never_down(gpu: str, start: float, end: float) -> bool:
    return False


def run(
    reqs: list[Req], gpus: tuple[str, ...] = ("GPU-a",), horizon: float = 60.0, step: float = 5.0
) -> tuple[Attributor, list[RequestSpan]]:
    attributor = Attributor(PRICING, lambda gpu: "NVIDIA H100 80GB HBM3", retention_s=1e9)
    times = [T0 + k * step for k in range(int(horizon / step) + 1)]
    attributor.close_intervals(InstanceInputs("i", gpus, tuple(counters(reqs, times))), energy_at, never_down)
    rng = random.Random(0)
    spans = [r.span(rng) for r in reqs]
    for span in spans:
        attributor.submit("i", span, span.tenant or "unknown")
    attributor.charge_ready(now=T0 + horizon)
    return attributor, spans


def attributed_joules(attributor: Attributor, tenant: str | None = None) -> float:
    return sum(a.joules for (_, t, _), a in attributor.attributed.items() if tenant is None or t == tenant)


def conserved(attributor: Attributor, gpu: str) -> None:
    measured = attributor.measured[gpu]
    parts = Amount()
    parts.add(attributor.attributed_by_gpu.get(gpu, Amount()))
    parts.add(attributor.idle.get(gpu, Amount()))
    for (g, _), amount in attributor.unattributed.items():
        if g == gpu:
            parts.add(amount)
    parts.add(attributor.pending_amount(gpu))
    for field in ("gpu_seconds", "joules", "usd"):
        assert getattr(parts, field) == pytest.approx(getattr(measured, field), rel=1e-9, abs=1e-9), field


def test_lone_request_on_an_idle_gpu_gets_all_of_its_intervals() -> None:
    attributor, _ = run([Req(prefill_start=10, prefill_s=1, decode_s=10, prompt=100, output=101)])
    # Its work spans the intervals [10,15], [15,20], [20,25]: 15 s of a 300 W GPU.
    assert attributed_joules(attributor) == pytest.approx(300 * 15)
    assert attributor.idle["GPU-a"].joules == pytest.approx(300 * 45)
    gpu_seconds = sum(a.gpu_seconds for a in attributor.attributed.values())
    assert gpu_seconds == pytest.approx(15)
    usd = sum(a.usd for a in attributor.attributed.values())
    assert usd == pytest.approx(15 * 3.6 / 3600 + 300 * 15 * 0.36 / 3.6e6)
    conserved(attributor, "GPU-a")
    attributor.expire(now=T0 + 2e9)
    assert not attributor.unattributed  # nothing was left unclaimed
    conserved(attributor, "GPU-a")


def test_phases_split_by_work() -> None:
    attributor, _ = run([Req(prefill_start=10, prefill_s=1, decode_s=10, prompt=100, output=101)])
    prefill = attributor.attributed[("m", "t", "prefill")].joules
    decode = attributor.attributed[("m", "t", "decode")].joules
    # Interval [10,15] holds 100 prompt tokens and 101*4/10 output tokens; later intervals are decode only.
    assert prefill == pytest.approx(1500 * 100 / (100 + 40.4))
    assert prefill + decode == pytest.approx(4500)


def test_two_identical_concurrent_requests_get_equal_shares() -> None:
    reqs = [Req(12, 2, 20, 500, 200, tenant="a"), Req(12, 2, 20, 500, 200, tenant="b")]
    attributor, _ = run(reqs)
    a, b = attributed_joules(attributor, "a"), attributed_joules(attributor, "b")
    assert a == pytest.approx(b) and a + b == pytest.approx(300 * 25)  # intervals 10..35
    conserved(attributor, "GPU-a")


def test_staggered_requests_and_an_idle_gap() -> None:
    reqs = [Req(2, 1, 6, 100, 61, tenant="early"), Req(31, 1, 4, 50, 41, tenant="late")]
    attributor, _ = run(reqs)
    assert attributed_joules(attributor, "early") == pytest.approx(300 * 10)  # [0,5], [5,10]
    assert attributed_joules(attributor, "late") == pytest.approx(300 * 10)  # [30,35], [35,40]
    assert attributor.idle["GPU-a"].joules == pytest.approx(300 * 40)  # the gap and the tail
    conserved(attributor, "GPU-a")


def test_tensor_parallel_request_pays_for_both_gpus() -> None:
    attributor, _ = run([Req(10, 1, 10, 100, 101)], gpus=("GPU-a", "GPU-b"))
    assert attributed_joules(attributor) == pytest.approx((300 + 200) * 15)
    assert sum(a.gpu_seconds for a in attributor.attributed.values()) == pytest.approx(2 * 15)
    conserved(attributor, "GPU-a")
    conserved(attributor, "GPU-b")


def test_a_span_submitted_twice_takes_nothing_more() -> None:
    attributor, spans = run([Req(10, 1, 10, 100, 101)])
    before = attributed_joules(attributor)
    attributor.submit("i", spans[0], "t")
    attributor.charge_ready(now=T0 + 60)
    assert attributed_joules(attributor) == pytest.approx(before)
    conserved(attributor, "GPU-a")


def test_lost_span_leaves_its_share_unattributed_not_given_to_others() -> None:
    reqs = [Req(12, 2, 20, 500, 200, tenant="a"), Req(12, 2, 20, 500, 200, tenant="lost")]
    attributor = Attributor(PRICING, lambda gpu: "H100", retention_s=100)
    times = [T0 + k * 5 for k in range(13)]
    attributor.close_intervals(InstanceInputs("i", ("GPU-a",), tuple(counters(reqs, times))), energy_at, never_down)
    rng = random.Random(0)
    spans = [r.span(rng) for r in reqs]
    attributor.submit("i", spans[0], "a")  # the other span never arrives
    attributor.charge_ready(now=T0 + 60)
    assert attributed_joules(attributor, "a") == pytest.approx(300 * 25 / 2)
    attributor.expire(now=T0 + 60 + 100)
    assert attributor.unattributed[("GPU-a", "unclaimed")].joules == pytest.approx(300 * 25 / 2)
    conserved(attributor, "GPU-a")


def test_span_arriving_after_its_intervals_aged_out_is_late_and_its_energy_unattributed() -> None:
    reqs = [Req(10, 1, 10, 100, 101)]
    attributor = Attributor(PRICING, lambda gpu: "H100", retention_s=30)
    times = [T0 + k * 5 for k in range(13)]
    attributor.close_intervals(InstanceInputs("i", ("GPU-a",), tuple(counters(reqs, times))), energy_at, never_down)
    attributor.expire(now=T0 + 90)
    [span] = [r.span(random.Random(0)) for r in reqs]
    attributor.submit("i", span, "t")
    assert attributor.charge_ready(now=T0 + 90) == []
    assert attributor.spans["late"] == 1
    assert attributor.unattributed[("GPU-a", "unclaimed")].joules == pytest.approx(300 * 15)
    conserved(attributor, "GPU-a")


def test_request_waits_until_its_intervals_close() -> None:
    reqs = [Req(10, 1, 10, 100, 101)]
    attributor = Attributor(PRICING, lambda gpu: "H100")
    points = counters(reqs, [T0 + k * 5 for k in range(7)])
    attributor.close_intervals(InstanceInputs("i", ("GPU-a",), tuple(points[:4])), energy_at, never_down)
    [span] = [r.span(random.Random(0)) for r in reqs]
    attributor.submit("i", span, "t")
    assert attributor.charge_ready(now=T0 + 16) == [] and len(attributor.pending) == 1
    attributor.close_intervals(InstanceInputs("i", ("GPU-a",), tuple(points)), energy_at, never_down)
    [charge] = attributor.charge_ready(now=T0 + 31)
    assert charge.complete and sum(a.joules for a in charge.by_phase.values()) == pytest.approx(4500)


def test_interval_waits_for_gpu_samples_and_gpu_down_is_unattributed() -> None:
    attributor = Attributor(PRICING, lambda gpu: "H100")
    points = tuple(counters([Req(1, 1, 8, 10, 9)], [T0, T0 + 5, T0 + 10]))

    def energy_until_7(gpu: str, t: float) -> float | None:
        return energy_at(gpu, t) if t <= T0 + 7 else None

    assert attributor.close_intervals(InstanceInputs("i", ("GPU-a",), points), energy_until_7, never_down) == 1
    assert (
        attributor.close_intervals(InstanceInputs("i", ("GPU-a",), points), energy_at, lambda g, s, e: s >= T0 + 5) == 1
    )
    assert attributor.unattributed[("GPU-a", "gpu_down")].gpu_seconds == pytest.approx(5)
    conserved(attributor, "GPU-a")


def test_unassigned_gpus_are_idle() -> None:
    attributor = Attributor(PRICING, lambda gpu: "H100")
    readings = iter([(T0, 0.0), (T0 + 10, 1000.0)])
    attributor.count_unassigned(["GPU-b"], lambda g: next(readings))
    attributor.count_unassigned(["GPU-b"], lambda g: next(readings))
    assert attributor.idle["GPU-b"].joules == 1000 and attributor.idle["GPU-b"].gpu_seconds == 10
    conserved(attributor, "GPU-b")


def test_pricing_by_product_longest_match_first() -> None:
    pricing = Pricing({"H100": 3.0, "H100 NVL": 4.0, "A100": 1.5}, default_gpu_hour_usd=1.0, energy_kwh_usd=0.1)
    assert pricing.per_second("NVIDIA H100 NVL") * 3600 == pytest.approx(4.0)
    assert pricing.per_second("NVIDIA H100 80GB HBM3") * 3600 == pytest.approx(3.0)
    assert pricing.per_second("Tesla T4") * 3600 == pytest.approx(1.0)
    assert pricing.energy(3.6e6) == pytest.approx(0.1)


def test_kv_token_seconds_and_throttled() -> None:
    span = Req(0, 2, 10, 1000, 101).span(random.Random(0))
    kv = span.kv_token_seconds()
    assert kv["prefill"] == pytest.approx(1000 * 2 / 2) and kv["decode"] == pytest.approx((1000 + 50.5) * 10)
    assert throttled([]) == "unknown" and throttled([None]) == "unknown"
    assert throttled([frozenset({"idle"}), frozenset()]) == "false"
    assert throttled([frozenset(), frozenset({"sw_power_cap"})]) == "true"


requests_strategy = st.lists(
    st.builds(
        Req,
        prefill_start=st.floats(0, 50),
        prefill_s=st.floats(0, 3),
        decode_s=st.floats(0, 20),
        prompt=st.integers(0, 4000),
        output=st.integers(1, 500),
        tenant=st.sampled_from(["a", "b", "c"]),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(requests_strategy, st.floats(1, 10), st.integers(0, 11))
def test_conservation_on_random_timelines(reqs: list[Req], step: float, lost: int) -> None:
    attributor = Attributor(PRICING, lambda gpu: "H100", retention_s=1e9)
    times = [T0 + k * step for k in range(int(80 / step) + 2)]
    gpus = ("GPU-a", "GPU-b")
    attributor.close_intervals(InstanceInputs("i", gpus, tuple(counters(reqs, times))), energy_at, never_down)
    rng = random.Random(0)
    spans = [r.span(rng) for r in reqs]
    for i, span in enumerate(spans):
        if i != lost:
            attributor.submit("i", span, span.tenant or "unknown")
    charges = attributor.charge_ready(now=T0 + 200)
    for charge in charges:
        for amount in charge.by_phase.values():
            assert amount.joules >= 0 and amount.gpu_seconds >= 0 and amount.usd >= 0
    for gpu in gpus:
        conserved(attributor, gpu)
    per_tenant = sum(attributed_joules(attributor, t) for t in ("a", "b", "c"))
    assert math.isclose(
        per_tenant, sum(a.joules for a in attributor.attributed_by_gpu.values()), rel_tol=1e-9, abs_tol=1e-9
    )
    attributor.expire(now=T0 + 2e9)
    for gpu in gpus:
        conserved(attributor, gpu)
        assert attributor.pending_amount(gpu).joules == 0


def test_forget_drops_the_totals_of_idle_model_tenant_pairs_only() -> None:
    attributor = Attributor(PRICING, lambda gpu: "H100")
    for key in (("m", "a", "prefill"), ("m", "a", "decode"), ("m", "b", "decode"), ("n", "a", "decode")):
        attributor.attributed[key] = Amount(1.0, 2.0, 3.0)
    attributor.forget({("m", "a")})
    assert set(attributor.attributed) == {("m", "b", "decode"), ("n", "a", "decode")}
