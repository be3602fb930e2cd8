"""Feeds the pure Attributor from the live sources: topology, engine counter history and GPU samples."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from exporter.attribution.attributor import (
    Attributor,
    Charge,
    InstanceInputs,
    Pricing,
    kv_token_seconds,
    request_window,
    throttled,
)
from exporter.attribution.forwarder import AttributeValue, SpanForwarder
from exporter.engine.scraper import EngineScraper
from exporter.engine.state import CounterPoint
from exporter.gpu.records import GpuSample
from exporter.gpu.sampler import GpuSampler
from exporter.requests.records import RequestSpan
from exporter.service.settings import Settings
from exporter.topology.model import TopologySource


def interpolate_energy(samples: list[GpuSample], t: float) -> float | None:
    """Energy at `t` from the counter readings around it; None unless every sample between them is up.

    Adjacent readings: linear in time. Readings further apart (the counter is read every Nth pass): the
    counter's delta is spread over the sampling steps between them by power, linear within a step. NVML's power
    reading is the mean over the last second (Ampere and later but GA100; seen on an H200), so a step [a, b]
    weighs power(b) x (b - a): on a recorded H200 trace this put the energy between reads 5 s apart within
    ~1.4 J (0.1 % of the window) where a linear spread was off by ~260 J and trapezoids by ~100 J.
    """
    before = after = None
    between: list[GpuSample] = []
    for sample in samples:
        if sample.timestamp <= t:
            if sample.energy_joules is not None or not sample.up:
                before, between = sample, []
            else:
                between.append(sample)
        else:
            if sample.energy_joules is not None or not sample.up:
                after = sample
                break
            between.append(sample)
    if before is None or before.energy_joules is None or not before.up:
        return None
    if before.timestamp == t:
        return before.energy_joules
    if after is None or after.energy_joules is None or not after.up:
        return None
    delta = after.energy_joules - before.energy_joules
    steps = list(itertools.pairwise([before, *between, after]))
    weights = [b.power_watts * (b.timestamp - a.timestamp) if b.power_watts is not None else None for a, b in steps]
    total = sum(w or 0.0 for w in weights)
    if len(steps) == 1 or None in weights or total <= 0:
        return before.energy_joules + delta * (t - before.timestamp) / (after.timestamp - before.timestamp)
    done = 0.0
    for (a, b), weight in zip(steps, weights, strict=True):
        if t < b.timestamp:
            done += (weight or 0.0) * (t - a.timestamp) / (b.timestamp - a.timestamp)
            break
        done += weight or 0.0
    return before.energy_joules + delta * done / total


class AttributionStage:
    """Runs in the span pipeline's worker (under its lock): classifies requests, closes intervals, charges."""

    def __init__(
        self,
        settings: Settings,
        topology: TopologySource,
        scraper: EngineScraper,
        gpus: GpuSampler,
        clock: Callable[[], float] = time.time,
        forwarder: SpanForwarder | None = None,
    ) -> None:
        self.topology = topology
        self.scraper = scraper
        self.gpus = gpus
        self.clock = clock
        self.sample_interval_s = settings.gpu_sample_interval_seconds
        pricing = Pricing(
            dict(settings.gpu_price_per_hour), settings.gpu_price_default_per_hour, settings.energy_price_per_kwh
        )
        self.attributor = Attributor(
            pricing, self._product, settings.attribution_prefill_weight, settings.gpu_retention_seconds
        )
        self._last_tick = 0.0
        self.forwarder = forwarder
        # span key -> GPU state attributes read at submit time, for forwarding at charge time
        self._held: dict[bytes, dict[str, AttributeValue]] = {}

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
        start, end = request_window(span)
        reasons = [
            sample.clock_event_reasons
            for gpu in self.gpus_of(span.instance)
            for sample in self.gpus.samples_between(gpu, start - self.sample_interval_s, end + self.sample_interval_s)
            if sample.up
        ]
        return throttled(reasons)

    def gpu_state(self, span: RequestSpan, gpus: tuple[str, ...]) -> dict[str, AttributeValue]:
        """What the request's GPUs did while it ran: peak memory used, and mean memory-busy share and DRAM
        bandwidth utilisation during its decode (attributes for the enriched span; absent without data)."""
        start, end = request_window(span)
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
        self.attributor.forget(set(series))

    def submit(self, span: RequestSpan, tenant: str, throttled: str) -> None:
        """Queue a request for charging; forward it at once if it cannot be charged."""
        gpus = self.gpus_of(span.instance) if self.gpus.enabled else ()
        if self.forwarder is not None:
            # Read the GPU state now: the samples of its window are in the rings already.
            self._held[span.key] = {"llm.gpu.throttled": throttled, **self.gpu_state(span, gpus)}
        if self.gpus.enabled and self.attributor.submit(span.instance, span, tenant, has_gpus=bool(gpus)):
            return
        self._forward(span, tenant, gpus, None)

    def _forward(self, span: RequestSpan, tenant: str, gpus: tuple[str, ...], charge: Charge | None) -> None:
        if self.forwarder is None:
            return
        kv = kv_token_seconds(span)
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

    def _points(self, instance: str) -> tuple[CounterPoint, ...]:
        with self.scraper.lock:
            state = self.scraper.tracker.instances.get(instance)
            if state is None:
                return ()
            histories = [list(h) for h in state.history.values()]
        if len(histories) == 1:
            return tuple(histories[0])
        merged: dict[float, CounterPoint] = {}  # several served models: points of one scrape share its time
        for history in histories:
            for p in history:
                prior = merged.get(p.timestamp_s)
                merged[p.timestamp_s] = (
                    p
                    if prior is None
                    else CounterPoint(
                        p.timestamp_s,
                        prior.prompt_tokens + p.prompt_tokens,
                        prior.generation_tokens + p.generation_tokens,
                    )
                )
        return tuple(merged[t] for t in sorted(merged))

    def tick(self, force: bool = False) -> None:
        """Close intervals, count unassigned GPUs as idle, charge ready requests, expire old intervals."""
        now = self.clock()
        if not self.gpus.enabled or (not force and now - self._last_tick < 1.0):
            return
        self._last_tick = now
        window = (self.gpus.energy_every + 2) * self.sample_interval_s  # reaches the counter reads around t

        def energy_at(gpu: str, t: float) -> float | None:
            return interpolate_energy(self.gpus.samples_between(gpu, t - window, t + window), t)

        def gpu_down(gpu: str, start: float, end: float) -> bool:
            return any(not s.up for s in self.gpus.samples_between(gpu, start, end))

        assigned: set[str] = set()
        for instance in self.topology.current().instances:
            uuids = self._uuids(instance.gpus)
            assigned.update(uuids)
            points = self._points(instance.id)
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

        self.attributor.count_unassigned([i.uuid for i in self.gpus.identities if i.uuid not in assigned], latest)
        for charge in self.attributor.charge_ready(now):
            self._forward(charge.span, charge.tenant, self.gpus_of(charge.span.instance), charge)
        self.attributor.expire(now)
        if len(self._held) > 2 * self.attributor.max_pending:  # late or dropped requests are never charged
            self._held.clear()
