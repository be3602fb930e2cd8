"""prometheus_client Collector for the topology: one info series per instance, and the source's health."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge
from exporter.topology.model import TopologySource


class TopologyCollector(Collector):
    """Renders the source's current topology and error counters at scrape time."""

    def __init__(self, source: TopologySource, mfu_metrics: Callable[[str], str] | None = None) -> None:
        self.source = source
        # What the engine scraper knows of each instance's --enable-mfu-metrics (on, off, absent, unknown).
        self.mfu_metrics = mfu_metrics or (lambda _: "unknown")

    def collect(self) -> Iterator[Metric]:
        """Build every topology family from one snapshot."""
        topology = self.source.current()
        name = topology.source or self.source.source
        info = gauge(catalog.INSTANCE_INFO)
        for instance in topology.instances:
            info.add_metric(
                [
                    instance.id,
                    instance.model or "",
                    instance.namespace or "",
                    instance.pod or "",
                    ",".join(instance.gpus),
                    instance.role or "",
                    self.mfu_metrics(instance.id),
                    instance.group or "",
                ],
                1,
            )
        workers = gauge(catalog.GROUP_WORKER_INFO)
        for worker in topology.workers:
            workers.add_metric(
                [
                    worker.id,
                    worker.group,
                    worker.model or "",
                    worker.namespace or "",
                    worker.pod or "",
                    ",".join(worker.gpus),
                ],
                1,
            )
        instances = gauge(catalog.TOPOLOGY_INSTANCES)
        instances.add_metric([name], len(topology.instances))
        stale = gauge(catalog.TOPOLOGY_STALE)
        stale.add_metric([name], 1 if topology.stale else 0)
        observed = gauge(catalog.TOPOLOGY_OBSERVED)
        if topology.observed_at > 0:
            observed.add_metric([name], topology.observed_at)
        errors = counter(catalog.TOPOLOGY_ERRORS)
        for (source, reason), count in sorted(self.source.error_counts().items()):
            errors.add_metric([source, reason], count)
        yield from (info, workers, instances, stale, observed, errors)
