"""Cost and energy: dollars and joules per token by model, tenant and phase, and where the rest of the GPU went."""

from __future__ import annotations

from exporter.alerts import fleet, names
from exporter.dashboards import promql as q
from exporter.dashboards.builder import TOKENS, DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import FILTERS, VARIABLES
from exporter.metrics import catalog as c

UID = "llm-cost-energy"
_MT = "model, tenant"


def _per_token(spec: c.MetricSpec, by: str) -> str:
    """rate(spec) by `by` / tokens by the same labels."""
    return q.ratio(q.rate(spec, by), q.rate(c.TOKENS, by))


def _per_token_by_phase(spec: c.MetricSpec) -> str:
    """rate(spec) by model and phase / tokens by model: per phase the phase's share of the per-token figure."""
    return f"({q.rate(spec, 'model, phase')})\n/ on (model) group_left ()\n({q.rate(c.TOKENS, 'model')})"


def spec() -> DashboardSpec:
    """The cost and energy dashboard."""
    panels = (
        PanelSpec(
            "$ per million tokens, usage basis",
            "Dollars charged to requests per million tokens (input + output) per model and tenant: the GPU time "
            "and energy the requests used, idle time excluded. Compare tenants of one model, not models." + FILTERS,
            (Query(f"1e6 * {_per_token(c.COST, _MT)}", "{{model}} {{tenant}}"),),
            unit="currencyUSD",
        ),
        PanelSpec(
            "$ per million tokens, allocation basis",
            "Dollars per million tokens with each node's idle and unattributed cost shared among its users in "
            "proportion to their usage: what the GPUs really cost per token (fleet recording rule over 5m; "
            "filtered by model and tenant).",
            (Query(q.sel(fleet.ALLOCATED_USD_PER_MILLION), "{{model}} {{tenant}}"),),
            unit="currencyUSD",
        ),
        PanelSpec(
            "$ per million tokens by phase",
            "Usage-basis dollars per million tokens of each model split into prefill and decode: which phase "
            "dominates the bill (long prompts: prefill; long answers: decode). Kept per model, not per tenant (it "
            "would double the per-tenant cost series)." + FILTERS,
            (Query(f"1e6 * {_per_token_by_phase(c.COST_BY_PHASE)}", "{{model}} {{phase}}"),),
            unit="currencyUSD",
        ),
        PanelSpec(
            "Joules per token",
            "GPU energy charged to requests per token, per model and tenant (NVML energy split by token work)."
            + FILTERS,
            (Query(_per_token(c.ENERGY, _MT), "{{model}} {{tenant}}"),),
            unit="joule",
        ),
        PanelSpec(
            "Idle and unattributed cost",
            "Dollars per hour not charged to any request: idle GPU time (no token work) and unattributed time "
            "(work whose spans never came, or a GPU that was down), beside what requests and multi-node group "
            "workers used. A high unattributed share means the picture is incomplete." + FILTERS,
            (
                Query(f"3600 * {q.or_zero(q.rate(c.IDLE_COST))}", "idle"),
                Query(f"3600 * {q.or_zero(q.rate(c.UNATTRIBUTED_COST, 'reason'))}", "unattributed {{reason}}"),
                Query(f"3600 * {q.rate(c.COST)}", "charged to requests"),
                Query(f"3600 * {q.or_zero(q.rate(c.GROUP_COST))}", "multi-node group workers (busy)"),
            ),
            unit="currencyUSD",
        ),
        PanelSpec(
            "Idle and unattributed energy",
            "Watts of GPU energy not charged to any request (idle, unattributed by reason) beside the energy charged "
            "to requests." + FILTERS,
            (
                Query(q.or_zero(q.rate(c.IDLE_ENERGY)), "idle"),
                Query(q.or_zero(q.rate(c.UNATTRIBUTED_ENERGY, "reason")), "unattributed {{reason}}"),
                Query(q.rate(c.ENERGY), "charged to requests"),
                Query(q.or_zero(q.rate(c.GROUP_ENERGY)), "multi-node group workers (busy)"),
            ),
            unit="watt",
        ),
        PanelSpec(
            "Multi-node groups: $ per hour by tenant",
            "Dollars per hour of every GPU of each multi-node group (leader and workers, across nodes) per tenant: "
            "the tenant's charge on the leader's GPUs plus its share of the workers' busy usage (fleet recording "
            "rule over 5m). Empty without multi-node groups.",
            (Query(f"3600 * {q.sel(fleet.group_total(names.COST_USD))}", "{{group}} {{model}} {{tenant}}"),),
            unit="currencyUSD",
            fleet_only=True,
        ),
        PanelSpec(
            "GPU-hours by model and tenant",
            "GPU-hours charged to each model and tenant over the dashboard's time range (usage basis)." + FILTERS,
            (Query(f"{q.increase(c.GPU_SECONDS, _MT)} / 3600", "{{model}} {{tenant}}", instant=True),),
            kind="stat",
            unit="h",
        ),
        PanelSpec(
            "KV cache held by tenant",
            "Average KV-cache tokens each tenant kept resident (KV token-seconds per second): the memory bill of "
            "long contexts, which token counts alone miss." + FILTERS,
            (Query(q.rate(c.KV_TOKEN_SECONDS, _MT), "{{model}} {{tenant}}"),),
            unit=TOKENS,
        ),
    )
    return DashboardSpec(
        UID,
        "LLM / Cost and energy",
        "Dollars and joules per token by model, tenant and phase (usage and allocation basis), idle and "
        "unattributed cost and energy, GPU-hours and KV-cache token-seconds.",
        panels,
        VARIABLES,
    )
