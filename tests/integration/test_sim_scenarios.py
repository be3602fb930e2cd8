"""Each scenario leaves its signature in a real exporter's metrics.

A simulated node (real OTLP/gRPC spans, real vLLM-format /metrics over HTTP, the simulated NVML injected) runs
beside an `Exporter` in this process, in real time with short phases, and the test reads the exporter's /metrics.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import generate_latest

from exporter.metrics import catalog
from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from exporter.sim.node import NodeOptions, SimNode
from exporter.sim.quantiles import histogram_quantile
from exporter.sim.scenarios import Scenario, scenario
from exporter.sim.spec import NodeSpec
from tests.support.procs import free_port, wait_for_async
from tests.support.prom import by_label, samples, total

SMALL = "vllm-llama-3.1-8b-instruct-0"  # instance 1, GPU 2
SMALL_MODEL = "llama-3.1-8b-instruct"


@dataclass
class Running:
    """A simulated node and the exporter watching it."""

    node: SimNode
    exporter: Exporter
    web: int

    async def scrape(self) -> str:
        """The exporter's /metrics, over HTTP."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.web}/metrics", timeout=5)
            response.raise_for_status()
            return response.text

    async def until(self, what: str, check: Callable[[str], bool], timeout: float = 15.0) -> str:
        """Scrape until `check` holds; fail naming `what` after `timeout` seconds."""

        async def seen() -> str:
            text = await self.scrape()
            return text if check(text) else ""

        return await wait_for_async(seen, timeout, what, interval=0.25)

    async def drain(self) -> str:
        """Stop the node (its processes send what they hold), then the exporter (it processes everything)."""
        await self.node.stop()
        await self.exporter.stop()
        return generate_latest(self.exporter.registry).decode()


@asynccontextmanager
async def running(s: Scenario, protocol: str = "grpc") -> AsyncIterator[Running]:
    web, grpc_port, http_port = free_port(), free_port(), free_port()
    endpoint = f"127.0.0.1:{grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{http_port}/v1/traces"
    node = SimNode(
        NodeSpec(),
        s,
        NodeOptions(otlp_protocol=protocol, otlp_endpoint=endpoint, export_delay_s=0.5, seed=7),
    )
    await node.serve_metrics()
    settings = load_settings(
        {
            "web_listen_address": f"127.0.0.1:{web}",
            "otlp_grpc_listen_address": f"127.0.0.1:{grpc_port}",
            "otlp_http_listen_address": f"127.0.0.1:{http_port}",
            "instances": node.instance_configs(),
            "engine_scrape_interval_seconds": 0.5,
            "gpu_sample_interval_seconds": 0.25,
            "tenant_join_window_seconds": 2.0,
        }
    )
    exporter = Exporter(settings, nvml=node.nvml)
    try:
        await exporter.start()
        await node.start()
        yield Running(node, exporter, web)
    finally:
        await node.stop()
        await exporter.stop()


def ttft_buckets(text: str, model: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of the exporter's TTFT histogram for `model`, summed over tenants."""
    out: dict[float, float] = {}
    for name, labels, value in samples(text):
        if name == catalog.TTFT.name + "_bucket" and labels.get("model") == model:
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            out[le] = out.get(le, 0.0) + value
    return sorted(out.items())


def p95(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """The 95th percentile of the observations between two scrapes of a histogram."""
    old = dict(before)
    delta = [(le, count - old.get(le, 0.0)) for le, count in after]
    bounds = [le for le, _ in delta if le != math.inf]
    return histogram_quantile(0.95, bounds, [round(c) for _, c in delta])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_span_the_node_sends_is_counted_under_its_model_and_tenant(protocol: str) -> None:
    async def main() -> None:
        async with running(scenario("steady"), protocol) as run:
            live = await run.until(
                "every engine and GPU up", lambda t: total(t, "gpu_up") == 4 == total(t, "llm_engine_up") + 1
            )
            assert set(by_label(live, "gpu_info", "gpu")) == {g.uuid for g in run.node.sim.gpus}
            await asyncio.sleep(5.0)
            text = await run.drain()
            truth = run.node.ledger
        counted = {
            (labels["model"], labels["tenant"]): value
            for name, labels, value in samples(text)
            if name == catalog.REQUESTS.name
        }
        assert counted == {k: float(v) for k, v in truth.finished_by.items()}
        assert sum(counted.values()) == truth.outcomes["finished"] > 20
        assert total(text, "llm_exporter_spans_rejected_total") == 0
        assert total(text, "llm_exporter_spans_dropped_total") == 0
        assert total(text, "llm_exporter_spans_accepted_total", {"protocol": protocol}) == sum(counted.values())

    asyncio.run(main())


def test_a_latency_regression_raises_ttft_p95() -> None:
    async def main() -> None:
        async with running(scenario("latency_regression", at=4.0, factor=4.0)) as run:
            before = ttft_buckets(
                await run.until("requests", lambda t: total(t, "llm_requests_total") > 0), SMALL_MODEL
            )
            await asyncio.sleep(3.5)
            mark = ttft_buckets(await run.scrape(), SMALL_MODEL)  # the change happened at 4 s
            await asyncio.sleep(6.0)
            after = ttft_buckets(await run.scrape(), SMALL_MODEL)
        baseline, slowed = p95([], mark), p95(mark, after)
        assert before and baseline is not None and slowed is not None
        assert slowed > 2 * baseline, (baseline, slowed)

    asyncio.run(main())


def test_power_throttling_shows_in_the_clock_event_series_and_clocks() -> None:
    def capped(text: str) -> bool:
        return total(text, "gpu_clock_event_reason", {"index": "0", "reason": "sw_power_cap"}) == 1

    def capped_for_a_second(text: str) -> bool:
        # NVML's power reading is the mean over the last second: it reaches the cap a second after the reason.
        return capped(text) and total(text, "gpu_power_watts", {"index": "0"}) <= 250.0

    async def main() -> None:
        async with running(scenario("power_throttling", at=1.0, watts=250.0, instance=0)) as run:
            text = await run.until("sw_power_cap on GPU 0", capped)
            assert total(text, "gpu_clock_event_reason", {"index": "2", "reason": "sw_power_cap"}) == 0
            assert total(text, "gpu_sm_clock_hertz", {"index": "0"}) < total(text, "gpu_sm_clock_hertz", {"index": "2"})
            text = await run.until("GPU 0's power reading at the cap", capped_for_a_second)
        assert total(text, "gpu_power_watts", {"index": "2"}) > 250.0  # the uncapped GPU runs above it

    asyncio.run(main())


def test_a_lost_gpu_shows_gpu_up_0_and_its_engine_down() -> None:
    lost = "vllm-llama-3.1-8b-instruct-1"  # on GPU 3

    def down(text: str) -> bool:
        return total(text, "gpu_up", {"index": "3"}) == 0 and total(text, "llm_engine_up", {"vllm_instance": lost}) == 0

    async def main() -> None:
        async with running(scenario("gpu_lost", at=1.0, gpu=3)) as run:
            text = await run.until("GPU 3 and its engine down", down)
        assert by_label(text, "gpu_up", "index") == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.0}
        assert total(text, "llm_engine_up", {"vllm_instance": SMALL}) == 1
        assert total(text, "llm_exporter_gpu_sampling_errors_total", {"reason": "gpu_is_lost"}) >= 1

    asyncio.run(main())


def test_an_engine_restart_is_counted_with_its_time_to_ready_and_start_up_phases() -> None:
    phase = {"model": SMALL_MODEL, "phase": "total"}

    def restarted(text: str) -> bool:
        # The scrape sees the new process; its start-up spans (loading took 1 s) replace the first start's (25 s).
        counted = total(text, "llm_engine_restarts_total", {"vllm_instance": SMALL}) == 1
        return counted and total(text, "llm_engine_startup_phase_seconds", phase) == 1.0

    async def main() -> None:
        s = scenario("engine_restart", at=1.5, instance=1, down_s=1.0, startup_s=1.0)
        async with running(s) as run:
            text = await run.until("the restart counted and its start-up phases", restarted)
        assert total(text, "llm_engine_restarts_total") == 1  # only that one
        ready = total(text, "llm_engine_time_to_ready_seconds", {"vllm_instance": SMALL})
        assert 1.0 <= ready < 3.0  # loading (1 s) plus up to one scrape interval
        assert total(text, "llm_engine_up", {"vllm_instance": SMALL}) == 1

    asyncio.run(main())


def test_span_loss_shows_fewer_requests_than_the_node_finished() -> None:
    async def main() -> None:
        async with running(scenario("span_loss", at=0.0, fraction=0.5)) as run:
            await asyncio.sleep(5.0)
            text = await run.drain()
            truth = run.node.ledger.outcomes
        counted = total(text, catalog.REQUESTS.name)
        assert counted == truth["span_sent"] == truth["finished"] - truth["span_lost"]
        assert counted < 0.75 * truth["finished"]

    asyncio.run(main())


def test_kv_cache_exhaustion_shows_preemptions() -> None:
    def preempted(text: str) -> bool:
        return total(text, "llm_engine_preemptions_total", {"vllm_instance": SMALL}) > 0

    async def main() -> None:
        s = scenario("kv_exhaustion", at=0.5, instance=1, tokens=16_384, rate=2.0)
        async with running(s) as run:
            text = await run.until("preemptions on the small KV cache", preempted, timeout=20.0)
        assert total(text, "llm_engine_kv_cache_capacity_tokens", {"vllm_instance": SMALL}) == 16_384
        assert total(text, "llm_engine_preemptions_total", {"vllm_instance": "vllm-llama-3.1-8b-instruct-1"}) == 0

    asyncio.run(main())
