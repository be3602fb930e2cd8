"""The load generator: spans at the asked rate into a real exporter, an honest report, scrapeable vLLM targets."""

from __future__ import annotations

import asyncio
import json
import subprocess

import httpx

from exporter.engine.parse import parse
from exporter.sim.loadgen import ScrapeTargets
from tests.support.procs import EXPORTER_BIN, ExporterProcess
from tests.support.prom import by_label, total


def test_loadgen_pushes_the_asked_rate_and_reports_what_the_exporter_took() -> None:
    with ExporterProcess(["--tenant.join-window-seconds", "0"]) as exporter:
        result = subprocess.run(
            [
                str(EXPORTER_BIN),
                "loadgen",
                "--rate",
                "4000",
                "--duration",
                "3",
                "--protocol",
                "grpc",
                "--endpoint",
                exporter.otlp_grpc_target,
                "--metrics-url",
                exporter.url("/metrics"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        text = exporter.scrape()
    assert report["spans_acked"] == report["spans_sent"] >= 10_000
    assert 3000 < report["achieved_rate"] < 5000
    assert report["exporter"]["llm_exporter_spans_accepted_total"] == report["spans_acked"]
    assert report["exporter"]["llm_exporter_spans_dropped_total"] == 0
    assert total(text, "llm_requests_total") == report["spans_acked"]
    assert len(by_label(text, "llm_requests_total", "tenant")) == 20
    assert "achieved" in result.stdout


def test_http_loadgen_against_a_closed_port_fails_and_says_so() -> None:
    result = subprocess.run(
        [
            str(EXPORTER_BIN),
            "loadgen",
            "--rate",
            "1000",
            "--duration",
            "1",
            "--protocol",
            "http",
            "--endpoint",
            "http://127.0.0.1:9/v1/traces",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "achieved 0 spans/s" in result.stdout


def test_scrape_targets_serve_vllm_metrics_that_grow_with_the_load() -> None:
    async def main() -> None:
        targets = ScrapeTargets(count=3, models=2, base_port=0)
        await targets.start()
        try:
            urls = [str(i["url"]) for i in targets.instances()]
            async with httpx.AsyncClient() as client:
                before = [parse((await client.get(u + "/metrics")).text) for u in urls]
                targets.sent(0, 512)  # model 0 is served by targets 0 and 2
                after = [parse((await client.get(u + "/metrics")).text) for u in urls]
        finally:
            await targets.stop()
        grown = [
            sum(a.models[targets.model(i)].finished.values()) - sum(b.models[targets.model(i)].finished.values())
            for i, (b, a) in enumerate(zip(before, after, strict=True))
        ]
        assert grown == [256.0, 0.0, 256.0]

    asyncio.run(main())
