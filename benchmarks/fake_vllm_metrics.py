"""Serves the real vLLM 0.32 /metrics text on several loopback ports (one model each), for benchmarks.

Usage: python -m benchmarks.fake_vllm_metrics PORT [PORT ...]
"""

from __future__ import annotations

import sys
from importlib import resources

from aiohttp import web


def app(model: str) -> web.Application:
    """An app whose /metrics is the captured text relabelled to `model`."""
    text = resources.files("exporter").joinpath("samples", "vllm-0.32-cpu", "metrics.txt").read_text()
    body = text.replace('model_name="tiny"', f'model_name="{model}"')

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/plain")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    return application


async def serve(ports: list[int]) -> None:
    """Serve every port until cancelled."""
    import asyncio

    runners = []
    for i, port in enumerate(ports):
        runner = web.AppRunner(app(f"model-{i}"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio

    asyncio.run(serve([int(p) for p in sys.argv[1:]]))
