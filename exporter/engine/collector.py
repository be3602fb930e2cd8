"""prometheus_client Collector for the llm_engine_* series, from the EngineScraper's tracker (and, for the series
against the GPUs' peaks and memory, the instances' placement on GPUs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.engine import usage
from exporter.engine.scraper import EngineScraper
from exporter.engine.state import MFU_OFF, InstanceState
from exporter.gpu.peaks import PeakTable
from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge, histogram
from exporter.requests.records import UNKNOWN

_COUNTERS = {
    "prefix_queries": catalog.ENGINE_PREFIX_QUERIES,
    "prefix_hits": catalog.ENGINE_PREFIX_HITS,
    "preemptions": catalog.ENGINE_PREEMPTIONS,
    "prompt_tokens": catalog.ENGINE_PROMPT_TOKENS,
    "generation_tokens": catalog.ENGINE_GENERATION_TOKENS,
    "flops": catalog.ENGINE_ESTIMATED_FLOPS,
    "read_bytes": catalog.ENGINE_ESTIMATED_READ,
    "write_bytes": catalog.ENGINE_ESTIMATED_WRITE,
    "prompt_cached": catalog.ENGINE_PROMPT_TOKENS_CACHED,
    "external_queries": catalog.ENGINE_EXTERNAL_PREFIX_QUERIES,
    "external_hits": catalog.ENGINE_EXTERNAL_PREFIX_HITS,
    "spec_drafts": catalog.ENGINE_SPEC_DRAFTS,
    "spec_draft_tokens": catalog.ENGINE_SPEC_DRAFT_TOKENS,
    "spec_accepted": catalog.ENGINE_SPEC_ACCEPTED,
}
_LABELLED_COUNTERS = {
    "prompt_by_source": catalog.ENGINE_PROMPT_TOKENS_BY_SOURCE,
    "cached_by_source": catalog.ENGINE_PROMPT_TOKENS_CACHED_BY_SOURCE,
    "spec_accepted_per_pos": catalog.ENGINE_SPEC_ACCEPTED_PER_POSITION,
}
_LABELLED_GAUGES = {"waiting_by_reason": catalog.ENGINE_WAITING_BY_REASON, "sleep_state": catalog.ENGINE_SLEEP_STATE}
_HISTOGRAMS = {
    "kv_block_lifetime": catalog.ENGINE_KV_BLOCK_LIFETIME,
    "kv_block_idle_before_evict": catalog.ENGINE_KV_BLOCK_IDLE,
    "kv_block_reuse_gap": catalog.ENGINE_KV_BLOCK_REUSE_GAP,
    "prefill_kv_computed": catalog.ENGINE_PREFILL_KV_COMPUTED,
}


def _engine_key(engine: str) -> tuple[int, str]:
    """Engines in rank order (10 after 9); a label that is not a number after them, by text."""
    return (int(engine), engine) if engine.isdigit() else (1 << 62, engine)


def _position_key(item: tuple[tuple[str, str, str], float]) -> tuple[str, str, int, str]:
    """Sort labelled totals by model and field, positions numerically (10 after 9), other labels by text."""
    (model, field, label), _ = item
    return model, field, int(label) if label.isdigit() else -1, label


class EngineCollector(Collector):
    """Engine gauges only while the last scrape succeeded (stale values are not served as current)."""

    def __init__(
        self,
        scraper: EngineScraper,
        placements: Callable[[], usage.Placements] | None = None,
        peaks: PeakTable | None = None,
    ) -> None:
        self.scraper = scraper
        self.placements = placements
        self.peaks = peaks or PeakTable()

    def collect(self) -> Iterator[Metric]:
        """Build every engine family from a consistent view of the tracker."""
        # Read before taking the scraper's lock: the topology and the sampler have locks of their own.
        placed = self.placements() if self.placements is not None else {}
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
        labelled = {field: counter(spec) for field, spec in _LABELLED_COUNTERS.items()}
        labelled_gauges = {field: gauge(spec) for field, spec in _LABELLED_GAUGES.items()}
        dp_running, dp_waiting, dp_kv = (
            gauge(catalog.ENGINE_DP_RUNNING),
            gauge(catalog.ENGINE_DP_WAITING),
            gauge(catalog.ENGINE_DP_KV_USAGE),
        )
        histograms = {field: histogram(spec) for field, spec in _HISTOGRAMS.items()}
        finished = counter(catalog.ENGINE_FINISHED)
        rejected = counter(catalog.ENGINE_ADMISSION_REJECTIONS)
        http = counter(catalog.ENGINE_HTTP_RESPONSES)
        compute, traffic, memory = (
            counter(catalog.ENGINE_COMPUTE_AT_PEAK),
            counter(catalog.ENGINE_MEMORY_TRAFFIC_AT_PEAK),
            gauge(catalog.ENGINE_GPU_MEMORY),
        )
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
                    for (field, label), value in sorted(m.gauges.items()):
                        labelled_gauges[field].add_metric([*labels, label], value)
                    # Only for data parallel: with one engine these would repeat the folded gauges above.
                    if len(m.per_engine) > 1:
                        for engine in sorted(m.per_engine, key=_engine_key):
                            one = m.per_engine[engine]
                            for family, reading in (
                                (dp_running, one.running),
                                (dp_waiting, one.waiting),
                                (dp_kv, one.kv_usage_ratio),
                            ):
                                if reading is not None:
                                    family.add_metric([*labels, engine], reading)
                for (model, field), value in sorted(state.totals.items()):
                    counters[field].add_metric([name, state.label_of(model)], value)
                for (model, field, label), value in sorted(state.labelled.items(), key=_position_key):
                    labelled[field].add_metric([name, state.label_of(model), label], value)
                for (model, field), hist in sorted(state.histograms.items()):
                    histograms[field].add_metric([name, state.label_of(model)], hist.buckets, hist.sum)
                for (model, reason), value in sorted(state.finished.items()):
                    finished.add_metric([name, state.label_of(model), reason], value)
                for (model, reason), value in sorted(state.rejected.items()):
                    rejected.add_metric([name, state.label_of(model), reason], value)
                http_model = state.label_of(known[0]) if len(known) == 1 else UNKNOWN
                for (_, status), value in sorted(state.http_responses.items()):
                    http.add_metric([name, http_model, status], value)
                self._usage(name, state, placed.get(name, ()), compute, traffic, memory)
        yield from (up, *gauges.values(), dp_running, dp_waiting, dp_kv, *counters.values(), finished, rejected, http)
        yield from (restarts, ready, errors)
        yield from (*labelled.values(), *labelled_gauges.values(), *histograms.values(), compute, traffic, memory)

    def _usage(
        self,
        name: str,
        state: InstanceState,
        gpus: tuple[usage.InstanceGpu, ...],
        compute: CounterMetricFamily,
        traffic: CounterMetricFamily,
        memory: GaugeMetricFamily,
    ) -> None:
        """The instance's work against each of its GPUs' peaks (monotonic, as its totals are), and its memory."""
        for model in sorted({m for m, _ in state.totals} | {m.model for m in state.models}):
            flops = state.totals.get((model, "flops"))
            read, write = state.totals.get((model, "read_bytes")), state.totals.get((model, "write_bytes"))
            current = state.last_reading.models.get(model) if state.up and state.last_reading is not None else None
            for gpu in gpus:
                labels = [name, state.label_of(model), gpu.identity.uuid]
                if current is not None:  # a gauge: only while the instance answers
                    for purpose, value in usage.memory_by_purpose(
                        current.kv_memory_bytes, gpu.process_memory_bytes
                    ).items():
                        memory.add_metric([*labels, purpose], value)
                # Not while vLLM counts nothing (the flag is off): 0 would read as an idle GPU, not as unknown.
                if not (flops or read) or state.mfu_metrics == MFU_OFF:
                    continue
                peak = self.peaks.lookup(gpu.identity.name)
                if peak is None:
                    continue
                if flops is not None:
                    for precision, seconds in usage.at_peak_compute(flops, peak).items():
                        compute.add_metric([*labels, precision], seconds)
                if read is not None and write is not None:
                    seconds_at_peak = usage.at_peak_memory(read, write, peak)
                    if seconds_at_peak is not None:
                        traffic.add_metric(labels, seconds_at_peak)
