"""The /metrics answer: every collector of the registry, plus what each family costs in series, rendered once for
any number of scrapes that ask at the same moment (two Prometheus replicas in HA share one render)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.metrics.families import gauge

Encoder = Callable[[Collector], bytes]


class SeriesCounting(Collector):
    """The registry's families, then `llm_exporter_series{family}`: the series each family had in this answer."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """Every family of the registry, counted on the way out."""
        counts: Counter[str] = Counter()
        for metric in self.registry.collect():
            # Named as users query it: counters with their _total, as in the catalog.
            counts[f"{metric.name}_total" if metric.type == "counter" else metric.name] += len(metric.samples)
            yield metric
        series = gauge(catalog.SERIES)
        for family, count in sorted(counts.items()):
            series.add_metric([family], count)
        yield series


class SharedRender:
    """Renders off the event loop; scrapes that arrive while a render of the same format runs get its result."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def render(self, encoder: Encoder, content_type: str) -> bytes:
        """The exposition in `encoder`'s format (named by its content type): a fresh render, or the one of that
        format already under way."""
        running = self._running.get(content_type)
        if running is not None:
            return await asyncio.shield(running)
        future = asyncio.get_running_loop().run_in_executor(None, encoder, self.collector)
        self._running[content_type] = future
        try:
            return await asyncio.shield(future)
        finally:
            if self._running.get(content_type) is future:
                del self._running[content_type]
