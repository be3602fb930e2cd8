"""Our small builder over grafanalib (pinned, unmaintained): panel and dashboard specs in, Grafana JSON out.

Dashboards are written as `DashboardSpec`s of `PanelSpec`s; this module alone talks to grafanalib. Where
grafanalib lags current Grafana (Prometheus targets with `editorMode`/`exemplar`, the heatmap panel since
Grafana 9), it emits the current JSON itself; `model` then turns grafanalib's legacy output into the model
Grafana 11 and 12 write (`model.SCHEMA_VERSION`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grafanalib.core as g  # type: ignore[import-untyped]
from grafanalib._gen import DashboardEncoder  # type: ignore[import-untyped]

from exporter.dashboards import model

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
ALL = ".*"
# Units Grafana has no id for, in its custom-unit syntax: `count:` scales like a count (1.2K tok/s), `suffix:` does not.
TOKENS, TOKENS_PER_S, REQUESTS = "count:tok", "count:tok/s", "count:req"
BURN_RATE = "suffix:x"  # error ratio / error budget: 1x spends the budget in exactly the SLO period


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel; `instant` asks for the value at the range's end only (a stat of "now" or of a
    total over the range), so that series which ended earlier in the range do not show as rows."""

    expr: str
    legend: str = ""
    exemplar: bool = False
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    """A panel: kind is timeseries, stat or heatmap; w and h in grid units (24 across)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    w: int = 12
    h: int = 8
    # Shows what only a fleet has (a multi-node group spans nodes): empty on one node, so the single-node live test
    # leaves it to the fleet's (tests/e2e/test_fleet.py).
    fleet_only: bool = False


@dataclass(frozen=True)
class Variable:
    """A query variable over `label_values(...)`, multi-valued with an All value that also matches no label."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class DashboardSpec:
    """A whole dashboard: stable uid, title, description, tags, variables and panels (laid out in order)."""

    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = field(default=("llm-token-exporter",))


class _Raw:
    """Panel JSON written by us, for what grafanalib does not know."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json_data(self) -> dict[str, Any]:
        """grafanalib's encoder protocol."""
        return self.data


def _targets(panel: PanelSpec) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "exemplar": q.exemplar,
            "expr": q.expr,
            "format": "heatmap" if panel.kind == "heatmap" else "time_series",
            "instant": q.instant,
            "legendFormat": q.legend or "__auto",
            "range": not q.instant,
            "refId": chr(ord("A") + i),
        }
        for i, q in enumerate(panel.queries)
    ]


def _heatmap(panel: PanelSpec, pid: int, pos: g.GridPos) -> _Raw:
    """The heatmap panel of Grafana 9+ (grafanalib 0.7.1 only knows the old one): pre-bucketed Prometheus data."""
    return _Raw(
        {
            "datasource": DATASOURCE,
            "description": panel.description,
            "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}, "overrides": []},
            "gridPos": pos.to_json_data(),
            "id": pid,
            "options": {
                "calculate": False,
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
                "legend": {"show": True},
                "rowsFrame": {"layout": "le"},
                "tooltip": {"mode": "single", "yHistogram": True},
                "yAxis": {"axisPlacement": "left", "unit": panel.unit},
            },
            "targets": _targets(panel),
            "title": panel.title,
            "type": "heatmap",
        }
    )


def _panel(panel: PanelSpec, pid: int, pos: g.GridPos) -> Any:
    targets = [_Raw(t) for t in _targets(panel)]
    common: dict[str, Any] = {
        "title": panel.title,
        "description": panel.description,
        "dataSource": DATASOURCE,
        "targets": targets,
        "gridPos": pos,
        "id": pid,
    }
    if panel.kind == "timeseries":
        return g.TimeSeries(unit=panel.unit, legendDisplayMode="list", tooltipMode="multi", **common)
    if panel.kind == "stat":
        # An instant query has no history to draw a sparkline from.
        graph = "none" if all(q.instant for q in panel.queries) else "area"
        return g.Stat(
            format=panel.unit, reduceCalc="lastNotNull", noValue="0", thresholds=[], graphMode=graph, **common
        )
    if panel.kind == "heatmap":
        return _heatmap(panel, pid, pos)
    raise ValueError(f"unknown panel kind {panel.kind!r}")


def layout(panels: tuple[PanelSpec, ...]) -> list[tuple[int, int]]:
    """(x, y) of each panel, packed left to right in rows 24 units wide."""
    out, x, y, row_h = [], 0, 0, 0
    for p in panels:
        if x + p.w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        out.append((x, y))
        x, row_h = x + p.w, max(row_h, p.h)
    return out


def _variables(spec: DashboardSpec) -> list[g.Template]:
    source = g.Template(name="datasource", label="Data source", query="prometheus", type="datasource", default=None)
    out = [source]
    for v in spec.variables:
        out.append(
            g.Template(
                name=v.name,
                label=v.label,
                query={"query": v.query, "refId": f"{v.name}-values"},
                dataSource=DATASOURCE,
                includeAll=True,
                multi=True,
                allValue=ALL,
                default="$__all",
                refresh=2,  # on time range change
                sort=1,
            )
        )
    return out


def build(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard's Grafana JSON model, as plain data."""
    panels = [
        _panel(p, i + 1, g.GridPos(h=p.h, w=p.w, x=x, y=y))
        for i, (p, (x, y)) in enumerate(zip(spec.panels, layout(spec.panels), strict=True))
    ]
    dashboard = g.Dashboard(
        title=spec.title,
        uid=spec.uid,
        description=spec.description,
        tags=list(spec.tags),
        templating=g.Templating(list=_variables(spec)),
        panels=panels,
        time=g.Time("now-1h", "now"),
        timezone="browser",
        refresh="30s",
        schemaVersion=model.SCHEMA_VERSION,
    )
    return model.dashboard(json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder)))


def render(data: dict[str, Any]) -> str:
    """Stable text: sorted keys, indent 2, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
