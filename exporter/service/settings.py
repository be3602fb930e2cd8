"""Settings: one pydantic model; flags > env vars (LLM_TOKEN_EXPORTER_*) > YAML file > defaults."""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.attribution import forwarder
from exporter.attribution.stage import DEFAULT_GPU_PRICES, AttributionOptions
from exporter.engine import scraper
from exporter.gpu import sampler
from exporter.metrics import catalog
from exporter.otlp.decode import DecodeRules
from exporter.requests.pipeline import PipelineOptions
from exporter.service import admission, tls
from exporter.topology import podresources
from exporter.topology.build import MODES, TopologyOptions
from exporter.topology.kubernetes import KubernetesOptions
from exporter.topology.static import InstanceConfig

ENV_PREFIX = "LLM_TOKEN_EXPORTER_"
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("file_values")


class ConfigError(Exception):
    """Invalid settings; the message names every problem."""


# The groups `serve --help` lists the settings in, in this order: {key: title}. Each field names its group in `_flag`.
HELP_GROUPS = {
    "receivers": "receivers: listen addresses, OTLP bodies, model and tenant labels",
    "limits": "limits: overload, memory, label caps, the series budget",
    "histograms": "latency histograms: bucket edges, SLO thresholds",
    "engine": "engine: scraping each vLLM server's own /metrics",
    "topology": "topology: which vLLM instances and GPUs are on this node",
    "gpu": "GPUs: NVML sampling",
    "attribution": "attribution and pricing: GPU time, energy and dollars; enriched spans",
    "security": "TLS and authentication",
    "logging": "logging",
}
OTHER_GROUP = "other settings"  # a field without a group (tests/unit/service/test_settings.py refuses that)


def _flag(name: str, group: str = "", metavar: str = "") -> dict[str, Any]:
    """Help metadata of a field: its flag (without --), its group in HELP_GROUPS, and a metavar when the one
    `metavar_of` derives from the name and type would not say what goes there."""
    extra: dict[str, Any] = {"flag": name, "group": group}
    if metavar:
        extra["metavar"] = metavar
    return extra


def _buckets(spec: catalog.MetricSpec, flag: str) -> Any:
    return Field(
        default=list(spec.default_buckets),
        description=f"Bucket upper bounds (seconds, increasing) of {spec.name}.",
        json_schema_extra=_flag(f"buckets.{flag}", "histograms", "SECONDS,..."),
    )


# The bucket setting of each latency histogram (its field below is `_buckets(spec, short name)`).
BUCKET_FIELDS = {f"buckets_{short}": spec for short, spec in catalog.LATENCY_HISTOGRAM_SHORT_NAMES.items()}
# An SLO's metric (as the SLO spec names it) and the histograms whose edges must hold its threshold.
SLO_METRICS: dict[str, tuple[catalog.MetricSpec, ...]] = {
    "time_to_first_token": (catalog.TTFT, catalog.TENANT_TTFT),
    "time_per_output_token": (catalog.TPOT, catalog.TENANT_TPOT),
    "queue": (catalog.QUEUE,),
    "prefill": (catalog.PREFILL,),
    "decode": (catalog.DECODE,),
    "e2e": (catalog.E2E,),
}
FloatList = Annotated[list[float], NoDecode]
PriceMap = Annotated[dict[str, float], NoDecode]
StrList = Annotated[list[str], NoDecode]
StrMap = Annotated[dict[str, str], NoDecode]
ThresholdMap = Annotated[dict[str, list[float]], NoDecode]


InstanceList = Annotated[list[InstanceConfig], NoDecode]


class Settings(BaseSettings):
    """Every setting of the exporter. Each has a flag, an env var and a YAML key (the field name)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    web_listen_address: str = Field(
        "0.0.0.0:9842",
        description="HOST:PORT serving /metrics, /healthz and /readyz.",
        json_schema_extra=_flag("web.listen-address", "receivers"),
    )
    otlp_grpc_listen_address: str = Field(
        "0.0.0.0:4317",
        description="HOST:PORT of the OTLP/gRPC trace receiver; empty to disable it.",
        json_schema_extra=_flag("otlp.grpc.listen-address", "receivers"),
    )
    otlp_http_listen_address: str = Field(
        "0.0.0.0:4318",
        description="HOST:PORT of the OTLP/HTTP trace receiver (POST /v1/traces); empty to disable it.",
        json_schema_extra=_flag("otlp.http.listen-address", "receivers"),
    )
    otlp_max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP export request accepted, after decompression (bytes); larger gets 413.",
        json_schema_extra=_flag("otlp.max-body-bytes", "receivers"),
    )
    otlp_max_span_attributes: int = Field(
        DecodeRules.max_attributes,
        ge=16,
        description="An llm_request span with more attributes than this is rejected.",
        json_schema_extra=_flag("otlp.max-span-attributes", "receivers"),
    )
    otlp_max_concurrent_exports: int = Field(
        admission.MAX_CONCURRENT,
        ge=1,
        description="OTLP exports waiting to be decoded at most (HTTP and gRPC together); more are refused at "
        "once with a retryable status (HTTP 503 + Retry-After, gRPC UNAVAILABLE).",
        json_schema_extra=_flag("otlp.max-concurrent-exports", "limits"),
    )
    otlp_max_wait_seconds: float = Field(
        admission.MAX_WAIT_S,
        gt=0,
        description="An export is refused (retryable) when those already waiting would take longer than this to "
        "decode, judged from recent decode times: under a flood, answers stay fast and the excess is refused.",
        json_schema_extra=_flag("otlp.max-wait-seconds", "limits"),
    )
    memory_limit_bytes: int = Field(
        0,
        ge=0,
        description="Memory ceiling (bytes): at 90 percent of it exports are refused (retryable) while spans are "
        "queued. 0: the container's cgroup memory limit, or none outside a container.",
        json_schema_extra=_flag("memory.limit-bytes", "limits"),
    )
    queue_capacity_spans: int = Field(
        PipelineOptions.queue_capacity_spans,
        ge=512,
        description="Request spans the processing queue holds; past it batches are dropped and counted.",
        json_schema_extra=_flag("queue.capacity-spans", "limits"),
    )
    series_idle_seconds: float = Field(
        PipelineOptions.series_idle_s,
        ge=10,
        description="A (model, tenant) whose requests stop is forgotten after this long: its series go and its "
        "slot under model.cap and tenant.cap is free again (departed models and tenants do not pile up).",
        json_schema_extra=_flag("series.idle-seconds", "limits"),
    )
    engine_forget_after_seconds: float = Field(
        scraper.FORGET_AFTER_S,
        ge=0,
        description="An engine instance that left the topology is shown down this long, then its series go "
        "(a restarting server stays one instance meanwhile).",
        json_schema_extra=_flag("engine.forget-after-seconds", "engine"),
    )
    dedup_capacity_spans: int = Field(
        PipelineOptions.dedup_capacity,
        ge=0,
        description="How many recent span identities are remembered to count a re-delivered span once.",
        json_schema_extra=_flag("dedup.capacity-spans", "receivers"),
    )
    model_attribute: str = Field(
        DecodeRules.model_attribute,
        min_length=1,
        description="Resource attribute of the sender that names the model (vLLM: OTEL_SERVICE_NAME).",
        json_schema_extra=_flag("model.attribute", "receivers", metavar="ATTRIBUTE"),
    )
    pd_join_window_seconds: float = Field(
        PipelineOptions.pd_join_window_s,
        ge=0.0,
        le=600.0,
        description="Prefill/decode disaggregation: how long the prefill or decode half of a request (the two "
        "llm_request spans of one trace and caller) waits for its other half before it is counted alone (a decode "
        "half as a request with its own TTFT, a prefill half never as a request).",
        json_schema_extra=_flag("pd.join-window-seconds", "receivers"),
    )
    role_attribute: str = Field(
        DecodeRules.role_attribute,
        min_length=1,
        description="Resource attribute of the sender that names its prefill/decode role (prefill, decode or both; "
        "vLLM: OTEL_RESOURCE_ATTRIBUTES=llm.role=prefill); it wins over the role the topology gives the instance.",
        json_schema_extra=_flag("role.attribute", "receivers", metavar="ATTRIBUTE"),
    )
    model_map: StrMap = Field(
        default_factory=dict,
        description="Map from that attribute's value to a model label: 'value=model,...' or a JSON object.",
        json_schema_extra=_flag("model.map", "receivers", metavar="VALUE=MODEL,..."),
    )
    model_cap: int = Field(
        PipelineOptions.model_cap,
        ge=1,
        description="Distinct model label values; past it new ones become 'other'.",
        json_schema_extra=_flag("model.cap", "limits"),
    )
    tenant_attribute_keys: StrList = Field(
        default_factory=lambda: list(DecodeRules.tenant_keys),
        description="Attribute keys that carry the tenant, looked up on the span, its resource, then the "
        "caller's span in the same trace: comma-separated or a JSON list.",
        json_schema_extra=_flag("tenant.attribute-keys", "receivers", metavar="KEY,..."),
    )
    tenant_join_window_seconds: float = Field(
        PipelineOptions.tenant_join_window_s,
        ge=0.0,
        le=600.0,
        description="How long a request span waits for its caller's span to learn its tenant (0: no wait).",
        json_schema_extra=_flag("tenant.join-window-seconds", "receivers"),
    )
    tenant_cap: int = Field(
        PipelineOptions.tenant_cap,
        ge=1,
        description="Distinct tenant label values per model; past it new ones become 'other'.",
        json_schema_extra=_flag("tenant.cap", "limits"),
    )
    buckets_ttft: FloatList = _buckets(catalog.TTFT, "ttft")
    buckets_tpot: FloatList = _buckets(catalog.TPOT, "tpot")
    buckets_queue: FloatList = _buckets(catalog.QUEUE, "queue")
    buckets_prefill: FloatList = _buckets(catalog.PREFILL, "prefill")
    buckets_decode: FloatList = _buckets(catalog.DECODE, "decode")
    buckets_e2e: FloatList = _buckets(catalog.E2E, "e2e")
    buckets_tenant_ttft: FloatList = _buckets(catalog.TENANT_TTFT, "tenant-ttft")
    buckets_tenant_tpot: FloatList = _buckets(catalog.TENANT_TPOT, "tenant-tpot")
    slo_latency_thresholds: ThresholdMap = Field(
        default_factory=dict,
        description="Latency SLO thresholds (seconds) by SLO metric (time_to_first_token, time_per_output_token, "
        "queue, prefill, decode, e2e), added to that metric's bucket edges per model and per tenant so the SLO "
        "rules can count good requests: a JSON object of lists. The Helm chart fills it from the SLO spec the "
        "rules are generated from.",
        json_schema_extra=_flag("slo.latency-thresholds", "histograms", metavar="JSON"),
    )
    series_max: int = Field(
        PipelineOptions.series_max,
        ge=100,
        description="Series budget of the per-(model, tenant) metrics (about 19 series a pair with the default "
        "buckets): a new pair that would pass it is counted under tenant 'other' (and in "
        'llm_exporter_label_overflow_total{reason="series_max"}), never dropped. The default fits 200 tenants '
        "x 3 models.",
        json_schema_extra=_flag("series.max", "limits"),
    )
    engine_scrape_interval_seconds: float = Field(
        scraper.INTERVAL_S,
        gt=0,
        le=300,
        description="How often each vLLM server's /metrics is scraped.",
        json_schema_extra=_flag("engine.scrape-interval-seconds", "engine"),
    )
    engine_scrape_timeout_seconds: float = Field(
        scraper.TIMEOUT_S,
        gt=0,
        le=60,
        description="Timeout of one vLLM /metrics scrape.",
        json_schema_extra=_flag("engine.scrape-timeout-seconds", "engine"),
    )
    instances: InstanceList = Field(
        default_factory=list,
        description="Static vLLM instances (bare metal, tests): a JSON/YAML list of {url, model, gpus, name}; "
        "url is the server's base URL (its /metrics is scraped), gpus NVML UUIDs or indexes.",
        json_schema_extra=_flag("instances", "topology", metavar="JSON"),
    )
    topology_mode: str = Field(
        TopologyOptions.mode,
        pattern=f"^({'|'.join(MODES)})$",
        description="How vLLM instances and their GPUs are found: static (the instances setting), kubernetes "
        "(pods on this node + kubelet pod-resources), processes (NVML compute processes traced through /proc), "
        "or auto (kubernetes when running in a cluster with a node name, static when instances are listed, "
        "else processes).",
        json_schema_extra=_flag("topology.mode", "topology", metavar="auto|static|kubernetes|processes"),
    )
    kubernetes_node_name: str = Field(
        "",
        description="This node's name (set from spec.nodeName through the downward API).",
        json_schema_extra=_flag("kubernetes.node-name", "topology"),
    )
    kubernetes_api_url: str = Field(
        "",
        description="Kubernetes API server URL; empty: in-cluster (KUBERNETES_SERVICE_HOST/PORT).",
        json_schema_extra=_flag("kubernetes.api-url", "topology", metavar="URL"),
    )
    kubernetes_token_file: str = Field(
        KubernetesOptions.token_file,
        description="Service-account token file for the API server.",
        json_schema_extra=_flag("kubernetes.token-file", "topology"),
    )
    kubernetes_ca_file: str = Field(
        KubernetesOptions.ca_file,
        description="CA bundle that signs the API server's certificate.",
        json_schema_extra=_flag("kubernetes.ca-file", "topology"),
    )
    kubernetes_pod_selector: str = Field(
        KubernetesOptions.pod_selector,
        description="Label selector of the vLLM pods to watch on this node (empty: all pods on the node).",
        json_schema_extra=_flag("kubernetes.pod-selector", "topology", metavar="SELECTOR"),
    )
    kubernetes_metrics_port_name: str = Field(
        KubernetesOptions.port_name,
        description="Name of the container port serving vLLM's /metrics.",
        json_schema_extra=_flag("kubernetes.metrics-port-name", "topology"),
    )
    kubernetes_metrics_port_annotation: str = Field(
        KubernetesOptions.port_annotation,
        description="Pod annotation giving the metrics port number; wins over the named port.",
        json_schema_extra=_flag("kubernetes.metrics-port-annotation", "topology", metavar="ANNOTATION"),
    )
    kubernetes_resync_seconds: float = Field(
        KubernetesOptions.resync_s,
        gt=0,
        description="Full re-list period of the pod watch.",
        json_schema_extra=_flag("kubernetes.resync-seconds", "topology"),
    )
    podresources_socket: str = Field(
        podresources.DEFAULT_SOCKET,
        description="The kubelet PodResources API socket (GPU devices per pod).",
        json_schema_extra=_flag("podresources.socket", "topology"),
    )
    gpu_enabled: bool = Field(
        True,
        description="Sample GPUs through NVML (off by itself, with one log line, when NVML is missing).",
        json_schema_extra=_flag("gpu.enabled", "gpu"),
    )
    gpu_sample_interval_seconds: float = Field(
        sampler.INTERVAL_S,
        gt=0,
        le=60,
        description="How often every GPU is sampled.",
        json_schema_extra=_flag("gpu.sample-interval-seconds", "gpu"),
    )
    gpu_energy_every_passes: int = Field(
        sampler.ENERGY_EVERY_PASSES,
        ge=1,
        le=60,
        description="Read each GPU's energy counter every Nth sampling pass. One read busy-waits about 3 ms of "
        "CPU in the driver (H200, driver 580), the rest of a pass well under 1 ms; between reads attribution "
        "spreads the counter's exact delta by the power readings (within 0.2 percent of the window on a recorded "
        "H200 trace). 1 reads it every pass (advised on A100 and older, whose power reading is instantaneous).",
        json_schema_extra=_flag("gpu.energy-every-passes", "gpu"),
    )
    gpu_retention_seconds: float = Field(
        sampler.RETENTION_S,
        ge=10,
        description="How long GPU samples are kept for attribution (long requests + span delay).",
        json_schema_extra=_flag("gpu.retention-seconds", "gpu"),
    )
    gpu_price_per_hour: PriceMap = Field(
        default_factory=lambda: dict(DEFAULT_GPU_PRICES),
        description="Dollars per GPU-hour by GPU product, matched as a substring of NVML's product name (longest "
        "first): 'H100=3.0,A100=1.8' or a JSON object. Defaults are rough on-demand cloud rates: set yours.",
        json_schema_extra=_flag("price.gpu-per-hour", "attribution", metavar="PRODUCT=USD,..."),
    )
    gpu_price_default_per_hour: float = Field(
        AttributionOptions.gpu_price_default_per_hour,
        ge=0,
        description="Dollars per GPU-hour for a product not in gpu_price_per_hour.",
        json_schema_extra=_flag("price.gpu-default-per-hour", "attribution", metavar="USD"),
    )
    energy_price_per_kwh: float = Field(
        AttributionOptions.energy_price_per_kwh,
        ge=0,
        description="Dollars per kWh of GPU energy, added to the GPU-hour price (0: included in it).",
        json_schema_extra=_flag("price.energy-per-kwh", "attribution", metavar="USD"),
    )
    attribution_prefill_weight: float = Field(
        AttributionOptions.prefill_weight,
        gt=0,
        le=100,
        description="Weight of a prompt (prefill) token against an output (decode) token when splitting GPU time.",
        json_schema_extra=_flag("attribution.prefill-weight", "attribution", metavar="WEIGHT"),
    )
    forward_traces_endpoint: str = Field(
        "",
        description="OTLP endpoint to re-emit each llm_request span to, enriched with model, tenant, instance, "
        "GPUs, joules, GPU-seconds, cost, KV token-seconds and GPU state (original trace and span ids kept); "
        "empty: off. gRPC: http://HOST:4317; HTTP: http://HOST:4318/v1/traces.",
        json_schema_extra=_flag("forward.traces-endpoint", "attribution", metavar="URL"),
    )
    forward_traces_protocol: str = Field(
        "grpc",
        pattern=r"^(grpc|http/protobuf)$",
        description="grpc or http/protobuf.",
        json_schema_extra=_flag("forward.traces-protocol", "attribution", metavar="grpc|http/protobuf"),
    )
    forward_queue_spans: int = Field(
        forwarder.QUEUE_SPANS,
        ge=1,
        description="Spans waiting to be forwarded; past it they are dropped and counted.",
        json_schema_extra=_flag("forward.queue-spans", "attribution"),
    )
    web_bearer_token_file: str = Field(
        "",
        description="File holding a bearer token that /metrics requires (Authorization: Bearer ...); re-read when "
        "it changes; /healthz and /readyz stay open for probes. Empty: no authentication.",
        json_schema_extra=_flag("web.bearer-token-file", "security"),
    )
    otlp_bearer_token_file: str = Field(
        "",
        description="File holding a bearer token that OTLP senders must present (HTTP Authorization header, gRPC "
        "authorization metadata); re-read when it changes. Empty: no authentication.",
        json_schema_extra=_flag("otlp.bearer-token-file", "security"),
    )
    web_tls_cert_file: str = Field(
        "",
        description="PEM certificate chain that /metrics, /healthz and /readyz are served with over HTTPS (with "
        "web_tls_key_file); re-loaded when the files change. Empty: plain HTTP.",
        json_schema_extra=_flag("web.tls-cert-file", "security"),
    )
    web_tls_key_file: str = Field(
        "",
        description="Unencrypted PEM private key of web_tls_cert_file.",
        json_schema_extra=_flag("web.tls-key-file", "security"),
    )
    web_tls_client_ca_file: str = Field(
        "",
        description="PEM CA certificates that must sign a client certificate for any web request (mTLS; needs "
        "web_tls_cert_file; probes then need one too). Empty: no client certificate asked.",
        json_schema_extra=_flag("web.tls-client-ca-file", "security"),
    )
    otlp_tls_cert_file: str = Field(
        "",
        description="PEM certificate chain that both OTLP receivers (gRPC and HTTP) are served with over TLS (with "
        "otlp_tls_key_file); re-loaded when the files change. Empty: plain gRPC and HTTP.",
        json_schema_extra=_flag("otlp.tls-cert-file", "security"),
    )
    otlp_tls_key_file: str = Field(
        "",
        description="Unencrypted PEM private key of otlp_tls_cert_file.",
        json_schema_extra=_flag("otlp.tls-key-file", "security"),
    )
    otlp_tls_client_ca_file: str = Field(
        "",
        description="PEM CA certificates that must sign the client certificate of every OTLP sender (mTLS; needs "
        "otlp_tls_cert_file). Empty: no client certificate asked.",
        json_schema_extra=_flag("otlp.tls-client-ca-file", "security"),
    )
    log_level: str = Field(
        "info",
        pattern=r"^(?i:debug|info|warning|error)$",
        description="debug, info, warning or error.",
        json_schema_extra=_flag("log.level", "logging", metavar="debug|info|warning|error"),
    )

    @field_validator("instances", mode="before")
    @classmethod
    def _parse_instances(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("slo_latency_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("slo_latency_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for metric, seconds in value.items():
            if metric not in SLO_METRICS:
                raise ValueError(f"{metric!r} is not a latency SLO metric ({', '.join(SLO_METRICS)})")
            if any(not math.isfinite(s) or s <= 0 for s in seconds):
                raise ValueError(f"{metric}: thresholds must be finite and > 0")
        return value

    @field_validator("model_map", "gpu_price_per_hour", mode="before")
    @classmethod
    def _parse_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p for p in text.split(",") if p.strip()]
            out: dict[str, str] = {}
            for pair in pairs:
                key, sep, mapped = pair.partition("=")
                if not sep or not key.strip() or not mapped.strip():
                    raise ValueError(f"expected 'key=value' pairs, got {pair!r}")
                out[key.strip()] = mapped.strip()
            return out
        return value

    @field_validator("tenant_attribute_keys", *BUCKET_FIELDS, mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator(*BUCKET_FIELDS)
    @classmethod
    def _check_buckets(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one bucket")
        if any(not math.isfinite(b) or b <= 0 for b in value):
            raise ValueError("bucket bounds must be finite and > 0 (+Inf is implied)")
        if any(b >= c for b, c in itertools.pairwise(value)):
            raise ValueError("bucket bounds must be strictly increasing")
        return value

    @field_validator("web_bearer_token_file", "otlp_bearer_token_file")
    @classmethod
    def _check_token_file(cls, value: str) -> str:
        if value and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read token file {value!r}")
        return value

    @field_validator("web_tls_cert_file", "otlp_tls_cert_file")
    @classmethod
    def _check_tls_cert(cls, value: str) -> str:
        if value:
            _tls_check(tls.check_certificate_file, value)
        return value

    @field_validator("web_tls_key_file", "otlp_tls_key_file")
    @classmethod
    def _check_tls_key(cls, value: str, info: ValidationInfo) -> str:
        group = str(info.field_name).removesuffix("_tls_key_file")
        cert_field = f"{group}_tls_cert_file"
        if cert_field not in info.data:
            return value  # the certificate has its own error
        cert = info.data[cert_field]
        if bool(cert) != bool(value):
            given, missing = (cert_field, info.field_name) if cert else (info.field_name, cert_field)
            raise ValueError(f"{given} is set but {missing} is not: TLS needs both or neither")
        if value:
            _tls_check(tls.check_key_file, cert, value)
        return value

    @field_validator("web_tls_client_ca_file", "otlp_tls_client_ca_file")
    @classmethod
    def _check_tls_client_ca(cls, value: str, info: ValidationInfo) -> str:
        group = str(info.field_name).removesuffix("_tls_client_ca_file")
        cert_field = f"{group}_tls_cert_file"
        if value and cert_field in info.data and not info.data[cert_field]:
            raise ValueError(
                f"a client CA (mTLS) needs TLS: set {group}_tls_cert_file and {group}_tls_key_file as well"
            )
        if value:
            _tls_check(tls.check_certificate_file, value, "client CA")
        return value

    @field_validator("web_listen_address", "otlp_grpc_listen_address", "otlp_http_listen_address")
    @classmethod
    def _check_address(cls, value: str, info: Any) -> str:
        if value == "" and info.field_name != "web_listen_address":
            return value
        parse_address(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (passed as init kwargs) > env vars > the YAML file > defaults."""
        return (init_settings, env_settings, _FileSource(settings_cls))

    def histogram_buckets(self) -> dict[str, list[float]]:
        """Bucket bounds by histogram metric name: the configured edges plus every SLO threshold of its metric."""
        out: dict[str, list[float]] = {spec.name: list(getattr(self, field)) for field, spec in BUCKET_FIELDS.items()}
        for metric, seconds in self.slo_latency_thresholds.items():
            for spec in SLO_METRICS[metric]:
                out[spec.name] = sorted(set(out[spec.name]) | set(seconds))
        return out


def _tls_check(check: Callable[..., None], *args: str) -> None:
    try:
        check(*args)
    except tls.TlsError as exc:
        raise ValueError(str(exc)) from None


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the YAML config file by `load_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_VALUES.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get({}))


def parse_address(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT); raises ValueError with a readable message."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0..65535")
    host = host.strip("[]")
    return host or "0.0.0.0", port


def _extra(name: str) -> dict[str, Any]:
    extra = Settings.model_fields[name].json_schema_extra
    assert isinstance(extra, dict)
    return extra


def flag_of(name: str) -> str:
    """The command-line flag of a setting."""
    return f"--{_extra(name)['flag']}"


def env_of(name: str) -> str:
    """The environment variable of a setting."""
    return ENV_PREFIX + name.upper()


def group_of(name: str) -> str:
    """The `serve --help` group of a setting: a key of HELP_GROUPS, or OTHER_GROUP."""
    group = str(_extra(name).get("group", ""))
    return group if group in HELP_GROUPS else OTHER_GROUP


def metavar_of(name: str) -> str:
    """What goes after a setting's flag: its own metavar, else one read off its name and type."""
    extra = _extra(name)
    if "metavar" in extra:
        return str(extra["metavar"])
    annotation = Settings.model_fields[name].annotation
    for suffix, metavar in (("_seconds", "SECONDS"), ("_bytes", "BYTES"), ("_file", "FILE"), ("_address", "HOST:PORT")):
        if name.endswith(suffix):
            return metavar
    if annotation is bool:
        return "true|false"
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if name.endswith("_socket"):
        return "PATH"
    return "NAME"


def _words(text: str) -> str:
    """A setting named any way (field, flag, env var; any case) as lower-case words joined by `_`."""
    key = text.strip().lstrip("-").lower()
    key = key.removeprefix(ENV_PREFIX.lower())
    return key.replace(".", "_").replace("-", "_")


def closest_setting(text: str) -> str | None:
    """The setting a mistyped name most likely meant (a field name, flag or env var, any case; the flag's words
    where the env var or key wants the field's, as `price_gpu_per_hour` for gpu_price_per_hour), or None."""
    key = _words(text)
    names: dict[str, str] = {}  # every spelling of a setting, as _words gives it: field
    for name in Settings.model_fields:
        names[name] = name
        names.setdefault(_words(flag_of(name)), name)
    if key in names:
        return names[key]
    # The same words in another order (tenant_cap_model for model_cap would be too far for the ratio below).
    reordered = {"_".join(sorted(spelling.split("_"))): name for spelling, name in names.items()}
    same_words = reordered.get("_".join(sorted(key.split("_"))))
    if same_words is not None:
        return same_words
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    return names[close[0]] if close else None


def _did_you_mean(text: str, spell: Callable[[str], str]) -> str:
    """'; did you mean X?' with X the closest setting spelled by `spell` (env_of, flag_of, str), or ''."""
    name = closest_setting(text)
    return f"; did you mean {spell(name)}?" if name is not None else ""


def load_settings(flags: dict[str, Any] | None = None, config_file: Path | None = None) -> Settings:
    """Build the settings from flags, env vars, a YAML file and defaults; raise ConfigError naming every problem."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping of setting: value")
        file_values = loaded
    unknown = [
        f"  - {key}: not a known setting (env var){_did_you_mean(key, env_of)}"
        for key in sorted(os.environ)
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() not in Settings.model_fields
    ]
    token = _FILE_VALUES.set(file_values)
    try:
        settings = Settings(**(flags or {}))
    except ValidationError as exc:
        raise ConfigError("\n".join([_describe(exc), *unknown])) from None
    finally:
        _FILE_VALUES.reset(token)
    if unknown:
        raise ConfigError("\n".join(["invalid configuration:", *unknown]))
    return settings


def _describe(exc: ValidationError) -> str:
    lines = [f"invalid configuration ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        if name in Settings.model_fields:
            where = f"{name} ({flag_of(name)}, {env_of(name)})"
        else:
            where = f"{name} (unknown setting)"
        message = error["msg"]
        given = error.get("input")
        if error["type"] == "extra_forbidden":
            message = "not a known setting" + _did_you_mean(name, str)
        elif given is not None and not isinstance(given, dict):
            message = f"{message} (got {given!r})"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)
