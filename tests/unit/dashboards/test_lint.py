"""The dashboards pass every lint rule (tests/unit/dashboards/lint.py), and each rule catches what it is for."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from exporter.dashboards import generate
from exporter.dashboards.promql import TARGET_LABELS
from exporter.metrics import catalog
from tests.support.procs import REPO
from tests.unit.dashboards import lint

CHART = REPO / "deploy/helm/llm-token-exporter"
CONTEXT = lint.context(REPO / "alerts/rules", CHART)
MODELS = generate.models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_dashboard_passes_every_rule(name: str) -> None:
    found = lint.lint(MODELS[name], CONTEXT)
    assert not found, "\n".join(map(str, found))


def test_the_dashboards_filter_on_labels_the_charts_monitor_attaches() -> None:
    assert set(TARGET_LABELS) <= lint.chart_target_labels(CHART)
    assert "node" in lint.chart_target_labels(CHART), "the chart's relabeling adds node"


def test_counters_and_gauges_come_from_the_catalog_and_the_recording_rules() -> None:
    assert catalog.REQUESTS.name in CONTEXT.counters and f"{catalog.TTFT.name}_bucket" in CONTEXT.counters
    assert catalog.ENGINE_KV_USAGE.name in CONTEXT.gauges and "slo:burn_rate:ratio_rate1h" in CONTEXT.gauges
    assert not CONTEXT.counters & CONTEXT.gauges


def _panel(expr: str, **changes: Any) -> dict[str, Any]:
    """The first time series panel of the overview with one query and `changes` applied."""
    panel: dict[str, Any] = copy.deepcopy(
        next(p for p in MODELS["llm-overview.json"]["panels"] if p["type"] == "timeseries")
    )
    panel["targets"] = [{**panel["targets"][0], "expr": expr, "refId": "A"}]
    panel.update(changes)
    return panel


def _findings(*panels: dict[str, Any]) -> set[tuple[str, str, str]]:
    data = copy.deepcopy(MODELS["llm-overview.json"])
    data["panels"] = list(panels)
    return {(f.dashboard, f.panel, f.rule) for f in lint.lint(data, CONTEXT)}


GOOD = 'sum by (model) (rate(llm_requests_total{namespace=~"$namespace", node=~"$node"}[$__rate_interval]))'
BROKEN = {
    "datasource-variable": _panel(GOOD, datasource={"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}),
    "rate-interval": _panel(GOOD.replace("$__rate_interval", "5m")),
    "rate-over-counters": _panel(
        'sum (rate(llm_engine_kv_cache_usage_ratio{namespace=~"$namespace", node=~"$node"}[$__rate_interval]))'
    ),
    "panel-unit": _panel(GOOD, fieldConfig={"defaults": {"unit": "short"}, "overrides": []}),
    "panel-description": _panel(GOOD, description=" "),
    "histogram-quantile": _panel(
        "histogram_quantile(0.9, sum by (model) "
        '(rate(llm_request_time_to_first_token_seconds_bucket{namespace=~"$namespace", node=~"$node"}'
        "[$__rate_interval])))"
    ),
    "target-labels": _panel(GOOD.replace(', node=~"$node"', ', job="llm-token-exporter"')),
}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_names_the_dashboard_panel_and_rule(rule: str) -> None:
    panel = {**BROKEN[rule], "title": f"broken {rule}"}
    assert _findings(panel) == {("llm-overview", f"broken {rule}", rule)}


def test_duplicate_titles_and_a_missing_datasource_variable() -> None:
    twice = [_panel(GOOD, title="Same"), _panel(GOOD, title="Same")]
    assert _findings(*twice) == {("llm-overview", "Same", "unique-titles")}
    data = copy.deepcopy(MODELS["llm-slos.json"])
    data["templating"]["list"] = [v for v in data["templating"]["list"] if v["name"] != "datasource"]
    assert {(f.panel, f.rule) for f in lint.lint(data, CONTEXT)} == {("-", "datasource-variable")}


def test_increase_may_total_the_range_but_rate_may_not() -> None:
    total = _panel(GOOD.replace("rate(", "increase(").replace("$__rate_interval", "$__range"), title="total")
    assert _findings(total) == set()
    assert _findings(_panel(GOOD.replace("$__rate_interval", "$__range"), title="r")) == {
        ("llm-overview", "r", "rate-interval")
    }
    assert str(lint.Finding("d", "p", "r", "m")) == "d / p: r: m"
