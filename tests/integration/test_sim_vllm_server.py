"""The simulator's vLLM-like HTTP server: /metrics and /health over a real socket, and its soak process."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from exporter.engine.parse import parse
from exporter.sim.vllm_server import CONTENT_TYPE, VllmHttpServer
from tests.support.procs import busy_port, free_port, http_ok, wait_for


def test_metrics_and_health_follow_the_engine_and_a_busy_port_is_refused() -> None:
    serving = [True]

    async def main() -> None:
        body = b"vllm:num_requests_running 1\n"
        server = VllmHttpServer(lambda: body if serving[0] else None, healthy=lambda: serving[0])
        port = await server.start()
        try:
            assert port > 0 and server.url == f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as client:
                metrics = await client.get(f"{server.url}/metrics")
                assert metrics.status_code == 200 and metrics.headers["Content-Type"] == CONTENT_TYPE
                assert metrics.text == "vllm:num_requests_running 1\n"
                assert (await client.get(f"{server.url}/health")).status_code == 200
                serving[0] = False
                stopped = await client.get(f"{server.url}/metrics")
                assert stopped.status_code == 503 and stopped.text == "engine not running\n"
                assert (await client.get(f"{server.url}/health")).status_code == 503
        finally:
            await server.stop()
        with busy_port() as taken, pytest.raises(OSError):
            await VllmHttpServer(lambda: b"", port=taken).start()

    asyncio.run(main())


def test_the_soak_process_serves_a_growing_engine_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.sim.vllm_server", "--port", str(port), "--served-model-name", "soak-model"]
    )
    try:
        wait_for(lambda: proc.poll() is not None or http_ok(f"http://127.0.0.1:{port}/health"), 30, "/health")
        assert proc.poll() is None
        first = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        second = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        assert set(first.models) == {"soak-model"}
        tokens = [reading.models["soak-model"].counters["prompt_tokens"] for reading in (first, second)]
        assert tokens[1] > tokens[0]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
