"""The built-in demo: the exporter beside a simulated GPU node, Prometheus and Alertmanager when installed, and a
live view of what the exporter serves.

Order of start: the simulated vLLM /metrics servers, the exporter (static topology pointing at them, the simulated
NVML injected), the simulated node's clock and span senders, then Alertmanager and Prometheus. Every port is
checked first, so a busy one stops the demo before anything started; whatever did start is stopped on the way out
(Ctrl-C, SIGTERM, `--duration` elapsed, or an error) and named as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
from rich.console import Console, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from exporter.alerts.timescale import DEMO_TIME_SCALE, scale_duration
from exporter.service.app import Exporter, StartupError
from exporter.service.settings import Settings, parse_address
from exporter.sim.fleet import Fleet, FleetError, FleetNodeConfig
from exporter.sim.node import NodeOptions, NodeStartError, SimNode
from exporter.sim.promstack import (
    ALERTMANAGER,
    PROMETHEUS,
    PromStack,
    StackError,
    find_binary,
    scrape_interval_for,
)
from exporter.sim.scenarios import scenario
from exporter.sim.spec import FleetSpec, NodeSpec
from exporter.sim.view import Scrape, SloStatus, Window, render
from exporter.topology.static import InstanceConfig

__all__ = ["DemoError", "DemoOptions", "run_demo"]

# The demo binds loopback unless told otherwise: it is a demo, not a deployment.
DEMO_DEFAULTS = {
    "web_listen_address": "127.0.0.1:9842",
    "otlp_grpc_listen_address": "127.0.0.1:4317",
    "otlp_http_listen_address": "127.0.0.1:4318",
    "engine_scrape_interval_seconds": 2.0,
}


class DemoError(Exception):
    """The demo cannot run as asked (a busy port, a bad option); the message says what is wrong."""


@dataclass(frozen=True)
class DemoOptions:
    """The demo's own flags (the exporter's settings come separately)."""

    scenario: str = "steady"
    scenario_at: float = 60.0  # seconds after the start when the scenario's change happens
    duration: float = 0.0  # seconds; 0 runs until Ctrl-C
    seed: int = 1
    interval: float = 2.0  # seconds between refreshes of the view
    window: float = 30.0  # seconds the view's rates and percentiles cover
    prometheus: bool = True
    prometheus_address: str = "127.0.0.1:9090"
    alertmanager_address: str = "127.0.0.1:9093"
    sim_ports: tuple[int, ...] = ()  # the simulated vLLM servers' ports; empty: free ports
    protocol: str = "grpc"  # how the simulated vLLM sends spans: grpc or http
    export_delay: float = 2.0  # the simulated BatchSpanProcessor's schedule delay
    rate_scale: float = 1.0
    time_scale: float = DEMO_TIME_SCALE  # the alert rules run this many times faster than real time
    nodes: int = 1  # 1: one simulated node in this process; 3 or more: a fleet, one process per node


def demo_settings(settings: Settings, instances: list[InstanceConfig]) -> Settings:
    """The exporter's settings for the demo: loopback and a 2 s engine scrape unless set, the node's instances."""
    update: dict[str, object] = {k: v for k, v in DEMO_DEFAULTS.items() if k not in settings.model_fields_set}
    update.update(instances=instances, topology_mode="static")
    return settings.model_copy(update=update)


def _local(address: str) -> str:
    host, port = parse_address(address)
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "::", "") else f"{host}:{port}"


def check_ports(wanted: list[tuple[str, str]]) -> None:
    """Raise DemoError naming every (address, what) that cannot be bound now."""
    busy = []
    for address, what in wanted:
        host, port = parse_address(address)
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real servers bind
            try:
                probe.bind((host, port))
            except OSError as exc:
                busy.append(f"{address} ({what}): {exc.strerror}")
    if busy:
        raise DemoError(
            "cannot listen on "
            + "; ".join(busy)
            + "\n  choose other addresses (llm-token-exporter demo --help lists the flags), or --no-prometheus"
        )


class Demo:
    """Everything the demo started, so it can be stopped in reverse order."""

    def __init__(self, settings: Settings, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.live = out.isatty()
        # Not a terminal (a pipe to tee, a file): plain text 150 wide, no colour or cursor codes even under
        # FORCE_COLOR, so every frame reads as it is in the log.
        self.console = Console(
            file=out, width=None if self.live else 150, force_terminal=None if self.live else False, highlight=False
        )
        self.output_closed = False  # the reader of `out` has gone (broken pipe)
        self.spec = NodeSpec(rate_scale=options.rate_scale)
        self.scenario = scenario(options.scenario, at=options.scenario_at, node=self.spec)
        self.prometheus = find_binary(PROMETHEUS) if options.prometheus else None
        self.alertmanager = find_binary(ALERTMANAGER) if self.prometheus else None
        self.settings_in = settings
        self.exporter: Exporter | None = None
        self.node: SimNode | None = None
        self.stack: PromStack | None = None
        self.workdir: tempfile.TemporaryDirectory[str] | None = None
        self.started: list[str] = []

    def _wanted_ports(self, settings: Settings) -> list[tuple[str, str]]:
        wanted = [(settings.web_listen_address, "exporter /metrics")]
        if settings.otlp_grpc_listen_address:
            wanted.append((settings.otlp_grpc_listen_address, "exporter OTLP/gRPC"))
        if settings.otlp_http_listen_address:
            wanted.append((settings.otlp_http_listen_address, "exporter OTLP/HTTP"))
        wanted += [(f"127.0.0.1:{p}", "simulated vLLM /metrics") for p in self.options.sim_ports if p]
        if self.prometheus:
            wanted.append((self.options.prometheus_address, "Prometheus"))
        if self.alertmanager:
            wanted.append((self.options.alertmanager_address, "Alertmanager"))
        return wanted

    def _otlp_endpoint(self, settings: Settings) -> tuple[str, str]:
        if self.options.protocol == "http":
            if not settings.otlp_http_listen_address:
                raise DemoError(
                    "--sim.protocol http needs the exporter's OTLP/HTTP receiver (--otlp.http.listen-address)"
                )
            return "http", f"http://{_local(settings.otlp_http_listen_address)}/v1/traces"
        if not settings.otlp_grpc_listen_address:
            raise DemoError("--sim.protocol grpc needs the exporter's OTLP/gRPC receiver (--otlp.grpc.listen-address)")
        return "grpc", _local(settings.otlp_grpc_listen_address)

    async def start(self) -> None:
        """Start everything; raises DemoError (after stopping what started) when something cannot."""
        options = self.options
        probe = demo_settings(self.settings_in, [])
        check_ports(self._wanted_ports(probe))
        protocol, endpoint = self._otlp_endpoint(probe)
        spec = self.spec
        node_options = NodeOptions(
            otlp_protocol=protocol,
            otlp_endpoint=endpoint,
            export_delay_s=options.export_delay,
            metrics_ports=options.sim_ports,
            seed=options.seed,
        )
        self.node = SimNode(spec, self.scenario, node_options)
        try:
            await self.node.serve_metrics()
        except NodeStartError as exc:
            raise DemoError(str(exc)) from exc
        self.started.append(f"the simulated node ({len(self.node.instances)} vLLM instances, {spec.gpus} GPUs)")
        instances = [InstanceConfig(**c) for c in self.node.instance_configs()]
        settings = demo_settings(self.settings_in, instances)
        self.exporter = Exporter(settings, nvml=self.node.nvml)
        self.started.append("exporter")  # before start(): a half-started exporter is stopped too
        try:
            await self.exporter.start()
        except StartupError as exc:
            raise DemoError(str(exc)) from exc
        await self.node.start()
        if self.prometheus:
            self.workdir = tempfile.TemporaryDirectory(prefix="llm-token-exporter-demo-")
            self.stack = PromStack(
                Path(self.workdir.name),
                _local(settings.web_listen_address),
                options.prometheus_address,
                options.alertmanager_address,
                scrape_interval_s=scrape_interval_for(options.time_scale),
                time_scale=options.time_scale,
            )
            try:
                await self.stack.start(self.prometheus, self.alertmanager)
            except StackError as exc:
                raise DemoError(str(exc)) from exc

    def write(self, text: str) -> bool:
        """Write to the output; False once its reader has gone (a `| tee` that Ctrl-C stopped, a `| head` that had
        enough), after which nothing more is written there."""
        if self.output_closed:
            return False
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            self.output_closed = True
            with contextlib.suppress(OSError, ValueError):
                # What is still buffered for the dead pipe would fail again when the interpreter exits.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)
            return False
        return True

    def show(self, renderable: RenderableType) -> bool:
        """One frame as plain text (the output is not a terminal); False once the output's reader has gone."""
        with self.console.capture() as frame:
            self.console.print(renderable)
        return self.write(frame.get())

    def banner(self) -> str:
        """Where everything is."""
        assert self.exporter is not None and self.node is not None
        settings = self.exporter.settings
        lines = [
            f"demo: scenario {self.scenario.name}: {self.scenario.description}",
            f"demo: exporter metrics at http://{_local(settings.web_listen_address)}/metrics",
            f"demo: simulated node: {len(self.node.instances)} vLLM instances on {len(self.node.sim.gpus)} GPUs, "
            f"{len(self.node.sim.spec.tenant_list())} tenants; spans over OTLP/{self.node.options.otlp_protocol} to "
            f"{self.node.options.otlp_endpoint}",
        ]
        lines += [
            f"demo:   {i.name} ({i.model.name}) /metrics at {self.node.metrics_url(i.index)}/metrics"
            for i in self.node.instances
        ]
        if self.stack is not None:
            for child in self.stack.children:
                lines.append(f"demo: {child.name} (pid {child.process.pid}) at {child.url}")
            rules = [self.stack.workdir / name for name in self.stack.rules]  # generated from the package's spec
            lines.append(f"demo: alert rules loaded: {', '.join(str(p) for p in rules) if rules else 'none'}")
        elif not self.options.prometheus:
            lines.append("demo: Prometheus not started (--no-prometheus)")
        else:
            lines.append(
                "demo: Prometheus not found on the PATH: not started (apt install prometheus prometheus-alertmanager)"
            )
        lines.append(
            "demo: Ctrl-C stops everything"
            + (f"; stopping by itself after {self.options.duration:g} s" if self.options.duration else "")
        )
        return "\n".join(lines)

    async def view(self, client: httpx.AsyncClient, window: Window, started: float) -> RenderableType:
        """Scrape the exporter, ask Prometheus, and build the view."""
        assert self.exporter is not None and self.node is not None
        url = f"http://{_local(self.exporter.settings.web_listen_address)}/metrics"
        with contextlib.suppress(httpx.HTTPError):
            window.add(Scrape.parse((await client.get(url)).text, time.time()))
        elapsed = time.monotonic() - started
        status = SloStatus()
        if self.stack is not None:
            answer = await self.stack.status(client)
            note = alerting_note(self.options.time_scale, elapsed)
            if answer is None:
                status = SloStatus(note=note, time_scale=self.options.time_scale)
            else:
                status = SloStatus(answer.burn_rates, answer.alerts, note, self.options.time_scale)
        truth = self.node.ledger.outcomes
        sent = self.node.sender_stats()
        footer = [
            f"simulated truth: {truth['finished']} requests finished, {truth['span_lost']} spans lost by the "
            f"scenario, {truth['aborted']} aborted; span exports: {sent.exported} spans delivered, "
            f"{sent.failed} failed, {sent.dropped} dropped",
        ]
        header = f"llm-token-exporter demo | scenario {self.scenario.name} | {elapsed:.0f} s | metrics {url}" + (
            f" | Prometheus {self.stack.url('prometheus')}" if self.stack else ""
        )
        return render(header, window, status, footer)

    async def stop(self) -> list[str]:
        """Stop everything that started, newest first; returns what was stopped, in that order."""
        stopped: list[str] = []
        if self.stack is not None:
            stopped += await self.stack.stop()
        if self.workdir is not None:
            self.workdir.cleanup()
        if self.node is not None:
            await self.node.stop()
        if self.exporter is not None and "exporter" in self.started:
            await self.exporter.stop()
            stopped.append("the exporter")
        stopped += [s for s in self.started if s != "exporter"]
        return stopped


class FleetDemo(Demo):
    """The demo with `--nodes N`: a simulated fleet, one process per node (`exporter.sim.fleet`), each with its own
    exporter on the web port + 0..N-1 (OTLP on free ports), one Prometheus scraping every exporter with a `node`
    label, and a short per-node view."""

    def __init__(self, settings: Settings, options: DemoOptions, out: TextIO) -> None:
        if options.scenario != "steady":
            raise ValueError(f"--nodes {options.nodes}: the fleet runs the steady scenario only")
        if options.protocol != "grpc":
            raise ValueError(f"--nodes {options.nodes}: the fleet's nodes send OTLP/gRPC only")
        super().__init__(settings, options, out)
        self.fleet_spec = FleetSpec(nodes=options.nodes, rate_scale=options.rate_scale)
        self.fleet: Fleet | None = None
        self.last: dict[str, tuple[float, float]] = {}  # node -> (time, requests counted) at the last view

    def _node_configs(self, settings: Settings) -> list[FleetNodeConfig]:
        host, port = parse_address(_local(settings.web_listen_address))
        start = time.time()
        extra = {k: getattr(settings, k) for k in settings.model_fields_set if k not in FLEET_OWNED}
        return [
            FleetNodeConfig(
                node=k,
                nodes=self.options.nodes,
                start=start,
                web=f"{host}:{port + k}",
                grpc=f"127.0.0.1:{_free_port()}",
                seed=self.options.seed,
                rate_scale=self.options.rate_scale,
                export_delay_s=self.options.export_delay,
                engine_scrape_interval_s=settings.engine_scrape_interval_seconds,
                settings=extra,
            )
            for k in range(self.options.nodes)
        ]

    async def start(self) -> None:
        """Start the node processes, then Prometheus; raises DemoError (after stopping what started)."""
        settings = demo_settings(self.settings_in, [])
        configs = self._node_configs(settings)
        wanted = [(c.web, f"{c.label} exporter /metrics") for c in configs]
        if self.prometheus:
            wanted.append((self.options.prometheus_address, "Prometheus"))
        if self.alertmanager:
            wanted.append((self.options.alertmanager_address, "Alertmanager"))
        check_ports(wanted)
        self.workdir = tempfile.TemporaryDirectory(prefix="llm-token-exporter-demo-")
        self.fleet = Fleet(configs, log_dir=self.workdir.name)
        try:
            await self.fleet.start()
        except FleetError as exc:
            raise DemoError(str(exc)) from exc
        gpus = self.fleet_spec.gpus
        self.started.append(f"the simulated fleet ({self.options.nodes} node processes, {gpus} GPUs)")
        if self.prometheus:
            self.stack = PromStack(
                Path(self.workdir.name),
                configs[0].web,
                self.options.prometheus_address,
                self.options.alertmanager_address,
                scrape_interval_s=scrape_interval_for(self.options.time_scale),
                time_scale=self.options.time_scale,
                targets=[(c.web, c.label) for c in configs],
            )
            try:
                await self.stack.start(self.prometheus, self.alertmanager)
            except StackError as exc:
                raise DemoError(str(exc)) from exc

    def banner(self) -> str:
        """Where everything is, node by node."""
        assert self.fleet is not None
        lines = [f"demo: a fleet of {self.options.nodes} simulated nodes, one process and one exporter each"]
        for child in self.fleet.processes:
            names = ", ".join(
                str(i["name"]) + (f" ({i['role']})" if i.get("role") else "") + (" (worker)" if "url" not in i else "")
                for i in child.instances
            )
            lines.append(
                f"demo:   {child.config.label} (pid {child.process.pid}): metrics http://{child.target}/metrics, "
                f"OTLP/gRPC {child.config.grpc}; {names}"
            )
        if self.stack is not None:
            for managed in self.stack.children:
                lines.append(f"demo: {managed.name} (pid {managed.process.pid}) at {managed.url}")
        lines.append(
            "demo: Ctrl-C stops everything"
            + (f"; stopping by itself after {self.options.duration:g} s" if self.options.duration else "")
        )
        return "\n".join(lines)

    async def view(self, client: httpx.AsyncClient, window: Window, started: float) -> RenderableType:
        """Per node: its instances and the requests/s its exporter counted since the last view."""
        assert self.fleet is not None
        table = Table(title=f"llm-token-exporter fleet demo | {time.monotonic() - started:.0f} s", box=None)
        for column in ("node", "exporter", "instances", "requests", "requests/s"):
            table.add_column(column)
        for child in self.fleet.processes:
            label, now, total = child.config.label, time.time(), math.nan
            with contextlib.suppress(httpx.HTTPError):
                total = requests_counted((await client.get(f"http://{child.target}/metrics")).text)
            before = self.last.get(label)
            rate = (total - before[1]) / (now - before[0]) if before and now > before[0] else math.nan
            if not math.isnan(total):
                self.last[label] = (now, total)
            served = [str(i["name"]) + ("" if "url" in i else " (worker)") for i in child.instances]
            table.add_row(label, child.target, ", ".join(served), f"{total:.0f}", f"{rate:.1f}")
        return table

    async def stop(self) -> list[str]:
        """Stop Prometheus, then every node process."""
        stopped: list[str] = []
        if self.stack is not None:
            stopped += await self.stack.stop()
        if self.fleet is not None:
            stopped += await self.fleet.stop()
        if self.workdir is not None:
            self.workdir.cleanup()
        return stopped


# Settings the fleet sets per node itself (a node's own addresses, its instances).
FLEET_OWNED = frozenset(
    {"web_listen_address", "otlp_grpc_listen_address", "otlp_http_listen_address", "instances", "topology_mode"}
)


def requests_counted(text: str) -> float:
    """The sum of llm_requests_total in an exporter's /metrics text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("llm_requests_total{"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alerting_note(time_scale: float, elapsed: float) -> str:
    """What the demo's alerting does differently from production's, for the view."""
    if time_scale != 1:
        windows = ", ".join(f"{w} = {scale_duration(w, time_scale)}" for w in ("5m", "1h", "6h", "3d"))
        return (
            f"alert rules run {time_scale:g}x faster than real time (demo only; --alerts.time-scale 1 runs them "
            f"as in production): {windows}, a `for: 10m` {scale_duration('10m', time_scale)}. Prometheus started with "
            "the demo, so a window longer than the run holds only the run: tickets can fire with or before the pages "
            "(Alertmanager mutes a ticket while the page of its SLO and model fires)."
        )
    return (
        f"alert rules in real time: Prometheus holds only the last {elapsed / 60:.0f} min, so the 1h .. 3d windows "
        "all hold the same minutes: the 3d ticket (1x) fires before the pages (14.4x, 6x) ever can, and cause "
        "alerts stay pending for their `for:` of 5-15 min. --alerts.time-scale 60 runs the rules 60x faster."
    )


def _route_logs(settings: Settings, console: Console) -> None:
    """Fewer logs than `serve` (warnings up, unless --log.level says otherwise), and on a terminal through rich,
    so they print above the live view instead of tearing it."""
    root = logging.getLogger()
    if "log_level" not in settings.model_fields_set:
        root.setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape of every simulated server
    if console.is_terminal:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False))


async def run_demo(settings: Settings, options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo until `options.duration` elapses or SIGINT/SIGTERM; 0 when it ran, 1 when it could not start."""
    if options.duration < 0 or options.interval <= 0 or options.window <= 0:
        print("llm-token-exporter demo: --duration must be >= 0, --interval and --window > 0", file=sys.stderr)
        return 2
    try:
        demo = FleetDemo(settings, options, out) if options.nodes > 1 else Demo(settings, options, out)
    except ValueError as exc:
        print(f"llm-token-exporter demo: {exc}", file=sys.stderr)
        return 2
    _route_logs(settings, demo.console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await demo.start()
        if demo.write(demo.banner() + "\n"):
            await _run_view(demo, stop)
        if demo.output_closed and not stop.is_set():
            print("demo: the output's reader has gone (broken pipe): stopping", file=sys.stderr, flush=True)
    except DemoError as exc:
        print(f"llm-token-exporter demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        stopped = await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        message = f"demo: stopped {', '.join(stopped)}.\n"
        # Where the view went, unless its reader has gone: then on stderr, so it is not lost with the pipe.
        if stopped and not demo.write(message):
            print(message, end="", file=sys.stderr, flush=True)
    return code


async def _run_view(demo: Demo, stop: asyncio.Event) -> None:
    options = demo.options
    window = Window(options.window)
    started = time.monotonic()
    deadline = started + options.duration if options.duration else None
    # A terminal gets a live view redrawn in place; a pipe or file gets one frame per interval, as plain text.
    async with httpx.AsyncClient(timeout=2.0) as client:
        first = await demo.view(client, window, started)
        if not demo.live and not demo.show(first):
            return
        with (
            Live(first, console=demo.console, auto_refresh=False) if demo.live else contextlib.nullcontext() as display
        ):
            while not stop.is_set():
                wait = options.interval if deadline is None else min(options.interval, deadline - time.monotonic())
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
                renderable = await demo.view(client, window, started)
                if display is not None:
                    display.update(renderable, refresh=True)
                elif not demo.show(renderable):
                    return
