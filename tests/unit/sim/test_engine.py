"""The simulator's continuous-batching engine and KV cache, stepped by hand with a clock the test holds."""

from __future__ import annotations

import itertools

import pytest

from exporter.sim.engine import CostModel, EngineConfig, EngineModel, SimRequest, StepOutcome
from exporter.sim.kv import KvCache
from exporter.sim.workload import Arrival

_ids = itertools.count(1)


def arrival(prompt: int, output: int, at: float = 0.0, prefix: str | None = None, prefix_tokens: int = 0) -> Arrival:
    return Arrival(at, "m", "t", prompt, output, 4096, prefix, prefix_tokens, 0.7, 1.0, True, next(_ids))


def request(prompt: int, output: int, at: float = 0.0, **kwargs: object) -> SimRequest:
    a = arrival(prompt, output, at, **kwargs)  # type: ignore[arg-type]
    return SimRequest(a.seq, a, at, prompt, output)


def engine(blocks: int = 10_000, max_seqs: int = 256, budget: int = 4096, block_size: int = 16) -> EngineModel:
    return EngineModel(EngineConfig(CostModel(), max_seqs, budget), KvCache(blocks, block_size))


def run(e: EngineModel, now: float = 0.0, limit: int = 100_000) -> tuple[list[StepOutcome], float]:
    """Step until idle; each step lasts its nominal time. Returns the outcomes and the end time."""
    outcomes = []
    for _ in range(limit):
        plan = e.schedule(now)
        if plan is None:
            break
        now += plan.nominal_s
        outcomes.append(e.complete(plan, now))
    assert e.idle
    return outcomes, now


def test_requests_arriving_together_share_steps_and_all_finish() -> None:
    e = engine()
    a, b = request(100, 5), request(100, 5)
    e.add(a)
    e.add(b)
    outcomes, _ = run(e)
    assert {w.request.id for w in outcomes[0].plan.work} == {a.id, b.id}  # one batch, not one at a time
    assert len(outcomes) == 5  # one prefill step that yields the first token, then 4 decode steps
    assert a.generated == b.generated == 5 and a.finished_at == b.finished_at


def test_a_late_request_joins_the_running_batch_without_waiting_for_it_to_finish() -> None:
    e = engine()
    first = request(50, 100)
    e.add(first)
    now = 0.0
    for _ in range(3):
        plan = e.schedule(now)
        assert plan is not None
        now += plan.nominal_s
        e.complete(plan, now)
    late = request(50, 3, at=now)
    e.add(late)
    run(e, now)
    assert late.finished_at is not None and first.finished_at is not None
    assert late.finished_at < first.finished_at
    assert late.first_scheduled == pytest.approx(now)  # admitted at the next step: no queueing behind `first`


def test_max_num_seqs_makes_a_queue_and_the_wait_is_measured() -> None:
    e = engine(max_seqs=2)
    reqs = [request(20, 10) for _ in range(3)]
    for r in reqs:
        e.add(r)
    plan = e.schedule(0.0)
    assert plan is not None and len(plan.work) == 2 and len(e.waiting) == 1
    run(e, 0.0 + 0.0)
    third = reqs[2]
    assert third.first_scheduled is not None and third.first_scheduled > 0.0  # waited for a seat
    assert third.first_scheduled >= min(r.finished_at or 0.0 for r in reqs[:2])


def test_long_prompts_are_prefilled_in_chunks_while_others_keep_decoding() -> None:
    e = engine(budget=4096)
    decoding = request(10, 50)
    e.add(decoding)
    plan = e.schedule(0.0)
    assert plan is not None
    now = plan.nominal_s
    e.complete(plan, now)  # `decoding` now has its first token
    long = request(10_000, 2, at=now)
    e.add(long)
    chunks = []
    while long.first_token is None:
        plan = e.schedule(now)
        assert plan is not None
        work = {w.request.id: w for w in plan.work}
        assert work[decoding.id].decode_tokens == 1  # decode goes on beside the chunked prefill
        chunks.append(work[long.id].prefill_tokens)
        now += plan.nominal_s
        e.complete(plan, now)
    assert chunks == [4095, 4095, 1810]  # the budget less the decode token, until the prompt is done
    assert long.computed == 10_000 and long.generated == 1


def test_step_time_grows_with_batch_size_and_context() -> None:
    def decode_step_time(batch: int, prompt: int) -> float:
        e = engine(budget=100_000)  # every prompt in one prefill step, then all decode
        for _ in range(batch):
            e.add(request(prompt, 10))
        plan = e.schedule(0.0)
        assert plan is not None
        e.complete(plan, plan.nominal_s)
        plan = e.schedule(plan.nominal_s)  # the first all-decode step
        assert plan is not None and all(w.decode_tokens == 1 for w in plan.work)
        return plan.nominal_s

    assert decode_step_time(1, 100) < decode_step_time(32, 100) < decode_step_time(32, 2000)


def test_prefill_slowdown_scales_prefill_cost_only() -> None:
    e = engine()
    e.add(request(1000, 2))
    base = e.schedule(0.0)
    slow = engine()
    slow.config.prefill_slowdown = 4.0
    slow.add(request(1000, 2))
    plan = slow.schedule(0.0)
    assert base is not None and plan is not None
    assert plan.prefill_s == pytest.approx(4 * base.prefill_s) and plan.fixed_s == base.fixed_s


def test_a_full_kv_cache_preempts_the_newest_request_which_is_recomputed_and_finishes() -> None:
    # 40 blocks of 16 = 640 tokens; three requests that each grow to 300 tokens cannot all stay resident.
    e = engine(blocks=40)
    reqs = [request(200, 100) for _ in range(3)]
    for r in reqs:
        e.add(r)
    outcomes, _ = run(e)
    assert e.preemptions > 0
    preempted = [r for r in reqs if r.preemptions]
    assert preempted and reqs[0].preemptions == 0  # the oldest keeps its place
    assert all(r.generated == 100 and r.finished_at is not None for r in reqs)
    victims = [v for o in outcomes for v in o.plan.preempted]
    assert preempted[0] in victims
    # Recomputation: the victim prefilled its prompt (and what it had generated) again.
    assert sum(w.prefill_tokens for o in outcomes for w in o.plan.work if w.request is preempted[0]) > 200
    assert e.kv.usage == 0.0 and e.kv.free_blocks == 40


def test_kv_usage_never_exceeds_capacity() -> None:
    e = engine(blocks=64)
    for i in range(12):
        e.add(request(150 + 10 * i, 60))
    now = 0.0
    while not e.idle:
        plan = e.schedule(now)
        assert plan is not None
        assert 0.0 <= e.kv.usage <= 1.0
        now += plan.nominal_s
        e.complete(plan, now)


def test_a_shared_prefix_is_computed_once_then_hit() -> None:
    e = engine(block_size=16)
    first = request(1200, 3, prefix="tenant/system", prefix_tokens=1000)
    e.add(first)
    run(e)
    second = request(1100, 3, prefix="tenant/system", prefix_tokens=1000)
    other = request(1100, 3, prefix="other/system", prefix_tokens=1000)
    e.add(second)
    e.add(other)
    outcomes, _ = run(e)
    assert first.cached_tokens == 0
    assert second.cached_tokens == 992  # whole blocks of the prefix: 62 x 16
    assert other.cached_tokens == 0
    prefill = {w.request.id: w.prefill_tokens for w in outcomes[0].plan.work}
    assert prefill[second.id] == 1100 - 992 and prefill[other.id] == 1100
    assert e.prefix_hits == 992 and e.prefix_queries == 1200 + 1100 + 1100


def test_unreferenced_prefixes_are_evicted_only_when_room_is_needed() -> None:
    kv = KvCache(num_blocks=10, block_size=16)
    assert kv.grow(1, 4) and kv.promote_prefix(1, "p", 64)  # 4 blocks become the cached prefix "p"
    kv.release(1)
    kv.unref_prefix("p")
    assert kv.usage == 0.0 and "p" in kv.prefixes  # free to use, but still cached
    assert kv.cached_prefix_tokens("p", 64, 100) == 64
    assert kv.grow(2, 6)  # fits beside the cached prefix
    assert "p" in kv.prefixes
    assert kv.grow(2, 10)  # needs the prefix's blocks: evicted
    assert "p" not in kv.prefixes and kv.free_blocks == 0
    assert not kv.grow(3, 1)
