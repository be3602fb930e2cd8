"""Attribution: who used the GPU. Splits each vLLM instance's GPU time, energy and cost over its requests. Pure.

Method (docs/design.md §5). An instance's accounting intervals are bounded by two scrapes of its
vLLM /metrics: the engine's own token counters give the interval's total work W (prefill tokens x a weight +
generated tokens), and the GPU energy counters (interpolated from the 1 Hz NVML samples at the interval's
ends) its measured energy; GPU-seconds are |GPUs| x the interval's length, cost their price plus energy's.
A request claims, in each interval, the share of its own work that falls there (prompt tokens spread over its
prefill window, output tokens over its decode window) divided by W, so it is charged as soon as its span and
the intervals it spans are in, without waiting for its neighbours. The intervals are the scrape intervals, not
the GPU sample intervals, because W is only known at scrape resolution.

- An interval with no work is idle at once.
- A claim never takes more than what is left of an interval: nothing is charged twice.
- What no request claimed by the time an interval leaves the retention window is unattributed ("unclaimed":
  spans lost or never sent); intervals with a GPU down are unattributed at once ("gpu_down").
- GPUs that belong to no known instance are idle.
- GPUs of a multi-node group's worker (no API server, no spans, no counters on this node) are charged to the
  group and its model for the time they were busy (NVML utilisation above 0 since the last energy reading: a
  tensor-parallel worker runs kernels exactly when its leader does), idle otherwise. The tenant split of that
  needs the leader's spans, on another node: the fleet recording rules do it (docs/design.md §5).

So for every GPU: attributed (to requests or to a group) + idle + unattributed + pending (still claimable) =
measured, exactly.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.engine.state import CounterPoint
from exporter.requests.records import RequestSpan

PHASES = ("prefill", "decode")
EnergyAt = Callable[[str, float], float | None]  # (gpu uuid, unix time) -> joules, None when not known


@dataclass(frozen=True)
class Pricing:
    """Dollars per GPU-hour by product (matched as a substring of NVML's name, longest first) and per kWh."""

    gpu_hour_usd: Mapping[str, float] = field(default_factory=dict)
    default_gpu_hour_usd: float = 0.0
    energy_kwh_usd: float = 0.0

    def per_second(self, product: str) -> float:
        """$ per second of one GPU of this product."""
        for key in sorted(self.gpu_hour_usd, key=len, reverse=True):
            if key.lower() in product.lower():
                return self.gpu_hour_usd[key] / 3600.0
        return self.default_gpu_hour_usd / 3600.0

    def energy(self, joules: float) -> float:
        """$ for this much energy."""
        return joules * self.energy_kwh_usd / 3.6e6


@dataclass(slots=True)
class Amount:
    """GPU-seconds, joules and dollars, added up."""

    gpu_seconds: float = 0.0
    joules: float = 0.0
    usd: float = 0.0

    def add(self, other: Amount, fraction: float = 1.0) -> None:
        """Add `fraction` of `other`."""
        self.gpu_seconds += other.gpu_seconds * fraction
        self.joules += other.joules * fraction
        self.usd += other.usd * fraction


@dataclass(slots=True)
class Interval:
    """One accounting interval of one instance, and how much of it is still unclaimed."""

    start: float
    end: float
    prompt_tokens: float
    generated_tokens: float
    per_gpu: dict[str, Amount]
    remaining: float = 1.0  # fraction not yet attributed, idle or unattributed

    def work(self, prefill_weight: float) -> float:
        """The engine's weighted token work in the interval, from its counters."""
        return prefill_weight * self.prompt_tokens + self.generated_tokens


@dataclass(frozen=True)
class InstanceInputs:
    """What the attribution needs to know of one instance at a tick."""

    instance: str
    gpus: tuple[str, ...]  # NVML UUIDs; empty when unknown (nothing can be measured)
    points: tuple[CounterPoint, ...]  # the engine's counter history, oldest first, monotonic


@dataclass(frozen=True)
class Charge:
    """What one request was charged, by phase."""

    span: RequestSpan
    tenant: str
    by_phase: dict[str, Amount]
    complete: bool  # False when part of its window had left the retention window


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def request_work(span: RequestSpan, start: float, end: float, prefill_weight: float) -> dict[str, float]:
    """The request's weighted work by phase between `start` and `end` (unix seconds), spread uniformly over its
    prefill window (prompt tokens) and its decode window (output tokens; at the first token if it has none)."""
    arrival = span.start_time_ns / 1e9
    first_token = arrival + span.ttft_s
    prefill_start = first_token - span.prefill_s
    out = {"prefill": 0.0, "decode": 0.0}
    prompt_work = prefill_weight * span.prompt_tokens
    if span.prefill_s > 0:
        out["prefill"] = prompt_work * _overlap(start, end, prefill_start, first_token) / span.prefill_s
    elif start < first_token <= end:
        out["prefill"] = prompt_work
    if span.decode_s > 0:
        out["decode"] = (
            span.completion_tokens * _overlap(start, end, first_token, first_token + span.decode_s) / (span.decode_s)
        )
    elif start < first_token <= end:
        out["decode"] = float(span.completion_tokens)
    return out


class Attributor:
    """Accounting intervals per instance, claims by requests, and the totals the collector exposes."""

    def __init__(
        self,
        pricing: Pricing,
        gpu_product: Callable[[str], str],
        prefill_weight: float = 1.0,
        retention_s: float = 900.0,
    ) -> None:
        self.pricing = pricing
        self.gpu_product = gpu_product
        self.prefill_weight = prefill_weight
        self.retention_s = retention_s
        self.intervals: dict[str, deque[Interval]] = {}
        self._closed_until: dict[str, float] = {}  # instance -> end of its newest closed interval
        # gpu -> (time, energy) last counted, for GPUs measured by their own readings (unassigned, group workers)
        self._counted_until: dict[str, tuple[float, float]] = {}
        self.pending: list[tuple[str, RequestSpan, str]] = []  # (instance, span, tenant) waiting for intervals
        self.attributed: dict[tuple[str, str, str], Amount] = {}  # (model, tenant, phase)
        self.by_phase: dict[tuple[str, str], Amount] = {}  # (model, phase): kept when tenants are forgotten
        self.idle: dict[str, Amount] = {}  # gpu
        self.unattributed: dict[tuple[str, str], Amount] = {}  # (gpu, reason)
        self.measured: dict[str, Amount] = {}  # gpu
        self.attributed_by_gpu: dict[str, Amount] = {}  # gpu (for the conservation check and residual ratio)
        self.group: dict[tuple[str, str], Amount] = {}  # (group, model): group workers' busy GPUs
        self.spans: Counter[str] = Counter()  # charged, partial, no_instance, no_gpus
        self.max_pending = 100_000

    # --- intervals ---

    def _amount(self, gpu: str, seconds: float, joules: float) -> Amount:
        usd = seconds * self.pricing.per_second(self.gpu_product(gpu)) + self.pricing.energy(joules)
        return Amount(seconds, joules, usd)

    def close_intervals(
        self, inputs: InstanceInputs, energy_at: EnergyAt, gpu_down: Callable[[str, float, float], bool]
    ) -> int:
        """Turn new pairs of counter points into intervals, as far as GPU energy is known; returns how many."""
        if not inputs.gpus:
            return 0
        ring = self.intervals.setdefault(inputs.instance, deque())
        closed_until = self._closed_until.get(inputs.instance)
        added = 0
        for before, after in zip(inputs.points, inputs.points[1:], strict=False):
            if closed_until is not None and after.timestamp_s <= closed_until:
                continue
            if after.timestamp_s <= before.timestamp_s:
                continue
            start, end = before.timestamp_s, after.timestamp_s
            down = any(gpu_down(g, start, end) for g in inputs.gpus)
            per_gpu: dict[str, Amount] = {}
            if not down:
                for gpu in inputs.gpus:
                    e0, e1 = energy_at(gpu, start), energy_at(gpu, end)
                    if e0 is None or e1 is None:
                        return added  # the GPU samples around `end` are not in yet: next tick
                    per_gpu[gpu] = self._amount(gpu, end - start, max(0.0, e1 - e0))
            else:
                per_gpu = {gpu: self._amount(gpu, end - start, 0.0) for gpu in inputs.gpus}
            interval = Interval(
                start,
                end,
                max(0.0, after.prompt_tokens - before.prompt_tokens),
                max(0.0, after.generation_tokens - before.generation_tokens),
                per_gpu,
            )
            for gpu, amount in per_gpu.items():
                self.measured.setdefault(gpu, Amount()).add(amount)
            if down:
                self._settle(interval, "unattributed", "gpu_down")
            elif interval.work(self.prefill_weight) <= 0:
                self._settle(interval, "idle", "")
            ring.append(interval)
            self._closed_until[inputs.instance] = closed_until = end
            added += 1
        return added

    def _settle(self, interval: Interval, kind: str, reason: str) -> None:
        """Move what is left of an interval to idle or unattributed."""
        if interval.remaining <= 0:
            return
        for gpu, amount in interval.per_gpu.items():
            target = (
                self.idle.setdefault(gpu, Amount())
                if kind == "idle"
                else self.unattributed.setdefault((gpu, reason), Amount())
            )
            target.add(amount, interval.remaining)
        interval.remaining = 0.0

    def count_unassigned(self, gpus: Iterable[str], latest: Callable[[str], tuple[float, float] | None]) -> None:
        """GPUs no instance uses: everything they measured since the last tick is idle."""
        for gpu in gpus:
            counted = self._since_last(gpu, latest)
            if counted is not None:
                self.idle.setdefault(gpu, Amount()).add(counted[2])

    def count_group(
        self,
        group: str,
        model: str,
        gpus: Iterable[str],
        latest: Callable[[str], tuple[float, float] | None],
        busy: Callable[[str, float, float], bool],
    ) -> None:
        """A group worker's GPUs: what each measured since the last tick is the group's (and its model's) when it
        was busy between the two readings, idle when it was not."""
        for gpu in gpus:
            counted = self._since_last(gpu, latest)
            if counted is None:
                continue
            start, end, amount = counted
            if busy(gpu, start, end):
                self.group.setdefault((group, model), Amount()).add(amount)
                self.attributed_by_gpu.setdefault(gpu, Amount()).add(amount)
            else:
                self.idle.setdefault(gpu, Amount()).add(amount)

    def _since_last(
        self, gpu: str, latest: Callable[[str], tuple[float, float] | None]
    ) -> tuple[float, float, Amount] | None:
        """(start, end, amount): what a GPU measured between its last counted reading and its latest one (counted
        as measured); None before a second reading."""
        now = latest(gpu)
        if now is None:
            return None
        last = self._counted_until.get(gpu)
        self._counted_until[gpu] = now
        if last is None or now[0] <= last[0]:
            return None
        amount = self._amount(gpu, now[0] - last[0], max(0.0, now[1] - last[1]))
        self.measured.setdefault(gpu, Amount()).add(amount)
        return last[0], now[0], amount

    def forget(self, series: set[tuple[str, str]]) -> None:
        """Drop the attributed totals of these (model, tenant) pairs (their requests went idle), and a model's
        phase totals once no charged pair of it is left."""
        for key in [k for k in self.attributed if (k[0], k[1]) in series]:
            del self.attributed[key]
        gone = {model for model, _ in series} - {model for model, _, _ in self.attributed}
        for model_phase in [k for k in self.by_phase if k[0] in gone]:
            del self.by_phase[model_phase]

    def forget_assigned(self, gpus: Iterable[str]) -> None:
        """GPUs that now belong to an instance stop being counted by their own readings."""
        for gpu in gpus:
            self._counted_until.pop(gpu, None)

    def expire(self, now: float) -> None:
        """Intervals older than the retention window: what nobody claimed is unattributed."""
        for instance, ring in list(self.intervals.items()):
            while ring and ring[0].end < now - self.retention_s:
                self._settle(ring.popleft(), "unattributed", "unclaimed")
            closed = self._closed_until.get(instance)
            if not ring and (closed is None or closed < now - 2 * self.retention_s):
                # A departed instance (pods come and go): nothing of it is left to charge or close, and no counter
                # history or GPU sample reaches back to where it stopped (both keep about one retention window).
                del self.intervals[instance]
                self._closed_until.pop(instance, None)

    # --- requests ---

    def submit(self, instance: str, span: RequestSpan, tenant: str, has_gpus: bool = True) -> bool:
        """Queue a request to be charged once the intervals of its window are closed; False if it cannot be."""
        if not instance:
            self.spans["no_instance"] += 1
            return False
        if not has_gpus:
            self.spans["no_gpus"] += 1
            return False
        if len(self.pending) >= self.max_pending:
            self.spans["overflow"] += 1
            return False
        self.pending.append((instance, span, tenant))
        return True

    def charge_ready(self, now: float) -> list[Charge]:
        """Charge every pending request whose window is covered by closed intervals; drop those whose window
        left the retention window before it could be (counted `late`)."""
        charges: list[Charge] = []
        waiting: list[tuple[str, RequestSpan, str]] = []
        for instance, span, tenant in self.pending:
            if span.window[1] < now - self.retention_s:
                self.spans["late"] += 1
                continue
            ring = self.intervals.get(instance)
            closed_until = self._closed_until.get(instance)
            if ring is None or closed_until is None:
                waiting.append((instance, span, tenant))
                continue
            start, end = span.window
            if end > closed_until:
                waiting.append((instance, span, tenant))
                continue
            charges.append(self._charge(ring, span, tenant, start))
        self.pending = waiting
        return charges

    def _charge(self, ring: deque[Interval], span: RequestSpan, tenant: str, window_start: float) -> Charge:
        by_phase = {phase: Amount() for phase in PHASES}
        complete = not ring or ring[0].start <= window_start
        _, window_end = span.window
        first = bisect.bisect_left(ring, window_start, key=lambda i: i.end)  # skip the older intervals
        for index in range(first, len(ring)):
            interval = ring[index]
            if interval.start > window_end:
                break
            work = interval.work(self.prefill_weight)
            if work <= 0 or interval.remaining <= 0:
                continue
            claims = request_work(span, interval.start, interval.end, self.prefill_weight)
            claimed = sum(claims.values())
            if claimed <= 0:
                continue
            fraction = claimed / work
            if fraction >= interval.remaining - 1e-9:  # the last claimant takes the float-rounding crumbs too
                fraction = interval.remaining
            interval.remaining -= fraction
            for phase, part in claims.items():
                if part <= 0:
                    continue
                share = fraction * part / claimed
                for gpu, amount in interval.per_gpu.items():
                    by_phase[phase].add(amount, share)
                    self.attributed_by_gpu.setdefault(gpu, Amount()).add(amount, share)
        for phase, amount in by_phase.items():
            self.attributed.setdefault((span.model, tenant, phase), Amount()).add(amount)
            self.by_phase.setdefault((span.model, phase), Amount()).add(amount)
        self.spans["charged" if complete else "partial"] += 1
        return Charge(span, tenant, by_phase, complete)

    # --- views ---

    def pending_amount(self, gpu: str) -> Amount:
        """What of a GPU's measured amount is still claimable (in intervals inside the retention window)."""
        out = Amount()
        for ring in self.intervals.values():
            for interval in ring:
                if gpu in interval.per_gpu:
                    out.add(interval.per_gpu[gpu], interval.remaining)
        return out


def throttled(samples: Sequence[Iterable[str] | None]) -> str:
    """ "true" if any sample shows a clock-event reason other than idle, "false" if none did, "unknown" without
    samples that report reasons."""
    known = [set(s) for s in samples if s is not None]
    if not known:
        return "unknown"
    return "true" if any(reasons - {"idle"} for reasons in known) else "false"
