"""A vLLM-like HTTP server on loopback: /metrics (a body made on each request) and /health.

The one implementation behind everything that plays a vLLM server's HTTP side: the simulated node's instances
(`node.SimNode`), the load generator's scrape targets (`loadgen.ScrapeTargets`), the soak's fake vLLM processes
(`main`, started by tests/support/stress.py under a path like vLLM's API server so /proc discovery finds them)
and the at-rest benchmark's endpoints (benchmarks/fake_vllm_metrics.py).

    server = VllmHttpServer(lambda: render(stats, "llama", cache, started))
    port = await server.start()             # 0 asked: a free port
    ...
    await server.stop()

    python -m exporter.sim.vllm_server --port 8000 --served-model-name llama   # a synthetic engine, until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from exporter.sim.metrics import CacheConfig, ModelShape, VllmStats, render

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what vLLM's prometheus_client serves
Body = Callable[[], bytes | None]  # the /metrics body now; None: the engine is not serving (503)


def _always() -> bool:
    return True


class VllmHttpServer:
    """/metrics from `body` and /health from `healthy` (200 or 503) on `host`:`port` (0: a free port)."""

    def __init__(
        self, body: Body, host: str = "127.0.0.1", port: int = 0, healthy: Callable[[], bool] = _always
    ) -> None:
        self.body, self.host, self.port, self.healthy = body, host, port, healthy
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL (its /metrics and /health are under it)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> int:
        """Listen; returns the bound port. OSError when the address is taken (nothing is left open then)."""

        async def metrics(_request: web.Request) -> web.Response:
            body = self.body()
            if body is None:
                return web.Response(status=503, text="engine not running\n")
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        async def health(_request: web.Request) -> web.Response:
            return web.Response(status=200 if self.healthy() else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[-1][1])
        return self.port

    async def stop(self) -> None:
        """Close the socket."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_forever(servers: Sequence[VllmHttpServer]) -> None:
    """Start every server and serve until SIGTERM or SIGINT (or cancelled); then close them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for server in servers:
            await server.start()
        await stop.wait()
    finally:
        for server in servers:
            await server.stop()


@dataclass
class SyntheticEngine:
    """A vLLM engine serving `model`: an 8B model on one GPU, 27,000 KV blocks of 16 tokens; counters only grow
    when told (`stats.counters`)."""

    model: str
    started: float = field(default_factory=time.time)
    stats: VllmStats = field(init=False)
    cache: CacheConfig = field(default_factory=lambda: CacheConfig(16, 27_000, 27_000 * 16 * 131_072))

    def __post_init__(self) -> None:
        self.stats = VllmStats(self.started, ModelShape(8e9, 1, 131_072.0))

    def body(self) -> bytes:
        """Its /metrics body now."""
        return render(self.stats, self.model, self.cache, self.started)


def main(argv: Sequence[str] | None = None) -> int:
    """A vLLM-like server for `--served-model-name` on `--port` whose token counters grow with every scrape (what
    the soak's fake vLLM pods run), until SIGTERM."""
    parser = argparse.ArgumentParser(description="A vLLM-like /metrics and /health server (synthetic engine).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    args = parser.parse_args(argv)
    engine = SyntheticEngine(args.served_model_name)

    def body() -> bytes:
        engine.stats.counters[("vllm:prompt_tokens", "")] += 1000  # some work, so rates are not all zero
        engine.stats.counters[("vllm:generation_tokens", "")] += 100
        return engine.body()

    asyncio.run(serve_forever([VllmHttpServer(body, args.host, args.port)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
