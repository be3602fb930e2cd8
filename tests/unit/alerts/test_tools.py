"""The generated alerts under the real tools: promtool 2.42 and amtool 0.25 (Debian's; CI installs them).

Every rule file passes `promtool check rules`, every generated test file passes `promtool test rules`, the
Alertmanager config passes `amtool check-config` and routes every alert to the receiver of its severity. And the
generated tests are not vacuous: a rule broken on purpose makes them fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.support.procs import REPO

ALERTS = REPO / "alerts"
RULE_FILES = sorted((ALERTS / "rules").glob("*.rules.yaml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yaml"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed: run scripts/install-system-deps (Debian: prometheus, prometheus-alertmanager)"
    )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, check=False)


def _promtool_test(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("promtool"), "test", "rules", str(path))


@pytest.fixture(scope="module")
def promtool_tests() -> Iterator[dict[Path, subprocess.CompletedProcess[str]]]:
    """Every test file through `promtool test rules`, in parallel (they take about 15 s of CPU together)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        yield dict(zip(TEST_FILES, pool.map(_promtool_test, TEST_FILES), strict=True))


def test_the_tools_are_the_expected_versions() -> None:
    assert "version 2." in _run(_tool("promtool"), "--version").stdout
    assert "version 0." in _run(_tool("amtool"), "--version").stdout
    assert len(RULE_FILES) == 5 and len(TEST_FILES) == 17


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = _run(_tool("promtool"), "check", "rules", str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "SUCCESS" in output, output
    assert "WARNING" not in output.upper() and "lint" not in output, output


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path, promtool_tests: dict[Path, subprocess.CompletedProcess[str]]) -> None:
    result = promtool_tests[path]
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_amtool_check_config() -> None:
    result = _run(_tool("amtool"), "check-config", str(ALERTS / "alertmanager.yaml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout and "2 receivers" in result.stdout


def _alert_labels() -> list[dict[str, str]]:
    return [
        {"alertname": rule["alert"], **rule["labels"], "model": "llama-3-8b"}
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


ROUTES = [
    ({"severity": "page", "slo": "ttft", "model": "m"}, "pager"),
    ({"severity": "ticket", "slo": "ttft", "model": "m"}, "ticket"),
    ({"alertname": "Unknown"}, "ticket"),  # no severity: still reaches someone
    *[(labels, "pager" if labels["severity"] == "page" else "ticket") for labels in _alert_labels()],
]


@pytest.mark.parametrize(
    ("labels", "receiver"), ROUTES, ids=lambda v: v.get("alertname", "") if isinstance(v, dict) else v
)
def test_amtool_routes(labels: dict[str, str], receiver: str) -> None:
    result = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTS / 'alertmanager.yaml'}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0 and result.stdout.strip() == receiver, result.stdout + result.stderr


MUTATIONS = [
    # (rule file, rule (alert or record), text in its expr, broken text, the test file that must now fail)
    ("slo-ttft.rules.yaml", "slo:sli_errors:rate5m", 'le=~"1|1\\\\.0"', 'le="1.0"', "slo-ttft-sli.test.yaml"),
    ("slo-ttft.rules.yaml", "LLMTtftBudgetBurn1h", "14.4 * 0.999999", "14.4 * 1.01", "slo-ttft-1h.test.yaml"),
    (
        "slo-ttft.rules.yaml",
        "LLMTtftBudgetBurn1h",
        "\nand slo:sli_requests:rate1h",
        "\nor slo:sli_requests:rate1h",
        "slo-ttft-1h.test.yaml",
    ),
    ("slo-ttft.rules.yaml", "LLMTtftBudgetBurn1h", "ratio_rate5m", "ratio_rate1h", "slo-ttft-1h.test.yaml"),
    ("slo-ttft.rules.yaml", "slo:error_budget_remaining:ratio", "[30d]", "[1h]", "slo-ttft-1h.test.yaml"),
    (
        "slo-availability.rules.yaml",
        "slo:sli_requests:rate5m",
        "2xx|5xx",
        "2xx|4xx|5xx",
        "slo-availability-sli.test.yaml",
    ),
    (
        "slo-availability.rules.yaml",
        "slo:sli_errors:rate1h",
        "\n  or\n",
        "\n  unless\n",
        "slo-availability-1h.test.yaml",
    ),
    ("causes.rules.yaml", "LLMEngineKVCacheFullPreempting", ">= 0.9", ">= 0.99", "causes.test.yaml"),
    ("causes.rules.yaml", "LLMGPUXidErrors", "\nor\n", "\nunless\n", "causes.test.yaml"),
    (
        "fleet.rules.yaml",
        "model_tenant:llm_cost_usd:allocated_rate5m",
        "* on (instance)",
        "/ on (instance)",
        "fleet.test.yaml",
    ),
]


@pytest.mark.parametrize(
    ("file", "rule", "text", "broken", "test"), MUTATIONS, ids=[f"{m[1]}:{m[3]}" for m in MUTATIONS]
)
def test_generated_tests_catch_a_broken_rule(
    tmp_path: Path, file: str, rule: str, text: str, broken: str, test: str
) -> None:
    copy = tmp_path / "alerts"
    shutil.copytree(ALERTS, copy)
    path = copy / "rules" / file
    data = yaml.safe_load(path.read_text())
    [target] = [r for g in data["groups"] for r in g["rules"] if rule in (r.get("alert"), r.get("record"))][:1]
    assert text in target["expr"], f"{text!r} not in {rule}: {target['expr']}"
    target["expr"] = target["expr"].replace(text, broken)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _run(_tool("promtool"), "check", "rules", str(path)).returncode == 0, "the broken rule must still load"
    result = _promtool_test(copy / "tests" / test)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, result.stdout + result.stderr
