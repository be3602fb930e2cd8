"""Metric names the rules use: catalog names and series suffixes."""

from __future__ import annotations

from exporter.metrics import catalog

# Attribution metrics, from the catalog.
GPU_SECONDS = catalog.GPU_SECONDS.name  # {model, tenant, phase}
ENERGY_JOULES = catalog.ENERGY.name  # {model, tenant, phase}
COST_USD = catalog.COST.name  # {model, tenant, phase}
KV_TOKEN_SECONDS = catalog.KV_TOKEN_SECONDS.name  # {model, tenant, phase}
GPU_IDLE_SECONDS = catalog.IDLE_SECONDS.name  # {gpu}
GPU_UNATTRIBUTED_SECONDS = catalog.UNATTRIBUTED_SECONDS.name  # {gpu, reason}
IDLE_COST_USD = catalog.IDLE_COST.name  # {gpu}
GROUP_GPU_SECONDS = catalog.GROUP_GPU_SECONDS.name  # {group, model}: a multi-node group's worker GPUs
GROUP_ENERGY_JOULES = catalog.GROUP_ENERGY.name  # {group, model}
GROUP_COST_USD = catalog.GROUP_COST.name  # {group, model}
INSTANCE_INFO = catalog.INSTANCE_INFO.name  # {vllm_instance, model, ..., group}
UNATTRIBUTED_COST_USD = catalog.UNATTRIBUTED_COST.name  # {gpu, reason}

# Prometheus's own per-target series (not the exporter's).
UP = "up"

# Recording rules (rules.py, fleet.py) are named level:metric:operations; the level names the labels their series
# keep, which is what the dashboards filter on.
LEVELS: dict[str, tuple[str, ...]] = {
    "model_tenant_type": ("model", "tenant", "type"),
    "model_tenant": ("model", "tenant"),
    "group_model_tenant": ("group", "model", "tenant"),  # a multi-node group's leader and workers together
    "group_model": ("group", "model"),
    "model": ("model",),
    "slo": ("model", "slo"),  # `slo` and the SLO's group_by labels: model unless a spec says otherwise
    "fleet": (),
    "instance": ("instance",),
}


def level(record: str) -> str:
    """The level of a recorded series' name: `model_tenant` in `model_tenant:llm_tokens:rate5m`."""
    return record.split(":", 1)[0]


# The latency histograms an SLO may name, by short name: time_to_first_token, time_per_output_token, queue, ...
LATENCY_METRICS: dict[str, catalog.MetricSpec] = {
    spec.name.removeprefix("llm_request_").removesuffix("_seconds"): spec for spec in catalog.LATENCY_HISTOGRAMS
}


def bucket(spec: catalog.MetricSpec) -> str:
    """The `_bucket` series of a histogram."""
    return f"{spec.name}_bucket"


def count(spec: catalog.MetricSpec) -> str:
    """The `_count` series of a histogram."""
    return f"{spec.name}_count"


# How the docs and alert texts name each latency metric.
LATENCY_TITLES: dict[str, str] = {
    "time_to_first_token": "TTFT",
    "time_per_output_token": "TPOT",
    "queue": "queue time",
    "prefill": "prefill time",
    "decode": "decode time",
    "e2e": "end-to-end latency",
}
assert set(LATENCY_TITLES) == set(LATENCY_METRICS), "every latency histogram needs a title"
