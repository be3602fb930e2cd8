"""Ground truth: how much GPU energy and GPU time each simulated request really used. Pure.

During a step, each GPU of the instance draws a known power for a known time; that energy (and |GPUs| x duration
of GPU time) is split over the step's requests in proportion to the cost each one added to the step (the same
cost model that sets the step's duration). Time with no step is idle. So, per GPU and exactly (up to float
rounding): sum of request shares + idle = the energy the simulated NVML counter reports. The exporter's
attribution (which only sees NVML samples, vLLM's counters and spans) is compared with this in
tests/integration/test_attribution_ledger.py; with `steps` set to a list, the ledger also logs when each request's
tokens were computed, so a test can tell the token-work split's own error from the exporter's.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFILL = "prefill"
DECODE = "decode"


@dataclass(slots=True)
class RequestTruth:
    """One request's true usage; `span_key` (trace id + span id of its llm_request span) matches the exporter's."""

    request_id: str
    span_key: bytes
    model: str
    tenant: str
    instance: str
    gpus: tuple[str, ...]  # NVML UUIDs
    arrival: float
    energy_j: dict[str, float] = field(default_factory=lambda: {PREFILL: 0.0, DECODE: 0.0})
    gpu_seconds: dict[str, float] = field(default_factory=lambda: {PREFILL: 0.0, DECODE: 0.0})
    prefill_tokens: int = 0  # computed, recomputation after preemption included
    decode_tokens: int = 0
    finished_at: float | None = None
    outcome: str = "in_flight"  # in_flight, finished, aborted (its engine died: no span)
    span_sent: bool = False  # False for a finished request whose span the scenario lost
    first_token: float | None = None  # when the user got the first token (a P/D request: from its decode half)
    prefill_span_key: bytes = b""  # a P/D request: its prefill half's span (`span_key` is the decode half's)
    prefill_first_token: float | None = None  # a P/D request: the prefill half's own token (the user never sees it)

    @property
    def ttft_s(self) -> float | None:
        """The user-visible time to first token (a P/D request: prefill start to the decode side's first token)."""
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def total_energy_j(self) -> float:
        """Prefill plus decode joules."""
        return self.energy_j[PREFILL] + self.energy_j[DECODE]


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One engine step: its instance, when it ran, the energy of its GPUs, and each request's tokens in it (span
    key, prefill, decode)."""

    instance: str
    start: float
    end: float
    joules: float
    work: tuple[tuple[bytes, int, int], ...]


@dataclass
class Ledger:
    """Per-request truths (the most recent `max_requests`) and running totals that never forget."""

    max_requests: int = 200_000
    requests: OrderedDict[int, RequestTruth] = field(default_factory=OrderedDict)
    energy_by: defaultdict[tuple[str, str, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )  # (model, tenant, phase) -> J
    gpu_seconds_by: defaultdict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    attributed_j: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )  # GPU uuid -> J charged to requests
    idle_j: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )  # GPU uuid -> J with no step running
    idle_gpu_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    outcomes: Counter[str] = field(default_factory=Counter)  # finished, aborted, rejected, span_sent, span_lost
    finished_by: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, tenant) -> finished requests
    steps: list[StepRecord] | None = None  # every step, when set to a list (a test's; grows without bound)

    def open(self, key: int, truth: RequestTruth) -> None:
        """Start tracking a request."""
        self.requests[key] = truth
        while len(self.requests) > self.max_requests:
            self.requests.popitem(last=False)

    def charge_step(
        self,
        work: Sequence[tuple[int, int, int, float]],
        gpu_energy_j: Sequence[tuple[str, float]],
        duration_s: float,
    ) -> None:
        """Split a step's energy and GPU time over its work items (request key, prefill tokens, decode tokens,
        cost weight)."""
        total_weight = sum(w[3] for w in work)
        if total_weight <= 0:
            return
        energy = sum(e for _, e in gpu_energy_j)
        gpu_seconds = duration_s * len(gpu_energy_j)
        for uuid, joules in gpu_energy_j:
            self.attributed_j[uuid] += joules
        for key, prefill, decode, weight in work:
            truth = self.requests.get(key)
            if truth is None:
                continue
            share = weight / total_weight
            phase = PREFILL if prefill else DECODE
            truth.energy_j[phase] += energy * share
            truth.gpu_seconds[phase] += gpu_seconds * share
            truth.prefill_tokens += prefill
            truth.decode_tokens += decode
            self.energy_by[(truth.model, truth.tenant, phase)] += energy * share
            self.gpu_seconds_by[(truth.model, truth.tenant, phase)] += gpu_seconds * share

    def alias(self, key: int, existing: int) -> None:
        """`key` (a P/D request's decode half) is the same request as `existing` (its prefill half)."""
        truth = self.requests.get(existing)
        if truth is not None:
            self.requests[key] = truth

    def prefill_done(self, key: int, first_token: float) -> None:
        """A P/D request's prefill half finished (its one token at `first_token`); the request goes on."""
        truth = self.requests.get(key)
        if truth is not None:
            truth.prefill_first_token = first_token

    def log_step(
        self, instance: str, start: float, end: float, joules: float, work: Sequence[tuple[int, int, int]]
    ) -> None:
        """Keep a step (its energy, and its token work as request key, prefill tokens, decode tokens) in `steps`,
        if they are kept."""
        if self.steps is None:
            return
        known = [(self.requests[k].span_key, p, d) for k, p, d in work if k in self.requests]
        self.steps.append(StepRecord(instance, start, end, joules, tuple(known)))

    def idle(self, uuid: str, joules: float, seconds: float) -> None:
        """A GPU spent `seconds` with no step, drawing `joules`."""
        self.idle_j[uuid] += joules
        self.idle_gpu_seconds[uuid] += seconds

    def finish(self, key: int, when: float, span_sent: bool, first_token: float | None = None) -> None:
        """The request finished (the user got its first token at `first_token`); its span was sent or (span-loss
        scenario) lost."""
        self.outcomes["finished"] += 1
        self.outcomes["span_sent" if span_sent else "span_lost"] += 1
        truth = self.requests.get(key)
        if truth is not None:
            truth.outcome, truth.finished_at, truth.span_sent = "finished", when, span_sent
            truth.first_token = first_token
            self.finished_by[(truth.model, truth.tenant)] += 1

    def abort(self, key: int) -> None:
        """The request's engine died before it finished (vLLM sends no span for it)."""
        self.outcomes["aborted"] += 1
        truth = self.requests.get(key)
        if truth is not None:
            truth.outcome = "aborted"

    def reject(self) -> None:
        """A request arrived while no instance of its model was up."""
        self.outcomes["rejected"] += 1

    def by_span(self) -> dict[bytes, RequestTruth]:
        """Finished requests whose span was sent, by span key (trace id + span id), to join with the exporter."""
        # A P/D request is held under both halves' keys: one entry by its (decode) span key.
        return {t.span_key: t for t in self.requests.values() if t.outcome == "finished" and t.span_sent}

    def energy_of(self, model: str | None = None, tenant: str | None = None, phase: str | None = None) -> float:
        """Total joules charged to requests matching the given labels (None: any)."""
        return sum(
            j
            for (m, t, p), j in self.energy_by.items()
            if (model is None or m == model) and (tenant is None or t == tenant) and (phase is None or p == phase)
        )
