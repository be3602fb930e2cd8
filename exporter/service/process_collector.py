"""The exporter's own resources as metrics: prometheus_client's process collector, plus threads and admission state.

prometheus_client's `ProcessCollector` serves the standard process_* metrics (resident and virtual memory, CPU
seconds, start time, open and maximum file descriptors); `ProcessExtrasCollector` adds what it lacks. Both are
catalog entries (exporter.metrics.catalog.PROCESS_METRICS).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import ProcessCollector as StandardProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.metrics.families import gauge
from exporter.service.admission import Admission


def thread_count() -> int:
    """Threads of this process, from /proc/self/status (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ProcessExtrasCollector(Collector):
    """What prometheus_client's ProcessCollector lacks: this process's threads, and the admission state."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def describe(self) -> list[Metric]:
        """Nothing to describe up front."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read /proc and the admission state now."""
        values: list[tuple[catalog.MetricSpec, float]] = [
            (catalog.PROCESS_THREADS, thread_count()),
            (catalog.EXPORTS_IN_PROGRESS, self.admission.in_progress),
            (catalog.MEMORY_LIMIT, self.admission.memory_limit_bytes),
        ]
        for spec, value in values:
            family = gauge(spec)
            family.add_metric([], value)
            yield family


def register_process_collectors(registry: CollectorRegistry, admission: Admission) -> None:
    """Serve every process metric of the catalog on `registry`: prometheus_client's own, then the extras."""
    StandardProcessCollector(registry=registry)
    registry.register(ProcessExtrasCollector(admission))
