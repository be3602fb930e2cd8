"""Each component built from the settings: the one place that maps the flat settings (flags, env vars, the YAML
file) onto the components' own options, whose defaults the settings take."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from exporter.attribution.forwarder import SpanForwarder
from exporter.attribution.stage import AttributionOptions
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.gpu.sampler import GpuSampler
from exporter.otlp.decode import DecodeRules
from exporter.requests.pipeline import PipelineOptions
from exporter.service.admission import Admission, cgroup_memory_limit
from exporter.service.settings import Settings
from exporter.topology.build import MIN_PROCESS_REFRESH_S, TopologyOptions
from exporter.topology.kubernetes import KubernetesOptions
from exporter.topology.senders import SenderResolver


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The span pipeline's sizes and windows."""
    return PipelineOptions(
        queue_capacity_spans=settings.queue_capacity_spans,
        tenant_join_window_s=settings.tenant_join_window_seconds,
        tenant_cap=settings.tenant_cap,
        model_cap=settings.model_cap,
        dedup_capacity=settings.dedup_capacity_spans,
        series_idle_s=settings.series_idle_seconds,
        series_max=settings.series_max,
        pd_join_window_s=settings.pd_join_window_seconds,
        buckets=settings.histogram_buckets(),
    )


def decode_rules(settings: Settings, senders: SenderResolver | None = None) -> DecodeRules:
    """How spans are read: model and tenant attributes, the attribute limit, and the topology's senders."""
    return DecodeRules(
        sender=senders.sender if senders is not None else None,
        instance_of_model=senders.instance_of_model if senders is not None else None,
        model_attribute=settings.model_attribute,
        model_map=dict(settings.model_map),
        tenant_keys=tuple(settings.tenant_attribute_keys),
        max_attributes=settings.otlp_max_span_attributes,
        role_attribute=settings.role_attribute,
    )


def gpu_sampler(settings: Settings, **kwargs: Any) -> GpuSampler:
    """The GPU sampler (`kwargs`: an NVML module, a clock: the simulator's, a test's)."""
    return GpuSampler(
        settings.gpu_sample_interval_seconds,
        settings.gpu_retention_seconds,
        enabled=settings.gpu_enabled,
        energy_every=settings.gpu_energy_every_passes,
        **kwargs,
    )


def topology_options(settings: Settings) -> TopologyOptions:
    """Which topology source, and its options."""
    return TopologyOptions(
        mode=settings.topology_mode,
        instances=tuple(settings.instances),
        kubernetes=KubernetesOptions(
            api_url=settings.kubernetes_api_url,
            node_name=settings.kubernetes_node_name,
            token_file=settings.kubernetes_token_file,
            ca_file=settings.kubernetes_ca_file,
            pod_selector=settings.kubernetes_pod_selector,
            port_name=settings.kubernetes_metrics_port_name,
            port_annotation=settings.kubernetes_metrics_port_annotation,
            resync_s=settings.kubernetes_resync_seconds,
        ),
        podresources_socket=settings.podresources_socket,
        processes_refresh_s=max(MIN_PROCESS_REFRESH_S, settings.engine_scrape_interval_seconds),
    )


def engine_scraper(settings: Settings, targets: Callable[[], Sequence[ScrapeTarget]]) -> EngineScraper:
    """The vLLM /metrics scraper over `targets`."""
    return EngineScraper(
        targets,
        settings.engine_scrape_interval_seconds,
        settings.engine_scrape_timeout_seconds,
        forget_after_s=settings.engine_forget_after_seconds,
    )


def attribution_options(settings: Settings) -> AttributionOptions:
    """Prices, the prefill weight and the retention of attribution."""
    return AttributionOptions(
        gpu_price_per_hour=dict(settings.gpu_price_per_hour),
        gpu_price_default_per_hour=settings.gpu_price_default_per_hour,
        energy_price_per_kwh=settings.energy_price_per_kwh,
        prefill_weight=settings.attribution_prefill_weight,
        retention_s=settings.gpu_retention_seconds,
    )


def span_forwarder(settings: Settings) -> SpanForwarder | None:
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


def admission(settings: Settings, queue_depth: Callable[[], int]) -> Admission:
    """Admission control for OTLP exports (the memory ceiling defaults to the container's limit)."""
    return Admission(
        settings.otlp_max_concurrent_exports,
        settings.memory_limit_bytes or cgroup_memory_limit(),
        queue_depth,
        max_wait_s=settings.otlp_max_wait_seconds,
        queue_capacity=settings.queue_capacity_spans,
    )
