"""Latency: where request time goes (queue, prefill, decode), per model and tenant, and what throttling costs."""

from __future__ import annotations

from exporter.dashboards import promql as q
from exporter.dashboards.builder import DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import FILTERS, VARIABLES
from exporter.metrics import catalog as c

UID = "llm-latency"
_EXEMPLARS = (
    " Exemplars (dots) carry the request's trace_id: with the Prometheus data source's exemplar link set to "
    "your trace backend, a click opens the trace."
)
_NAMES = {
    c.TTFT: ("TTFT", "time to first token: queue + prefill"),
    c.TPOT: ("TPOT", "time per output token after the first (decode speed)"),
    c.QUEUE: ("Queue time", "time waiting in the engine's queue before first scheduled"),
    c.PREFILL: ("Prefill time", "prompt processing, from first scheduling to the first token"),
    c.DECODE: ("Decode time", "from the first to the last output token"),
    c.E2E: ("End-to-end latency", "arrival to completion"),
}


def _percentiles(hist: c.MetricSpec) -> PanelSpec:
    name, what = _NAMES[hist]
    return PanelSpec(
        f"{name} p50 / p95 / p99",
        f"Percentiles of {what}, per model, from the exporter's histograms over the rate window (interpolated "
        f"within buckets)." + _EXEMPLARS + FILTERS,
        tuple(
            Query(q.quantile(p, hist, "model"), f"p{round(p * 100)} {{{{model}}}}", exemplar=True)
            for p in (0.5, 0.95, 0.99)
        ),
        unit="s",
        w=8,
    )


def _heatmap(hist: c.MetricSpec) -> PanelSpec:
    name, what = _NAMES[hist]
    return PanelSpec(
        f"{name} distribution",
        f"Requests per bucket of {what} over time: darker cells hold more requests; a band moving up is a "
        f"regression, a second band a slow subset (a model, a tenant, long prompts)." + FILTERS,
        (Query(f"sum by (le) (increase({q.sel(hist, '_bucket')}[{q.RATE}]))", "{{le}}"),),
        kind="heatmap",
        unit="s",
        w=8,
    )


def spec() -> DashboardSpec:
    """The latency dashboard."""
    panels: list[PanelSpec] = []
    for hist in c.LATENCY_HISTOGRAMS:
        panels.append(_percentiles(hist))
    for hist in c.LATENCY_HISTOGRAMS:
        panels.append(_heatmap(hist))
    for tenant_hist, hist in ((c.TENANT_TTFT, c.TTFT), (c.TENANT_TPOT, c.TPOT)):
        name, _ = _NAMES[hist]
        panels.append(
            PanelSpec(
                f"{name} p95 by model and tenant",
                f"95th percentile of {name} per model and tenant: which tenant's traffic is slow (long prompts, "
                "bursts) and whether it is one model or all. Interpolated between the few per-tenant bucket edges "
                "(they hold the SLO thresholds), so read it as a band, not a point." + FILTERS,
                (Query(q.quantile(0.95, tenant_hist, "model, tenant"), "{{model}} {{tenant}}"),),
                unit="s",
                w=12,
            )
        )
    for hist in (c.TTFT, c.TPOT):
        name, _ = _NAMES[hist]
        panels.append(
            PanelSpec(
                f"{name} p95 with and without GPU throttling",
                f"95th percentile of {name} for requests that ran while a GPU of their instance reported a clock "
                "event other than idle (throttled=true: power cap, thermal, ...) against those that did not. A gap "
                "is latency the GPUs' power or cooling costs." + FILTERS,
                (Query(q.quantile(0.95, hist, "model, throttled"), "{{model}} throttled={{throttled}}"),),
                unit="s",
            )
        )
    return DashboardSpec(
        UID,
        "LLM / Latency",
        "TTFT, TPOT, queue, prefill, decode and end-to-end latency: percentiles, distributions, per model and tenant, "
        "with and without GPU throttling; exemplars link to traces.",
        tuple(panels),
        VARIABLES,
    )
