"""prometheus_client Collector exposing the latest sample of every GPU, from one snapshot of the sampler."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.gpu.records import CLOCK_EVENT_REASON_NAMES, GpuSample, GpuSnapshot
from exporter.gpu.sampler import GpuSampler
from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge

# Gauges read straight off a sample: (catalog entry, field getter). None values make no series.
_SAMPLE_GAUGES: tuple[tuple[catalog.MetricSpec, Callable[[GpuSample], float | None]], ...] = (
    (catalog.GPU_MEMORY_USED, lambda s: s.memory_used_bytes),
    (catalog.GPU_MEMORY_RESERVED, lambda s: s.memory_reserved_bytes),
    (catalog.GPU_MEMORY_TOTAL, lambda s: s.memory_total_bytes),
    (catalog.GPU_UTILIZATION, lambda s: s.gpu_busy_ratio),
    (catalog.GPU_MEMORY_BUSY, lambda s: s.memory_busy_ratio),
    (catalog.GPU_DRAM_BANDWIDTH, lambda s: s.dram_bandwidth_ratio),
    (catalog.GPU_POWER, lambda s: s.power_watts),
    (catalog.GPU_SM_CLOCK, lambda s: s.sm_clock_hz),
    (catalog.GPU_MEMORY_CLOCK, lambda s: s.memory_clock_hz),
    (catalog.GPU_TEMPERATURE, lambda s: s.temperature_celsius),
    (catalog.GPU_MEMORY_TEMPERATURE, lambda s: s.memory_temperature_celsius),
)


class GpuCollector(Collector):
    """Exposes `gpu_*` series for every GPU the sampler knows and its `llm_exporter_gpu_*` self metrics."""

    def __init__(self, sampler: GpuSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        """Build every family from one snapshot (the sampler's lock is held only while copying)."""
        snap = self.sampler.snapshot()
        up = gauge(catalog.GPU_UP)
        info = gauge(catalog.GPU_INFO)
        energy = counter(catalog.GPU_ENERGY)
        gauges = [(gauge(spec), get) for spec, get in _SAMPLE_GAUGES]
        reasons = gauge(catalog.GPU_CLOCK_EVENT_REASON)
        xids = counter(catalog.GPU_XID_ERRORS)
        processes = gauge(catalog.GPU_PROCESS_MEMORY)
        for view in snap.gpus:
            ident = view.identity
            labels = [ident.uuid, str(ident.index)]
            info.add_metric([*labels, ident.name, ident.driver_version], 1)
            if view.energy_joules is not None:
                energy.add_metric(labels, view.energy_joules)
            for xid, count in sorted(view.xid_errors.items()):
                xids.add_metric([*labels, xid], count)
            sample = view.latest
            if sample is None:
                continue
            up.add_metric(labels, 1 if sample.up else 0)
            for family, get in gauges:
                value = get(sample)
                if value is not None:
                    family.add_metric(labels, value)
            if sample.clock_event_reasons is not None:
                for reason in CLOCK_EVENT_REASON_NAMES:
                    reasons.add_metric([*labels, reason], 1 if reason in sample.clock_event_reasons else 0)
            for proc in sample.processes or ():
                if proc.used_memory_bytes is not None:
                    processes.add_metric([*labels, str(proc.pid)], proc.used_memory_bytes)
        yield from (up, info, energy, *(family for family, _ in gauges), reasons, xids, processes)
        yield from self._self_families(snap)

    @staticmethod
    def _self_families(snap: GpuSnapshot) -> Iterator[Metric]:
        sampler_up = gauge(catalog.GPU_SAMPLER_UP)
        sampler_up.add_metric([], 1 if snap.enabled else 0)
        yield sampler_up
        failures = counter(catalog.GPU_SAMPLING_ERRORS)
        for reason, count in sorted(snap.errors.items()):
            failures.add_metric([reason], count)
        yield failures
        if snap.last_pass_seconds is not None:
            duration = gauge(catalog.GPU_SAMPLE_DURATION)
            duration.add_metric([], snap.last_pass_seconds)
            yield duration
