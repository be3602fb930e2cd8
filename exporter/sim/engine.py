"""The continuous-batching model of one vLLM engine: a waiting queue, a running batch, chunked prefill, decode steps
whose time grows with batch size and context, a fixed KV cache with preemption, prefix-cache hits. Pure.

The engine is stepped by its caller in two halves: `schedule(now)` decides what the next step computes and what it
costs at full clock; the caller turns that cost into a duration (clocks, power caps) and calls
`complete(plan, end)`, which moves every request on and reports what happened. No clock is read here.

Scheduling follows vLLM v1's: running requests first (a decode token each, or their next prefill chunk) within a
token budget; when the KV cache has no block for one, the most recently admitted running request is preempted
(its blocks freed, back to the front of the queue, recomputed later); waiting requests are admitted in arrival order
only in steps that preempted nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

from exporter.sim.kv import KvCache
from exporter.sim.workload import Arrival


@dataclass(frozen=True)
class CostModel:
    """Seconds a step takes at full clock, per GPU of the tensor-parallel group (already divided by TP)."""

    fixed_s: float = 0.006  # every step: reading the weights once, kernel launches
    prefill_s_per_token: float = 4e-5
    prefill_s_per_token_context: float = 2e-9  # attention: a prefill token costs more the longer its context
    decode_s_per_seq: float = 1e-4
    decode_s_per_context_token: float = 4e-8  # reading the sequence's KV cache


@dataclass
class EngineConfig:
    """Limits and costs of one engine; `prefill_slowdown` and `cost` may change while it runs (scenarios)."""

    cost: CostModel = field(default_factory=CostModel)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 4096
    max_model_len: int = 32_768
    prefill_slowdown: float = 1.0


@dataclass(eq=False)
class SimRequest:
    """One request inside the engine; times are unix seconds, None until they happen."""

    id: int
    arrival: Arrival
    queued_at: float  # the engine got it (after the API server tokenised it)
    prompt_tokens: int
    output_tokens: int
    computed: int = 0  # tokens whose KV is in the cache
    generated: int = 0
    shared: int = 0  # tokens of a cached prefix it references (not in its private blocks)
    prefix_ref: str | None = None
    prefill_target: int = 0  # tokens to compute before its next output (prompt + generated at admission)
    cached_tokens: int = -1  # prefix-cache hit at first admission (-1: not admitted yet)
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished_at: float | None = None
    preemptions: int = 0
    # A P/D decode half: its prompt's KV came from the prefill instance (no prefill compute here, unless preempted).
    kv_loaded: bool = False
    external_tokens: int = 0  # prompt tokens whose KV was loaded, not computed (vLLM's external_kv_transfer)

    @property
    def prefilling(self) -> bool:
        """Whether its next step computes prompt (or recomputed) tokens rather than one decode token."""
        return self.computed < self.prefill_target

    @property
    def finish_reason(self) -> str:
        """vLLM's finished_reason: `length` when it hit max_tokens, else `stop`."""
        return "length" if self.output_tokens >= self.arrival.max_tokens else "stop"


@dataclass(frozen=True, slots=True)
class Work:
    """What one request computes in one step, and its share of the step's cost (seconds at full clock)."""

    request: SimRequest
    prefill_tokens: int
    decode_tokens: int
    cost_s: float


@dataclass(frozen=True, slots=True)
class KvEviction:
    """A cached prefix evicted to make room, as vLLM's --kv-cache-metrics observes each of its blocks: from
    allocation to eviction, idle since the last use, and the gaps between its last few uses (vLLM keeps 4)."""

    blocks: int
    lifetime_s: float
    idle_s: float
    reuse_gaps_s: tuple[float, ...]


@dataclass
class _PrefixLife:
    """When a cached prefix was computed and last used (only what the residency histograms need)."""

    blocks: int
    born: float
    uses: deque[float] = field(default_factory=lambda: deque(maxlen=4))

    def evicted(self, now: float) -> KvEviction:
        last = self.uses[-1] if self.uses else self.born
        gaps = tuple(b - a for a, b in pairwise(self.uses))
        return KvEviction(self.blocks, now - self.born, now - last, gaps)


@dataclass(frozen=True)
class StepPlan:
    """A scheduled step: the work of each request and the cost split by kind, at full clock."""

    start: float
    work: tuple[Work, ...]
    fixed_s: float
    prefill_s: float
    decode_s: float
    preempted: tuple[SimRequest, ...]
    admitted: tuple[SimRequest, ...]
    prefix_queries: int = 0  # tokens of the admitted requests looked up in the prefix cache
    prefix_hits: int = 0  # of which found there
    kv_evictions: tuple[KvEviction, ...] = ()  # cached prefixes evicted since the last plan

    @property
    def nominal_s(self) -> float:
        """The step's duration at full clock."""
        return self.fixed_s + self.prefill_s + self.decode_s

    @property
    def compute_share(self) -> float:
        """Share of the step spent in compute-bound prefill (the rest is memory-bound: weights and KV reads)."""
        return self.prefill_s / self.nominal_s if self.nominal_s > 0 else 0.0

    @property
    def tokens(self) -> int:
        """Tokens computed in the step (vLLM's iteration_tokens_total)."""
        return sum(w.prefill_tokens + w.decode_tokens for w in self.work)


@dataclass
class StepOutcome:
    """What a completed step did, for metrics, spans and the energy ledger."""

    plan: StepPlan
    end: float
    first_tokens: list[SimRequest] = field(default_factory=list)
    finished: list[SimRequest] = field(default_factory=list)
    inter_token_s: list[float] = field(default_factory=list)  # one per token produced after a request's first
    generation_tokens: int = 0


@dataclass
class EngineModel:
    """One vLLM engine's scheduler state."""

    config: EngineConfig
    kv: KvCache
    waiting: deque[SimRequest] = field(default_factory=deque)
    running: list[SimRequest] = field(default_factory=list)
    prefix_queries: int = 0  # tokens looked up in the prefix cache (vLLM counts at every admission)
    prefix_hits: int = 0
    preemptions: int = 0
    # Cached blocks the simulation observes are its shared prefixes (a request's own blocks are freed, not cached).
    _prefix_lives: dict[str, _PrefixLife] = field(default_factory=dict)
    _evictions: list[KvEviction] = field(default_factory=list)

    def add(self, request: SimRequest) -> None:
        """Queue a request (its `queued_at` must not be after the next `schedule` time)."""
        limit = self.config.max_model_len
        request.prompt_tokens = min(request.prompt_tokens, limit - 1)
        request.output_tokens = max(1, min(request.output_tokens, limit - request.prompt_tokens))
        self.waiting.append(request)

    @property
    def idle(self) -> bool:
        """Nothing to run."""
        return not self.waiting and not self.running

    def _private_blocks(self, request: SimRequest, tokens: int) -> int:
        return self.kv.blocks_for(max(0, tokens - request.shared))

    def _preempt(self, victim: SimRequest) -> None:
        self._drop_kv(victim)
        victim.computed = 0
        victim.kv_loaded = False  # its loaded KV is gone: vLLM recomputes it here
        victim.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(victim)

    def _drop_kv(self, request: SimRequest) -> None:
        self.kv.release(request.id)
        if request.prefix_ref is not None:
            self.kv.unref_prefix(request.prefix_ref)
        request.prefix_ref, request.shared = None, 0

    def _cost(self, request: SimRequest, prefill: int) -> float:
        cost = self.config.cost
        if prefill:
            context = request.computed + prefill / 2
            per_token = cost.prefill_s_per_token + cost.prefill_s_per_token_context * context
            return prefill * per_token * self.config.prefill_slowdown
        return cost.decode_s_per_seq + cost.decode_s_per_context_token * request.computed

    def _schedule_running(self, budget: int, preempted: list[SimRequest]) -> tuple[list[tuple[SimRequest, int]], int]:
        chosen: list[tuple[SimRequest, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = min(request.prefill_target - request.computed, budget) if request.prefilling else 1
            while not self.kv.grow(request.id, self._private_blocks(request, request.computed + n)):
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            else:
                chosen.append((request, n))
                budget -= n
                i += 1
        return chosen, budget

    def _admit(self, request: SimRequest, now: float) -> int:
        """Look the request's prefix up and reference it; returns the hit in tokens."""
        arrival = request.arrival
        context = request.prompt_tokens + request.generated
        hit = self.kv.cached_prefix_tokens(arrival.prefix_id, arrival.prefix_tokens, context)
        if hit and arrival.prefix_id is not None:
            self.kv.ref_prefix(arrival.prefix_id)
            request.prefix_ref, request.shared = arrival.prefix_id, hit
            life = self._prefix_lives.get(arrival.prefix_id)
            if life is not None:
                life.uses.append(now)
        request.computed = hit
        request.prefill_target = context
        if request.kv_loaded:  # the whole context is in the cache already: the next step decodes
            request.computed = context
            if request.first_scheduled is None:
                request.external_tokens = request.prompt_tokens - hit
        return hit

    def _schedule_waiting(self, now: float, budget: int) -> tuple[list[tuple[SimRequest, int]], list[SimRequest]]:
        chosen: list[tuple[SimRequest, int]] = []
        admitted: list[SimRequest] = []
        while self.waiting and len(self.running) < self.config.max_num_seqs and budget > 0:
            request = self.waiting[0]
            hit = self._admit(request, now)
            # A loaded request needs a block for its first new token too; it costs one token of budget, a decode.
            n = 1 if request.kv_loaded else min(request.prefill_target - request.computed, budget)
            if not self.kv.grow(request.id, self._private_blocks(request, request.computed + n)):
                self._drop_kv(request)
                request.computed = 0
                break
            self.waiting.popleft()
            self.running.append(request)
            self.prefix_queries += request.prefill_target
            self.prefix_hits += hit
            if request.first_scheduled is None:
                request.first_scheduled = now
                request.cached_tokens = hit
            admitted.append(request)
            chosen.append((request, n))
            budget -= n
        return chosen, admitted

    def schedule(self, now: float) -> StepPlan | None:
        """Decide the next step starting at `now`; None when there is nothing to run."""
        if self.idle:
            return None
        preempted: list[SimRequest] = []
        cached = set(self.kv.prefixes)
        chosen, budget = self._schedule_running(self.config.max_num_batched_tokens, preempted)
        admitted: list[SimRequest] = []
        if not preempted:
            more, admitted = self._schedule_waiting(now, budget)
            chosen += more
        for prefix_id in cached.difference(self.kv.prefixes):  # evicted to make room for this step
            life = self._prefix_lives.pop(prefix_id, None)
            if life is not None:
                self._evictions.append(life.evicted(now))
        if not chosen:
            return None  # everything was preempted or nothing fits: wait for the next arrival or a finish
        evictions, self._evictions = tuple(self._evictions), []
        work: list[Work] = []
        prefill_s = decode_s = 0.0
        for request, n in chosen:
            prefill = n if request.prefilling else 0
            cost = self._cost(request, prefill)
            work.append(Work(request, prefill, 0 if prefill else 1, cost))
            if prefill:
                prefill_s += cost
            else:
                decode_s += cost
        return StepPlan(
            now,
            tuple(work),
            self.config.cost.fixed_s,
            prefill_s,
            decode_s,
            tuple(preempted),
            tuple(admitted),
            prefix_queries=sum(r.prefill_target for r in admitted),
            prefix_hits=sum(r.shared for r in admitted),
            kv_evictions=evictions,
        )

    def complete(self, plan: StepPlan, end: float) -> StepOutcome:
        """Finish a planned step at `end`: tokens computed, outputs produced, finished requests released."""
        outcome = StepOutcome(plan, end)
        for item in plan.work:
            request = item.request
            if item.prefill_tokens:
                request.computed += item.prefill_tokens
                if request.prefilling:
                    continue  # more chunks to go: no output yet
                self._promote_prefix(request, end)
            else:
                request.computed += 1
            request.generated += 1
            outcome.generation_tokens += 1
            if request.first_token is None:
                request.first_token = end
                outcome.first_tokens.append(request)
            elif request.last_token is not None:
                outcome.inter_token_s.append(end - request.last_token)
            request.last_token = end
            if request.generated >= request.output_tokens:
                request.finished_at = end
                self._drop_kv(request)
                self.running.remove(request)
                outcome.finished.append(request)
        return outcome

    def _promote_prefix(self, request: SimRequest, now: float) -> None:
        arrival = request.arrival
        if arrival.prefix_id is None or request.prefix_ref is not None:
            return
        if self.kv.promote_prefix(request.id, arrival.prefix_id, arrival.prefix_tokens):
            request.prefix_ref = arrival.prefix_id
            request.shared = arrival.prefix_tokens // self.kv.block_size * self.kv.block_size
            self._prefix_lives[arrival.prefix_id] = _PrefixLife(self.kv.prefixes[arrival.prefix_id].blocks, now)

    def abort_all(self) -> list[SimRequest]:
        """Drop every request (the engine died); returns them."""
        dropped = [*self.running, *self.waiting]
        self.running.clear()
        self.waiting.clear()
        self.kv.clear()
        self._prefix_lives.clear()  # vLLM resets its block metrics with the cache: no evictions observed
        self._evictions.clear()
        return dropped
