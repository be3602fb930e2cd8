"""Baseline OTLP trace receiver for bench_ingest.py: parses each export request body and discards it.

It serves the same two endpoints as the exporter, with the same libraries (aiohttp for POST /v1/traces,
grpc.aio for TraceService/Export), but only runs ExportTraceServiceRequest.ParseFromString before answering,
so its cost is the floor that any Python receiver built on these libraries pays.

    python -m benchmarks.bare_receiver --http 127.0.0.1:4318 --grpc 127.0.0.1:4317

Prints "ready" on stdout once both listeners are bound; SIGTERM or SIGINT stops it. It also takes the exporter's
own flags for its addresses (--otlp.http.listen-address, --otlp.grpc.listen-address, and --web.listen-address,
where it then answers GET /readyz once both listeners are bound), so the harness that starts the exporter
(tests.support.procs.ExporterProcess) starts it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_BODY_BYTES = 16 * 1024 * 1024  # the exporter's default otlp.max-body-bytes
EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT to (host, port)."""
    host, _, port = address.rpartition(":")
    return host, int(port)


async def handle_http(request: web.Request) -> web.Response:
    """POST /v1/traces: parse the protobuf body, drop it, answer an empty ExportTraceServiceResponse."""
    body = await request.read()
    ExportTraceServiceRequest().ParseFromString(body)
    return web.Response(body=EMPTY_RESPONSE, content_type="application/x-protobuf")


async def handle_grpc(body: bytes, context: Any) -> ExportTraceServiceResponse:
    """TraceService/Export on raw bytes (as the exporter takes them): parse, drop, answer."""
    ExportTraceServiceRequest().ParseFromString(body)
    return ExportTraceServiceResponse()


async def handle_ready(request: web.Request) -> web.Response:
    """GET /readyz: both listeners are bound (the web address is bound after them)."""
    return web.Response(text="ready\n")


async def serve(http_address: str, grpc_address: str, web_address: str | None = None) -> None:
    """Run both listeners (and /readyz on `web_address`) until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/traces", handle_http)
    if web_address:
        app.router.add_get("/readyz", handle_ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_address(http_address)
    await web.TCPSite(runner, host, port, reuse_address=True).start()

    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", MAX_BODY_BYTES), ("grpc.so_reuseport", 0)],
    )
    method = grpc.unary_unary_rpc_method_handler(
        handle_grpc,
        request_deserializer=None,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": method}),))
    if server.add_insecure_port(grpc_address) == 0:
        raise OSError(f"cannot listen on {grpc_address}")
    await server.start()
    if web_address:  # bound last: answering there means both listeners are
        host, port = split_address(web_address)
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1.0)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", "--otlp.http.listen-address", required=True, metavar="HOST:PORT", help="OTLP/HTTP")
    parser.add_argument("--grpc", "--otlp.grpc.listen-address", required=True, metavar="HOST:PORT", help="OTLP/gRPC")
    parser.add_argument("--web.listen-address", dest="web", metavar="HOST:PORT", help="GET /readyz here when ready")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.http, args.grpc, args.web))
    return 0


if __name__ == "__main__":
    sys.exit(main())
