"""A simulated fleet in real time: one process per node, each with its own exporter on its own ports.

Every node process runs the same seeded fleet simulation (`FleetSpec`, same seed, same start time) and serves only
its node's part: its servers' /metrics, its GPUs through its own simulated NVML (indexes from 0, as its driver
numbers them), and the spans routed to its exporter (a P/D request's spans to its decode node's, as an
OpenTelemetry Collector `loadbalancing` exporter routing by trace id sends them:
deploy/examples/otel-collector-trace-routing.yaml). The simulation gives the same results whatever the times it
is advanced at (tests/unit/sim/test_determinism.py), so the processes agree without talking to each other, and a
test can rebuild the truth in its own process.

    python -m exporter.sim.fleet '{"node": 0, "nodes": 3, "start": 1800000000.0, "web": "127.0.0.1:9842", ...}'

prints one JSON line when it serves (its /metrics ports) and stops on SIGTERM or SIGINT, sending what is left.
`Fleet` starts and stops the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from exporter.sim.node import NodeOptions, SimNode
from exporter.sim.scenarios import scenario
from exporter.sim.spec import FleetSpec
from exporter.topology.static import InstanceConfig

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FleetNodeConfig:
    """What one node process needs: which node, the fleet's shape and clock, and its exporter's addresses."""

    node: int  # 0-based; labelled node-<node + 1>
    nodes: int
    start: float  # the simulation's start, unix seconds: the same in every node process
    web: str  # the exporter's /metrics host:port
    grpc: str  # the exporter's OTLP/gRPC host:port (the node's vLLM and the span router send there)
    seed: int = 1
    rate_scale: float = 1.0
    arrivals_until: float | None = None  # unix seconds; None: requests keep arriving
    arrivals_from: float | None = None  # unix seconds; None: from the start
    export_delay_s: float = 2.0
    engine_scrape_interval_s: float = 2.0
    settings: dict[str, Any] = field(default_factory=dict)  # more exporter settings (flags' names, as keys)

    @property
    def label(self) -> str:
        """The node's name: node-1, node-2, ..."""
        return f"node-{self.node + 1}"

    def spec(self) -> FleetSpec:
        """The fleet's spec."""
        return FleetSpec(nodes=self.nodes, rate_scale=self.rate_scale)


async def serve_node(config: FleetNodeConfig, out: IO[str], stop: asyncio.Event) -> None:
    """Run one node (its part of the simulation, its exporter) until `stop` is set; one JSON line on `out` once it
    serves: {"node", "metrics": [base URLs of its servers], "instances": its static instances}."""
    arrivals_until = math.inf if config.arrivals_until is None else config.arrivals_until
    options = NodeOptions(
        otlp_endpoint=config.grpc,
        export_delay_s=config.export_delay_s,
        seed=config.seed,
        start=config.start,
        node=config.node,
        arrivals_until=arrivals_until,
        arrivals_from=-math.inf if config.arrivals_from is None else config.arrivals_from,
    )
    node = SimNode(config.spec(), scenario("steady"), options)
    await node.serve_metrics()
    instances = node.instance_configs()
    flags: dict[str, Any] = {
        "web_listen_address": config.web,
        "otlp_grpc_listen_address": config.grpc,
        "otlp_http_listen_address": "",
        "engine_scrape_interval_seconds": config.engine_scrape_interval_s,
        **config.settings,
        "instances": [InstanceConfig(**c).model_dump(exclude_none=True) for c in instances],
        "topology_mode": "static",
    }
    exporter = Exporter(load_settings(flags), nvml=node.nvml)
    try:
        await exporter.start()
        await node.start()
        line = {"node": config.label, "metrics": [node.metrics_url(k) for k in range(len(node.servers))]}
        out.write(json.dumps({**line, "instances": instances}) + "\n")
        out.flush()
        await stop.wait()
    finally:
        await node.stop()  # sends every span computed so far
        await exporter.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of one node process: its FleetNodeConfig as JSON in the first argument."""
    args = sys.argv[1:] if argv is None else argv
    config = FleetNodeConfig(**json.loads(args[0]))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_node(config, sys.stdout, stop)

    asyncio.run(run())
    return 0


@dataclass
class FleetProcess:
    """One running node process."""

    config: FleetNodeConfig
    process: subprocess.Popen[str]
    metrics: list[str] = field(default_factory=list)  # its servers' base URLs
    instances: list[dict[str, Any]] = field(default_factory=list)

    @property
    def target(self) -> str:
        """Its exporter's /metrics host:port (a Prometheus target)."""
        return self.config.web


class FleetError(Exception):
    """A node process did not start; the message says why."""


class Fleet:
    """Starts one process per node (`python -m exporter.sim.fleet`), waits until each serves, stops them."""

    def __init__(self, configs: list[FleetNodeConfig], log_dir: str | None = None) -> None:
        self.configs = configs
        self.log_dir = log_dir
        self.processes: list[FleetProcess] = []

    async def start(self) -> None:
        """Start every node and wait for its ready line; raises FleetError (after stopping the others)."""
        env = {**os.environ}
        # The children import this very package: from where it was imported here, whatever the venv installed.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        for config in self.configs:
            # The child writes its log through its own copy of the descriptor: ours is closed once it started.
            with contextlib.ExitStack() as files:
                stderr: Any = subprocess.DEVNULL
                if self.log_dir is not None:
                    stderr = files.enter_context(open(os.path.join(self.log_dir, f"{config.label}.log"), "w"))
                process = subprocess.Popen(
                    [sys.executable, "-m", "exporter.sim.fleet", json.dumps(asdict(config))],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
            self.processes.append(FleetProcess(config, process))
        try:
            await asyncio.gather(*(self._ready(p) for p in self.processes))
        except FleetError:
            await self.stop()
            raise

    async def _ready(self, child: FleetProcess) -> None:
        assert child.process.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, child.process.stdout.readline), READY_TIMEOUT_S)
        except TimeoutError as exc:
            raise FleetError(f"{child.config.label} not ready after {READY_TIMEOUT_S:.0f} s") from exc
        if not line:
            code = child.process.wait()
            raise FleetError(f"{child.config.label} exited with {code} before serving (see its log)")
        ready = json.loads(line)
        child.metrics, child.instances = ready["metrics"], ready["instances"]

    async def stop(self, timeout_s: float = 15.0) -> list[str]:
        """SIGTERM every node (each sends what is left), SIGKILL after `timeout_s`; 'node-N (pid P)' for each."""
        stopped = []
        for child in self.processes:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.processes:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, child.process.wait, max(0.1, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            with contextlib.suppress(OSError):
                if child.process.stdout is not None:
                    child.process.stdout.close()
            stopped.append(f"{child.config.label} (pid {child.process.pid})")
        self.processes = []
        return stopped


if __name__ == "__main__":
    sys.exit(main())
