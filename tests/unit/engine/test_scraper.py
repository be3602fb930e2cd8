"""The engine scraper through httpx's MockTransport: every failure mode sets up=0 and is counted; recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.engine.collector import EngineCollector
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.metrics import catalog
from tests.support.otlp import SAMPLES
from tests.support.prom import total

FIXTURE = (SAMPLES / "metrics.txt").read_text()
TARGET = ScrapeTarget("vllm-0", "http://vllm-0:8000")


def _scraper(handler: Callable[[httpx.Request], httpx.Response]) -> EngineScraper:
    return EngineScraper(lambda: [TARGET], 5.0, 1.0, transport=httpx.MockTransport(handler))


def _scrape(scraper: EngineScraper) -> str:
    asyncio.run(scraper.scrape_once())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(scraper))
    return generate_latest(registry).decode()


def test_good_scrape_exposes_engine_series() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text=FIXTURE)

    text = _scrape(_scraper(handler))
    assert seen == ["http://vllm-0:8000/metrics"]
    labels = {"vllm_instance": "vllm-0", "model": "tiny"}
    assert total(text, catalog.ENGINE_UP.name, labels) == 1
    assert total(text, catalog.ENGINE_PROMPT_TOKENS.name, labels) == 8494
    assert total(text, catalog.ENGINE_GENERATION_TOKENS.name, labels) == 953
    assert total(text, catalog.ENGINE_KV_CAPACITY.name, labels) == 2097152
    assert total(text, catalog.ENGINE_FINISHED.name, {**labels, "finished_reason": "length"}) == 20
    # http_requests_total of POST /v1/* only (not /metrics, /health, GET /v1/models): 16 + 4 2xx, 3 + 2 4xx
    assert total(text, catalog.ENGINE_HTTP_RESPONSES.name, {**labels, "status_class": "2xx"}) == 20
    assert total(text, catalog.ENGINE_HTTP_RESPONSES.name, {**labels, "status_class": "4xx"}) == 5
    assert total(text, catalog.ENGINE_ADMISSION_REJECTIONS.name, labels) == 0
    assert f'{catalog.ENGINE_ADMISSION_REJECTIONS.name}{{model="tiny",reason="max_num_queued_reqs"' in text
    for spec in catalog.ENGINE_METRICS:
        if spec is not catalog.ENGINE_STARTUP_PHASE:
            assert f"# TYPE {spec.name} {spec.kind.value}" in text, spec.name


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


FAILURES: list[tuple[str, Callable[[httpx.Request], httpx.Response]]] = [
    ("refused", _raise(httpx.ConnectError("connection refused"))),
    ("timeout", _raise(httpx.ReadTimeout("slow"))),
    ("http_status", lambda r: httpx.Response(503, text="loading")),
    ("parse_error", lambda r: httpx.Response(200, text="<html>hello</html>\n")),
    ("truncated", lambda r: httpx.Response(200, text=FIXTURE[:5000])),
    ("parse_error", lambda r: httpx.Response(200, content=b"\xff\xfe\x00garbage\n")),
]


def test_each_failure_sets_up_zero_hides_gauges_counts_the_reason_then_recovers() -> None:
    state = {"handler": lambda r: httpx.Response(200, text=FIXTURE)}
    scraper = _scraper(lambda r: state["handler"](r))
    _scrape(scraper)
    for reason, handler in FAILURES:
        state["handler"] = handler
        text = _scrape(scraper)
        assert total(text, catalog.ENGINE_UP.name, {"vllm_instance": "vllm-0"}) == 0, reason
        assert catalog.ENGINE_RUNNING.name + "{" not in text, reason  # no stale gauge served as current
        assert total(text, catalog.ENGINE_SCRAPE_ERRORS.name, {"reason": reason}) >= 1, reason
        assert total(text, catalog.ENGINE_PROMPT_TOKENS.name) == 8494  # counters keep their last total
    state["handler"] = lambda r: httpx.Response(200, text=FIXTURE)
    text = _scrape(scraper)
    assert total(text, catalog.ENGINE_UP.name, {"vllm_instance": "vllm-0"}) == 1
    assert total(text, catalog.ENGINE_RUNNING.name) == 0 and catalog.ENGINE_RUNNING.name + "{" in text
    assert total(text, catalog.ENGINE_SCRAPE_ERRORS.name) == len(FAILURES)


def test_one_log_line_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    scraper = _scraper(_raise(httpx.ConnectError("refused")))
    for _ in range(3):
        _scrape(scraper)
    assert sum("scrape failed" in r.message for r in caplog.records) == 1
