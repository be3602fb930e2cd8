"""Load generator for the ingest and soak benchmarks: vLLM-shaped llm_request spans over OTLP as fast as asked,
optionally with simulated vLLM /metrics endpoints for the exporter to scrape.

Spans are built once per batch template (with the simulator's span builder, so they have vLLM 0.32's exact
shape) and given fresh trace and span ids on every send, so the exporter's de-duplication never drops them.
At the end it reports the achieved rate (spans the exporter acknowledged per second) and, given the exporter's
/metrics URL, what the exporter accepted, rejected and dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from exporter.sim.senders import Transport, transport
from exporter.sim.spans import SCOPE, RequestTiming, VllmProcess, export_request, request_span
from exporter.sim.view import Scrape
from exporter.sim.vllm_server import SyntheticEngine, VllmHttpServer
from exporter.sim.workload import LengthDist

SELF_METRICS = (
    "llm_exporter_spans_accepted_total",
    "llm_exporter_spans_rejected_total",
    "llm_exporter_spans_dropped_total",
    "llm_requests_total",
)


@dataclass(frozen=True)
class LoadOptions:
    """What to send, where, how fast."""

    rate: float = 20_000.0  # spans per second
    duration: float = 30.0
    protocol: str = "grpc"
    endpoint: str = "127.0.0.1:4317"  # host:port (grpc) or http://host:port/v1/traces (http)
    batch_size: int = 512  # spans per export request (vLLM's BatchSpanProcessor sends up to 512)
    concurrency: int = 4  # exports in flight (one per simulated vLLM process)
    models: int = 2
    tenants: int = 20
    metrics_url: str | None = None  # the exporter's /metrics, to report its accepted, rejected and dropped spans
    scrape_targets: int = 0  # simulated vLLM /metrics endpoints to serve
    scrape_base_port: int = 0  # their first port (0: free ports)
    seed: int = 1
    tag: str = ""  # in model and tenant names (loadgen-model-<tag><i>, tenant-<tag><j>): a new set per tag
    body_pool: int = 0  # >0: serialize this many bodies up front and patch fresh ids into copies (far more load)


@dataclass
class LoadReport:
    """The outcome of a run."""

    target_rate: float
    seconds: float = 0.0
    spans_sent: int = 0
    spans_acked: int = 0
    spans_failed: int = 0
    exports: int = 0
    achieved_rate: float = 0.0  # acknowledged spans per second
    ack_p50_ms: float = 0.0  # time from sending an export to its answer (accepted or refused)
    ack_p99_ms: float = 0.0
    ack_max_ms: float = 0.0
    exporter: dict[str, float] = field(default_factory=dict)  # deltas of the exporter's self metrics

    def text(self) -> str:
        """A one-screen summary."""
        lines = [
            f"loadgen: {self.spans_sent} spans in {self.exports} exports over {self.seconds:.1f} s",
            f"loadgen: achieved {self.achieved_rate:,.0f} spans/s acknowledged (target {self.target_rate:,.0f}); "
            f"{self.spans_failed} spans in failed or refused exports; answer time p50 {self.ack_p50_ms:.1f} ms, "
            f"p99 {self.ack_p99_ms:.1f} ms, max {self.ack_max_ms:.1f} ms",
        ]
        if self.exporter:
            lines.append(
                "loadgen: exporter during the run: "
                + ", ".join(f"{k.removeprefix('llm_exporter_')} +{v:,.0f}" for k, v in self.exporter.items())
            )
        return "\n".join(lines)


def _model(i: int, tag: str = "") -> str:
    return f"loadgen-model-{tag}{i}"


class Batches:
    """Export request bodies of `size` llm_request spans, one template per model, fresh ids per body."""

    def __init__(self, size: int, models: int, tenants: int, seed: int, tag: str = "") -> None:
        rng = random.Random(seed)
        prompt, output = LengthDist(600, 0.8, 4, 8192), LengthDist(150, 0.8, 1, 2048)
        self.templates: list[ExportTraceServiceRequest] = []
        self.processes = [VllmProcess(_model(m, tag), f"loadgen-{m}", 10_000 + m) for m in range(models)]
        now = time.time()
        for process in self.processes:
            spans = []
            for i in range(size):
                p, o = prompt.sample(rng), output.sample(rng)
                queue, prefill, decode = rng.expovariate(50), 2e-5 * p + 0.01, 0.012 * o
                t = now - 5.0
                timing = RequestTiming(
                    t,
                    t + 0.001,
                    t + 0.001 + queue,
                    t + 0.001 + queue + prefill,
                    t + 0.001 + queue + prefill + decode,
                    p,
                    o,
                    f"cmpl-{rng.randbytes(8).hex()}-0",
                    1024,
                    0.7,
                    1.0,
                )
                span = request_span(timing, b"\0" * 16, b"\0" * 8)
                # The tenant on the span itself (no gateway spans): every span sent is a request span.
                span.attributes.append(
                    KeyValue(key="tenant.id", value=AnyValue(string_value=f"tenant-{tag}{i % tenants}"))
                )
                spans.append(span)
            self.templates.append(export_request(process.resource(), SCOPE, spans))
        self._next = 0
        self._pool: list[tuple[int, bytes, list[int]]] = []

    def fill_pool(self, count: int) -> None:
        """Serialize `count` bodies now and note where each span's ids sit in them: body() then copies one and
        writes fresh ids in place (0.7 ms a 512-span body against 1.1 ms to serialize), so one core offers
        several times what the exporter takes, every span still unique."""
        pool = []
        for _ in range(count):
            index, body = self._serialize()
            spans = self.templates[index].resource_spans[0].scope_spans[0].spans
            offsets = [body.index(span.trace_id) for span in spans] + [body.index(span.span_id) for span in spans]
            pool.append((index, body, offsets))
        self._pool = pool
        self._next = 0

    def body(self) -> tuple[int, bytes]:
        """The next body (round-robin over models) and the index of its model."""
        if not self._pool:
            return self._serialize()
        index, template, offsets = self._pool[self._next % len(self._pool)]
        self._next += 1
        body = bytearray(template)
        half = len(offsets) // 2
        fresh = os.urandom(16 * half + 8 * half)
        for j, at in enumerate(offsets[:half]):
            body[at : at + 16] = fresh[16 * j : 16 * j + 16]
        base = 16 * half
        for j, at in enumerate(offsets[half:]):
            body[at : at + 8] = fresh[base + 8 * j : base + 8 * j + 8]
        return index, bytes(body)

    def _serialize(self) -> tuple[int, bytes]:
        index = self._next % len(self.templates)
        self._next += 1
        request = self.templates[index]
        spans = request.resource_spans[0].scope_spans[0].spans
        ids = os.urandom(24 * len(spans))
        for j, span in enumerate(spans):
            span.trace_id = ids[24 * j : 24 * j + 16]
            span.span_id = ids[24 * j + 16 : 24 * j + 24]
        return index, request.SerializeToString()


class ScrapeTargets:
    """Simulated vLLM /metrics endpoints whose counters grow with the spans sent for their model."""

    def __init__(self, count: int, models: int, base_port: int) -> None:
        self.count, self.models, self.base_port = count, models, base_port
        self.engines = [SyntheticEngine(self.model(i)) for i in range(count)]
        self.ports: list[int] = []
        self._servers: list[VllmHttpServer] = []

    def model(self, i: int) -> str:
        """The model target `i` serves."""
        return _model(i % self.models)

    async def start(self) -> None:
        """Bind every endpoint on 127.0.0.1."""
        for i, engine in enumerate(self.engines):
            server = VllmHttpServer(engine.body, "127.0.0.1", self.base_port + i if self.base_port else 0)
            self.ports.append(await server.start())
            self._servers.append(server)

    def sent(self, model: int, spans: int) -> None:
        """Spans of `model` were acknowledged: its targets count the requests and tokens."""
        targets = [i for i in range(self.count) if i % self.models == model]
        for i in targets:
            counters = self.engines[i].stats.counters
            share = spans / len(targets)
            counters[("vllm:request_success", "length")] += share
            counters[("vllm:prompt_tokens", "")] += 600 * share
            counters[("vllm:generation_tokens", "")] += 150 * share

    def instances(self) -> list[dict[str, object]]:
        """The exporter's `instances` setting for these targets."""
        return [
            {"url": f"http://127.0.0.1:{p}", "model": self.model(i), "name": f"loadgen-{i}"}
            for i, p in enumerate(self.ports)
        ]

    async def stop(self) -> None:
        """Close every endpoint."""
        for server in self._servers:
            await server.stop()


async def _self_metrics(client: httpx.AsyncClient, url: str | None) -> dict[str, float]:
    if not url:
        return {}
    try:
        scrape = Scrape.parse((await client.get(url)).text, time.time())
    except httpx.HTTPError:
        return {}
    return {name: sum(scrape.sum_by(name, ()).values()) for name in SELF_METRICS}


async def run_load(options: LoadOptions, out: TextIO = sys.stdout) -> LoadReport:
    """Send spans at `options.rate` for `options.duration` seconds and report."""
    batches = Batches(options.batch_size, options.models, options.tenants, options.seed, options.tag)
    if options.body_pool:
        batches.fill_pool(options.body_pool)
    latencies: list[float] = []
    targets = ScrapeTargets(options.scrape_targets, options.models, options.scrape_base_port)
    if options.scrape_targets:
        await targets.start()
        print(f"loadgen: scrape targets (instances setting): {json.dumps(targets.instances())}", file=out, flush=True)
    sender: Transport = transport(options.protocol, options.endpoint)
    report = LoadReport(options.rate)
    interval = options.batch_size / options.rate
    slots = asyncio.Semaphore(options.concurrency)
    pending: set[asyncio.Task[None]] = set()

    async def send(model: int, body: bytes) -> None:
        sent_at = time.perf_counter()
        try:
            accepted = await sender.export(body)
            latencies.append(time.perf_counter() - sent_at)
            if accepted:
                report.spans_acked += options.batch_size
                targets.sent(model, options.batch_size)
            else:
                report.spans_failed += options.batch_size
        finally:
            slots.release()

    async with httpx.AsyncClient(timeout=5.0) as client:
        before = await _self_metrics(client, options.metrics_url)
        started = time.monotonic()
        next_at = started
        try:
            while time.monotonic() - started < options.duration:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                model, body = batches.body()
                report.spans_sent += options.batch_size
                report.exports += 1
                task = asyncio.get_running_loop().create_task(send(model, body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                # Behind schedule (the exporter or this process is the bottleneck): do not burst to catch up.
                next_at = max(next_at + interval, time.monotonic() - interval)
            await asyncio.gather(*pending)
        finally:
            report.seconds = time.monotonic() - started
            await sender.close()
        report.achieved_rate = report.spans_acked / report.seconds if report.seconds else 0.0
        if latencies:
            latencies.sort()
            report.ack_p50_ms = 1e3 * latencies[len(latencies) // 2]
            report.ack_p99_ms = 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            report.ack_max_ms = 1e3 * latencies[-1]
        if options.metrics_url:
            await asyncio.sleep(1.0)  # let the exporter's worker drain what it acknowledged
            after = await _self_metrics(client, options.metrics_url)
            report.exporter = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in SELF_METRICS if k in after}
    if options.scrape_targets:
        await targets.stop()
    print(report.text(), file=out, flush=True)
    return report


def report_json(report: LoadReport) -> str:
    """The report as one JSON line (for scripts)."""
    return json.dumps(asdict(report))
