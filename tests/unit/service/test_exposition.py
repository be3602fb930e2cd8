"""The /metrics render: scrapes that arrive together share one render; each family's series are counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.service.exposition import SeriesCounting, SharedRender
from tests.support.prom import by_label


class Slow(Collector):
    """A collector that takes a while and counts how often it is collected."""

    def __init__(self) -> None:
        self.collected = 0
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        self.release.wait(5)
        family = GaugeMetricFamily("slow", "A slow gauge.", labels=["i"])
        for i in range(3):
            family.add_metric([str(i)], i)
        yield family


def test_scrapes_arriving_during_a_render_share_it_and_later_ones_render_again() -> None:
    slow = Slow()
    shared = SharedRender(slow)

    async def main() -> None:
        first = asyncio.ensure_future(shared.render(generate_latest, "text"))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(shared.render(generate_latest, "text"))
        await asyncio.sleep(0.05)
        slow.release.set()
        assert await first == await second
        assert slow.collected == 1
        await shared.render(generate_latest, "text")
        assert slow.collected == 2

    asyncio.run(main())


def test_every_family_is_counted_in_the_answer() -> None:
    text = generate_latest(SeriesCounting(SlowDone())).decode()
    assert by_label(text, catalog.SERIES.name, "family") == {"slow": 3.0, "things_total": 2.0}


class SlowDone(Slow):
    """Slow without the wait, plus a counter family."""

    def collect(self) -> Iterator[Metric]:
        self.release.set()
        yield from super().collect()
        things = CounterMetricFamily("things", "Things.", labels=["kind"])
        things.add_metric(["a"], 1)
        things.add_metric(["b"], 2)
        yield things
