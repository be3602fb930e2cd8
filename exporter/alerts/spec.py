"""The SLO spec (the default is `exporter/alerts/slos.yaml`, shipped in the package): a pydantic model whose errors
name every problem at once."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from exporter.alerts.names import LATENCY_METRICS, LATENCY_TITLES
from exporter.alerts.timescale import MAX_TIME_SCALE, MIN_SCALED_WINDOW_S
from exporter.alerts.windows import DEFAULT_TIERS, format_duration, parse_duration, sli_windows
from exporter.metrics import catalog

DEFAULT_SPEC = Path(__file__).with_name("slos.yaml")  # package data (pyproject.toml), so installs have it too

# Labels an SLO may group by: those present on every series its SLI reads. A latency SLO grouped by tenant reads
# the per-tenant histogram, which exists for TTFT and TPOT only (the rest are kept per model).
TENANT_LATENCY_METRICS: dict[str, catalog.MetricSpec] = {
    "time_to_first_token": catalog.TENANT_TTFT,
    "time_per_output_token": catalog.TENANT_TPOT,
}
AVAILABILITY_GROUP_LABELS = tuple(
    label for label in catalog.ENGINE_HTTP_RESPONSES.labels if label in catalog.ENGINE_FINISHED.labels
)  # vllm_instance, model


class SpecError(Exception):
    """The SLO spec is unreadable or invalid; the message names every problem."""


class SloSpec(BaseModel):
    """One SLO. Fields are validated in order, so later checks can read earlier fields."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Short id: the `slo` label and part of alert names.")
    sli: Literal["latency", "availability"]
    metric: str | None = Field(None, description="Latency SLIs: the histogram (time_to_first_token, ...).")
    group_by: list[str] = Field(default_factory=lambda: ["model"], description="One SLO per value of these labels.")
    buckets: list[float] | None = Field(
        None, description="Latency SLIs: the histogram's bucket edges if the exporter runs with --buckets.*."
    )
    threshold_seconds: float | None = Field(None, description="Latency SLIs: a request slower than this is bad.")
    objective: float = Field(description="Share of requests that must be good over the period, e.g. 0.99.")
    min_request_rate: float = Field(0.0, ge=0, description="Requests/s under which the SLO does not page.")
    description: str = Field("", description="What the SLO promises, for the docs.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        sli = info.data.get("sli")
        if sli == "availability" and value is not None:
            raise ValueError("an availability SLO takes no metric (it reads the engine's HTTP and finish counters)")
        if sli == "latency":
            if value is None:
                raise ValueError(f"a latency SLO needs a metric: one of {', '.join(LATENCY_METRICS)}")
            if value not in LATENCY_METRICS:
                raise ValueError(f"unknown metric {value!r}: one of {', '.join(LATENCY_METRICS)}")
        return value

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return None
        if info.data.get("sli") != "latency":
            raise ValueError("only a latency SLO takes buckets")
        if not value or any(not math.isfinite(b) or b <= 0 for b in value) or value != sorted(set(value)):
            raise ValueError("buckets must be positive, finite and strictly increasing")
        return value

    @field_validator("threshold_seconds")
    @classmethod
    def _threshold(cls, value: float | None, info: ValidationInfo) -> float | None:
        sli = info.data.get("sli")
        if sli == "availability" and value is not None:
            raise ValueError("an availability SLO takes no threshold_seconds")
        if sli != "latency":
            return value
        if value is None:
            raise ValueError("a latency SLO needs threshold_seconds (a bucket edge of its histogram)")
        metric = info.data.get("metric")
        if metric not in LATENCY_METRICS or "buckets" not in info.data:
            return value  # the metric or buckets error is reported already
        spec = _histogram(metric, info.data.get("group_by", ["model"]))
        edges = info.data["buckets"] or list(spec.default_buckets)
        if value not in edges:
            below = [b for b in edges if b < value][-1:]
            above = [b for b in edges if b > value][:1]
            near = ", ".join(f"{b:g}" for b in below + above)
            source = "the given buckets" if info.data["buckets"] else "the exporter's default buckets"
            raise ValueError(
                f"{value:g} s is not a bucket edge of {spec.name} ({source}; nearest: {near}): the SLI counts "
                "requests per bucket, so the threshold must be an edge. Pick an edge, or if the exporter runs "
                "with other --buckets.* (or slo_latency_thresholds, which the Helm chart fills from this spec), "
                "give its edges as `buckets`"
            )
        return value

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: float, info: ValidationInfo) -> float:
        if not 0 < value < 1:
            raise ValueError(f"objective must be between 0 and 1 exclusive, e.g. 0.99 (got {value!r})")
        period_s = (info.context or {}).get("period_s")
        if isinstance(period_s, int):
            budget = 1 - value
            for tier in DEFAULT_TIERS:
                factor = tier.factor(period_s)
                if factor * budget > 1:
                    raise ValueError(
                        f"objective {value} is too loose for a {format_duration(period_s)} period: the "
                        f"{tier.long}/{tier.short} tier needs an error ratio of {factor:g} x {budget:.4g} = "
                        f"{factor * budget:.3g}, which can never happen; raise the objective or shorten the period"
                    )
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str], info: ValidationInfo) -> list[str]:
        sli = info.data.get("sli")
        metric = info.data.get("metric")
        if sli == "latency":
            allowed: tuple[str, ...] = ("model", "tenant") if metric in TENANT_LATENCY_METRICS else ("model",)
        else:
            allowed = AVAILABILITY_GROUP_LABELS
        unknown = [label for label in value if label not in allowed]
        if sli is not None and unknown:
            raise ValueError(
                f"cannot group this {sli} SLO by {', '.join(unknown)}: its series carry {', '.join(allowed)}"
                + (" (per tenant the exporter keeps TTFT and TPOT only)" if "tenant" in unknown else "")
            )
        if len(set(value)) != len(value):
            raise ValueError("group_by lists a label twice")
        return value

    @property
    def histogram(self) -> catalog.MetricSpec:
        """The latency histogram (latency SLOs only): per tenant when grouped by tenant, else per model."""
        assert self.metric is not None, "availability SLOs have no histogram"
        return _histogram(self.metric, self.group_by)

    @property
    def budget(self) -> float:
        """The error budget: the share of requests allowed to be bad (1 - objective, without float noise)."""
        return round(1 - self.objective, 12)

    @property
    def title(self) -> str:
        """What the SLI measures, for humans: `TTFT`, `availability`."""
        return LATENCY_TITLES[self.metric] if self.metric is not None else "availability"

    @property
    def good(self) -> str:
        """What a good request is, for humans: `TTFT <= 1 s`."""
        if self.threshold_seconds is None:
            return "answered without a server or engine error"
        return f"{self.title} <= {self.threshold_seconds:g} s"


def _histogram(metric: str, group_by: list[str]) -> catalog.MetricSpec:
    """The histogram a latency SLI reads: the per-tenant one when it is grouped by tenant."""
    return TENANT_LATENCY_METRICS[metric] if "tenant" in group_by else LATENCY_METRICS[metric]


class RoutingSpec(BaseModel):
    """Where Alertmanager sends pages and tickets (webhooks; edit alertmanager.yaml for other integrations)."""

    model_config = ConfigDict(extra="forbid")

    pager_url: str = Field(default="http://pager.example.invalid/alertmanager", pattern=r"^https?://")
    ticket_url: str = Field(default="http://tickets.example.invalid/alertmanager", pattern=r"^https?://")


class AlertSpec(BaseModel):
    """The whole spec: period, SLOs and where the generated alerts point."""

    model_config = ConfigDict(extra="forbid")

    period: str = Field("30d", description="The SLO period: the window the error budget is counted over.")
    exporter_job: str = Field("llm-token-exporter", description="Prometheus job scraping the exporters.")
    runbook_url: str = Field("alerts/README.md", description="Where alerts/README.md is served; anchors are added.")
    routing: RoutingSpec = Field(default_factory=lambda: RoutingSpec())
    time_scale: float = Field(
        1.0,
        description="For tests and demos only: divide every window, `for:`, the period and the Alertmanager timers "
        "by this (factors unchanged; see exporter/alerts/timescale.py). 1 for real use.",
    )
    slos: list[SloSpec] = Field(min_length=1)

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        seconds = parse_duration(value)
        longest = max(tier.long_s for tier in DEFAULT_TIERS)
        if seconds < longest:
            raise ValueError(f"period {value} is shorter than the longest alert window ({format_duration(longest)})")
        return value

    @field_validator("time_scale")
    @classmethod
    def _time_scale(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"time_scale must be a positive number, 1 for real use (got {value!r})")
        if value > MAX_TIME_SCALE:
            shortest = min(sli_windows())
            raise ValueError(
                f"time_scale {value:g} makes the {format_duration(shortest)} window {shortest / value:.3g} s; it must "
                f"stay at least {MIN_SCALED_WINDOW_S:g} s (two 1 s scrapes), so time_scale <= {MAX_TIME_SCALE:g}"
            )
        return value

    @field_validator("slos")
    @classmethod
    def _unique(cls, value: list[SloSpec]) -> list[SloSpec]:
        names = [slo.name for slo in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"SLO names must be unique: {', '.join(twice)} appear more than once")
        return value

    @property
    def period_s(self) -> int:
        """The period in seconds."""
        return parse_duration(self.period)


def parse_spec(data: Any, source: str = "SLO spec") -> AlertSpec:
    """Validate already-parsed YAML; raise SpecError naming every problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source} must hold a mapping with `slos:` (and optionally `period:`, ...)")
    context: dict[str, Any] = {}
    with contextlib.suppress(ValueError):  # a bad period is reported by the model
        context["period_s"] = parse_duration(str(data.get("period", "30d")))
    try:
        return AlertSpec.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError(_describe(exc, data, source)) from None


def load_spec(path: Path = DEFAULT_SPEC) -> AlertSpec:
    """Read and validate a spec file (default: the package's own); raise SpecError naming every problem."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read SLO spec {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"SLO spec {path} is not valid YAML: {exc}") from exc
    return parse_spec(data, str(path))


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    count = exc.error_count()
    lines = [f"invalid {source} ({count} problem{'s' if count > 1 else ''}):"]
    for error in exc.errors():
        where = _where(error["loc"], data)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "not a known key"
        elif error["type"] == "missing":
            message = "required"
        elif error["type"] != "value_error" and "input" in error and not isinstance(error["input"], dict | list):
            message = f"{message} (got {error['input']!r})"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def _where(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    text = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" ({node['name']})"
        else:
            text += f".{part}" if text else part
            node = node.get(part) if isinstance(node, dict) else None
    return text or "(top level)"
