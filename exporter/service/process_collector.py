"""The exporter's own resources as metrics: memory, CPU, file descriptors, threads, admission state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge
from exporter.service.admission import Admission


@dataclass(frozen=True)
class ProcStats:
    """A process's resources at one moment."""

    rss_bytes: int
    threads: int
    fds: int


def proc_stats(pid: int | str = "self") -> ProcStats:
    """Resident memory, threads and open file descriptors of `pid`, from /proc; OSError when it is gone."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ProcStats(rss, threads, len(os.listdir(f"/proc/{pid}/fd")))


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
        try:
            stats = proc_stats()
        except OSError:  # no /proc (not Linux): the series read 0
            stats = ProcStats(0, 0, 0)
        values: list[tuple[catalog.MetricSpec, float]] = [
            (catalog.PROCESS_RESIDENT_MEMORY, stats.rss_bytes),
            (catalog.PROCESS_OPEN_FDS, stats.fds),
            (catalog.PROCESS_THREADS, stats.threads),
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
