"""Feeds the pure Attributor from the live sources: topology, engine counter history and GPU samples.

Runs in the span pipeline's worker thread, under a lock of its own (the collector reads the totals at scrape
time), never under the pipeline's: a `/metrics` render of the request histograms never waits on a tick.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from exporter.attribution.attributor import Attributor, Charge, InstanceInputs, Pricing, throttled
from exporter.attribution.energy import interpolate_energy
from exporter.attribution.forwarder import AttributeValue, SpanForwarder
from exporter.engine.state import CounterPoint
from exporter.gpu.sampler import GpuSampler
from exporter.requests.records import RequestSpan
from exporter.topology.model import TopologySource

# Rough on-demand cloud prices in 2026 ($ per GPU-hour); a placeholder for users' own rates.
DEFAULT_GPU_PRICES = {"B200": 6.0, "H200": 4.0, "H100": 3.0, "A100": 1.8, "L40S": 1.2, "A10": 1.0, "L4": 0.8}
TICK_EVERY_S = 1.0  # intervals close at scrape resolution (seconds apart): more often would only cost CPU


class EngineHistory(Protocol):
    """The engine scraper's face for attribution: each instance's token counters at each scrape."""

    def counter_points(self, instance: str) -> tuple[CounterPoint, ...]:
        """An instance's monotonic token counters at each remembered scrape."""
        ...


@dataclass(frozen=True)
class AttributionOptions:
    """Prices, the prefill weight and how long GPU samples and intervals are kept."""

    gpu_price_per_hour: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GPU_PRICES))
    gpu_price_default_per_hour: float = 2.0
    energy_price_per_kwh: float = 0.0
    prefill_weight: float = 1.0
    retention_s: float = 900.0


class AttributionStage:
    """Classifies requests, closes intervals and charges; called by the pipeline's worker, read by the collector."""

    def __init__(
        self,
        options: AttributionOptions,
        topology: TopologySource,
        engine: EngineHistory,
        gpus: GpuSampler,
        clock: Callable[[], float] = time.time,
        forwarder: SpanForwarder | None = None,
    ) -> None:
        self.topology = topology
        self.engine = engine
        self.gpus = gpus
        self.clock = clock
        self.lock = threading.Lock()  # guards the attributor and the held GPU states
        pricing = Pricing(
            dict(options.gpu_price_per_hour), options.gpu_price_default_per_hour, options.energy_price_per_kwh
        )
        self.attributor = Attributor(pricing, self._product, options.prefill_weight, options.retention_s)
        self._last_tick = 0.0
        self.forwarder = forwarder
        # span key -> GPU state attributes read at submit time, for forwarding at charge time; oldest first, so a
        # request that is never charged (late, or its intervals expired) is evicted rather than kept forever
        self._held: OrderedDict[bytes, dict[str, AttributeValue]] = OrderedDict()

    def _product(self, uuid: str) -> str:
        for identity in self.gpus.identities:
            if identity.uuid == uuid:
                return identity.name
        return ""

    def _uuids(self, given: tuple[str, ...]) -> tuple[str, ...]:
        """Instance GPUs as NVML UUIDs (the config and the topology may give indexes)."""
        by_index = {str(i.index): i.uuid for i in self.gpus.identities}
        known = {i.uuid for i in self.gpus.identities}
        out = []
        for gpu in given:
            uuid = by_index.get(gpu, gpu)
            if uuid in known:
                out.append(uuid)
        return tuple(out)

    def gpus_of(self, instance: str) -> tuple[str, ...]:
        """The GPUs (UUIDs) of an instance, as far as NVML knows them."""
        found = self.topology.current().by_id(instance)
        return self._uuids(found.gpus) if found is not None else ()

    def throttled(self, span: RequestSpan) -> str:
        """Whether a GPU of the request's instance was throttled while it ran ("unknown" without data)."""
        start, end = span.window
        margin = self.gpus.interval_s
        reasons = [
            sample.clock_event_reasons
            for gpu in self.gpus_of(span.instance)
            for sample in self.gpus.samples_between(gpu, start - margin, end + margin)
            if sample.up
        ]
        return throttled(reasons)

    def gpu_state(self, span: RequestSpan, gpus: tuple[str, ...]) -> dict[str, AttributeValue]:
        """What the request's GPUs did while it ran: peak memory used, and mean memory-busy share and DRAM
        bandwidth utilisation during its decode (attributes for the enriched span; absent without data)."""
        start, end = span.window
        first_token = end - span.decode_s
        samples = [s for gpu in gpus for s in self.gpus.samples_between(gpu, start, end) if s.up]
        out: dict[str, AttributeValue] = {}
        memory = [s.memory_used_bytes for s in samples if s.memory_used_bytes is not None]
        if memory:
            out["llm.gpu.memory_used_peak_bytes"] = max(memory)
        decode = [s for s in samples if s.timestamp >= first_token]
        for key, values in (
            ("llm.gpu.memory_busy_ratio_mean", [s.memory_busy_ratio for s in decode]),
            ("llm.gpu.dram_bandwidth_ratio_mean", [s.dram_bandwidth_ratio for s in decode]),
        ):
            known = [v for v in values if v is not None]
            if known:
                out[key] = sum(known) / len(known)
        return out

    def forget(self, series: list[tuple[str, str]]) -> None:
        """Drop the attributed totals of (model, tenant) series that went idle."""
        with self.lock:
            self.attributor.forget(set(series))

    def submit(self, span: RequestSpan, tenant: str, throttled: str) -> None:
        """Queue a request for charging; forward it at once if it cannot be charged."""
        gpus = self.gpus_of(span.instance) if self.gpus.enabled else ()
        # Read the GPU state now, outside the lock: the samples of its window are in the rings already.
        state = {"llm.gpu.throttled": throttled, **self.gpu_state(span, gpus)} if self.forwarder is not None else None
        with self.lock:
            if state is not None:
                self._held[span.key] = state
                if len(self._held) > 2 * self.attributor.max_pending:
                    self._held.popitem(last=False)
            if self.gpus.enabled and self.attributor.submit(span.instance, span, tenant, has_gpus=bool(gpus)):
                return
            self._forward(span, tenant, gpus, None)

    def _forward(self, span: RequestSpan, tenant: str, gpus: tuple[str, ...], charge: Charge | None) -> None:
        if self.forwarder is None:
            return
        kv = span.kv_token_seconds()
        extra: dict[str, AttributeValue] = {
            "llm.gpu.uuids": gpus,
            "llm.kv.token_seconds": kv["prefill"] + kv["decode"],
            **self._held.pop(span.key, {}),
        }
        if charge is not None:
            extra["llm.energy.joules"] = sum(a.joules for a in charge.by_phase.values())
            extra["llm.gpu.seconds"] = sum(a.gpu_seconds for a in charge.by_phase.values())
            extra["llm.cost.usd"] = sum(a.usd for a in charge.by_phase.values())
        self.forwarder.offer(span, tenant, extra)

    def tick(self, force: bool = False) -> None:
        """Close intervals, count unassigned GPUs as idle, charge ready requests, expire old intervals."""
        now = self.clock()
        if not self.gpus.enabled or (not force and now - self._last_tick < TICK_EVERY_S):
            return
        self._last_tick = now
        with self.lock:
            self._tick(now)

    def _tick(self, now: float) -> None:
        window = (self.gpus.energy_every + 2) * self.gpus.interval_s  # reaches the counter reads around t

        def energy_at(gpu: str, t: float) -> float | None:
            return interpolate_energy(self.gpus.samples_between(gpu, t - window, t + window), t)

        def gpu_down(gpu: str, start: float, end: float) -> bool:
            return any(not s.up for s in self.gpus.samples_between(gpu, start, end))

        assigned: set[str] = set()
        for instance in self.topology.current().instances:
            uuids = self._uuids(instance.gpus)
            assigned.update(uuids)
            points = self.engine.counter_points(instance.id)
            oldest = [self.gpus.oldest(g) for g in uuids]
            since = max((s.timestamp for s in oldest if s is not None), default=None)
            if since is not None:
                points = tuple(p for p in points if p.timestamp_s >= since)  # before the first GPU sample
            self.attributor.close_intervals(InstanceInputs(instance.id, uuids, points), energy_at, gpu_down)
        self.attributor.forget_assigned(assigned)

        def latest(gpu: str) -> tuple[float, float] | None:
            sample = self.gpus.latest_energy(gpu)
            if sample is None or not sample.up or sample.energy_joules is None:
                return None
            return sample.timestamp, sample.energy_joules

        def busy(gpu: str, start: float, end: float) -> bool:
            # Utilisation is the driver's share of its last period with a kernel running; unknown counts as busy
            # (the GPU is held for the group's model either way). Only samples after `start` count
            # (the driver's last period before each sample: the one at `start` covers time before the interval).
            samples = self.gpus.samples_between(gpu, start, end)
            ratios = [s.gpu_busy_ratio for s in samples if s.up and s.timestamp > start]
            known = [r for r in ratios if r is not None]
            return not known or max(known) > 0.0

        for worker in self.topology.current().workers:
            uuids = tuple(u for u in self._uuids(worker.gpus) if u not in assigned)
            self.attributor.count_group(worker.group, worker.model or "", uuids, latest, busy)
            assigned.update(uuids)
        self.attributor.count_unassigned([i.uuid for i in self.gpus.identities if i.uuid not in assigned], latest)
        for charge in self.attributor.charge_ready(now):
            self._forward(charge.span, charge.tenant, self.gpus_of(charge.span.instance), charge)
        self.attributor.expire(now)
