"""A simulated GPU node running in real time: the pure Simulation driven by the wall clock, each vLLM instance's
/metrics served over HTTP on loopback, spans sent over real OTLP, and an NVML module that follows the load.

    node = SimNode(NodeSpec(), scenario("steady"), NodeOptions(otlp_endpoint="127.0.0.1:4317"))
    await node.start()
    exporter = Exporter(load_settings({"instances": node.instance_configs()}), nvml=node.nvml)
    ...
    await node.stop()

Time is wall-clock unix time (spans carry it; the exporter stamps GPU samples with it). The simulation runs a
little ahead (`lead_s`) so NVML readings and spans are computed before they are due; what happens is only sent
or shown once its time has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.sim.ledger import Ledger
from exporter.sim.metrics import render
from exporter.sim.nvml import SimulatedNvml
from exporter.sim.scenarios import Scenario
from exporter.sim.senders import BatchSpanProcessor, SenderStats, Transport, transport
from exporter.sim.simulation import InstanceRuntime, Simulation
from exporter.sim.spec import NodeSpec
from exporter.sim.vllm_server import VllmHttpServer

log = logging.getLogger(__name__)


class NodeStartError(Exception):
    """The node could not start (a /metrics port is busy)."""


@dataclass(frozen=True)
class NodeOptions:
    """Where the node sends spans and serves metrics, and how it is paced."""

    otlp_protocol: str = "grpc"  # vLLM's default; or "http"
    otlp_endpoint: str = "127.0.0.1:4317"  # host:port for grpc, http://host:port/v1/traces for http
    export_delay_s: float = 5.0  # BatchSpanProcessor schedule delay (OTEL_BSP_SCHEDULE_DELAY, vLLM's default)
    metrics_host: str = "127.0.0.1"
    metrics_ports: Sequence[int] = field(default_factory=tuple)  # one per instance; missing or 0: a free port
    tick_s: float = 0.05
    lead_s: float = 0.1
    seed: int = 1


class SimNode:
    """The simulation plus its sockets; see the module docstring."""

    def __init__(
        self,
        spec: NodeSpec,
        scenario: Scenario,
        options: NodeOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or NodeOptions()
        self.clock = clock
        self.lock = threading.RLock()  # the simulation is advanced, rendered and read by NVML under it
        self.sim = Simulation(spec, scenario, self.options.seed, start=clock())
        self.nvml = SimulatedNvml(self.sim, clock, self.lock)
        self.ports: list[int] = []
        self.processors: dict[str, BatchSpanProcessor] = {}
        self._transport: Transport | None = None
        self._servers: list[VllmHttpServer] = []
        self._driver: asyncio.Task[None] | None = None

    @property
    def ledger(self) -> Ledger:
        """The ground truth of energy and GPU time per request."""
        return self.sim.ledger

    @property
    def instances(self) -> list[InstanceRuntime]:
        """The simulated vLLM instances."""
        return self.sim.instances

    def metrics_url(self, index: int) -> str:
        """Base URL of instance `index`'s server (its /metrics is under it)."""
        return f"http://{self.options.metrics_host}:{self.ports[index]}"

    def instance_configs(self) -> list[dict[str, Any]]:
        """The exporter's static `instances` setting for this node: URL, model, GPU UUIDs, name."""
        return [
            {
                "url": self.metrics_url(i.index),
                "model": i.model.name,
                "gpus": [self.sim.gpus[g].uuid for g in i.gpus],
                "name": i.name,
            }
            for i in self.instances
        ]

    def model_map(self) -> dict[str, str]:
        """service.name -> model, for an exporter that is not given the instances."""
        return {i.name: i.model.name for i in self.instances}

    def sender_stats(self) -> SenderStats:
        """What every simulated process's span processor did, summed."""
        total = SenderStats()
        for processor in self.processors.values():
            for name in ("queued", "dropped", "exported", "failed", "exports"):
                setattr(total, name, getattr(total, name) + getattr(processor.stats, name))
        return total

    async def serve_metrics(self) -> None:
        """Serve every instance's /metrics (once); raises NodeStartError when a port is busy."""
        if self.ports:
            return
        try:
            for instance in self.instances:
                wanted = self.options.metrics_ports
                port = wanted[instance.index] if instance.index < len(wanted) else 0
                self.ports.append(await self._serve(instance, port))
        except NodeStartError:
            await self._close_servers()
            self.ports = []
            raise

    async def start(self) -> None:
        """Serve /metrics (if not yet), connect the OTLP sender and start the clock; raises NodeStartError."""
        await self.serve_metrics()
        self._transport = transport(self.options.otlp_protocol, self.options.otlp_endpoint)
        self._driver = asyncio.get_running_loop().create_task(self._drive(), name="sim-node")

    async def _serve(self, instance: InstanceRuntime, port: int) -> int:
        def body() -> bytes | None:
            with self.lock:
                if not instance.serving(self.clock()):
                    return None
                return render(instance.stats, instance.model.name, instance.cache, instance.process_start)

        server = VllmHttpServer(body, self.options.metrics_host, port, lambda: instance.serving(self.clock()))
        try:
            bound = await server.start()
        except OSError as exc:
            address = f"{self.options.metrics_host}:{port}"
            raise NodeStartError(
                f"cannot listen on {address} for simulated vLLM {instance.name}: {exc.strerror}"
            ) from exc
        self._servers.append(server)
        return bound

    async def _drive(self) -> None:
        options = self.options
        while True:
            try:
                self.tick()
            except Exception:  # a bug: say so once and stop the clock rather than fail 20 times a second
                log.exception("simulated node: a tick failed; the simulation is stopped")
                return
            await asyncio.sleep(options.tick_s)

    def tick(self) -> None:
        """Advance the simulation to now (plus the lead), count the steps finished by now in each instance's
        /metrics, and hand what is due to the span processors."""
        now = self.clock()
        with self.lock:
            # Counters from steps that end after `now` would run ahead of the spans and of NVML's energy by up to
            # the lead plus a step; the exporter splits each scrape interval's energy by the counters' work in it.
            self.sim.advance_to(now + self.options.lead_s, shown_until=now)
            self._pump(now)

    def _pump(self, now: float) -> None:
        """Hand the spans due by `now` to their processes' span processors."""
        outbox = self.sim.outbox
        while outbox and outbox[0].time <= now:
            item = outbox.popleft()
            processor = self.processors.get(item.sender)
            if processor is None:
                assert self._transport is not None
                processor = BatchSpanProcessor(self._transport, item.resource, self.options.export_delay_s)
                processor.start()
                self.processors[item.sender] = processor
            processor.add(item.scope, item.span)

    async def stop(self) -> None:
        """Stop the clock, send every span the simulation computed (so the ledger and what was sent agree), close
        every socket."""
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
            with self.lock:
                self._pump(math.inf)
        await asyncio.gather(*(p.shutdown() for p in self.processors.values()))
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        await self._close_servers()

    async def _close_servers(self) -> None:
        for server in self._servers:
            await server.stop()
        self._servers = []
