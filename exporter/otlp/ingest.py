"""Protocol-neutral ingest: a body in, the OTLP response out. Shared by the HTTP and gRPC receivers."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from exporter.otlp.decode import BodyDecodeError, DecodeRules, flatten
from exporter.requests.pipeline import SpanPipeline


class BodyTooLarge(ValueError):
    """The body, compressed or not, exceeds the configured limit."""


@dataclass(frozen=True)
class IngestResult:
    """How an accepted export request went: spans rejected or dropped, and the OTLP response."""

    response: ExportTraceServiceResponse
    rejected: int


def gunzip_limited(body: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) without ever producing more than `limit` bytes."""
    out = bytearray()
    data = body
    while data:
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += decomp.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise BodyDecodeError(f"invalid gzip body: {exc}") from exc
        if len(out) > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes after decompression")
        if not decomp.eof:
            if decomp.unconsumed_tail:
                raise BodyTooLarge(f"body exceeds {limit} bytes after decompression")
            raise BodyDecodeError("truncated gzip body")
        data = decomp.unused_data
    return bytes(out)


def ingest(
    request: ExportTraceServiceRequest,
    rules: DecodeRules,
    pipeline: SpanPipeline,
    protocol: str,
    peer: str | None = None,
) -> IngestResult:
    """Flatten a decoded request, queue it, and build the OTLP response (partial_success when spans were lost)."""
    batch = flatten(request, rules, peer)
    dropped = pipeline.submit(batch, protocol)
    rejected = sum(batch.rejected.values()) + dropped
    response = ExportTraceServiceResponse()
    if rejected:
        messages = list(batch.first_errors)
        if dropped:
            messages.append(f"{dropped} spans dropped: exporter queue full")
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message="; ".join(messages))
        )
    return IngestResult(response, rejected)
