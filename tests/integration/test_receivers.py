"""The OTLP receivers of a running exporter: equivalent encodings and protocols, and bad input refused right."""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from exporter.metrics import catalog
from tests.support.otlp import (
    HTTP_CAPTURE,
    fresh,
    kv,
    load,
    request_of,
    sample_request_spans,
    to_otlp_json,
    with_attribute,
)
from tests.support.procs import ExporterProcess, wait_for
from tests.support.prom import total

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def exporter() -> Iterator[ExporterProcess]:
    with ExporterProcess(["--otlp.max-body-bytes", str(LIMIT), "--tenant.join-window-seconds", "0"]) as proc:
        yield proc


def grpc_export(target: str, body: bytes, compression: grpc.Compression | None = None) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
        response: ExportTraceServiceResponse = call(body, timeout=10, compression=compression)
        return response


def _request_metrics(text: str) -> list[str]:
    """The per-request series of a scrape (self metrics carry the protocol and differ by design)."""
    keep = tuple(spec.name for spec in (*catalog.LATENCY_HISTOGRAMS, catalog.REQUESTS, catalog.TOKENS))
    return sorted(line for line in text.splitlines() if line.startswith(keep))


def _settled(proc: ExporterProcess, n: int) -> str:
    wait_for(lambda: total(proc.scrape(), catalog.REQUESTS.name) >= n, 10, f"{n} requests counted")
    return proc.scrape()


def test_protobuf_json_grpc_and_gzip_give_identical_metrics() -> None:
    bodies = [load(p) for p in HTTP_CAPTURE]
    scrapes = []
    for mode in ("protobuf", "json", "grpc", "gzip", "grpc-gzip"):
        with ExporterProcess(["--tenant.join-window-seconds", "0"]) as proc:
            for request in bodies:
                if mode == "protobuf":
                    r = httpx.post(proc.otlp_http_url, content=request.SerializeToString(), headers=PROTOBUF)
                elif mode == "json":
                    r = httpx.post(proc.otlp_http_url, content=to_otlp_json(request), headers=JSON)
                elif mode == "gzip":
                    r = httpx.post(
                        proc.otlp_http_url,
                        content=gzip.compress(request.SerializeToString()),
                        headers={**PROTOBUF, "Content-Encoding": "gzip"},
                    )
                else:
                    compression = grpc.Compression.Gzip if mode == "grpc-gzip" else None
                    grpc_export(proc.otlp_grpc_target, request.SerializeToString(), compression)
                    continue
                assert r.status_code == 200, r.text
            scrapes.append(_request_metrics(_settled(proc, 20)))
    assert len(scrapes[0]) > 100
    assert all(s == scrapes[0] for s in scrapes[1:])


def test_http_success_answers_with_an_export_response(exporter: ExporterProcess) -> None:
    rng = random.Random(10)
    body = request_of([fresh(s, rng) for s in sample_request_spans()]).SerializeToString()
    r = httpx.post(exporter.otlp_http_url, content=body, headers=PROTOBUF)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse.FromString(r.content)
    assert not response.HasField("partial_success")
    json_answer = httpx.post(exporter.otlp_http_url, content=to_otlp_json(request_of([])), headers=JSON)
    assert json_answer.status_code == 200 and json_answer.json() == {}


def test_partial_success_names_the_bad_spans_http_and_grpc(exporter: ExporterProcess) -> None:
    rng = random.Random(11)
    good = [fresh(s, rng) for s in sample_request_spans()[:5]]
    bad = [
        with_attribute(fresh(sample_request_spans()[0], rng), "gen_ai.latency.e2e", -1.0),
        with_attribute(fresh(sample_request_spans()[0], rng), "gen_ai.usage.prompt_tokens", "many"),
    ]
    before = exporter.scrape()
    r = httpx.post(exporter.otlp_http_url, content=request_of(good + bad).SerializeToString(), headers=PROTOBUF)
    assert r.status_code == 200
    partial = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_spans == 2
    assert "gen_ai.latency.e2e" in partial.error_message and "gen_ai.usage.prompt_tokens" in partial.error_message
    more_bad = [with_attribute(fresh(sample_request_spans()[0], rng), "gen_ai.latency.e2e", None)]
    grpc_partial = grpc_export(exporter.otlp_grpc_target, request_of(more_bad).SerializeToString()).partial_success
    assert grpc_partial.rejected_spans == 1 and "missing attribute" in grpc_partial.error_message
    after = _settled(exporter, int(total(before, catalog.REQUESTS.name)) + 5)
    for reason, n in (("invalid_value", 1), ("wrong_type", 1), ("missing_attribute", 1)):
        grew = total(after, catalog.SPANS_REJECTED.name, {"reason": reason}) - total(
            before, catalog.SPANS_REJECTED.name, {"reason": reason}
        )
        assert grew == n, reason


def _gzip_bomb(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)


BAD_BODIES = [
    ("truncated protobuf", load(HTTP_CAPTURE[-1]).SerializeToString()[:-7], PROTOBUF, 400, "decode_error"),
    ("random bytes", random.Random(0).randbytes(4096), PROTOBUF, 400, "decode_error"),
    ("invalid json", b'{"resourceSpans": [', JSON, 400, "decode_error"),
    ("json of the wrong shape", b'{"resourceSpans": {"a": 1}}', JSON, 400, "decode_error"),
    ("json array", b"[]", JSON, 400, "decode_error"),
    ("unknown content type", b"hello", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("unknown encoding", b"x", {**PROTOBUF, "Content-Encoding": "br"}, 415, "unsupported_encoding"),
    ("body over the limit", b"\0" * (LIMIT + 1), PROTOBUF, 413, "too_large"),
    ("gzip bomb", _gzip_bomb(64 * LIMIT), {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "too_large"),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "decode_error"),
]


@pytest.mark.parametrize(("what", "body", "headers", "status", "reason"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_http_bodies_are_refused_with_the_right_status_and_counted(
    exporter: ExporterProcess, what: str, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    where = {"protocol": "http", "reason": reason}
    before = total(exporter.scrape(), catalog.BATCHES_REJECTED.name, where)
    r = httpx.post(exporter.otlp_http_url, content=body, headers=headers)
    assert r.status_code == status, r.text
    if status != 415 or reason == "unsupported_encoding":
        parsed = (
            status_pb2.Status(**r.json())
            if headers["Content-Type"] == JSON.get("Content-Type")
            else status_pb2.Status.FromString(r.content)
        )
        assert parsed.message
    assert total(exporter.scrape(), catalog.BATCHES_REJECTED.name, where) == before + 1
    assert httpx.get(exporter.url("/readyz")).status_code == 200


def test_chunked_body_over_the_limit_is_refused(exporter: ExporterProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"\0" * (LIMIT // 2)

    r = httpx.post(exporter.otlp_http_url, content=chunks(), headers=PROTOBUF)
    assert r.status_code == 413


def test_grpc_undecodable_body_is_invalid_argument(exporter: ExporterProcess) -> None:
    before = total(exporter.scrape(), catalog.BATCHES_REJECTED.name, {"protocol": "grpc"})
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(exporter.otlp_grpc_target, os.urandom(2048))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert total(exporter.scrape(), catalog.BATCHES_REJECTED.name, {"protocol": "grpc"}) == before + 1


def test_grpc_message_over_the_limit_is_resource_exhausted(exporter: ExporterProcess) -> None:
    big = request_of([sample_request_spans()[0]])
    big.resource_spans[0].resource.attributes.append(kv("padding", "x" * (LIMIT + 10)))
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(exporter.otlp_grpc_target, big.SerializeToString())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_hundred_thousand_tenants_over_http_stay_under_the_cap() -> None:
    with ExporterProcess(["--tenant.cap", "200", "--tenant.join-window-seconds", "0"]) as proc:
        rng = random.Random(12)
        template = sample_request_spans()[0]
        for chunk in range(50):
            spans = [with_attribute(fresh(template, rng), "tenant.id", f"tenant-{chunk}-{i}") for i in range(2000)]
            r = httpx.post(
                proc.otlp_http_url, content=request_of(spans).SerializeToString(), headers=PROTOBUF, timeout=30
            )
            assert r.status_code == 200
        text = _settled(proc, 100_000)
        tenants = {
            line.split('tenant="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("llm_requests_total{")
        }
        assert len(tenants) == 201 and "other" in tenants
        assert total(text, catalog.LABEL_OVERFLOW.name, {"label": "tenant"}) == 100_000 - 200
        assert len(text.splitlines()) < 201 * 140 + 200


def test_empty_request_is_fine_over_both_protocols(exporter: ExporterProcess) -> None:
    assert httpx.post(exporter.otlp_http_url, content=b"", headers=PROTOBUF).status_code == 200
    assert grpc_export(exporter.otlp_grpc_target, ExportTraceServiceRequest().SerializeToString()) is not None


def test_oversized_headers_and_metadata_are_refused_before_any_work(exporter: ExporterProcess) -> None:
    body = request_of(sample_request_spans()).SerializeToString()
    huge = "x" * 20_000  # aiohttp's limit is 8190 bytes a header line, gRPC's 8 KiB of metadata by default
    r = httpx.post(exporter.otlp_http_url, content=body, headers={**PROTOBUF, "X-Padding": huge})
    assert r.status_code in (400, 431)
    r = httpx.get(exporter.url("/metrics"), headers={"X-Padding": huge})
    assert r.status_code in (400, 431)
    with grpc.insecure_channel(exporter.otlp_grpc_target) as channel:
        call = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            call(body, timeout=10, metadata=(("x-padding", huge),))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert httpx.get(exporter.url("/healthz")).status_code == 200  # and it goes on
