"""alertmanager.yaml: routes by severity, grouping, and inhibitions checked by applying them to the real alerts.

amtool 0.25 cannot test inhibitions offline, so this applies Alertmanager's rule (a target is muted when a
firing source matches the source matchers and agrees on every `equal` label, a missing label counting as "")
to alerts labelled as the generated rules label them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from exporter.alerts import routing
from exporter.alerts.spec import load_spec
from tests.support.procs import REPO

ALERTS = REPO / "alerts"
CONFIG: dict[str, Any] = yaml.safe_load((ALERTS / "alertmanager.yaml").read_text())


def _rule_labels(alertname: str) -> dict[str, str]:
    for path in (ALERTS / "rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alertname:
                    return {"alertname": alertname, **rule["labels"]}
    raise KeyError(alertname)


def _alert(alertname: str, **labels: str) -> dict[str, str]:
    return {**_rule_labels(alertname), **labels}


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    found = re.fullmatch(r'(\w+)(=~|!=|=)"(.*)"', matcher)
    assert found, matcher
    name, op, value = found.groups()
    actual = labels.get(name, "")
    if op == "=~":
        return re.fullmatch(value, actual) is not None
    return (actual == value) == (op == "=")


def _inhibited(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    for rule in CONFIG["inhibit_rules"]:
        if not all(_matches(m, target) for m in rule["target_matchers"]):
            continue
        for source in firing:
            if source is target or not all(_matches(m, source) for m in rule["source_matchers"]):
                continue
            if all(source.get(label, "") == target.get(label, "") for label in rule.get("equal", [])):
                return True
    return False


def test_routes_group_by_slo_and_model_and_split_by_severity() -> None:
    route = CONFIG["route"]
    assert route["group_by"] == ["slo", "model"] == routing.group_labels(load_spec(REPO / "exporter/alerts/slos.yaml"))
    assert [(r["matchers"], r["receiver"]) for r in route["routes"]] == [
        (['severity="page"'], "pager"),
        (['severity="ticket"'], "ticket"),
    ]
    assert {r["name"] for r in CONFIG["receivers"]} == {"pager", "ticket"}


def test_a_page_inhibits_the_ticket_of_the_same_slo_and_model_only() -> None:
    page = _alert("LLMTtftBudgetBurn1h", model="a")
    same = _alert("LLMTtftBudgetBurn1d", model="a")
    same_slow = _alert("LLMTtftBudgetBurn3d", model="a")
    other_model = _alert("LLMTtftBudgetBurn1d", model="b")
    other_slo = _alert("LLMTpotBudgetBurn1d", model="a")
    cause = _alert("LLMGPUThrottled", instance="n", gpu="g", index="0", reason="hw_slowdown")
    firing = [page, same, same_slow, other_model, other_slo, cause]
    assert _inhibited(same, firing) and _inhibited(same_slow, firing)
    assert not _inhibited(other_model, firing) and not _inhibited(other_slo, firing)
    assert not _inhibited(page, firing)  # a page is never muted by another page
    assert not _inhibited(cause, firing)


def test_a_cause_page_does_not_mute_cause_tickets() -> None:
    # Both lack `slo`: without the slo=~".+" matchers they would compare equal and the page would mute them.
    gpu_down = _alert("LLMGPUDown", instance="n", gpu="g", index="0")
    xid = _alert("LLMGPUXidErrors", instance="n", gpu="g", index="0", xid="48")
    engine_down = _alert("LLMEngineDown", model="a", vllm_instance="v")
    kv = _alert("LLMEngineKVCacheFullPreempting", model="a", vllm_instance="v")
    firing = [gpu_down, xid, engine_down, kv]
    assert not _inhibited(xid, firing) and not _inhibited(kv, firing)


def test_engine_down_inhibits_its_models_latency_alerts_only() -> None:
    down = _alert("LLMEngineDown", model="a", vllm_instance="v", instance="n")
    ttft, tpot = _alert("LLMTtftBudgetBurn1h", model="a"), _alert("LLMTpotBudgetBurn6h", model="a")
    availability = _alert("LLMAvailabilityBudgetBurn1h", model="a")
    elsewhere = _alert("LLMTtftBudgetBurn1h", model="b")
    firing = [down, ttft, tpot, availability, elsewhere]
    assert _inhibited(ttft, firing) and _inhibited(tpot, firing)
    assert not _inhibited(availability, firing) and not _inhibited(elsewhere, firing)
    assert not _inhibited(ttft, [ttft, tpot])  # only while the engine is down


def test_exporter_absent_mutes_exporter_down() -> None:
    absent = _alert("LLMExporterAbsent")
    down = _alert("LLMExporterDown", instance="n", job="llm-token-exporter")
    assert _inhibited(down, [absent, down]) and not _inhibited(down, [down])
