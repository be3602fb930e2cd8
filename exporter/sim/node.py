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
from exporter.sim.simulation import InstanceRuntime, Server, SimSpec, Simulation
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
    start: float | None = None  # the simulation's start (unix seconds); None: now. A fleet's nodes share one.
    node: int | None = None  # a fleet's node this process serves (0-based); None: every server and GPU
    arrivals_until: float = math.inf  # no requests arrive from then on
    arrivals_from: float = -math.inf  # no requests arrive before then


class SimNode:
    """The simulation plus its sockets; see the module docstring."""

    def __init__(
        self,
        spec: SimSpec,
        scenario: Scenario,
        options: NodeOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or NodeOptions()
        self.clock = clock
        self.lock = threading.RLock()  # the simulation is advanced, rendered and read by NVML under it
        options = self.options
        start = clock() if options.start is None else options.start
        self.sim = Simulation(
            spec,
            scenario,
            options.seed,
            start=start,
            arrivals_until=options.arrivals_until,
            arrivals_from=options.arrivals_from,
        )
        node = options.node
        # A fleet's node serves only its part of the one simulation: its servers' /metrics, its GPUs' NVML, and the
        # spans routed to its exporter.
        self.servers: list[Server] = [s for s in self.sim.servers if node is None or s.node == node]
        self.gpu_indexes = [g.index for g in self.sim.gpus if node is None or _node_of(spec, g.index) == node]
        self.nvml = SimulatedNvml(self.sim, clock, self.lock, gpus=self.gpu_indexes)
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
        """The simulated vLLM engines (every node's)."""
        return self.sim.instances

    def metrics_url(self, index: int) -> str:
        """Base URL of server `index`'s (of this node's servers, in order) /metrics endpoint."""
        return f"http://{self.options.metrics_host}:{self.ports[index]}"

    def _local_gpus(self, gpus: tuple[int, ...]) -> list[str]:
        return [self.sim.gpus[g].uuid for g in gpus if g in self.gpu_indexes]

    def instance_configs(self) -> list[dict[str, Any]]:
        """The exporter's static `instances` setting for this node: URL, model, GPU UUIDs (this node's), name; a
        P/D instance's role, a multi-node group's name; and a group's worker GPUs here (no URL: no server)."""
        out: list[dict[str, Any]] = []
        for k, server in enumerate(self.servers):
            config: dict[str, Any] = {
                "url": self.metrics_url(k),
                "model": server.model.name,
                "gpus": self._local_gpus(server.gpus),
                "name": server.name,
            }
            if server.placement.role:
                config["role"] = server.placement.role
            if server.placement.group:
                config["group"] = server.placement.group
            out.append(config)
        if self.options.node is not None:
            for server in self.sim.servers:
                worker = self._local_gpus(server.gpus)
                if server.placement.group and server.node != self.options.node and worker:
                    out.append(
                        {
                            "group": server.placement.group,
                            "model": server.model.name,
                            "gpus": worker,
                            "name": f"{server.name}-worker-1",
                        }
                    )
        return out

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
            for k, server in enumerate(self.servers):
                wanted = self.options.metrics_ports
                port = wanted[k] if k < len(wanted) else 0
                self.ports.append(await self._serve(server, port))
        except NodeStartError:
            await self._close_servers()
            self.ports = []
            raise

    async def start(self) -> None:
        """Serve /metrics (if not yet), connect the OTLP sender and start the clock; raises NodeStartError."""
        await self.serve_metrics()
        self._transport = transport(self.options.otlp_protocol, self.options.otlp_endpoint)
        self._driver = asyncio.get_running_loop().create_task(self._drive(), name="sim-node")

    async def _serve(self, server: Server, port: int) -> int:
        first = server.engines[0]

        def body() -> bytes | None:
            with self.lock:
                if not server.serving(self.clock()):
                    return None
                stats = first.stats if len(server.engines) == 1 else [e.stats for e in server.engines]
                return render(stats, server.model.name, first.cache, first.process_start)

        http = VllmHttpServer(body, self.options.metrics_host, port, lambda: server.serving(self.clock()))
        try:
            bound = await http.start()
        except OSError as exc:
            address = f"{self.options.metrics_host}:{port}"
            raise NodeStartError(
                f"cannot listen on {address} for simulated vLLM {server.name}: {exc.strerror}"
            ) from exc
        self._servers.append(http)
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
        outbox, node = self.sim.outbox, self.options.node
        while outbox and outbox[0].time <= now:
            item = outbox.popleft()
            if node is not None and item.node != node:
                continue  # another node's process sends it
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


def _node_of(spec: SimSpec, gpu: int) -> int:
    """The node of a GPU (a plain node: 0)."""
    node_of_gpu = getattr(spec, "node_of_gpu", None)
    return int(node_of_gpu(gpu)) if node_of_gpu is not None else 0
