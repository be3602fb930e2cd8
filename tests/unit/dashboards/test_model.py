"""grafanalib's legacy JSON to the current model: legacy keys and nulls go, set values stay, unknown keys fail."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.dashboards import model


def _stat(**extra: Any) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": "t",
        "span": None,
        "editable": True,
        "maxDataPoints": 100,
        "transparent": False,
        "fieldConfig": {"defaults": {"unit": "s", "decimals": None, "custom": {}}, "overrides": []},
        "options": {"colorMode": "value"},
        **extra,
    }


def test_a_panel_loses_legacy_keys_nulls_and_grafanalibs_defaults() -> None:
    out = model.panel(_stat())
    assert set(out) == {"type", "title", "fieldConfig", "options"}
    assert out["fieldConfig"]["defaults"] == {
        "unit": "s",
        "color": {"mode": "thresholds"},
        "mappings": [],
        "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]},
    }
    assert out["options"]["wideLayout"] is True and out["options"]["showPercentChange"] is False


def test_values_set_on_purpose_are_kept() -> None:
    out = model.panel(_stat(maxDataPoints=500, timeFrom="24h", transparent=True))
    assert (out["maxDataPoints"], out["timeFrom"], out["transparent"]) == (500, "24h", True)
    variable = {"type": "query", "name": "v", "query": {"query": "label_values(up, job)"}, "hide": 2, "auto": False}
    assert model.variable(variable)["hide"] == 2 and "auto" not in model.variable(variable)


def test_a_key_without_a_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"panel 't': no rule for \['newThing'\]"):
        model.panel(_stat(newThing=1))
    with pytest.raises(ValueError, match="no current model for type 'graph'"):
        model.panel({**_stat(), "type": "graph"})


def test_the_dashboard_shell_is_what_grafana_saves() -> None:
    legacy = {
        "uid": "u",
        "title": "T",
        "style": "dark",
        "hideControls": False,
        "gnetId": None,
        "id": None,
        "version": 0,
        "timepicker": {"hidden": False, "nowDelay": None, "time_options": ["5m"], "refresh_intervals": ["1m"]},
        "templating": {"list": []},
        "panels": [],
    }
    out = model.dashboard(legacy)
    assert out == {
        "uid": "u",
        "title": "T",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "schemaVersion": model.SCHEMA_VERSION,
        "annotations": {"list": []},
        "timepicker": {"refresh_intervals": ["1m"]},
        "templating": {"list": []},
        "panels": [],
    }
