"""prometheus_client Collector for the llm_engine_* series, from the EngineScraper's tracker."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.engine.scraper import EngineScraper
from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge
from exporter.requests.records import UNKNOWN

_COUNTERS = {
    "prefix_queries": catalog.ENGINE_PREFIX_QUERIES,
    "prefix_hits": catalog.ENGINE_PREFIX_HITS,
    "preemptions": catalog.ENGINE_PREEMPTIONS,
    "prompt_tokens": catalog.ENGINE_PROMPT_TOKENS,
    "generation_tokens": catalog.ENGINE_GENERATION_TOKENS,
}


class EngineCollector(Collector):
    """Engine gauges only while the last scrape succeeded (stale values are not served as current)."""

    def __init__(self, scraper: EngineScraper) -> None:
        self.scraper = scraper

    def collect(self) -> Iterator[Metric]:
        """Build every engine family from a consistent view of the tracker."""
        up, restarts, ready, errors = (
            gauge(catalog.ENGINE_UP),
            counter(catalog.ENGINE_RESTARTS),
            gauge(catalog.ENGINE_TIME_TO_READY),
            counter(catalog.ENGINE_SCRAPE_ERRORS),
        )
        gauges = {
            spec.name: gauge(spec)
            for spec in (
                catalog.ENGINE_RUNNING,
                catalog.ENGINE_WAITING,
                catalog.ENGINE_KV_USAGE,
                catalog.ENGINE_KV_CAPACITY,
                catalog.ENGINE_KV_BYTES,
            )
        }
        counters = {field: counter(spec) for field, spec in _COUNTERS.items()}
        finished = counter(catalog.ENGINE_FINISHED)
        rejected = counter(catalog.ENGINE_ADMISSION_REJECTIONS)
        http = counter(catalog.ENGINE_HTTP_RESPONSES)
        with self.scraper.reading() as instances:
            for name, state in sorted(instances.items()):
                known = list(state.served_models)
                for model in known or [UNKNOWN]:
                    up.add_metric([name, state.label_of(model)], 1.0 if state.up else 0.0)
                restarts.add_metric([name], state.restarts)
                if state.time_to_ready_s is not None:
                    ready.add_metric([name], state.time_to_ready_s)
                for reason, count in sorted(state.errors.items()):
                    errors.add_metric([name, reason], count)
                for m in state.models:
                    labels = [name, state.label_of(m.model)]
                    for spec, value in (
                        (catalog.ENGINE_RUNNING, m.running),
                        (catalog.ENGINE_WAITING, m.waiting),
                        (catalog.ENGINE_KV_USAGE, m.kv_usage_ratio),
                        (catalog.ENGINE_KV_CAPACITY, m.kv_capacity_tokens),
                        (catalog.ENGINE_KV_BYTES, m.kv_bytes_per_token),
                    ):
                        if value is not None:
                            gauges[spec.name].add_metric(labels, value)
                for (model, field), value in sorted(state.totals.items()):
                    counters[field].add_metric([name, state.label_of(model)], value)
                for (model, reason), value in sorted(state.finished.items()):
                    finished.add_metric([name, state.label_of(model), reason], value)
                for (model, reason), value in sorted(state.rejected.items()):
                    rejected.add_metric([name, state.label_of(model), reason], value)
                http_model = state.label_of(known[0]) if len(known) == 1 else UNKNOWN
                for (_, status), value in sorted(state.http_responses.items()):
                    http.add_metric([name, http_model, status], value)
        yield from (up, *gauges.values(), *counters.values(), finished, rejected, http, restarts, ready, errors)
