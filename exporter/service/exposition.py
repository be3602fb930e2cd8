"""The /metrics answer: what each family costs in series, a render that scales with what changed, and one render for
any number of scrapes that ask at the same moment (two Prometheus replicas in HA share it).

The per-request families are most of an answer (about 16-19 series per (model, tenant) pair) and change only when
requests are counted; GPU, engine and self metrics are a few hundred series that change every second. So the
answer has two parts: the per-request part is rendered again only when its generation moved (an idle platform's
scrape re-renders nothing of it), the rest every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.metrics.families import gauge

Encoder = Callable[[Collector], bytes]
OPENMETRICS_EOF = b"# EOF\n"


def family_name(metric: Metric) -> str:
    """A family as users query it: counters with their _total, as in the catalog."""
    return f"{metric.name}_total" if metric.type == "counter" else metric.name


def series_of(metric: Metric) -> int:
    """Series a family exposes: its samples (a native histogram family: one per histogram)."""
    count = getattr(metric, "series_count", None)
    return count if isinstance(count, int) else len(metric.samples)


class SeriesCounting(Collector):
    """A collector's families, then `llm_exporter_series{family}`: the series each family had in this answer (plus
    `more`, counted elsewhere)."""

    def __init__(self, collector: Collector, more: Callable[[], Counter[str]] = Counter) -> None:
        self.collector = collector
        self.more = more

    def collect(self) -> Iterator[Metric]:
        """Every family of the collector, counted on the way out."""
        counts = Counter(self.more())
        for metric in self.collector.collect():
            counts[family_name(metric)] += series_of(metric)
            yield metric
        series = gauge(catalog.SERIES)
        for family, count in sorted(counts.items()):
            series.add_metric([family], count)
        yield series


class Counted(Collector):
    """A collector whose families' series are counted into `counts` as they are collected."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.counts: Counter[str] = Counter()

    def collect(self) -> Iterator[Metric]:
        """Every family, counted."""
        counts: Counter[str] = Counter()
        for metric in self.collector.collect():
            counts[family_name(metric)] += series_of(metric)
            yield metric
        self.counts = counts


class Exposition:
    """Renders `cached` again only when `generation()` moved since its last render in that format, and `live` every
    time; the answer is both, with the series of both counted."""

    def __init__(self, cached: Collector, generation: Callable[[], int], live: Collector) -> None:
        self.cached = cached
        self.generation = generation
        self.live = live
        self._lock = threading.Lock()  # renders of different formats may run at once
        self._parts: dict[str, tuple[int, bytes, Counter[str]]] = {}  # format -> (generation, body, series)

    def render(self, encoder: Encoder, content_type: str) -> bytes:
        """The whole answer in `encoder`'s format (named by its content type)."""
        generation = self.generation()
        with self._lock:
            part = self._parts.get(content_type)
        if part is None or part[0] != generation:
            counted = Counted(self.cached)
            body = encoder(counted).removesuffix(OPENMETRICS_EOF)
            part = (generation, body, counted.counts)
            with self._lock:
                self._parts[content_type] = part
        _, body, counts = part
        return body + encoder(SeriesCounting(self.live, lambda: counts))


class SharedRender:
    """Renders off the event loop; scrapes that arrive while a render of the same format runs get its result."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def render(self, encoder: Encoder, content_type: str) -> bytes:
        """The exposition in `encoder`'s format (named by its content type): a fresh render, or the one of that
        format already under way."""
        running = self._running.get(content_type)
        if running is not None:
            return await asyncio.shield(running)
        future = asyncio.get_running_loop().run_in_executor(None, self.exposition.render, encoder, content_type)
        self._running[content_type] = future
        try:
            return await asyncio.shield(future)
        finally:
            if self._running.get(content_type) is future:
                del self._running[content_type]
