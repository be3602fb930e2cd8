"""Tenants and their request mixes, and the arrival processes that turn rates into requests. Pure.

Everything random draws from a `random.Random` it is given, and time is a number it is given: the same seed and
the same calls give the same requests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

RateProfile = Callable[[float], float]  # seconds since the start -> multiplier of the base rate (>= 0)


class ArrivalKind(StrEnum):
    """How requests of one stream are spaced in time."""

    STEADY = "steady"  # evenly spaced
    POISSON = "poisson"  # exponential gaps
    BURSTY = "bursty"  # Poisson whose rate switches between bursts and lulls (same mean)


@dataclass(frozen=True)
class LengthDist:
    """A token-count distribution: log-normal around `median` (spread `sigma`), clipped to [lo, hi]."""

    median: float
    sigma: float = 0.5
    lo: int = 1
    hi: int = 32_768

    def sample(self, rng: random.Random) -> int:
        """One length."""
        value = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return max(self.lo, min(self.hi, round(value)))


@dataclass(frozen=True)
class Tenant:
    """A customer of the node: how often it calls each model and what its requests look like."""

    name: str
    rates: dict[str, float]  # model -> requests per second
    prompt: LengthDist
    output: LengthDist  # tokens the model would write before stopping by itself
    max_tokens: int = 1024  # the request's max_tokens: a longer answer stops with finished_reason "length"
    shared_prefix_tokens: int = 0  # a system prompt every request of this tenant starts with (prefix caching)
    temperature: float = 0.7  # 0 means greedy (vLLM then leaves gen_ai.request.temperature off the span)
    top_p: float = 1.0
    chat: bool = True  # /v1/chat/completions (request id chatcmpl-...) or /v1/completions (cmpl-...-0)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as it reaches a model's API server."""

    time: float  # unix seconds
    model: str
    tenant: str
    prompt_tokens: int
    output_tokens: int  # what it will generate (<= max_tokens)
    max_tokens: int
    prefix_id: str | None  # requests with the same prefix_id share their first prefix_tokens tokens
    prefix_tokens: int
    temperature: float
    top_p: float
    chat: bool
    seq: int  # arrival number on the node, for ids


@dataclass
class _Stream:
    """The arrivals of one (tenant, model) pair: next arrival time and, for bursty streams, its phase."""

    tenant: Tenant
    model: str
    rate: float
    next_time: float
    bursting: bool = False
    phase_ends: float = 0.0


@dataclass
class Workload:
    """Generates arrivals for every (tenant, model) stream, in time order, with a scenario's rate profile."""

    tenants: Sequence[Tenant]
    kind: ArrivalKind
    rng: random.Random
    start: float
    profile: RateProfile = field(default=lambda _t: 1.0)
    burst_factor: float = 4.0  # bursty: rate during a burst, as a multiple of the mean
    burst_share: float = 0.2  # bursty: share of time spent bursting
    burst_length_s: float = 2.0
    max_multiplier: float = 1.0  # an upper bound of the profile (candidates are drawn at this rate, then thinned)
    _streams: list[_Stream] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        for tenant in self.tenants:
            self.add(tenant, self.start)

    def add(self, tenant: Tenant, start: float) -> None:
        """A tenant whose requests start arriving at `start`."""
        for model, rate in sorted(tenant.rates.items()):
            if rate > 0:
                stream = _Stream(tenant, model, rate, start)
                # Stagger steady streams so five tenants do not all arrive at the same instant.
                if self.kind is ArrivalKind.STEADY:
                    stream.next_time = start + self.rng.random() / rate
                else:
                    stream.next_time = self._next(stream, start)
                self._streams.append(stream)

    def _next(self, stream: _Stream, after: float) -> float:
        """The next candidate arrival after `after` (before the profile's thinning)."""
        if self.kind is ArrivalKind.STEADY:
            multiplier = max(self.profile(after - self.start), 1e-3)
            return after + 1.0 / (stream.rate * multiplier)
        if self.kind is ArrivalKind.BURSTY:
            if after >= stream.phase_ends:
                stream.bursting = not stream.bursting if stream.phase_ends else self.rng.random() < self.burst_share
                mean = self.burst_length_s if stream.bursting else self.burst_length_s * (1 / self.burst_share - 1)
                stream.phase_ends = after + self.rng.expovariate(1.0 / mean)
            # Rates in and out of bursts that keep the long-run mean at `rate`.
            share, factor = self.burst_share, self.burst_factor
            low = max(0.0, (1.0 - share * factor) / (1.0 - share))
            rate = stream.rate * (factor if stream.bursting else low) * self.max_multiplier
            gap = self.rng.expovariate(rate) if rate > 0 else math.inf
            return min(after + gap, stream.phase_ends) if gap != math.inf else stream.phase_ends
        return after + self.rng.expovariate(stream.rate * self.max_multiplier)

    def _accept(self, stream: _Stream, when: float) -> bool:
        if self.kind is ArrivalKind.STEADY:
            return True
        if self.kind is ArrivalKind.BURSTY and when >= stream.phase_ends:
            return False  # a phase boundary, not an arrival
        multiplier = min(self.profile(when - self.start), self.max_multiplier)
        return self.rng.random() < multiplier / self.max_multiplier

    def until(self, end: float) -> Iterator[Arrival]:
        """Every arrival with time < end not yet produced, in time order."""
        while self._streams:
            stream = min(self._streams, key=lambda s: s.next_time)
            when = stream.next_time
            if when >= end:
                return
            stream.next_time = self._next(stream, when)
            if self._accept(stream, when):
                yield self._arrival(stream, when)

    def _arrival(self, stream: _Stream, when: float) -> Arrival:
        tenant, rng = stream.tenant, self.rng
        prefix = tenant.shared_prefix_tokens
        prompt = max(tenant.prompt.sample(rng), prefix + 1) if prefix else tenant.prompt.sample(rng)
        self._seq += 1
        return Arrival(
            time=when,
            model=stream.model,
            tenant=tenant.name,
            prompt_tokens=prompt,
            output_tokens=min(tenant.output.sample(rng), tenant.max_tokens),
            max_tokens=tenant.max_tokens,
            prefix_id=f"{tenant.name}/system" if prefix else None,
            prefix_tokens=prefix,
            temperature=tenant.temperature,
            top_p=tenant.top_p,
            chat=tenant.chat,
            seq=self._seq,
        )


def default_tenants(models: Sequence[str], scale: float = 1.0) -> list[Tenant]:
    """Five tenants with distinct mixes (chat, RAG, batch summaries, code completion, an agent with a long system
    prompt) spread over `models`; `scale` multiplies every rate."""
    first, last = models[0], models[-1]

    def rates(**by_model: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for model, rate in by_model.items():
            target = first if model == "a" else last
            out[target] = out.get(target, 0.0) + rate * scale
        return out

    return [
        Tenant("acme", rates(a=1.2, b=2.0), LengthDist(300, 0.6, 16, 4096), LengthDist(220, 0.6, 8, 2048), 1024),
        Tenant(
            "globex",
            rates(a=0.6, b=1.0),
            LengthDist(2500, 0.4, 256, 8192),
            LengthDist(120, 0.5, 8, 1024),
            512,
            temperature=0.0,
        ),
        Tenant(
            "initech", rates(a=0.3), LengthDist(3500, 0.3, 512, 8192), LengthDist(500, 0.4, 32, 2048), 768, chat=False
        ),
        Tenant(
            "umbrella",
            rates(b=3.0),
            LengthDist(600, 0.5, 32, 4096),
            LengthDist(48, 0.6, 4, 512),
            128,
            temperature=0.2,
            top_p=0.95,
            chat=False,
        ),
        Tenant(
            "hooli",
            rates(a=0.5, b=0.8),
            LengthDist(2200, 0.3, 1200, 6000),
            LengthDist(180, 0.5, 8, 1024),
            1024,
            shared_prefix_tokens=1024,
        ),
    ]
