"""OTLP senders of the simulated processes: gRPC (vLLM's default) or HTTP/protobuf, batched the way OpenTelemetry's
BatchSpanProcessor batches (a bounded queue, at most 512 spans per export, one export every `delay_s` or as soon as
a full batch is waiting, one export in flight; spans that find the queue full are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

log = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_QUEUE = 2048  # OTEL_BSP_MAX_QUEUE_SIZE default
MAX_BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE default
EXPORT_TIMEOUT_S = 10.0


class Transport(Protocol):
    """Sends one serialized ExportTraceServiceRequest; True when the receiver accepted it."""

    async def export(self, body: bytes) -> bool:
        """Send and wait for the answer."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpTransport:
    """OTLP/HTTP with protobuf bodies (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf); `url` ends in /v1/traces."""

    def __init__(self, url: str, timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        self.url = url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def export(self, body: bytes) -> bool:
        """POST the body."""
        try:
            async with self._session.post(
                self.url, data=body, headers={"Content-Type": "application/x-protobuf"}
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("OTLP/HTTP export to %s failed: %s", self.url, exc)
            return False

    async def close(self) -> None:
        """Close the session."""
        await self._session.close()


class GrpcTransport:
    """OTLP/gRPC: TraceService/Export on `target` (host:port), plaintext, as vLLM sends by default."""

    def __init__(self, target: str, timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        self._export = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,  # the body is already serialized
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    async def export(self, body: bytes) -> bool:
        """Call Export."""
        try:
            await self._export(body, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.debug("OTLP/gRPC export to %s failed: %s", self.target, exc.code())
            return False
        return True

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def transport(protocol: str, endpoint: str) -> Transport:
    """A transport for `protocol` grpc (endpoint host:port) or http (endpoint URL ending in /v1/traces)."""
    if protocol == "grpc":
        return GrpcTransport(endpoint)
    if protocol == "http":
        return HttpTransport(endpoint)
    raise ValueError(f"unknown OTLP protocol {protocol!r}: grpc or http")


@dataclass
class SenderStats:
    """What one processor did."""

    queued: int = 0
    dropped: int = 0  # found the queue full
    exported: int = 0  # in exports the receiver accepted
    failed: int = 0  # in exports that failed (counted, not retried, as the OTLP exporter gives up)
    exports: int = 0


class BatchSpanProcessor:
    """One process's span queue and its export loop."""

    def __init__(
        self,
        transport: Transport,
        resource: Resource,
        delay_s: float = 5.0,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.transport = transport
        self.resource = resource
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.stats = SenderStats()
        self._queue: deque[tuple[str, Span]] = deque()
        self._full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, scope: str, span: Span) -> bool:
        """Queue a finished span; False (and counted) when the queue is full."""
        if len(self._queue) >= self.max_queue:
            self.stats.dropped += 1
            return False
        self._queue.append((scope, span))
        self.stats.queued += 1
        if len(self._queue) >= self.max_batch:
            self._full.set()
        return True

    def start(self) -> None:
        """Start the export loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-span-export")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.delay_s)
            self._full.clear()
            while self._queue:
                await self._export_batch()
                if len(self._queue) < self.max_batch:
                    break
        while self._queue:  # at shutdown, everything left
            await self._export_batch()

    def _batch(self) -> ExportTraceServiceRequest:
        by_scope: dict[str, list[Span]] = {}
        for _ in range(min(self.max_batch, len(self._queue))):
            scope, span = self._queue.popleft()
            by_scope.setdefault(scope, []).append(span)
        scopes = [ScopeSpans(scope=InstrumentationScope(name=name), spans=spans) for name, spans in by_scope.items()]
        return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=self.resource, scope_spans=scopes)])

    async def _export_batch(self) -> None:
        request = self._batch()
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.stats.exports += 1
        if await self.transport.export(request.SerializeToString()):
            self.stats.exported += count
        else:
            self.stats.failed += count

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is queued and stop (as the SDK does at exit); gives up after `timeout_s`."""
        self._stopping = True
        self._full.set()
        if self._task is None:
            self.start()
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
