"""Every generated dashboard is what Grafana's own dashboard and panel models (grafana-foundation-sdk) accept and
write back unchanged: no unknown or dropped key, no null, no missing required field, no refused type."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
from grafana_foundation_sdk.models import units

from exporter.dashboards import generate, model
from tests.unit.dashboards.grafana_model import Problem, accepts, problems

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.models.dashboard import Dashboard, VariableRefresh

MODELS = generate.models()
# Grafana's unit ids (the SDK's units module) and its custom-unit forms (`suffix:tok/s`, `count:req`, ...).
UNITS = {v for v in vars(units).values() if isinstance(v, str)}
CUSTOM_UNITS = ("prefix:", "suffix:", "si:", "count:", "currency:")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_grafana_accepts_and_writes_back_every_key(name: str) -> None:
    found = problems(MODELS[name])
    assert not found, f"{name}: {len(found)} problems with Grafana's model:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_version_is_the_targeted_one(name: str) -> None:
    assert MODELS[name]["schemaVersion"] == model.SCHEMA_VERSION
    assert Dashboard().schema_version >= model.SCHEMA_VERSION, "newer than the Grafana the SDK models"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_unit_is_one_grafana_knows(name: str) -> None:
    for panel in MODELS[name]["panels"]:
        defaults, options = panel["fieldConfig"]["defaults"], panel["options"]
        unit = defaults.get("unit") or options.get("yAxis", {}).get("unit")
        assert unit in UNITS or str(unit).startswith(CUSTOM_UNITS), f"{name} / {panel['title']}: unit {unit!r}"


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A current dashboard spoiled the ways grafanalib's output was."""
    spoiled = copy.deepcopy(data)
    spoiled["style"] = "dark"  # a key the model does not know
    spoiled["gnetId"] = None  # a null the model drops on the way out
    stat = next(p for p in spoiled["panels"] if p["type"] == "stat")
    del stat["options"]["wideLayout"]  # a field the stat panel always writes
    stat["options"]["colorMode"] = "rainbow"  # outside its enum
    stat["fieldConfig"]["defaults"]["color"] = None  # an object the decoder refuses
    spoiled["templating"]["list"][1]["refresh"] = True  # a bool where the enum's number goes
    return spoiled


def test_the_check_catches_keys_nulls_missing_fields_and_refused_types() -> None:
    data = MODELS["llm-overview.json"]
    stat = next(i for i, p in enumerate(data["panels"]) if p["type"] == "stat")
    found = {(p.path, p.kind) for p in problems(_legacy(data))}
    assert found == {
        ("$.style", "unknown or dropped"),
        ("$.gnetId", "unknown or dropped"),
        (f"$.panels[{stat}].options.wideLayout", "missing"),
        (f"$.panels[{stat}].options.colorMode", "refused type"),
        (f"$.panels[{stat}].fieldConfig.defaults.color", "refused type"),
        ("$.templating.list[1].refresh", "refused type"),
    }


def test_types_are_checked_as_json_reads_them() -> None:
    assert accepts(float, 3) and not accepts(float, True) and not accepts(int, 1.5)
    assert accepts(VariableRefresh, 2) and not accepts(VariableRefresh, 7)
    assert accepts(list[str] | None, None) and not accepts(list[str], ["a", 1])
    assert str(Problem("$.a", "missing", "x")) == "$.a: missing: x"
