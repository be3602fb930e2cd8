"""The simulated processes' span batching, as OpenTelemetry's BatchSpanProcessor does it for vLLM."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from exporter.sim.senders import BatchSpanProcessor


class Recorder:
    """A transport that keeps what it is sent and answers `ok`."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.requests: list[ExportTraceServiceRequest] = []
        self.times: list[float] = []

    async def export(self, body: bytes) -> bool:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.requests.append(request)
        self.times.append(asyncio.get_running_loop().time())
        return self.ok

    async def close(self) -> None:
        return None

    def sizes(self) -> list[int]:
        return [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans) for r in self.requests]


def span(i: int) -> Span:
    return Span(trace_id=i.to_bytes(16, "big"), span_id=i.to_bytes(8, "big"), name="llm_request")


def test_full_batches_go_at_once_the_rest_on_the_timer_at_most_512_each() -> None:
    async def main() -> Recorder:
        sink = Recorder()
        processor = BatchSpanProcessor(sink, Resource(), delay_s=0.3)
        processor.start()
        started = asyncio.get_running_loop().time()
        for i in range(1100):
            processor.add("vllm.tracing.otel", span(i))
        await asyncio.sleep(0.1)
        assert sink.sizes() == [512, 512]  # two full batches did not wait for the timer
        await asyncio.sleep(0.35)
        assert sink.sizes() == [512, 512, 76] and sink.times[-1] - started >= 0.3
        await processor.shutdown()
        assert processor.stats.exported == 1100 and processor.stats.dropped == 0
        return sink

    sink = asyncio.run(main())
    ids = [s.span_id for r in sink.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(set(ids)) == 1100
    assert {ss.scope.name for r in sink.requests for rs in r.resource_spans for ss in rs.scope_spans} == {
        "vllm.tracing.otel"
    }


def test_a_full_queue_drops_spans_and_failed_exports_are_counted_not_retried() -> None:
    async def main() -> tuple[BatchSpanProcessor, Recorder]:
        sink = Recorder(ok=False)
        processor = BatchSpanProcessor(sink, Resource(), delay_s=60.0, max_queue=100, max_batch=512)
        accepted = [processor.add("s", span(i)) for i in range(150)]
        assert accepted.count(False) == 50
        await processor.shutdown()  # exports what is queued, then stops
        return processor, sink

    processor, sink = asyncio.run(main())
    assert processor.stats.dropped == 50 and processor.stats.failed == 100 and processor.stats.exported == 0
    assert sink.sizes() == [100]
