"""Wires settings into the running exporter: pipeline, receivers, /metrics; starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from exporter.attribution.collector import AttributionCollector
from exporter.attribution.forwarder import SpanForwarder
from exporter.attribution.stage import AttributionStage
from exporter.engine.collector import EngineCollector
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.gpu.collector import GpuCollector
from exporter.gpu.sampler import GpuSampler
from exporter.otlp import grpc_receiver as otlp_grpc
from exporter.otlp.decode import DecodeRules, SenderLookup
from exporter.otlp.http_receiver import OtlpHttpReceiver
from exporter.requests.collector import PipelineCollector
from exporter.requests.pipeline import PipelineOptions, SpanPipeline
from exporter.service.admission import Admission, cgroup_memory_limit
from exporter.service.auth import TokenFile
from exporter.service.process_collector import register_process_collectors
from exporter.service.settings import Settings, parse_address
from exporter.service.tls import CertReloader, TlsError, TlsFiles, grpc_credentials, server_context
from exporter.service.web import metrics_app
from exporter.topology.build import build_source, compute_processes
from exporter.topology.collector import TopologyCollector
from exporter.topology.model import Instance, SpanSender, TopologyConfigError, TopologySource, match_sender

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The exporter could not start (a port is busy, an address is wrong)."""


def build_pipeline(settings: Settings) -> SpanPipeline:
    """The span pipeline configured from settings."""
    return SpanPipeline(
        PipelineOptions(
            queue_capacity_spans=settings.queue_capacity_spans,
            tenant_join_window_s=settings.tenant_join_window_seconds,
            tenant_cap=settings.tenant_cap,
            model_cap=settings.model_cap,
            dedup_capacity=settings.dedup_capacity_spans,
            series_idle_s=settings.series_idle_seconds,
            buckets=settings.histogram_buckets(),
        )
    )


def decode_rules(
    settings: Settings, sender: SenderLookup | None = None, instance_of_model: Callable[[str], str] | None = None
) -> DecodeRules:
    """How spans are read, from settings (and the topology, through `sender` and `instance_of_model`)."""
    return DecodeRules(
        sender=sender,
        instance_of_model=instance_of_model,
        model_attribute=settings.model_attribute,
        model_map=dict(settings.model_map),
        tenant_keys=tuple(settings.tenant_attribute_keys),
        max_attributes=settings.otlp_max_span_attributes,
    )


def build_forwarder(settings: Settings) -> SpanForwarder | None:
    """The enriched-span forwarder, when an endpoint is configured."""
    if not settings.forward_traces_endpoint:
        return None
    exporter: SpanExporter
    if settings.forward_traces_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = settings.forward_traces_endpoint.startswith("http://")
        exporter = GrpcExporter(endpoint=settings.forward_traces_endpoint, insecure=insecure, timeout=5)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=settings.forward_traces_endpoint, timeout=5)
    return SpanForwarder(exporter, settings.forward_queue_spans)


@dataclass
class Exporter:
    """The running exporter: start() binds every listener or raises StartupError; stop() drains and exits."""

    settings: Settings
    nvml: Any = None  # an NVML module to use instead of pynvml (the simulator's, a benchmark's)
    pipeline: SpanPipeline = field(init=False)
    registry: CollectorRegistry = field(init=False)
    scraper: EngineScraper = field(init=False)
    gpus: GpuSampler = field(init=False)
    topology: TopologySource = field(init=False)
    attribution: AttributionStage = field(init=False)
    forwarder: SpanForwarder | None = field(init=False)
    admission: Admission = field(init=False)
    _runners: list[web.AppRunner] = field(default_factory=list, init=False)
    _grpc: grpc.aio.Server | None = field(default=None, init=False)
    _ready: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.pipeline = build_pipeline(self.settings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(self.pipeline))
        self.gpus = (
            GpuSampler.from_settings(self.settings)
            if self.nvml is None
            else GpuSampler.from_settings(self.settings, nvml=self.nvml)
        )
        self.registry.register(GpuCollector(self.gpus))
        try:
            self.topology = build_source(
                self.settings, gpu_processes=lambda: compute_processes(self.gpus.snapshot().gpus)
            )
        except TopologyConfigError as exc:
            raise StartupError(str(exc)) from exc
        self.registry.register(TopologyCollector(self.topology))
        self.scraper = EngineScraper(
            lambda: [ScrapeTarget(i.id, i.url, i.model) for i in self.topology.current().instances],
            self.settings.engine_scrape_interval_seconds,
            self.settings.engine_scrape_timeout_seconds,
            forget_after_s=self.settings.engine_forget_after_seconds,
        )
        self.registry.register(EngineCollector(self.scraper))
        self.forwarder = build_forwarder(self.settings)
        self.attribution = AttributionStage(
            self.settings, self.topology, self.scraper, self.gpus, forwarder=self.forwarder
        )
        self.pipeline.attribution = self.attribution
        self.registry.register(AttributionCollector(self.pipeline, self.attribution))
        memory_limit = self.settings.memory_limit_bytes or cgroup_memory_limit()
        self.admission = Admission(
            self.settings.otlp_max_concurrent_exports,
            memory_limit,
            lambda: self.pipeline.queue_depth,
            max_wait_s=self.settings.otlp_max_wait_seconds,
        )
        register_process_collectors(self.registry, self.admission)

    def _model_of(self, instance: Instance) -> str | None:
        """An instance's model: configured, else the one model its /metrics serves."""
        if instance.model:
            return instance.model
        with self.scraper.lock:
            state = self.scraper.tracker.instances.get(instance.id)
            served = sorted(state.last_reading.models) if state and state.last_reading else []
        return served[0] if len(served) == 1 else None

    def sender(self, resource: dict[str, str], peer: str | None) -> tuple[str, str | None] | None:
        """The vLLM instance that sent a span (and its model), or None when the sender matches none."""
        instance = match_sender(self.topology.current().instances, SpanSender.from_resource(resource, peer))
        return None if instance is None else (instance.id, self._model_of(instance))

    def instance_of_model(self, model: str) -> str:
        """The one instance serving `model` (for senders the topology cannot tell apart), or ""."""
        found = [i.id for i in self.topology.current().instances if self._model_of(i) == model]
        return found[0] if len(found) == 1 else ""

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
            return CertReloader(TlsFiles(cert, key, client_ca), name, self.pipeline.stats.tls_reloaded)
        except TlsError as exc:
            raise StartupError(f"{name} TLS: {exc}") from exc

    async def _site(self, app: web.Application, address: str, what: str, tls: CertReloader | None = None) -> None:
        host, port = parse_address(address)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        context = None if tls is None else server_context(tls)
        try:
            await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {address} for {what}: {exc.strerror or exc}") from exc
        log.info("%s listening on %s%s", what, address, _tls_note(tls))

    async def start(self) -> None:
        """Start the worker and bind every listener."""
        s = self.settings
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
        rules = decode_rules(s, self.sender, self.instance_of_model)
        web_token = TokenFile(s.web_bearer_token_file) if s.web_bearer_token_file else None
        otlp_token = TokenFile(s.otlp_bearer_token_file) if s.otlp_bearer_token_file else None
        web_tls = self._tls("web", s.web_tls_cert_file, s.web_tls_key_file, s.web_tls_client_ca_file)
        # Both OTLP receivers share one certificate, so a change is loaded (and counted) once.
        otlp_tls = self._tls("otlp", s.otlp_tls_cert_file, s.otlp_tls_key_file, s.otlp_tls_client_ca_file)
        app = metrics_app(
            self.registry,
            self.readiness,
            web_token,
            partial(self.pipeline.stats.refused, "metrics"),
        )
        await self._site(app, s.web_listen_address, "/metrics", web_tls)
        if s.otlp_http_listen_address:
            receiver = OtlpHttpReceiver(self.pipeline, rules, s.otlp_max_body_bytes, otlp_token, self.admission)
            await self._site(receiver.app(), s.otlp_http_listen_address, "OTLP/HTTP", otlp_tls)
        if s.otlp_grpc_listen_address:
            host, port = parse_address(s.otlp_grpc_listen_address)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            credentials = None if otlp_tls is None else grpc_credentials(otlp_tls)
            try:
                self._grpc = otlp_grpc.server(
                    otlp_grpc.OtlpGrpcReceiver(self.pipeline, rules, otlp_token, self.admission),
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
