"""Scrapes each vLLM server's /metrics on a schedule (httpx, async) into the EngineTracker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import httpx

from exporter.engine.parse import EngineParseError, parse
from exporter.engine.state import MFU_UNKNOWN, CounterPoint, EngineTracker, InstanceState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
INTERVAL_S = 5.0
TIMEOUT_S = 2.0
FORGET_AFTER_S = 300.0  # how long an instance that left the topology keeps its series (as down)


@dataclass(frozen=True)
class ScrapeTarget:
    """One vLLM server to scrape: a stable name, its base URL, and the model label if configured."""

    name: str
    url: str
    model: str | None = None

    @property
    def metrics_url(self) -> str:
        """The URL of its /metrics."""
        base = self.url.rstrip("/")
        return base if base.endswith("/metrics") else base + "/metrics"


class EngineScraper:
    """Scrapes every target concurrently each interval; a failure marks that target down and counts why."""

    def __init__(
        self,
        targets: Callable[[], Sequence[ScrapeTarget]],
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
        tracker: EngineTracker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        forget_after_s: float = FORGET_AFTER_S,
    ) -> None:
        self.targets = targets
        self.forget_after_s = forget_after_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.tracker = tracker or EngineTracker(history_len=max(16, int(900 / interval_s)))
        self.lock = threading.Lock()  # scrapes write the tracker; the collector and attribution read it elsewhere
        self.clock = clock
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout_s, follow_redirects=False)
        self._task: asyncio.Task[None] | None = None
        self._logged_down: set[str] = set()

    def served_models(self, instance: str) -> tuple[str, ...]:
        """The models an instance's last good scrape reported (empty before one)."""
        with self.lock:
            state = self.tracker.instances.get(instance)
            return state.served_models if state is not None else ()

    def counter_points(self, instance: str) -> tuple[CounterPoint, ...]:
        """An instance's monotonic token counters at each remembered scrape (for attribution)."""
        with self.lock:
            state = self.tracker.instances.get(instance)
            return state.counter_points() if state is not None else ()

    def mfu_metrics(self, instance: str) -> str:
        """Whether an instance's vLLM counts estimated FLOPs and bytes: on, off, absent or unknown (the label of
        llm_engine_instance_info)."""
        with self.lock:
            state = self.tracker.instances.get(instance)
            return state.mfu_metrics if state is not None else MFU_UNKNOWN

    @contextlib.contextmanager
    def reading(self) -> Iterator[Mapping[str, InstanceState]]:
        """Every instance's state, held still while the caller reads it (the collector, at scrape time)."""
        with self.lock:
            yield self.tracker.instances

    async def scrape_once(self) -> None:
        """Scrape every current target once, concurrently."""
        targets = list(self.targets())
        with self.lock:
            self.tracker.present({t.name for t in targets}, self.clock(), self.forget_after_s)
        await asyncio.gather(*(self._scrape(t) for t in targets))

    async def _scrape(self, target: ScrapeTarget) -> None:
        started = self.clock()
        try:
            body = await self._fetch(target)
            reading = parse(body)
        except EngineParseError as exc:
            self._failed(target, exc.reason, str(exc))
            return
        except httpx.ConnectError as exc:
            self._failed(target, "refused", f"cannot connect: {exc}")
            return
        except httpx.TimeoutException:
            self._failed(target, "timeout", f"no answer within {self.timeout_s:g}s")
            return
        except _HttpStatus as exc:
            self._failed(target, "http_status", str(exc))
            return
        except httpx.HTTPError as exc:
            self._failed(target, "error", f"{type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.tracker.success(target.name, reading, started, target.model)
        if target.name in self._logged_down:
            self._logged_down.discard(target.name)
            log.info("vLLM %s (%s) is up again", target.name, target.metrics_url)

    async def _fetch(self, target: ScrapeTarget) -> str:
        async with self._client.stream("GET", target.metrics_url) as response:
            if response.status_code != 200:
                raise _HttpStatus(f"HTTP {response.status_code} from {target.metrics_url}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise EngineParseError("too_large", f"/metrics body over {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineParseError("parse_error", f"body is not UTF-8: {exc}") from None

    def _failed(self, target: ScrapeTarget, reason: str, message: str) -> None:
        with self.lock:
            self.tracker.failure(target.name, reason, target.model)
        if target.name not in self._logged_down:  # one line per outage, not per scrape
            self._logged_down.add(target.name)
            log.warning("vLLM %s (%s) scrape failed (%s): %s", target.name, target.metrics_url, reason, message)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scrape_once()
            except Exception:  # a bug must not stop scraping for good
                log.exception("engine scrape round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        """Start scraping in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-scraper")

    async def stop(self) -> None:
        """Stop scraping and close connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()


class _HttpStatus(Exception):
    """A non-200 answer."""
