"""The exporter's own HTTP endpoints: /metrics (text or OpenMetrics with exemplars), /healthz, /readyz."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from exporter.metrics import protobuf
from exporter.service.auth import TokenFile
from exporter.service.exposition import Exposition, SharedRender

T = TypeVar("T")
INDEX = """<html><head><title>llm-token-exporter</title></head><body>
<h1>llm-token-exporter</h1><p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a>
&middot; <a href="/readyz">/readyz</a></p></body></html>"""


class LoopThread:
    """An asyncio event loop on a thread of its own: /metrics is served there, so a flood of OTLP exports queued on
    the main loop cannot hold a scrape behind it (it still shares the GIL, not the queue)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this loop and wait for it from another."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def metrics_app(
    exposition: Exposition,
    ready: Callable[[], str | None],
    token: TokenFile | None = None,
    refused: Callable[[], None] = lambda: None,
) -> web.Application:
    """The aiohttp app; `ready` returns None when ready, else the reason it is not. With `token`, /metrics needs
    it (probes stay open); `refused` counts a refusal."""
    shared = SharedRender(exposition)

    async def metrics(request: web.Request) -> web.Response:
        if token is not None and not token.allows(request.headers.get("Authorization")):
            refused()
            return web.Response(
                status=401, text="missing or wrong bearer token\n", headers={"WWW-Authenticate": "Bearer"}
            )
        accept = request.headers.get("Accept", "")
        encoder, content_type = (
            (protobuf.generate, protobuf.CONTENT_TYPE) if protobuf.accepts(accept) else choose_encoder(accept)
        )
        # Rendered off the event loop (a large scrape must not stall OTLP acknowledgements), once for scrapes that
        # arrive together.
        body = await shared.render(encoder, content_type)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        reason = ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app
