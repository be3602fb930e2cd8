"""The demo's Prometheus rules and Alertmanager routing come from the package itself, not from a source checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from exporter.sim import promstack
from exporter.sim.promstack import PromStack

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "alerts"

# What the demo would load, asked of the package alone: alert names per rule file, and the Alertmanager config.
PROBE = """
import json, sys, yaml
import exporter
from exporter.sim import promstack

rules = promstack.rule_files()
alerts = {
    name: sorted(r["alert"] for g in yaml.safe_load(rules[name])["groups"] for r in g["rules"] if "alert" in r)
    for name in rules
}
json.dump({"package": exporter.__file__, "alerts": alerts, "alertmanager": promstack.alertmanager_config()}, sys.stdout)
"""


def committed_alerts() -> dict[str, list[str]]:
    """Alert names per rule file of the committed alerts/rules/."""
    out = {}
    for path in sorted((ALERTS / "rules").glob("*.rules.yaml")):
        groups = yaml.safe_load(path.read_text())["groups"]
        out[f"rules/{path.name}"] = sorted(r["alert"] for g in groups for r in g["rules"] if "alert" in r)
    return out


def silenced(config: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager config with every receiver's integrations taken out (names kept)."""
    return {**config, "receivers": [{"name": r["name"]} for r in config["receivers"]]}


def installed(tmp_path: Path) -> Path:
    """The package as a wheel installs it, with no source tree around it: built from what the Docker image is built
    from (pyproject.toml, README.md, exporter/) and unpacked."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "exporter", source / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_an_installed_package_gives_the_demo_the_rules_and_routing_of_its_slo_spec(tmp_path: Path) -> None:
    site = installed(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(run.stdout)
    assert Path(found["package"]).is_relative_to(site)  # not the checkout this test runs from
    assert found["alerts"] == committed_alerts()
    assert found["alertmanager"] == silenced(yaml.safe_load((ALERTS / "alertmanager.yaml").read_text()))


def test_the_demo_loads_what_the_generator_writes_for_the_shipped_spec() -> None:
    # alerts/ is generated from the same spec (tests/unit/alerts/test_generate.py): the demo runs those rules.
    rules = promstack.rule_files()
    assert rules == {name: (ALERTS / name).read_text() for name in committed_alerts()}
    config = promstack.alertmanager_config()
    assert config == silenced(yaml.safe_load((ALERTS / "alertmanager.yaml").read_text()))
    assert {r["name"] for r in config["receivers"]} >= {"pager", "ticket"}


def test_prometheus_is_pointed_at_the_rule_files_written_in_its_directory(tmp_path: Path) -> None:
    stack = PromStack(tmp_path, "127.0.0.1:9400")
    written = stack.write_rules()
    config = stack.prometheus_config(alertmanager=True)
    assert config["rule_files"] == [str(p) for p in written]
    assert all(
        p.is_relative_to(tmp_path) and p.read_text() == stack.rules[p.relative_to(tmp_path).as_posix()] for p in written
    )
    assert len(written) == len(committed_alerts())


def test_the_demo_can_run_the_rules_time_compressed_and_scrapes_often_enough_for_them(tmp_path: Path) -> None:
    stack = PromStack(tmp_path, "127.0.0.1:9400", time_scale=60, scrape_interval_s=promstack.scrape_interval_for(60))
    assert set(stack.rules) == set(committed_alerts())
    causes = yaml.safe_load(stack.rules["rules/causes.rules.yaml"])["groups"]
    real = yaml.safe_load((ALERTS / "rules" / "causes.rules.yaml").read_text())["groups"]
    fors = {r["alert"]: r.get("for") for g in causes for r in g["rules"] if "alert" in r}
    real_fors = {r["alert"]: r.get("for") for g in real for r in g["rules"] if "alert" in r}
    assert real_fors["LLMEngineKVCacheFullPreempting"] == "10m" and fors["LLMEngineKVCacheFullPreempting"] == "10s"
    ttft = stack.rules["rules/slo-ttft.rules.yaml"]
    assert "[5s]" in ttft and "[1m]" in ttft and "[5m]" not in ttft  # the 5m and 1h windows at x60
    assert stack.prometheus_config(alertmanager=True)["global"]["scrape_interval"] == "1s"  # five samples in 5 s
    assert promstack.scrape_interval_for(1) == 5.0  # real time: as before
    assert promstack.alertmanager_config(60)["route"]["group_interval"] == "5s"  # 5m / 60


def test_firing_and_pending_alerts_are_read_with_the_time_left_of_each_for() -> None:
    rules = {
        "data": {
            "groups": [
                {
                    "rules": [
                        {
                            "name": "LLMEngineKVCacheFullPreempting",
                            "duration": 10,
                            "alerts": [
                                {
                                    "labels": {"alertname": "LLMEngineKVCacheFullPreempting", "vllm_instance": "v-0"},
                                    "state": "pending",
                                    "activeAt": "2026-01-01T00:00:00.250000000Z",
                                }
                            ],
                        },
                        {
                            "name": "LLMTtftBudgetBurn1h",
                            "duration": 0,
                            "alerts": [
                                {
                                    "labels": {"alertname": "LLMTtftBudgetBurn1h", "model": "m", "slo": "ttft"},
                                    "state": "firing",
                                    "activeAt": "2026-01-01T00:00:01Z",
                                }
                            ],
                        },
                        {"name": "LLMGPUDown", "duration": 5, "alerts": []},
                    ]
                }
            ]
        }
    }
    now = 1767225600.0 + 3.25  # 2026-01-01T00:00:03.25Z: pending for 3 s of its 10
    states = promstack.alert_states(rules, now)
    assert states == [
        promstack.AlertState("LLMTtftBudgetBurn1h m", True),
        promstack.AlertState("LLMEngineKVCacheFullPreempting v-0", False, 7.0),
    ]
