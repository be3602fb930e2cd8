"""The attribution collector reads the stage's totals and the forwarder's counts under their own locks."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.attribution.collector import AttributionCollector
from exporter.attribution.forwarder import SpanForwarder
from exporter.attribution.stage import AttributionOptions, AttributionStage
from exporter.engine.state import CounterPoint
from exporter.gpu.fake_nvml import FakeNvml
from exporter.gpu.sampler import GpuSampler
from exporter.topology.static import StaticTopology


class NoEngine:
    """An engine without history."""

    def counter_points(self, instance: str) -> tuple[CounterPoint, ...]:
        return ()


class Sink(SpanExporter):
    """A trace backend that takes everything."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def collect_in_thread(collector: AttributionCollector) -> threading.Event:
    done = threading.Event()

    def run() -> None:
        list(collector.collect())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def stage(forwarder: SpanForwarder | None) -> AttributionStage:
    fake = FakeNvml.with_gpus(1)
    gpus = GpuSampler(nvml=fake, clock=fake.time, xid_events=False)
    return AttributionStage(AttributionOptions(), StaticTopology(()), NoEngine(), gpus, forwarder=forwarder)


def test_the_forwarders_counts_are_read_under_its_lock() -> None:
    forwarder = SpanForwarder(Sink())
    collector = AttributionCollector(stage(forwarder))
    with forwarder._cond:  # the forwarder thread is mid-update
        done = collect_in_thread(collector)
        assert not done.wait(0.3)
    assert done.wait(5)


def test_the_totals_are_read_under_the_stages_lock_not_the_pipelines() -> None:
    attribution = stage(None)
    collector = AttributionCollector(attribution)
    with attribution.lock:  # a tick is closing intervals
        done = collect_in_thread(collector)
        assert not done.wait(0.3)
    assert done.wait(5)
