"""The exporter's own CPU and RSS at rest on a node with 8 vLLM instances and 8 GPUs (fake NVML).

Runs the exporter in this process (so the fake NVML can be injected) with its real scraper, sampler, receivers
and collectors; the 8 vLLM /metrics endpoints are served by another process. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import httpx

from exporter.gpu.fake_nvml import FakeNvml
from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from tests.support.procs import REPO, free_port, http_ok, own_cpu_seconds, proc_stats, wait_for

MIB = 1 << 20


async def run(seconds: float, instances: int, gpus: int) -> None:
    """Start everything, let it idle (scrapes every 5 s, GPU samples every 1 s, a /metrics scrape every 15 s)."""
    ports = [free_port() for _ in range(instances)]
    fake = subprocess.Popen([sys.executable, "-m", "benchmarks.fake_vllm_metrics", *map(str, ports)], cwd=REPO)
    web_port = free_port()
    try:
        last = f"http://127.0.0.1:{ports[-1]}/health"  # served last: all are up
        wait_for(lambda: fake.poll() is not None or http_ok(last), 30, "the fake vLLM servers")
        settings = load_settings(
            {
                "web_listen_address": f"127.0.0.1:{web_port}",
                "otlp_http_listen_address": f"127.0.0.1:{free_port()}",
                "otlp_grpc_listen_address": f"127.0.0.1:{free_port()}",
                "instances": json.dumps(
                    [{"url": f"http://127.0.0.1:{p}", "gpus": [str(i)]} for i, p in enumerate(ports)]
                ),
                "log_level": "warning",
            }
        )
        exporter = Exporter(settings, nvml=FakeNvml.with_gpus(gpus))
        await exporter.start()
        async with httpx.AsyncClient() as client:
            await asyncio.sleep(6)  # warm up: first scrapes and samples
            text = (await client.get(f"http://127.0.0.1:{web_port}/metrics")).text
            up = sum(1 for line in text.splitlines() if line.startswith("llm_engine_up{") and line.endswith(" 1.0"))
            gpu_up = sum(1 for line in text.splitlines() if line.startswith("gpu_up{") and line.endswith(" 1.0"))
            cpu0, t0 = own_cpu_seconds(), time.monotonic()
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(15)
                await client.get(f"http://127.0.0.1:{web_port}/metrics")
            cpu = own_cpu_seconds() - cpu0
            wall = time.monotonic() - t0
        rss = proc_stats().rss_bytes / MIB
        await exporter.stop()
    finally:
        fake.terminate()
        fake.wait()
    print("| instances up | GPUs up | seconds | exporter CPU (% of a core) | RSS MiB |")
    print("|---|---|---|---|---|")
    print(f"| {up}/{instances} | {gpu_up}/{gpus} | {wall:.0f} | {100 * cpu / wall:.2f} % | {rss:.0f} |")
    print("(includes the fake NVML's own Python cost and this script's; Prometheus scrape every 15 s)")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.instances, args.gpus))


if __name__ == "__main__":
    main()
