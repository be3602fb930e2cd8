"""The /metrics render: the per-request part only when it changed, the rest every time, every family's series
counted, and scrapes that arrive together sharing one render."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.metrics import catalog
from exporter.service.exposition import Exposition, SharedRender
from tests.support.prom import by_label


class Counting(Collector):
    """A collector that counts how often it is collected, optionally waiting for `release` each time."""

    def __init__(self, name: str, wait: bool = False) -> None:
        self.name = name
        self.collected = 0
        self.release = threading.Event()
        if not wait:
            self.release.set()

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        self.release.wait(5)
        family = GaugeMetricFamily(self.name, "A gauge.", labels=["i"])
        for i in range(3):
            family.add_metric([str(i)], i)
        yield family
        things = CounterMetricFamily(f"{self.name}_things", "Things.", labels=["kind"])
        things.add_metric(["a"], 1)
        yield things


def test_the_cached_part_is_rendered_again_only_when_its_generation_moves() -> None:
    cached, live = Counting("requests"), Counting("gpu")
    generation = [1]
    exposition = Exposition(cached, lambda: generation[0], live)
    first = exposition.render(generate_latest, "text")
    second = exposition.render(generate_latest, "text")
    assert first == second and (cached.collected, live.collected) == (1, 2)
    exposition.render(openmetrics.generate_latest, "openmetrics")  # each format has its own cache
    assert cached.collected == 2
    generation[0] = 2
    exposition.render(generate_latest, "text")
    assert (cached.collected, live.collected) == (3, 4)


def test_the_answer_holds_both_parts_counts_their_series_and_ends_once() -> None:
    exposition = Exposition(Counting("requests"), lambda: 1, Counting("gpu"))
    text = exposition.render(openmetrics.generate_latest, "openmetrics").decode()
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    assert by_label(text, catalog.SERIES.name, "family") == {
        "requests": 3.0,
        "requests_things_total": 1.0,
        "gpu": 3.0,
        "gpu_things_total": 1.0,
    }
    plain = exposition.render(generate_latest, "text").decode()
    assert "# TYPE requests gauge" in plain and "# TYPE gpu gauge" in plain


def test_scrapes_arriving_during_a_render_share_it_and_later_ones_render_again() -> None:
    live = Counting("gpu", wait=True)
    shared = SharedRender(Exposition(Counting("requests"), lambda: 1, live))

    async def main() -> None:
        first = asyncio.ensure_future(shared.render(generate_latest, "text"))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(shared.render(generate_latest, "text"))
        await asyncio.sleep(0.05)
        live.release.set()
        assert await first == await second
        assert live.collected == 1
        await shared.render(generate_latest, "text")
        assert live.collected == 2

    asyncio.run(main())
