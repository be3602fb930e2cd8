"""End-to-end OTLP ingest throughput of the exporter, against a bare parse-and-discard receiver.

Batches of 512 vLLM `llm_request` spans (the real captured spans, each with a fresh trace and span id and one
of ~20 tenants as a `tenant.id` span attribute) are sent over OTLP/HTTP (protobuf) and OTLP/gRPC, a few
requests in flight, to `llm-token-exporter serve` running in its own process pinned to CPU 0. Throughput is
spans / (first send .. the moment `llm_requests_total` on /metrics has counted all of them). The baseline is
benchmarks/bare_receiver.py on the same core, which only parses each body; for it "counted" means "answered".
The load generator (this process) runs pinned to CPU 1 and pre-builds every request body before timing.

    .venv/bin/python -m benchmarks.bench_ingest [--batches 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporter.sim.replay import Replayer
from tests.support.procs import ExporterProcess, own_cpu_seconds, proc_stats, wait_for_async
from tests.support.prom import total

HERE = Path(__file__).resolve().parent
BARE_RECEIVER = HERE / "bare_receiver.py"
SERVER_CPU = 0
CLIENT_CPU = 1
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOCOLS = ("http", "grpc")

Sender = Callable[[bytes], Awaitable[int]]  # sends one body, returns spans the server said it rejected


class BenchError(RuntimeError):
    """The benchmark could not produce a valid number (dropped spans, a timeout, a server that died)."""


# --- workload ---------------------------------------------------------------------------------------------


def build_bodies(count: int, spans_per_batch: int, tenants: int, seed: int) -> list[bytes]:
    """`count` serialized export requests of `spans_per_batch` llm_request spans each, all ids unique."""
    replayer = Replayer(seed)
    rng = random.Random(seed)
    tenant_values = [AnyValue(string_value=f"tenant-{i:02d}") for i in range(tenants)]
    templates = replayer.templates
    now_ns = time.time_ns()
    bodies = []
    for _ in range(count):
        spans = []
        for _ in range(spans_per_batch):
            span = Span()
            span.CopyFrom(rng.choice(templates))
            duration = span.end_time_unix_nano - span.start_time_unix_nano
            span.trace_id = rng.randbytes(16)
            span.span_id = rng.randbytes(8)
            span.end_time_unix_nano = now_ns
            span.start_time_unix_nano = now_ns - duration
            span.attributes.append(KeyValue(key="tenant.id", value=rng.choice(tenant_values)))
            spans.append(span)
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=replayer.resource,  # service.name = the model label
                    scope_spans=[ScopeSpans(scope=replayer.scope, spans=spans)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    return bodies


# --- processes --------------------------------------------------------------------------------------------


def start_server(kind: str, log_path: Path) -> ExporterProcess:
    """The exporter, or the bare receiver (`kind`), pinned to SERVER_CPU on free loopback ports, ready."""
    command = [sys.executable, str(BARE_RECEIVER)] if kind == "bare" else []
    extra = ["--log.level", "warning"] if kind == "exporter" else []
    try:
        return ExporterProcess(extra, command=command, cpus=str(SERVER_CPU), log_path=log_path, stop_timeout=5.0)
    except RuntimeError as exc:
        raise BenchError(f"{kind}: {exc}") from exc


def check_alive(kind: str, server: ExporterProcess) -> None:
    """Raise BenchError if the server exited."""
    if server.proc.poll() is not None:
        raise BenchError(f"{kind} exited with {server.proc.returncode}:\n{server.output()[-4000:]}")


# --- load generation --------------------------------------------------------------------------------------


async def send_all(bodies: Sequence[bytes], send: Sender, concurrency: int) -> int:
    """Send every body with at most `concurrency` requests in flight; returns spans reported rejected."""
    it = iter(bodies)
    rejected = 0

    async def worker() -> None:
        nonlocal rejected
        for body in it:
            rejected += await send(body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rejected


def http_sender(session: aiohttp.ClientSession, port: int) -> Sender:
    """POST /v1/traces with a protobuf body; fails on any non-200."""
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}

    async def send(body: bytes) -> int:
        async with session.post(url, data=body, headers=headers) as r:
            payload = await r.read()
            if r.status != 200:
                raise BenchError(f"OTLP/HTTP export answered {r.status}: {payload[:200]!r}")
        response = ExportTraceServiceResponse.FromString(payload)
        return int(response.partial_success.rejected_spans)

    return send


def grpc_sender(channel: Any) -> Sender:
    """TraceService/Export with the pre-serialized body as the request bytes."""
    export = channel.unary_unary(
        EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
    )

    async def send(body: bytes) -> int:
        try:
            response = await export(body, timeout=60)
        except grpc.RpcError as exc:
            raise BenchError(f"OTLP/gRPC export failed: {exc}") from exc
        return int(response.partial_success.rejected_spans)

    return send


@dataclass
class Counts:
    """What the exporter's /metrics said."""

    requests: float
    dropped: float
    rejected: float


async def scrape(session: aiohttp.ClientSession, server: ExporterProcess) -> Counts:
    """One GET /metrics of the exporter."""
    async with session.get(server.url("/metrics")) as r:
        text = await r.text()
    return Counts(
        total(text, "llm_requests_total", parse_all=False),
        total(text, "llm_exporter_spans_dropped_total", parse_all=False),
        total(text, "llm_exporter_spans_rejected_total", parse_all=False),
    )


async def wait_counted(
    session: aiohttp.ClientSession, server: ExporterProcess, expected: int, timeout: float, interval: float
) -> int:
    """Poll /metrics until llm_requests_total sums to `expected`; returns the number of scrapes made."""
    scrapes = 0
    counted = 0.0

    async def complete() -> bool:
        nonlocal scrapes, counted
        check_alive("exporter", server)
        counts = await scrape(session, server)
        scrapes += 1
        counted = counts.requests
        if counts.dropped or counts.rejected:
            raise BenchError(
                f"exporter lost spans: llm_exporter_spans_dropped_total={counts.dropped:g}, "
                f"llm_exporter_spans_rejected_total={counts.rejected:g} (llm_requests_total={counts.requests:g} "
                f"of {expected})"
            )
        if counts.requests > expected:
            raise BenchError(f"llm_requests_total={counts.requests:g} exceeds the {expected} spans sent")
        return counts.requests == expected

    try:
        await wait_for_async(complete, timeout, "llm_requests_total", interval)
    except TimeoutError:
        raise BenchError(
            f"llm_requests_total reached only {counted:g} of {expected} within {timeout:g}s after the "
            "last acknowledgement"
        ) from None
    return scrapes


@dataclass
class Result:
    """One timed run of one server over one protocol."""

    server: str
    protocol: str
    spans: int
    elapsed_s: float  # first send .. counted (exporter) or answered (bare)
    acked_s: float  # first send .. last answer
    server_cpu_s: float
    client_cpu_s: float
    scrapes: int
    scrape_cpu_s: float  # exporter CPU per /metrics scrape, measured after the run

    @property
    def spans_per_s(self) -> float:
        """End-to-end throughput."""
        return self.spans / self.elapsed_s

    @property
    def cpu_us_per_span(self) -> float:
        """Server CPU microseconds per span."""
        return self.server_cpu_s / self.spans * 1e6


async def measure(
    kind: str, server: ExporterProcess, protocol: str, warmup: Sequence[bytes], bodies: Sequence[bytes], args: Any
) -> Result:
    """Warm up, then time sending `bodies` until they are counted (exporter) or answered (bare)."""
    spans_per_batch = args.spans_per_batch
    warm_spans = len(warmup) * spans_per_batch
    is_exporter = kind == "exporter"
    if not is_exporter:  # parse-only is ~20x faster: repeat the bodies so the CPU tick count means something
        bodies = list(bodies) * args.bare_passes
    spans = len(bodies) * spans_per_batch
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{server.grpc_port}",
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 << 20)],
        )
        try:
            send = http_sender(session, server.http_port) if protocol == "http" else grpc_sender(channel)
            async with aiohttp.ClientSession() as scraper:
                if await send_all(warmup, send, args.concurrency):
                    raise BenchError(f"{kind} rejected spans of the warm-up batches")
                if is_exporter:
                    await wait_counted(scraper, server, warm_spans, args.count_timeout, args.poll_interval)
                cpu0, client0 = proc_stats(server.pid).cpu_seconds, own_cpu_seconds()
                t0 = time.perf_counter()
                rejected = await send_all(bodies, send, args.concurrency)
                t_acked = time.perf_counter()
                if rejected:
                    raise BenchError(f"{kind} answered partial_success: {rejected} spans rejected or dropped")
                scrapes = 0
                if is_exporter:
                    scrapes = await wait_counted(
                        scraper, server, warm_spans + spans, args.count_timeout, args.poll_interval
                    )
                t_done = time.perf_counter()
                cpu1, client1 = proc_stats(server.pid).cpu_seconds, own_cpu_seconds()
                scrape_cpu = 0.0
                if is_exporter:  # what one scrape of this exporter costs, to see how much polling added
                    c0 = proc_stats(server.pid).cpu_seconds
                    for _ in range(20):
                        await scrape(scraper, server)
                    scrape_cpu = (proc_stats(server.pid).cpu_seconds - c0) / 20
        finally:
            await channel.close()
    check_alive(kind, server)
    return Result(kind, protocol, spans, t_done - t0, t_acked - t0, cpu1 - cpu0, client1 - client0, scrapes, scrape_cpu)


def run_one(kind: str, protocol: str, warmup: Sequence[bytes], bodies: Sequence[bytes], args: Any) -> Result:
    """Start a fresh server, measure, stop it (even on error); its log goes with it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        server = start_server(kind, Path(tmp) / "server.log")
        try:
            return asyncio.run(measure(kind, server, protocol, warmup, bodies, args))
        finally:
            server.stop()


# --- report -----------------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    """A markdown table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def median_run(results: list[Result]) -> Result:
    """The repeat with the median throughput."""
    ordered = sorted(results, key=lambda r: r.spans_per_s)
    return ordered[(len(ordered) - 1) // 2]


def report(results: dict[tuple[str, str], list[Result]], protocols: Sequence[str], args: Any) -> None:
    """Print the summary table and the details."""
    rows = [
        [
            "protocol",
            "exporter spans/s",
            "bare-parse spans/s",
            "exporter CPU µs/span",
            "bare CPU µs/span",
            "cost ratio",
            "wall-clock ratio",
        ]
    ]
    detail = [
        [
            "server",
            "protocol",
            "spans",
            "elapsed s",
            "acked spans/s",
            "drain after last ack s",
            "server CPU s",
            "server CPU s / 1000 spans",
            "server CPU util",
            "client CPU util",
            "scrapes (CPU ms each)",
        ]
    ]
    for protocol in protocols:
        ex, bare = median_run(results[("exporter", protocol)]), median_run(results[("bare", protocol)])
        rows.append(
            [
                "OTLP/HTTP (protobuf)" if protocol == "http" else "OTLP/gRPC",
                f"{ex.spans_per_s:,.0f}",
                f"{bare.spans_per_s:,.0f}",
                f"{ex.cpu_us_per_span:.1f}",
                f"{bare.cpu_us_per_span:.1f}",
                f"{ex.cpu_us_per_span / bare.cpu_us_per_span:.2f}x",
                f"{bare.spans_per_s / ex.spans_per_s:.2f}x",
            ]
        )
        for kind in ("exporter", "bare"):
            for r in results[(kind, protocol)]:
                detail.append(
                    [
                        kind,
                        protocol,
                        f"{r.spans:,}",
                        f"{r.elapsed_s:.2f}",
                        f"{r.spans / r.acked_s:,.0f}",
                        f"{r.elapsed_s - r.acked_s:.3f}",
                        f"{r.server_cpu_s:.2f}",
                        f"{r.server_cpu_s / r.spans * 1000:.4f}",
                        f"{r.server_cpu_s / r.elapsed_s:.0%}",
                        f"{r.client_cpu_s / r.elapsed_s:.0%}",
                        f"{r.scrapes} ({r.scrape_cpu_s * 1000:.1f})" if kind == "exporter" else "-",
                    ]
                )
    print()
    print(
        f"## OTLP ingest: {args.batches} batches x {args.spans_per_batch} spans, {args.tenants} tenants, "
        f"{args.concurrency} in flight; server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"
    )
    print()
    print(table(rows))
    print()
    print(
        "cost ratio = exporter CPU per span / bare-parse CPU per span; wall-clock ratio = bare-parse spans/s / "
        "exporter spans/s. Exporter: first send .. llm_requests_total complete on /metrics; bare: first send .. "
        f"last answer.{' Median of ' + str(args.repeat) + ' runs.' if args.repeat > 1 else ''}"
    )
    print()
    print(table(detail))


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=200, help="timed batches per run (default 200)")
    p.add_argument("--spans", type=int, default=None, help="timed spans per run (overrides --batches)")
    p.add_argument("--spans-per-batch", type=int, default=512, help="spans per export request (default 512)")
    p.add_argument("--warmup-batches", type=int, default=8, help="untimed batches sent first (default 8)")
    p.add_argument("--concurrency", type=int, default=4, help="export requests in flight (default 4)")
    p.add_argument("--tenants", type=int, default=20, help="distinct tenant.id values (default 20)")
    p.add_argument(
        "--bare-passes", type=int, default=5, help="times the bare receiver gets the timed batches (default 5)"
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per server and protocol, median shown (default 3)")
    p.add_argument("--protocols", default="http,grpc", help="comma-separated: http, grpc (default both)")
    p.add_argument("--count-timeout", type=float, default=60.0, help="seconds to wait for the count (default 60)")
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between /metrics polls")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.spans is not None:
        args.batches = max(1, -(-args.spans // args.spans_per_batch))
    return args


def pin_to_client_cpu() -> None:
    """Run the load generator on CLIENT_CPU, away from the server's core."""
    available = os.sched_getaffinity(0)
    if {SERVER_CPU, CLIENT_CPU} <= available:
        os.sched_setaffinity(0, {CLIENT_CPU})
    else:
        print(f"warning: CPUs {SERVER_CPU} and {CLIENT_CPU} not both available ({sorted(available)}); not pinning")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    protocols = [p for p in args.protocols.split(",") if p]
    if not protocols or any(p not in PROTOCOLS for p in protocols):
        print(f"--protocols must name some of {PROTOCOLS}", file=sys.stderr)
        return 2
    pin_to_client_cpu()
    t = time.perf_counter()
    # Every span id is unique within a run; each run has a fresh server process (and so a fresh dedup
    # window), so all runs can send the same bodies.
    bodies = build_bodies(args.warmup_batches + args.batches, args.spans_per_batch, args.tenants, args.seed)
    warmup, timed = bodies[: args.warmup_batches], bodies[args.warmup_batches :]
    size = statistics.mean(len(b) for b in bodies)
    print(
        f"built {len(bodies)} bodies of {args.spans_per_batch} spans ({size / 1024:.0f} KiB each) in "
        f"{time.perf_counter() - t:.1f}s",
        flush=True,
    )
    runs = [(kind, protocol) for protocol in protocols for _ in range(args.repeat) for kind in ("bare", "exporter")]
    results: dict[tuple[str, str], list[Result]] = {}
    try:
        for kind, protocol in runs:
            r = run_one(kind, protocol, warmup, timed, args)
            results.setdefault((kind, protocol), []).append(r)
            print(
                f"{kind:8s} {protocol:4s}: {r.spans_per_s:10,.0f} spans/s, {r.cpu_us_per_span:6.1f} CPU µs/span "
                f"({r.elapsed_s:.2f}s)",
                flush=True,
            )
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    report(results, protocols, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
