"""The composition root: builds every part from the settings, binds the listeners, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.attribution.collector import AttributionCollector
from exporter.attribution.forwarder import SpanForwarder
from exporter.attribution.stage import AttributionStage
from exporter.engine.collector import EngineCollector
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.engine.usage import placements
from exporter.gpu.collector import GpuCollector
from exporter.gpu.sampler import GpuSampler
from exporter.otlp import grpc_receiver
from exporter.otlp.http_receiver import OtlpHttpReceiver
from exporter.requests.collector import QueueCollector, RequestCollector
from exporter.requests.pipeline import SpanPipeline
from exporter.service import components
from exporter.service.admission import Admission
from exporter.service.auth import TokenFile
from exporter.service.exposition import Exposition
from exporter.service.process_collector import register_process_collectors
from exporter.service.settings import Settings, parse_address
from exporter.service.stats import ExporterStats, StatsCollector
from exporter.service.tls import CertReloader, TlsError, TlsFiles, grpc_credentials, server_context
from exporter.service.web import LoopThread, metrics_app
from exporter.topology.build import build_source, compute_processes
from exporter.topology.collector import TopologyCollector
from exporter.topology.model import TopologyConfigError, TopologySource
from exporter.topology.senders import SenderResolver

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.001


class StartupError(Exception):
    """The exporter could not start (a port is busy, an address is wrong)."""


@dataclass
class Exporter:
    """The running exporter: start() binds every listener or raises StartupError; stop() drains and exits.

    Every part is built here, sources first, and given what it reads at construction: the data flows one way,
    from the sources through the pipeline and attribution to the collectors."""

    settings: Settings
    nvml: Any = None  # an NVML module to use instead of pynvml (the simulator's, a benchmark's)
    stats: ExporterStats = field(init=False)
    gpus: GpuSampler = field(init=False)
    topology: TopologySource = field(init=False)
    scraper: EngineScraper = field(init=False)
    senders: SenderResolver = field(init=False)
    forwarder: SpanForwarder | None = field(init=False)
    attribution: AttributionStage = field(init=False)
    pipeline: SpanPipeline = field(init=False)
    admission: Admission = field(init=False)
    requests_registry: CollectorRegistry = field(init=False)
    live_registry: CollectorRegistry = field(init=False)
    registry: CollectorRegistry = field(init=False)
    exposition: Exposition = field(init=False)
    _runners: list[web.AppRunner] = field(default_factory=list, init=False)
    _web_runners: list[web.AppRunner] = field(default_factory=list, init=False)
    _web_loop: LoopThread | None = field(default=None, init=False)
    _grpc: grpc.aio.Server | None = field(default=None, init=False)
    _ready: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.stats = ExporterStats()
        self.gpus = components.gpu_sampler(s, nvml=self.nvml)
        try:
            self.topology = build_source(
                components.topology_options(s), gpu_processes=lambda: compute_processes(self.gpus.snapshot().gpus)
            )
        except TopologyConfigError as exc:
            raise StartupError(str(exc)) from exc
        self.scraper = components.engine_scraper(
            s, lambda: [ScrapeTarget(i.id, i.url, i.model) for i in self.topology.current().instances]
        )
        self.senders = SenderResolver(self.topology, self.scraper.served_models)
        self.forwarder = components.span_forwarder(s)
        self.attribution = AttributionStage(
            components.attribution_options(s), self.topology, self.scraper, self.gpus, forwarder=self.forwarder
        )
        self.pipeline = SpanPipeline(components.pipeline_options(s), stats=self.stats, attribution=self.attribution)
        self.admission = components.admission(s, lambda: self.pipeline.queue_depth)
        # Two parts: the per-request families, rendered again only when the pipeline counted something, and the rest.
        self.requests_registry = CollectorRegistry(auto_describe=False)
        self.requests_registry.register(RequestCollector(self.pipeline))
        self.live_registry = CollectorRegistry(auto_describe=False)
        for collector in (
            StatsCollector(self.stats),
            QueueCollector(self.pipeline),
            GpuCollector(self.gpus),
            TopologyCollector(self.topology, self.scraper.mfu_metrics),
            EngineCollector(self.scraper, placements(self.topology.current, self.gpus.snapshot)),
            AttributionCollector(self.attribution),
        ):
            self.live_registry.register(collector)
        register_process_collectors(self.live_registry, self.admission)
        self.registry = CollectorRegistry(auto_describe=False)  # everything, for tools and tests
        self.registry.register(self.requests_registry)
        self.registry.register(self.live_registry)
        self.exposition = Exposition(self.requests_registry, lambda: self.pipeline.generation, self.live_registry)

    def readiness(self) -> str | None:
        """None when every receiver is listening and the worker runs; else why not."""
        if not self._ready:
            return "starting"
        if not self.pipeline.alive:
            return "span pipeline worker stopped"
        return None

    def _tls(self, name: str, cert: str, key: str, client_ca: str) -> CertReloader | None:
        """The certificate of a listener group, or None without TLS; raises StartupError when the files fail."""
        if not cert:
            return None
        try:
            return CertReloader(TlsFiles(cert, key, client_ca), name, self.stats.tls_reloaded)
        except TlsError as exc:
            raise StartupError(f"{name} TLS: {exc}") from exc

    async def _site(
        self,
        app: web.Application,
        address: str,
        what: str,
        tls: CertReloader | None = None,
        runners: list[web.AppRunner] | None = None,
    ) -> None:
        host, port = parse_address(address)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        (self._runners if runners is None else runners).append(runner)
        context = None if tls is None else server_context(tls)
        try:
            await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {address} for {what}: {exc.strerror or exc}") from exc
        log.info("%s listening on %s%s", what, address, _tls_note(tls))

    async def start(self) -> None:
        """Start the worker and bind every listener."""
        s = self.settings
        # Decoding, the worker and a scrape's render are Python threads sharing the GIL: at Python's default 5 ms a
        # render waits ~10 ms for each of its slices under a flood; at 1 ms a fifth of that (/metrics p99 during a
        # 3x flood 266 -> 163 ms). Admission keeps the worker, which then gets fewer slices, from being outrun.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.pipeline.start()
        limit = self.admission.memory_limit_bytes
        log.info(
            "memory ceiling %s; OTLP exports refused past %g s of decoding waiting or %d exports",
            f"{limit / 2**20:.0f} MiB" if limit else "none",
            self.admission.max_wait_s,
            self.admission.max_concurrent,
        )
        if self.forwarder is not None:
            self.forwarder.start()
        rules = components.decode_rules(s, self.senders)
        web_token = TokenFile(s.web_bearer_token_file) if s.web_bearer_token_file else None
        otlp_token = TokenFile(s.otlp_bearer_token_file) if s.otlp_bearer_token_file else None
        web_tls = self._tls("web", s.web_tls_cert_file, s.web_tls_key_file, s.web_tls_client_ca_file)
        # Both OTLP receivers share one certificate, so a change is loaded (and counted) once.
        otlp_tls = self._tls("otlp", s.otlp_tls_cert_file, s.otlp_tls_key_file, s.otlp_tls_client_ca_file)
        app = metrics_app(
            self.exposition,
            self.readiness,
            web_token,
            partial(self.stats.refused, "metrics"),
        )
        # On a loop of its own: a scrape must not queue behind a flood of exports on this one.
        self._web_loop = LoopThread("metrics-http")
        await self._web_loop.run(self._site(app, s.web_listen_address, "/metrics", web_tls, self._web_runners))
        if s.otlp_http_listen_address:
            receiver = OtlpHttpReceiver(
                self.pipeline, rules, s.otlp_max_body_bytes, self.admission, self.stats, otlp_token
            )
            await self._site(receiver.app(), s.otlp_http_listen_address, "OTLP/HTTP", otlp_tls)
        if s.otlp_grpc_listen_address:
            host, port = parse_address(s.otlp_grpc_listen_address)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            credentials = None if otlp_tls is None else grpc_credentials(otlp_tls)
            try:
                self._grpc = grpc_receiver.server(
                    grpc_receiver.OtlpGrpcReceiver(self.pipeline, rules, self.admission, self.stats, otlp_token),
                    address,
                    s.otlp_max_body_bytes,
                    credentials,
                )
            except (OSError, RuntimeError) as exc:
                raise StartupError(f"cannot listen on {s.otlp_grpc_listen_address} for OTLP/gRPC: {exc}") from exc
            await self._grpc.start()
            log.info("OTLP/gRPC listening on %s%s", s.otlp_grpc_listen_address, _tls_note(otlp_tls))
        await self.topology.start()
        self.scraper.start()
        # Never raises: without NVML it logs one line and the rest of the exporter works.
        await asyncio.get_running_loop().run_in_executor(None, self.gpus.start)
        self._ready = True

    async def stop(self) -> None:
        """Stop accepting, then drain the queue so nothing already acknowledged is lost."""
        self._ready = False
        await self.scraper.stop()
        await self.topology.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.gpus.stop)
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._web_loop is not None:
            for runner in self._web_runners:
                await self._web_loop.run(runner.cleanup())
            self._web_loop.close()
            self._web_loop = None
        await asyncio.get_running_loop().run_in_executor(None, self.admission.close)
        waiting = self.pipeline.queue_depth
        await asyncio.get_running_loop().run_in_executor(None, self.pipeline.stop)
        if self.forwarder is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.forwarder.stop)
        log.info("stopped; drained %d queued request spans", waiting)


def _tls_note(tls: CertReloader | None) -> str:
    if tls is None:
        return ""
    return " (mTLS)" if tls.files.mutual else " (TLS)"


async def run_until_signalled(exporter: Exporter, stop: asyncio.Event | None = None) -> None:
    """Start the exporter, wait for SIGTERM/SIGINT (or `stop`), then stop it gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await exporter.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await exporter.stop()
