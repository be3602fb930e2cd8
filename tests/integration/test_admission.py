"""Admission control: at most N exports decoded at once, a memory ceiling, refusals fast, retryable and counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]

from exporter.otlp import grpc_receiver as otlp_grpc
from exporter.otlp.decode import DecodeRules
from exporter.otlp.http_receiver import OtlpHttpReceiver
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.service.admission import Admission, cgroup_memory_limit
from tests.support.otlp import request_of, sample_request_spans
from tests.support.procs import free_port

MIB = 1 << 20
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_max_concurrent_exports_are_admitted() -> None:
    admission = Admission(2, 0, lambda: 0)
    assert admission.try_enter() is None and admission.try_enter() is None
    assert admission.try_enter() == "overloaded"
    admission.leave()
    assert admission.try_enter() is None
    assert admission.in_progress == 2


def test_near_the_memory_limit_exports_are_refused_only_while_spans_are_queued() -> None:
    rss, queued, clock = [50 * MIB], [0], Clock()
    admission = Admission(8, 100 * MIB, lambda: queued[0], rss=lambda: rss[0], clock=clock)
    assert admission.try_enter() is None
    rss[0] = 95 * MIB  # over 90 % of the limit, but read at most every 0.25 s
    assert admission.try_enter() is None
    clock.now += 0.3
    assert admission.try_enter() is None  # nothing queued: new batches reuse the memory the drained ones left
    queued[0] = 512
    assert admission.try_enter() == "memory_limit"
    rss[0] = 80 * MIB
    clock.now += 0.3
    assert admission.try_enter() is None


@pytest.mark.parametrize(
    ("v2", "v1", "want"),
    [("268435456\n", None, 256 * MIB), ("max\n", None, 0), (None, "9223372036854771712\n", 0), (None, "1048576", MIB)],
)
def test_memory_limit_from_the_cgroup(tmp_path: Path, v2: str | None, v1: str | None, want: int) -> None:
    files = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(files, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text)
    assert cgroup_memory_limit(files) == want


def test_no_cgroup_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit((tmp_path / "none",)) == 0


def body() -> bytes:
    return request_of(sample_request_spans()).SerializeToString()


def test_http_export_refused_fast_with_503_retry_after_and_counted() -> None:
    async def main() -> None:
        pipeline = SpanPipeline(PipelineOptions())
        admission = Admission(1, 0, lambda: pipeline.queue_depth)
        receiver = OtlpHttpReceiver(pipeline, DecodeRules(), 1 << 20, admission, pipeline.stats)
        async with TestClient(TestServer(receiver.app())) as client:
            assert admission.try_enter() is None  # the one slot is taken
            refused = await client.post("/v1/traces", data=body(), headers={"Content-Type": "application/x-protobuf"})
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            status = status_pb2.Status.FromString(await refused.read())
            assert status.code == code_pb2.UNAVAILABLE and "overloaded" in status.message
            assert pipeline.queue_depth == 0  # not decoded
            admission.leave()
            accepted = await client.post("/v1/traces", data=body(), headers={"Content-Type": "application/x-protobuf"})
            assert accepted.status == 200
        assert pipeline.stats.batches_rejected == {("http", "overloaded"): 1}
        assert pipeline.queue_depth == len(sample_request_spans())
        assert admission.in_progress == 0
        admission.close()

    asyncio.run(main())


def test_grpc_export_refused_with_unavailable_and_counted() -> None:
    async def main() -> None:
        pipeline = SpanPipeline(PipelineOptions())
        admission = Admission(1, 0, lambda: pipeline.queue_depth)
        port = free_port()
        server = otlp_grpc.server(
            otlp_grpc.OtlpGrpcReceiver(pipeline, DecodeRules(), admission, pipeline.stats), f"127.0.0.1:{port}", 1 << 20
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                export = channel.unary_unary(EXPORT)
                assert admission.try_enter() is None
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await export(body(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                admission.leave()
                await export(body(), timeout=5)
        finally:
            await server.stop(None)
        assert pipeline.stats.batches_rejected == {("grpc", "overloaded"): 1}
        assert pipeline.queue_depth == len(sample_request_spans())
        admission.close()

    asyncio.run(main())


def test_exports_are_refused_when_the_waiting_ones_would_take_longer_than_max_wait() -> None:
    admission = Admission(64, 0, lambda: 0, max_wait_s=0.25)  # (the default is 0.1 s)
    admission.decode_s = 0.02  # recent exports took 20 ms each to decode
    admitted = 0
    while admission.try_enter() is None:
        admitted += 1
    assert admitted == 13  # 13 waiting = 0.26 s of work: the 14th is refused
    admission.decode_s = 0.001  # small exports: many more fit, up to the hard cap
    while admission.try_enter() is None:
        admitted += 1
    assert admitted == 64


def test_decode_times_feed_the_estimate() -> None:
    async def main() -> None:
        admission = Admission(64, 0, lambda: 0)
        for _ in range(20):
            await admission.decode(lambda: time.sleep(0.01))
        assert 0.008 < admission.decode_s < 0.05
        admission.close()

    asyncio.run(main())


def test_four_waiting_exports_are_always_admitted_even_after_slow_decodes() -> None:
    admission = Admission(64, 0, lambda: 0, max_wait_s=0.1)
    admission.decode_s = 0.5  # a flood left the estimate high
    assert [admission.try_enter() for _ in range(5)] == [None, None, None, None, "overloaded"]


def test_exports_are_refused_while_the_queue_is_past_half_full() -> None:
    queued = [0]
    admission = Admission(64, 0, lambda: queued[0], queue_capacity=1000)
    assert admission.try_enter() is None
    admission.leave()
    queued[0] = 501  # the worker is falling behind: taken now, this export could be dropped after its ack
    assert admission.try_enter() == "overloaded"
    queued[0] = 500
    assert admission.try_enter() is None
    admission.leave()
    admission.close()
