"""OTLP/HTTP trace receiver: POST /v1/traces, protobuf or JSON, gzip or not (aiohttp)."""

from __future__ import annotations

import logging

from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]

from exporter.otlp.decode import BodyDecodeError, DecodeRules, parse_json, parse_protobuf
from exporter.otlp.ingest import BodyTooLarge, IngestResult, gunzip_limited, ingest
from exporter.requests.pipeline import SpanPipeline
from exporter.service.admission import Admission
from exporter.service.auth import TokenFile
from exporter.service.stats import ExporterStats

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
PROTOCOL = "http"


class OtlpHttpReceiver:
    """aiohttp handler that decodes, validates and queues, then answers at once."""

    def __init__(
        self,
        pipeline: SpanPipeline,
        rules: DecodeRules,
        max_body_bytes: int,
        admission: Admission,
        stats: ExporterStats,
        token: TokenFile | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.rules = rules
        self.max_body_bytes = max_body_bytes
        self.admission = admission
        self.stats = stats
        self.token = token

    def app(self) -> web.Application:
        """The aiohttp application serving POST /v1/traces."""
        # Decompress ourselves, bounded by the limit: aiohttp would inflate a gzip bomb before we could refuse it.
        app = web.Application(client_max_size=self.max_body_bytes, handler_args={"auto_decompress": False})
        app.router.add_post(TRACES_PATH, self.handle)
        return app

    def _error(
        self, status: int, code: int, reason: str, message: str, content_type: str, quiet: bool = False
    ) -> web.Response:
        self.stats.batch_rejected(PROTOCOL, reason)
        if not quiet:
            log.info("OTLP/HTTP export refused (%s): %s", reason, message)
        body = status_pb2.Status(code=code, message=message)
        headers = {"Retry-After": "1"} if status == 503 else None
        if content_type == JSON:
            return web.Response(status=status, text=json_format.MessageToJson(body), content_type=JSON, headers=headers)
        return web.Response(status=status, body=body.SerializeToString(), content_type=PROTOBUF, headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        """Handle one export request: authenticate, admit, decode, queue, answer."""
        if self.token is not None and not self.token.allows(request.headers.get("Authorization")):
            self.stats.refused("otlp_http")
            body = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message="missing or wrong bearer token")
            return web.Response(
                status=401,
                body=body.SerializeToString(),
                content_type=PROTOBUF,
                headers={"WWW-Authenticate": 'Bearer realm="otlp"'},
            )
        refusal = self.admission.try_enter()
        if refusal is not None:  # before reading the body: refusing must stay cheap (Admission logs a summary)
            kind = JSON if request.content_type == JSON else PROTOBUF
            return self._error(503, code_pb2.UNAVAILABLE, refusal, f"exporter {refusal}: retry later", kind, True)
        try:
            return await self._admitted(request)
        finally:
            self.admission.leave()

    async def _admitted(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            return self._error(
                415,
                code_pb2.INVALID_ARGUMENT,
                "unsupported_media_type",
                f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}",
                PROTOBUF,
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            return self._error(
                415,
                code_pb2.INVALID_ARGUMENT,
                "unsupported_encoding",
                f"unsupported Content-Encoding {encoding!r}: use gzip or none",
                content_type,
            )
        too_large = f"body exceeds the limit of {self.max_body_bytes} bytes"
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._error(413, code_pb2.RESOURCE_EXHAUSTED, "too_large", too_large, content_type)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, code_pb2.RESOURCE_EXHAUSTED, "too_large", too_large, content_type)
        remote = request.remote

        def decode_and_ingest() -> IngestResult:
            raw = gunzip_limited(body, self.max_body_bytes) if encoding == "gzip" else body
            decoded = parse_json(raw) if content_type == JSON else parse_protobuf(raw)
            return ingest(decoded, self.rules, self.pipeline, PROTOCOL, remote)

        try:
            result = await self.admission.decode(decode_and_ingest)
        except BodyTooLarge as exc:
            return self._error(413, code_pb2.RESOURCE_EXHAUSTED, "too_large", str(exc), content_type)
        except BodyDecodeError as exc:
            return self._error(400, code_pb2.INVALID_ARGUMENT, "decode_error", str(exc), content_type)
        if content_type == JSON:
            return web.Response(text=json_format.MessageToJson(result.response, indent=None), content_type=JSON)
        return web.Response(body=result.response.SerializeToString(), content_type=PROTOBUF)
