"""The span pipeline: receivers submit decoded batches; one worker thread joins tenants and aggregates.

Receivers acknowledge at once: `submit` never blocks. When the bounded queue is full the batch is dropped and
counted, because a slow receiver makes vLLM's exporter drop spans silently instead. The pipeline's lock guards
only the tenant join and the aggregator (what a scrape reads); attribution runs outside it, under its own lock,
so a `/metrics` render never waits on an attribution tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.requests import aggregate
from exporter.requests.aggregate import RequestAggregator
from exporter.requests.dedup import Deduplicator
from exporter.requests.disagg import DisaggJoiner, Finished, Kind
from exporter.requests.records import DecodedBatch, RequestSpan
from exporter.requests.tenancy import Resolved, TenantJoiner
from exporter.service.stats import ExporterStats

log = logging.getLogger(__name__)

SERIES_CHECK_EVERY_S = 10.0  # idle-series expiry walks every series: not on every wake-up


@dataclass(frozen=True)
class PipelineOptions:
    """Sizes and windows of the pipeline."""

    queue_capacity_spans: int = 65_536
    tenant_join_window_s: float = 10.0
    tenant_cap: int = aggregate.TENANT_CAP
    model_cap: int = aggregate.MODEL_CAP
    dedup_capacity: int = 131_072
    series_idle_s: float = 3600.0
    series_max: int = aggregate.SERIES_MAX
    pd_join_window_s: float = 10.0  # a P/D half waits this long for its other half
    buckets: Mapping[str, Sequence[float]] | None = None


class RequestHook(Protocol):
    """What the pipeline asks of the attribution stage, from its worker thread (never under its lock)."""

    def throttled(self, span: RequestSpan) -> str:
        """The throttled label of a request."""
        ...

    def submit(self, span: RequestSpan, tenant: str, throttled: str) -> None:
        """Queue a request for charging (and forwarding)."""
        ...

    def forget(self, series: list[tuple[str, str]]) -> None:
        """Drop the totals of (model, tenant) series that went idle."""
        ...

    def tick(self, force: bool = False) -> None:
        """Advance the attribution (rate-limited unless forced)."""
        ...


class SpanPipeline:
    """Bounded queue in front of the tenant joiner and the aggregator, drained by one worker thread."""

    def __init__(
        self,
        options: PipelineOptions,
        *,
        stats: ExporterStats | None = None,
        attribution: RequestHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.clock = clock
        self.stats = stats if stats is not None else ExporterStats()  # the process's, or its own when alone
        self.attribution = attribution
        self.lock = threading.Lock()  # guards joiner, aggregator and start-up phases (worker writes, scrapes read)
        self.aggregator = RequestAggregator(options.buckets, options.tenant_cap, options.model_cap, options.series_max)
        self.joiner = TenantJoiner(options.tenant_join_window_s)
        self.disagg = DisaggJoiner(options.pd_join_window_s)
        self.dedup = Deduplicator(options.dedup_capacity)
        self.startup: dict[tuple[str, str], tuple[int, float]] = {}  # (model, phase) -> (end ns, seconds)
        self.generation = 0  # moves whenever what RequestCollector serves changes (under the lock)
        self._queue: deque[DecodedBatch] = deque()
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._series_checked = clock()

    @property
    def queue_depth(self) -> int:
        """llm_request spans waiting in the queue."""
        return self._queued_spans

    def submit(self, batch: DecodedBatch, protocol: str) -> int:
        """Queue a decoded batch without blocking; returns how many of its request spans were dropped."""
        n = len(batch.requests)
        with self._cond:
            full = n > 0 and self._queued_spans + n > self.options.queue_capacity_spans
            if not full:
                self._queue.append(batch)
                self._queued_spans += n
                self._cond.notify()
        with self.stats.lock:
            self.stats.received[protocol] += batch.received
            self.stats.rejected.update(batch.rejected)
            if full:
                self.stats.dropped["queue_full"] += n
            else:
                self.stats.accepted[protocol] += n
        if full:
            log.warning("processing queue full: dropped a batch of %d request spans", n)
            return n
        return 0

    def process_available(self) -> int:
        """Drain the queue and release expired joins now, on the calling thread; returns batches processed."""
        with self._cond:
            batches = list(self._queue)
            self._queue.clear()
            self._queued_spans = 0
        for batch in batches:
            self._process(batch)
        self._expire()
        return len(batches)

    def _process(self, batch: DecodedBatch) -> None:
        now = self.clock()
        duplicates = 0
        with self.lock:
            released = self.joiner.add_hints(batch.hints, now)
            for span in batch.requests:
                if not self.dedup.first_time(span.key):
                    duplicates += 1
                    continue
                resolved = self.joiner.add_request(span, now)
                if resolved is not None:
                    released.append(resolved)
            for item in batch.startup:
                key = (item.model, item.phase)
                if key not in self.startup or self.startup[key][0] <= item.end_time_ns:
                    self.startup[key] = (item.end_time_ns, item.seconds)
                    self.generation += 1
        self._observe(released)
        if duplicates:
            with self.stats.lock:
                self.stats.dropped["duplicate"] += duplicates
        if batch.other_names:
            self.stats.other_spans(batch.other_names)

    def _expire(self) -> None:
        now = self.clock()
        with self.lock:
            released = self.joiner.expire(now)
        self._observe(released)
        with self.lock:
            alone = self.disagg.expire(now)
        self._count(alone)
        if self.attribution is not None:
            self.attribution.tick()
        if now - self._series_checked >= SERIES_CHECK_EVERY_S:
            self._series_checked = now
            with self.lock:
                gone = self.aggregator.expire(now, self.options.series_idle_s)
                self.generation += bool(gone)
            if gone:
                if self.attribution is not None:
                    self.attribution.forget(gone)
                log.info("forgot %d (model, tenant) series idle for %g s", len(gone), self.options.series_idle_s)

    def _observe(self, released: list[Resolved]) -> None:
        """Spans whose tenant is known: each half is charged on its own instance; requests are counted once."""
        if not released:
            return
        hook = self.attribution
        # Read from the GPU rings before taking the lock: a scrape never waits on it.
        throttled = {item.span.key: hook.throttled(item.span) for item in released} if hook is not None else {}
        now = self.clock()
        with self.lock:
            finished = [f for item in released for f in self.disagg.add(item, now)]
            # Charged under the labels its request is counted under (capped: a hostile tenant string cannot grow
            # the attribution series either); asked without counting the fold again.
            labels = [self.aggregator.labels(item.span.model, item.tenant, count=False) for item in released]
        self._count(finished, throttled)
        if hook is not None:
            for item, (model, tenant) in zip(released, labels, strict=True):
                span = item.span if model == item.span.model else item.span._replace(model=model)
                hook.submit(span, tenant, throttled[item.span.key])

    def _count(self, finished: list[Finished], known: dict[bytes, str] | None = None) -> None:
        """Count requests (and prefill halves) as the aggregator should; `known`: throttled labels already read."""
        if not finished:
            return
        hook = self.attribution
        throttled = [
            "unknown"
            if hook is None or f.kind is Kind.PREFILL_ALONE
            else (known or {}).get(f.span.key) or hook.throttled(f.span)
            for f in finished
        ]
        sources: Counter[str] = Counter()
        with self.lock:
            self.generation += 1
            for f, label in zip(finished, throttled, strict=True):
                self.aggregator.observe(f.span, f.tenant, label, self.clock(), f.kind, f.handoff_s)
                if f.kind is not Kind.PREFILL_ALONE:
                    sources[f.source] += 1
        with self.stats.lock:
            self.stats.tenant_sources.update(sources)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="span-pipeline", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    self._cond.wait(timeout=0.25)
                stopping = self._stop
            try:
                self.process_available()
            except Exception:  # a bug in one batch must not stop the exporter
                log.exception("span pipeline: failed to process a batch")
            if stopping:
                return

    def stop(self, flush_pending: bool = True) -> None:
        """Drain the queue, release waiting joins as `unknown` if asked, and stop the worker."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.process_available()
        if flush_pending:
            with self.lock:
                released = self.joiner.flush()
            self._observe(released)
            with self.lock:
                alone = self.disagg.flush()
            self._count(alone)
