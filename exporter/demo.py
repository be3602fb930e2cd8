"""The built-in demo: the exporter fed by a replay of real vLLM 0.32 spans, printing what it sees."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from importlib import resources

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from exporter import catalog
from exporter.config import parse_address
from exporter.otlp_decode import REQUEST_SPAN_NAME
from exporter.quantiles import histogram_quantile
from exporter.server import Exporter

log = logging.getLogger(__name__)

SAMPLE = "vllm-0.32-cpu"
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")


def sample_request(name: str = "spans-7.pb") -> ExportTraceServiceRequest:
    """A real export request captured from vLLM 0.32 (package data)."""
    data = resources.files("exporter").joinpath("samples", SAMPLE, name).read_bytes()
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


class Replayer:
    """Builds export requests from the captured llm_request spans: fresh ids and times, gateway parents."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        captured = sample_request().resource_spans[0]
        self.resource = captured.resource
        self.scope = captured.scope_spans[0].scope
        self.templates = [s for s in captured.scope_spans[0].spans if s.name == REQUEST_SPAN_NAME]

    def batch(self, count: int, now_ns: int) -> ExportTraceServiceRequest:
        """`count` request spans ending about now; four in five get a gateway parent span naming a tenant."""
        requests: list[Span] = []
        gateways: list[Span] = []
        for _ in range(count):
            span = Span()
            span.CopyFrom(self.rng.choice(self.templates))
            duration = span.end_time_unix_nano - span.start_time_unix_nano
            span.trace_id = self.rng.randbytes(16)
            span.span_id = self.rng.randbytes(8)
            span.end_time_unix_nano = now_ns
            span.start_time_unix_nano = now_ns - duration
            if self.rng.random() < 0.8:
                gateway = Span(
                    trace_id=span.trace_id,
                    span_id=self.rng.randbytes(8),
                    name="gateway /v1/completions",
                    kind=Span.SpanKind.SPAN_KIND_SERVER,
                    start_time_unix_nano=span.start_time_unix_nano - 1_000_000,
                    end_time_unix_nano=now_ns + 1_000_000,
                    attributes=[KeyValue(key="tenant.id", value=AnyValue(string_value=self.rng.choice(TENANTS)))],
                )
                span.parent_span_id = gateway.span_id
                gateways.append(gateway)
            requests.append(span)
        return ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=self.resource, scope_spans=[ScopeSpans(scope=self.scope, spans=requests)]),
                ResourceSpans(scope_spans=[ScopeSpans(spans=gateways)]),
            ]
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def summary_table(exporter: Exporter) -> str:
    """Per model and tenant: requests, tokens, TTFT and TPOT p50/p95 (ms), from the exporter's own state."""
    agg = exporter.pipeline.aggregator
    rows = []
    with exporter.pipeline.lock:
        for (model, tenant), series in sorted(agg.series.items()):
            ttft = series.histograms[catalog.TTFT.name]
            tpot = series.histograms[catalog.TPOT.name]
            tb, pb = agg.buckets[catalog.TTFT.name], agg.buckets[catalog.TPOT.name]
            rows.append(
                (
                    model,
                    tenant,
                    str(series.requests),
                    str(series.input_tokens),
                    str(series.output_tokens),
                    _ms(histogram_quantile(0.5, tb, ttft.cumulative())),
                    _ms(histogram_quantile(0.95, tb, ttft.cumulative())),
                    _ms(histogram_quantile(0.5, pb, tpot.cumulative())),
                    _ms(histogram_quantile(0.95, pb, tpot.cumulative())),
                )
            )
    header = (
        "model",
        "tenant",
        "requests",
        "tokens in",
        "tokens out",
        "TTFT p50",
        "TTFT p95",
        "TPOT p50",
        "TPOT p95",
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(lines) + "\n(latencies in ms, estimated from the exported histograms)"


async def run_demo(exporter: Exporter, duration: float, rate: float, seed: int, interval: float) -> None:
    """Start the exporter, replay spans into it over OTLP/HTTP at `rate`, print tables until done or Ctrl-C."""
    from exporter.server import run_until_signalled

    stop = asyncio.Event()
    runner = asyncio.create_task(run_until_signalled(exporter, stop))
    while exporter.readiness() is not None:
        if runner.done():
            await runner  # raises the start-up error
            return
        await asyncio.sleep(0.05)
    host, port = parse_address(exporter.settings.otlp_http_listen_address)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{port}/v1/traces"
    web_host, web_port = parse_address(exporter.settings.web_listen_address)
    print(
        f"demo: exporter up; metrics at http://{'127.0.0.1' if web_host == '0.0.0.0' else web_host}:{web_port}"
        f"/metrics; replaying real vLLM spans to {url} at {rate:g}/s. Ctrl-C stops.",
        flush=True,
    )
    replayer = Replayer(seed)
    started = last_print = time.monotonic()
    tick = 0.5
    owed = 0.0
    try:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set() and (duration <= 0 or time.monotonic() - started < duration):
                owed += rate * tick
                count, owed = int(owed), owed - int(owed)
                if count:
                    body = replayer.batch(count, time.time_ns()).SerializeToString()
                    async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                        if r.status != 200:
                            log.warning("demo: export answered %s", r.status)
                if time.monotonic() - last_print >= interval:
                    last_print = time.monotonic()
                    print(summary_table(exporter), flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
    finally:
        stop.set()
        await runner
        print(summary_table(exporter))
        print("demo: stopped the exporter and the replay.", flush=True)
