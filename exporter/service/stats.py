"""The exporter's own counters (spans in, refusals, certificate reloads), owned by the process, and their collector.

Receivers, the span pipeline, the web app and the TLS reloaders all write here; none of them owns it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge
from exporter.requests.records import OTHER

MAX_OTHER_SPAN_NAMES = 100


class ExporterStats:
    """Exporter-wide counters, written from the event loop, the decode thread and the worker under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.other_names: Counter[str] = Counter()
        self.batches_rejected: Counter[tuple[str, str]] = Counter()
        self.tenant_sources: Counter[str] = Counter()
        self.unauthorized: Counter[str] = Counter()
        self.tls_reloads: Counter[tuple[str, str]] = Counter()

    def refused(self, endpoint: str) -> None:
        """Count a request refused for its bearer token."""
        with self.lock:
            self.unauthorized[endpoint] += 1

    def tls_reloaded(self, listener: str, result: str) -> None:
        """Count a change of a listener group's certificate files, by result (ok, failed)."""
        with self.lock:
            self.tls_reloads[(listener, result)] += 1

    def batch_rejected(self, protocol: str, reason: str) -> None:
        """Count a whole export request refused."""
        with self.lock:
            self.batches_rejected[(protocol, reason)] += 1

    def other_spans(self, names: Counter[str]) -> None:
        """Count spans that are not requests by name (past MAX_OTHER_SPAN_NAMES names, as `other`)."""
        with self.lock:
            for name, count in names.items():
                if name not in self.other_names and len(self.other_names) >= MAX_OTHER_SPAN_NAMES:
                    name = OTHER
                self.other_names[name] += count


class StatsCollector(Collector):
    """Serves build info and the exporter-wide counters."""

    def __init__(self, stats: ExporterStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """Every family, from one consistent read of the counters."""
        build = gauge(catalog.BUILD_INFO)
        build.add_metric([__version__], 1)
        families: list[Metric] = [build]
        stats = self.stats
        with stats.lock:
            for spec, values in (
                (catalog.SPANS_RECEIVED, stats.received),
                (catalog.SPANS_ACCEPTED, stats.accepted),
                (catalog.SPANS_REJECTED, stats.rejected),
                (catalog.SPANS_DROPPED, stats.dropped),
                (catalog.OTHER_SPANS, stats.other_names),
                (catalog.TENANT_JOINS, stats.tenant_sources),
                (catalog.UNAUTHORIZED, stats.unauthorized),
            ):
                family = counter(spec)
                for key, value in sorted(values.items()):
                    family.add_metric([key], value)
                families.append(family)
            for spec, pairs in (
                (catalog.BATCHES_REJECTED, stats.batches_rejected),
                (catalog.TLS_RELOADS, stats.tls_reloads),
            ):
                family = counter(spec)
                for (first, second), value in sorted(pairs.items()):
                    family.add_metric([first, second], value)
                families.append(family)
        yield from families
