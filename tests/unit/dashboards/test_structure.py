"""The dashboards' JSON model: ids, grid, variables, data source and descriptions on every panel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.dashboards import generate
from exporter.dashboards.builder import DATASOURCE, GRID_WIDTH

MODELS = generate.models()
PANELS = [(name, p) for name, d in MODELS.items() for p in d["panels"]]
EXPECTED = {
    "llm-overview.json",
    "llm-latency.json",
    "llm-gpu-kv.json",
    "llm-cost-energy.json",
    "llm-slos.json",
}


def test_the_five_dashboards_with_stable_unique_uids() -> None:
    assert set(MODELS) == EXPECTED
    uids = [d["uid"] for d in MODELS.values()]
    assert len(set(uids)) == len(uids)
    assert all(f"{d['uid']}.json" == name for name, d in MODELS.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_valid_dashboard_model(name: str) -> None:
    data = json.loads(generate.files()[name])
    assert data["title"] and data["description"] and data["schemaVersion"] >= 36
    assert data["panels"] and "rows" not in data
    ids = [p["id"] for p in data["panels"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grid_positions_fit_and_never_overlap(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in MODELS[name]["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= GRID_WIDTH, p["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variables_datasource_namespace_model_tenant_node(name: str) -> None:
    variables = {v["name"]: v for v in MODELS[name]["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "node", "model", "tenant"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for key in ("namespace", "node", "model", "tenant"):
        v = variables[key]
        assert v["type"] == "query" and v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert v["datasource"] == DATASOURCE
        assert v["query"]["query"].startswith("label_values(") and v["query"]["query"].endswith(f", {key})")


def _no_fixed_uid(node: Any) -> None:
    if isinstance(node, dict):
        if "datasource" in node and node["datasource"] is not None:
            assert node["datasource"] == DATASOURCE, node
        for v in node.values():
            _no_fixed_uid(v)
    elif isinstance(node, list):
        for v in node:
            _no_fixed_uid(v)


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[f"{n}:{p['title']}" for n, p in PANELS])
def test_every_panel_has_the_datasource_variable_a_description_and_queries(name: str, panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert len(panel["description"]) >= 60, "say what it shows and how to read it"
    assert panel["targets"]
    refs = [t["refId"] for t in panel["targets"]]
    assert len(set(refs)) == len(refs)
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE and target["expr"].strip()
    if panel["type"] == "heatmap":
        assert panel["options"]["calculate"] is False and all(t["format"] == "heatmap" for t in panel["targets"])


def test_no_dashboard_names_a_fixed_datasource_uid() -> None:
    for data in MODELS.values():
        _no_fixed_uid(data)
