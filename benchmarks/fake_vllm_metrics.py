"""Serves the real vLLM 0.32 /metrics text on several loopback ports (one model each), for benchmarks.

Usage: python -m benchmarks.fake_vllm_metrics PORT [PORT ...]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from importlib import resources

from exporter.sim.vllm_server import VllmHttpServer, serve_forever


def captured(model: str) -> Callable[[], bytes]:
    """The captured /metrics text relabelled to `model`, as a body."""
    text = resources.files("exporter").joinpath("samples", "vllm-0.32-cpu", "metrics.txt").read_text()
    body = text.replace('model_name="tiny"', f'model_name="{model}"').encode()
    return lambda: body


async def serve(ports: list[int]) -> None:
    """Serve every port until SIGTERM or SIGINT."""
    await serve_forever([VllmHttpServer(captured(f"model-{i}"), port=port) for i, port in enumerate(ports)])


if __name__ == "__main__":
    asyncio.run(serve([int(p) for p in sys.argv[1:]]))
