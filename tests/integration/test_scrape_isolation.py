"""A scrape never queues behind ingest: /metrics is served on an event loop of its own, so a main loop busy with a
flood of OTLP exports (here: blocked outright) still answers it."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from exporter.metrics import catalog
from exporter.service.settings import load_settings
from tests.support.inproc import InProcessExporter
from tests.support.procs import free_port


def test_metrics_answer_while_the_receivers_loop_is_busy() -> None:
    web = free_port()
    settings = load_settings(
        {
            "web_listen_address": f"127.0.0.1:{web}",
            "otlp_http_listen_address": f"127.0.0.1:{free_port()}",
            "otlp_grpc_listen_address": f"127.0.0.1:{free_port()}",
            "gpu_enabled": False,
            "topology_mode": "static",
        }
    )
    with InProcessExporter(settings) as running:
        blocked = threading.Event()

        async def hog() -> None:  # what a flood does to the receivers' loop, at its worst
            blocked.set()
            time.sleep(3.0)

        asyncio.run_coroutine_threadsafe(hog(), running.loop)
        assert blocked.wait(5)
        started = time.perf_counter()
        answer = httpx.get(f"http://127.0.0.1:{web}/metrics", timeout=2.0)
        assert answer.status_code == 200 and catalog.BUILD_INFO.name in answer.text
        assert time.perf_counter() - started < 2.0
