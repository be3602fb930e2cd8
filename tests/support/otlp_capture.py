"""A trace backend stand-in for tests: an OTLP/gRPC server that keeps every span it is sent."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.procs import free_port


class CapturingBackend:
    """Receives OTLP/gRPC exports on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def _export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
        with self.lock:
            self.requests.append(request)
        return ExportTraceServiceResponse()

    @property
    def endpoint(self) -> str:
        """The endpoint to configure an OTLP/gRPC exporter with."""
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        """Every span received, with its resource attributes."""
        with self.lock:
            return [
                ({kv.key: kv.value.string_value for kv in rs.resource.attributes}, span)
                for r in self.requests
                for rs in r.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop(0)


def attributes(span: Span) -> dict[str, Any]:
    """A span's attributes as Python values."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [v.string_value for v in kv.value.array_value.values]
        else:
            out[kv.key] = getattr(kv.value, kind) if kind else None
    return out
