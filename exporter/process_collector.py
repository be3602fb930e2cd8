"""The exporter's own resources as metrics: memory, CPU, file descriptors, threads, admission state."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import catalog
from exporter.admission import Admission, resident_bytes
from exporter.collector import counter, gauge


def open_fds() -> int:
    """File descriptors this process holds (0 where there is no /proc)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def thread_count() -> int:
    """Threads of this process, from /proc/self/status (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ProcessCollector(Collector):
    """Resident memory, CPU seconds, open fds and threads of this process, and the admission state."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def describe(self) -> list[Metric]:
        """Nothing to describe up front."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read /proc now."""
        times = os.times()
        values: list[tuple[catalog.MetricSpec, float]] = [
            (catalog.PROCESS_RESIDENT_MEMORY, resident_bytes()),
            (catalog.PROCESS_OPEN_FDS, open_fds()),
            (catalog.PROCESS_THREADS, thread_count()),
            (catalog.EXPORTS_IN_PROGRESS, self.admission.in_progress),
            (catalog.MEMORY_LIMIT, self.admission.memory_limit_bytes),
        ]
        for spec, value in values:
            family = gauge(spec)
            family.add_metric([], value)
            yield family
        cpu = counter(catalog.PROCESS_CPU)
        cpu.add_metric([], times.user + times.system)
        yield cpu
