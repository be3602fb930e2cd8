"""SLOs: burn rate per window, error budget remaining, attainment and the alerts firing, from the recording rules."""

from __future__ import annotations

from exporter.alerts import rules as r
from exporter.alerts.windows import DEFAULT_TIERS, format_duration
from exporter.dashboards import promql as q
from exporter.dashboards.builder import BURN_RATE, DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import VARIABLES

UID = "llm-slos"
_BY = "slo, model"
_MODEL = " Filtered by model (SLO series are per model across the fleet)."


def _burn(window_s: int) -> Query:
    w = format_duration(window_s)
    return Query(q.sel(r.BURN.format(w=w)), f"{{{{slo}}}} {{{{model}}}} {w}")


def _windows(severity: str) -> list[int]:
    return sorted({w for t in DEFAULT_TIERS if t.severity == severity for w in (t.long_s, t.short_s)})


def spec() -> DashboardSpec:
    """The SLO dashboard."""
    tiers = ", ".join(f"{t.severity} {t.long}/{t.short} at {t.factor(30 * 86_400):g}x" for t in DEFAULT_TIERS)
    attainment = q.ratio(
        f"sum by ({_BY}) (sum_over_time({q.sel(r.ERRORS.format(w='5m'))}[{q.RANGE}]))",
        f"sum by ({_BY}) (sum_over_time({q.sel(r.REQUESTS.format(w='5m'))}[{q.RANGE}]))",
    )
    panels = (
        PanelSpec(
            "Error budget remaining",
            "Share of each SLO's 30-day error budget still left per model (1 = untouched, 0 = spent, negative = "
            "overspent)." + _MODEL,
            (Query(q.sel(r.BUDGET_LEFT), "{{slo}} {{model}}"),),
            kind="stat",
            unit="percentunit",
        ),
        PanelSpec(
            "Attainment over the range",
            "Share of good requests over the dashboard's time range per SLO and model (request-weighted from the "
            "5m SLI series); compare with the objective (e.g. 99 %)." + _MODEL,
            (Query(f"1 - {attainment}", "{{slo}} {{model}}", instant=True),),
            kind="stat",
            unit="percentunit",
        ),
        PanelSpec(
            "Burn rate, page windows",
            f"Error ratio / error budget over each window (1 spends exactly the budget in 30 days). Alert tiers: "
            f"{tiers}; a tier fires when both its windows burn past its factor." + _MODEL,
            tuple(_burn(w) for w in _windows("page")),
            unit=BURN_RATE,
        ),
        PanelSpec(
            "Burn rate, ticket windows",
            "Burn rate over the ticket tiers' windows, their tiers' evidence: a slow leak that "
            "will spend the budget before the period ends." + _MODEL,
            tuple(_burn(w) for w in _windows("ticket")),
            unit=BURN_RATE,
        ),
        PanelSpec(
            "SLI error ratio (5m)",
            "Share of bad requests over the last 5 minutes per SLO and model (over the latency threshold, or 5xx "
            "for availability): the raw signal behind the burn rates." + _MODEL,
            (Query(q.sel(r.RATIO.format(w="5m")), "{{slo}} {{model}}"),),
            unit="percentunit",
        ),
        PanelSpec(
            "Firing alerts",
            "Alerts firing now by name, severity and model: SLO burn alerts (slo label) and cause alerts (0 when "
            "none fires). From Prometheus's ALERTS series; filtered by model where the alert has one.",
            (
                Query(
                    'count by (alertname, severity, model) (ALERTS{alertstate="firing", model=~"$model|"})',
                    "{{alertname}} {{severity}} {{model}}",
                    instant=True,
                ),
            ),
            kind="stat",
            unit="count:alerts",
        ),
    )
    return DashboardSpec(
        UID,
        "LLM / SLOs",
        "Multiwindow burn rates, error budget remaining, attainment and firing alerts of the SLOs in "
        "exporter/alerts/slos.yaml, read from the generated recording rules.",
        panels,
        VARIABLES,
    )
