"""The current Grafana dashboard model: grafanalib's legacy JSON in, what Grafana 11 and 12 save themselves out.

grafanalib 0.7.1 writes the model of Grafana 7/8: `null` for every unset field, keys Grafana has long stopped
reading (`style`, `hideControls`, `sharedCrosshair`, `__inputs`, panel `span`/`height`, templating `tags`, ...)
and panel options without what later versions added. Grafana migrates such JSON on load, so a user who opens,
saves and diffs a dashboard gets noise, and schema-checking provisioning tools refuse it. This module turns it
into the JSON a current Grafana saves itself: deprecated keys and nulls dropped, the options and field config a
new panel of each type gets filled in, the schemaVersion set.

Only plain data here; `builder` is the one module that knows grafanalib. A key this module has no rule for is
an error, so a grafanalib change cannot slip a legacy key through.
"""

from __future__ import annotations

import copy
from typing import Any

# 41 is what Grafana 11.6 and 12.0-12.1 write. Grafana 12.2+ writes 42, whose one migration (hideFrom.tooltip
# set with hideFrom.viz in field overrides) has nothing to change here, so it loads these unchanged; Grafana
# 12.0-12.1's backend migrator refuses a version above its own 41, and Grafana 11.0-11.5 (39, 40) load a newer
# version as is (their migrations only run upwards).
SCHEMA_VERSION = 41

Json = dict[str, Any]

# Each object's keys fall in three sets. LEGACY: keys the current model does not have, always dropped (with
# why). DEFAULTS: keys of the model that grafanalib always writes, dropped when they hold its default (a current
# Grafana leaves them out of a new dashboard), kept when set. KEPT: the rest of the model. Nulls go first.
DASHBOARD_LEGACY = {
    "__inputs": "export-for-sharing inputs; the datasource variable replaces them",
    "hideControls": "pre-5.0 option, no longer read",
    "sharedCrosshair": "replaced by graphTooltip in Grafana 4.4",
    "style": "per-dashboard dark/light theme, no longer read",
    "rows": "the pre-5.0 layout; panels carry gridPos",
}
DASHBOARD_DEFAULTS_WRITTEN: Json = {"version": 0}  # Grafana counts saves itself
DASHBOARD_KEPT = {
    "annotations",
    "description",
    "editable",
    "gnetId",
    "graphTooltip",
    "id",
    "links",
    "panels",
    "refresh",
    "schemaVersion",
    "tags",
    "templating",
    "time",
    "timepicker",
    "timezone",
    "title",
    "uid",
}
# What Grafana writes for the dashboard options it has defaults for. Its built-in "Annotations & Alerts" query is
# left out on purpose: Grafana adds it on load, and written here it would name Grafana's own data source
# (`-- Grafana --`) where every data source must be the `${datasource}` variable.
DASHBOARD_DEFAULTS: Json = {"fiscalYearStartMonth": 0, "weekStart": ""}

PANEL_LEGACY = {
    "editable": "pre-5.0 per-panel flag",
    "error": "pre-5.0 runtime state",
    "height": "pre-5.0 row layout; gridPos.h",
    "span": "pre-5.0 row layout; gridPos.w",
    "minSpan": "pre-5.0 row layout",
}
PANEL_DEFAULTS_WRITTEN: Json = {
    "hideTimeOverride": False,
    "links": [],
    "transformations": [],
    "transparent": False,
    "maxDataPoints": 100,  # grafanalib's fixed 100 points; Grafana's default follows the panel's width
}
PANEL_KEPT = {
    "cacheTimeout",
    "datasource",
    "description",
    "fieldConfig",
    "gridPos",
    "id",
    "interval",
    "maxPerRow",
    "options",
    "repeat",
    "repeatDirection",
    "targets",
    "timeFrom",
    "timeShift",
    "title",
    "type",
}

# fieldConfig.defaults.custom of a new time series panel as Grafana 11.6/12 saves it.
TIMESERIES_CUSTOM: Json = {
    "axisBorderShow": False,
    "axisCenteredZero": False,
    "axisColorMode": "text",
    "axisLabel": "",
    "axisPlacement": "auto",
    "barAlignment": 0,
    "barWidthFactor": 0.6,
    "drawStyle": "line",
    "fillOpacity": 0,
    "gradientMode": "none",
    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
    "insertNulls": False,
    "lineInterpolation": "linear",
    "lineWidth": 1,
    "pointSize": 5,
    "scaleDistribution": {"type": "linear"},
    "showPoints": "auto",
    "spanNulls": False,
    "stacking": {"group": "A", "mode": "none"},
    "thresholdsStyle": {"mode": "off"},
}
TIMESERIES_OPTIONS: Json = {
    "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
    "tooltip": {"hideZeros": False, "mode": "single", "sort": "none"},
}
STAT_OPTIONS: Json = {
    "colorMode": "value",
    "graphMode": "area",
    "justifyMode": "auto",
    "orientation": "auto",
    "percentChangeColorMode": "standard",
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "showPercentChange": False,
    "textMode": "auto",
    "wideLayout": True,
}
HEATMAP_CUSTOM: Json = {
    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
    "scaleDistribution": {"type": "linear"},
}
HEATMAP_OPTIONS: Json = {
    "calculate": False,
    "cellGap": 1,
    "color": {
        "exponent": 0.5,
        "fill": "dark-orange",
        "mode": "scheme",
        "reverse": False,
        "scale": "exponential",
        "scheme": "Oranges",
        "steps": 64,
    },
    "exemplars": {"color": "rgba(255,0,255,0.7)"},
    "filterValues": {"le": 1e-9},
    "legend": {"show": True},
    "rowsFrame": {"layout": "auto"},
    "showValue": "auto",
    "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": False},
    "yAxis": {"axisPlacement": "left", "reverse": False},
}
# A single base step (value null: from -Infinity, as Grafana writes it) instead of Grafana's green/red-at-80
# default, which means nothing for these units: time series draw no thresholds, stats colour their value by it.
THRESHOLDS = {"timeseries": "green", "stat": "text", "heatmap": "green"}

VARIABLE_LEGACY = {
    "tags": "variable tags, removed in Grafana 8",
    "tagsQuery": "variable tags, removed in Grafana 8",
    "tagValuesQuery": "variable tags, removed in Grafana 8",
    "useTags": "variable tags, removed in Grafana 8",
}
# grafanalib writes an interval variable's auto settings on every variable; ours are datasource and query ones.
VARIABLE_DEFAULTS_WRITTEN: Json = {"auto": False, "auto_count": 30, "auto_min": "10s", "hide": 0}
VARIABLE_KEPT = {
    "allValue",
    "auto",
    "auto_count",
    "auto_min",
    "hide",
    "current",
    "datasource",
    "definition",
    "includeAll",
    "label",
    "multi",
    "name",
    "options",
    "query",
    "refresh",
    "regex",
    "sort",
    "type",
}
# The refId Grafana's Prometheus variable editor gives its query.
VARIABLE_REF_ID = "PrometheusVariableQueryEditor-VariableQuery"


def without_nulls(node: Any) -> Any:
    """`node` with every null-valued key dropped, at any depth (grafanalib's null means "not set")."""
    if isinstance(node, dict):
        return {k: without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [without_nulls(v) for v in node]
    return node


def merged(base: Json, over: Json) -> Json:
    """`base` with `over` laid on top, nested objects merged key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _keep(data: Json, kept: set[str], legacy: dict[str, str], defaults: Json, what: str) -> Json:
    """`data` less its legacy keys and the keys that hold grafanalib's default; an unknown key is an error."""
    unknown = set(data) - kept - set(legacy) - set(defaults)
    if unknown:
        raise ValueError(f"{what}: no rule for {sorted(unknown)} (keep or drop it in exporter/dashboards/model.py)")
    return {k: v for k, v in data.items() if k not in legacy and (k not in defaults or defaults[k] != v)}


def _thresholds(kind: str, thresholds: Json) -> Json:
    steps = thresholds.get("steps") or [{"color": THRESHOLDS[kind], "value": None}]
    return {"mode": thresholds.get("mode", "absolute"), "steps": steps}


def panel(legacy: Json) -> Json:
    """One panel in the current model: timeseries, stat or heatmap."""
    data = _keep(
        without_nulls(legacy), PANEL_KEPT, PANEL_LEGACY, PANEL_DEFAULTS_WRITTEN, f"panel {legacy.get('title')!r}"
    )
    kind = data["type"]
    field_config = data.get("fieldConfig", {})
    defaults = dict(field_config.get("defaults", {}))
    options = data.get("options", {})
    if kind == "timeseries":
        custom = merged(TIMESERIES_CUSTOM, defaults.get("custom", {}))
        if custom["scaleDistribution"].get("type") == "linear":
            custom["scaleDistribution"] = {"type": "linear"}  # grafanalib adds log: 2 to a linear scale
        defaults["custom"] = custom
        options = merged(TIMESERIES_OPTIONS, options)
    elif kind == "stat":
        defaults.pop("custom", None)  # the stat panel has no custom field config
        defaults.setdefault("color", {"mode": "thresholds"})
        options = merged(STAT_OPTIONS, options)
    elif kind == "heatmap":
        defaults["custom"] = merged(HEATMAP_CUSTOM, defaults.get("custom", {}))
        options = merged(HEATMAP_OPTIONS, options)
    else:
        raise ValueError(f"panel {data.get('title')!r}: no current model for type {kind!r}")
    defaults.setdefault("mappings", [])
    defaults["thresholds"] = _thresholds(kind, defaults.get("thresholds", {}))
    data["fieldConfig"] = {"defaults": defaults, "overrides": field_config.get("overrides", [])}
    data["options"] = options
    return data


def variable(legacy: Json) -> Json:
    """One templating variable in the current model: a datasource or a Prometheus query variable."""
    what = f"variable {legacy.get('name')!r}"
    data = _keep(without_nulls(legacy), VARIABLE_KEPT, VARIABLE_LEGACY, VARIABLE_DEFAULTS_WRITTEN, what)
    data.setdefault("regex", "")
    data.setdefault("options", [])
    current = data.pop("current", {})
    if data["type"] == "datasource":
        return data  # no `current`: Grafana picks the default Prometheus data source
    if data["type"] != "query":
        raise ValueError(f"variable {data['name']!r}: no current model for type {data['type']!r}")
    query = dict(data["query"])
    query["refId"] = VARIABLE_REF_ID
    data["query"] = query
    data["definition"] = query["query"]
    if current.get("value") == "$__all":
        # How Grafana 11+ saves a multi-value variable standing on All: lists, the text as shown.
        data["current"] = (
            {"text": ["All"], "value": ["$__all"]} if data.get("multi") else {"text": "All", "value": "$__all"}
        )
    return data


def dashboard(legacy: Json) -> Json:
    """A whole dashboard in the current model."""
    what = f"dashboard {legacy.get('uid')!r}"
    data = _keep(without_nulls(legacy), DASHBOARD_KEPT, DASHBOARD_LEGACY, DASHBOARD_DEFAULTS_WRITTEN, what)
    data.update(DASHBOARD_DEFAULTS)
    data["schemaVersion"] = SCHEMA_VERSION
    data["annotations"] = {"list": data.get("annotations", {}).get("list", [])}
    # Grafana 11+ leaves the time picker's defaults out (refresh_intervals, hidden: false); time_options is gone
    # since schemaVersion 41 and nowDelay was null.
    picker = data.get("timepicker", {})
    defaults = {"hidden": False, "refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d"]}
    data["timepicker"] = {
        k: v for k, v in picker.items() if k not in ("time_options", "nowDelay") and defaults.get(k, object()) != v
    }
    data["templating"] = {"list": [variable(v) for v in data.get("templating", {}).get("list", [])]}
    data["panels"] = [panel(p) for p in data.get("panels", [])]
    return data
