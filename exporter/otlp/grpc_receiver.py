"""OTLP/gRPC trace receiver: opentelemetry.proto.collector.trace.v1.TraceService/Export (grpc.aio)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter.otlp.decode import BodyDecodeError, DecodeRules, parse_protobuf
from exporter.otlp.ingest import ingest
from exporter.requests.pipeline import SpanPipeline
from exporter.service.admission import Admission
from exporter.service.auth import TokenFile
from exporter.service.stats import ExporterStats

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOCOL = "grpc"


class OtlpGrpcReceiver:
    """Takes raw request bytes so an undecodable body gets INVALID_ARGUMENT, not an opaque internal error."""

    def __init__(
        self,
        pipeline: SpanPipeline,
        rules: DecodeRules,
        admission: Admission,
        stats: ExporterStats,
        token: TokenFile | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.rules = rules
        self.admission = admission
        self.stats = stats
        self.token = token

    async def export(self, body: bytes, context: Any) -> ExportTraceServiceResponse:
        """Handle one Export call."""
        if self.token is not None:
            metadata = dict(context.invocation_metadata() or ())
            if not self.token.allows(metadata.get("authorization")):
                self.stats.refused("otlp_grpc")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        refusal = self.admission.try_enter()
        if refusal is not None:  # UNAVAILABLE: OTLP exporters retry it with back-off (Admission logs a summary)
            self.stats.batch_rejected(PROTOCOL, refusal)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"exporter {refusal}: retry later")
        try:
            return await self._admitted(body, context)
        finally:
            self.admission.leave()

    async def _admitted(self, body: bytes, context: Any) -> ExportTraceServiceResponse:
        peer = context.peer()
        try:
            result = await self.admission.decode(
                lambda: ingest(parse_protobuf(body), self.rules, self.pipeline, PROTOCOL, peer)
            )
        except BodyDecodeError as exc:
            self.stats.batch_rejected(PROTOCOL, "decode_error")
            log.info("OTLP/gRPC export refused (decode_error): %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
        return result.response

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server."""
        method = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=None,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})


def server(
    receiver: OtlpGrpcReceiver,
    address: str,
    max_message_bytes: int,
    credentials: grpc.ServerCredentials | None = None,
) -> grpc.aio.Server:
    """A grpc.aio server with the receiver bound to `address` (over TLS with `credentials`); larger messages get
    RESOURCE_EXHAUSTED."""
    srv = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    srv.add_generic_rpc_handlers((receiver.handler(),))
    port = srv.add_insecure_port(address) if credentials is None else srv.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return srv
