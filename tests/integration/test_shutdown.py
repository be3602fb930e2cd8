"""SIGTERM: stop accepting, drain the queue, flush the enriched spans, exit 0 within the pod's grace period."""

from __future__ import annotations

import random
import signal
import time

import httpx

from tests.support.otlp import fresh, request_of, sample_request_spans
from tests.support.otlp_capture import CapturingBackend
from tests.support.procs import ExporterProcess

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_sigterm_drains_everything_acknowledged_and_exits_cleanly() -> None:
    backend = CapturingBackend()
    try:
        exporter = ExporterProcess(
            ["--forward.traces-endpoint", backend.endpoint, "--tenant.join-window-seconds", "30"]
        )
        rng = random.Random(9)
        sent = 0
        for _ in range(25):
            spans = [fresh(s, rng, parent=rng.randbytes(8)) for s in sample_request_spans()]  # wait for a caller
            r = httpx.post(exporter.otlp_http_url, content=request_of(spans).SerializeToString(), headers=PROTOBUF)
            assert r.status_code == 200
            sent += len(spans)
        started = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)
        code = exporter.proc.wait(30)
        took = time.monotonic() - started
        log = exporter.output()
    finally:
        backend.stop()
    assert code == 0, log
    assert took < 15, f"shutdown took {took:.1f}s"
    # Spans still waiting for their caller's span were released as tenant "unknown" and forwarded, not lost.
    assert len(backend.spans()) == sent
    assert "shutting down" in log and "stopped; drained" in log
