"""Optional: re-emits each llm_request span, enriched with what the exporter learned, to an OTLP trace backend.

The span keeps its original trace and span ids (and parent), so a trace backend shows one request. A bounded
queue and a worker thread sit in front of opentelemetry-sdk's OTLP exporter: a slow or down backend costs
dropped spans (counted), never the exporter's time.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from exporter import __version__
from exporter.requests.records import RequestSpan

log = logging.getLogger(__name__)

AttributeValue = str | int | float | bool | tuple[str, ...]
SCOPE = InstrumentationScope("llm-token-exporter", __version__)
QUEUE_SPANS = 2048  # like the OpenTelemetry SDK's BatchSpanProcessor


def enriched(span: RequestSpan, tenant: str, extra: Mapping[str, AttributeValue]) -> ReadableSpan:
    """The request's span as vLLM sent it (its gen_ai.* values), plus model, tenant, instance and `extra`."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"), False, flags)
    parent = (
        SpanContext(int.from_bytes(span.trace_id, "big"), int.from_bytes(span.parent_span_id, "big"), True, flags)
        if span.parent_span_id
        else None
    )
    attributes: dict[str, Any] = {
        "gen_ai.latency.time_to_first_token": span.ttft_s,
        "gen_ai.latency.e2e": span.e2e_s,
        "gen_ai.latency.time_in_queue": span.queue_s,
        "gen_ai.latency.time_in_model_prefill": span.prefill_s,
        "gen_ai.latency.time_in_model_decode": span.decode_s,
        "gen_ai.usage.prompt_tokens": span.prompt_tokens,
        "gen_ai.usage.completion_tokens": span.completion_tokens,
        "gen_ai.request.id": span.request_id,
        "llm.model": span.model,
        "llm.tenant": tenant,
        "llm.instance": span.instance,
        **extra,
    }
    return ReadableSpan(
        "llm_request",
        context=context,
        parent=parent,
        resource=Resource({"service.name": span.service_name or span.model}),
        attributes=attributes,
        kind=SpanKind.SERVER,
        start_time=span.start_time_ns,
        end_time=span.end_time_ns,
        instrumentation_scope=SCOPE,
    )


class SpanForwarder:
    """Bounded queue + one worker thread exporting batches; `offer` never blocks."""

    def __init__(self, exporter: SpanExporter, queue_spans: int = QUEUE_SPANS, batch_spans: int = 512) -> None:
        self.exporter = exporter
        self.queue_spans = queue_spans
        self.batch_spans = batch_spans
        self._queue: deque[tuple[RequestSpan, str, Mapping[str, AttributeValue]]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()  # sent, dropped_queue_full, dropped_export_failed (under _cond)
        self._logged_failure = False

    def offer(self, span: RequestSpan, tenant: str, extra: Mapping[str, AttributeValue]) -> None:
        """Queue a span for forwarding, or drop and count it when the queue is full."""
        with self._cond:
            if len(self._queue) >= self.queue_spans:
                self._counts["dropped_queue_full"] += 1
                return
            self._queue.append((span, tenant, extra))
            if len(self._queue) >= self.batch_spans:
                self._cond.notify()

    def counts(self) -> dict[str, int]:
        """Spans by outcome so far: sent, dropped_queue_full, dropped_export_failed."""
        with self._cond:
            return dict(self._counts)

    def start(self) -> None:
        """Start the worker."""
        self._thread = threading.Thread(target=self._run, name="span-forwarder", daemon=True)
        self._thread.start()

    def _take(self) -> list[tuple[RequestSpan, str, Mapping[str, AttributeValue]]]:
        with self._cond:
            if not self._queue and not self._stop:
                self._cond.wait(timeout=1.0)
            batch = [self._queue.popleft() for _ in range(min(self.batch_spans, len(self._queue)))]
        return batch

    def _export(self, batch: list[tuple[RequestSpan, str, Mapping[str, AttributeValue]]]) -> None:
        try:
            result = self.exporter.export([enriched(*item) for item in batch])
        except Exception as exc:  # the SDK's exporters can raise on bad endpoints
            result = SpanExportResult.FAILURE
            log.debug("span forwarding raised: %s", exc)
        with self._cond:
            if result is SpanExportResult.SUCCESS:
                self._counts["sent"] += len(batch)
                self._logged_failure = False
                return
            self._counts["dropped_export_failed"] += len(batch)
            first = not self._logged_failure
            self._logged_failure = True
        if first:
            log.warning("forwarding enriched spans failed; dropping them until the backend answers")

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._export(batch)
            with self._cond:
                if self._stop and not self._queue:
                    return

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by `timeout_s`) and stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.exporter.shutdown()
