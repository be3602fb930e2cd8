"""Bearer tokens on the OTLP receivers and /metrics: refused without, accepted with, rotated without restart."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter.metrics import catalog
from tests.support.otlp import request_of, sample_request_spans
from tests.support.procs import ExporterProcess, free_port, run_cli
from tests.support.prom import total

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _write(path: Path, token: str, stamp: int) -> None:
    path.write_text(token + "\n")
    os.utime(path, (stamp, stamp))  # a distinct mtime even within one second


def test_tokens_are_required_counted_and_rotated(tmp_path: Path) -> None:
    web_token, otlp_token = tmp_path / "web", tmp_path / "otlp"
    _write(web_token, "scrape-secret", 1_000)
    _write(otlp_token, "send-secret", 1_000)
    body = request_of(sample_request_spans()[:3]).SerializeToString()
    with ExporterProcess(
        ["--web.bearer-token-file", str(web_token), "--otlp.bearer-token-file", str(otlp_token)]
    ) as exporter:
        assert httpx.get(exporter.url("/metrics")).status_code == 401
        assert httpx.get(exporter.url("/metrics"), headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(exporter.url("/healthz")).status_code == 200  # probes stay open
        scrape = {"Authorization": "Bearer scrape-secret"}
        assert httpx.get(exporter.url("/metrics"), headers=scrape).status_code == 200

        refused = httpx.post(exporter.otlp_http_url, content=body, headers=PROTOBUF)
        assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
        ok = httpx.post(
            exporter.otlp_http_url, content=body, headers={**PROTOBUF, "Authorization": "Bearer send-secret"}
        )
        assert ok.status_code == 200
        with grpc.insecure_channel(exporter.otlp_grpc_target) as channel:
            call = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
            with pytest.raises(grpc.RpcError) as err:
                call(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call(body, timeout=10, metadata=(("authorization", "Bearer send-secret"),))

        _write(otlp_token, "rotated-secret", 2_000)
        old = httpx.post(
            exporter.otlp_http_url, content=body, headers={**PROTOBUF, "Authorization": "Bearer send-secret"}
        )
        new = httpx.post(
            exporter.otlp_http_url, content=body, headers={**PROTOBUF, "Authorization": "Bearer rotated-secret"}
        )
        assert (old.status_code, new.status_code) == (401, 200)
        text = httpx.get(exporter.url("/metrics"), headers=scrape).text
    assert total(text, catalog.UNAUTHORIZED.name, {"endpoint": "metrics"}) == 2
    assert total(text, catalog.UNAUTHORIZED.name, {"endpoint": "otlp_http"}) == 2
    assert total(text, catalog.UNAUTHORIZED.name, {"endpoint": "otlp_grpc"}) == 1


def test_an_unreadable_token_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run_cli(
        "serve", "--otlp.bearer-token-file", str(missing), "--web.listen-address", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode == 2
    assert "otlp_bearer_token_file" in result.stderr and str(missing) in result.stderr
