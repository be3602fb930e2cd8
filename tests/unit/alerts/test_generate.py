"""The generator: committed files are current byte for byte, names come from the catalog, every alert is tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from exporter.alerts import names
from exporter.alerts.generate import generate
from exporter.alerts.spec import load_spec
from exporter.metrics import catalog, promql
from tests.support.procs import EXPORTER_BIN, REPO

ALERTS = REPO / "alerts"
SPEC = REPO / "exporter" / "alerts" / "slos.yaml"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXPORTER_BIN), "alerts", *args], capture_output=True, text=True, timeout=60, check=False)


def _committed() -> dict[str, str]:
    return {
        p.relative_to(ALERTS).as_posix(): p.read_text()
        for p in sorted(ALERTS.rglob("*"))
        if p.is_file()  # the spec lives in the package: a copy here would be a second one, and fail this
    }


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for p in sorted((ALERTS / "rules").glob("*.yaml"))
        for g in yaml.safe_load(p.read_text())["groups"]
        for rule in g["rules"]
    ]


def test_committed_files_are_what_the_generator_writes() -> None:
    files = generate(load_spec(SPEC), SPEC.name)
    assert files == _committed(), "run: llm-token-exporter alerts --slo-spec exporter/alerts/slos.yaml --out alerts"
    assert generate(load_spec(SPEC), SPEC.name) == files  # deterministic


def test_cli_regenerates_into_a_temp_dir_byte_for_byte(tmp_path: Path) -> None:
    result = _run("--slo-spec", str(SPEC), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = {
        p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()
    }
    assert written == {name: text.encode() for name, text in _committed().items()}


def test_check_mode_and_stale_files(tmp_path: Path) -> None:
    assert _run("--slo-spec", str(SPEC), "--out", str(ALERTS), "--check").returncode == 0
    out = tmp_path / "alerts"
    shutil.copytree(ALERTS, out)
    (out / "rules" / "slo-ttft.rules.yaml").write_text("changed\n")
    stale = out / "tests" / "slo-gone-1h.test.yaml"
    stale.write_text((out / "tests" / "slo-ttft-1h.test.yaml").read_text())
    result = _run("--slo-spec", str(SPEC), "--out", str(out), "--check")
    assert result.returncode == 1
    assert "slo-ttft.rules.yaml" in result.stderr and "slo-gone-1h.test.yaml" in result.stderr
    assert _run("--slo-spec", str(SPEC), "--out", str(out)).returncode == 0
    assert not stale.exists()
    assert _run("--slo-spec", str(SPEC), "--out", str(out), "--check").returncode == 0


def test_bad_spec_exits_2_naming_the_problem_and_needs_no_settings(tmp_path: Path) -> None:
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC.read_text().replace("threshold_seconds: 1.0", "threshold_seconds: 0.9"))
    result = _run("--slo-spec", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "0.9 s is not a bucket edge" in result.stderr
    assert not (tmp_path / "out").exists()
    # An invalid exporter setting in the environment does not matter to this command.
    env_result = subprocess.run(
        [str(EXPORTER_BIN), "alerts", "--slo-spec", str(SPEC), "--out", str(tmp_path / "ok")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LLM_TOKEN_EXPORTER_TENANT_CAP": "zero", "PATH": "/usr/bin:/bin"},
    )
    assert env_result.returncode == 0, env_result.stderr


def test_rules_name_only_catalog_attribution_recorded_or_prometheus_series() -> None:
    known = set(catalog.BY_NAME)
    known |= {f"{h.name}_{suffix}" for h in catalog.LATENCY_HISTOGRAMS for suffix in ("bucket", "count", "sum")}
    known |= {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    functions = {
        "sum",
        "rate",
        "increase",
        "by",
        "on",
        "and",
        "or",
        "unless",
        "bool",
        "absent",
        "round",
        "deriv",
        "changes",
        "offset",
        "group_left",
        "min_over_time",
        "avg_over_time",
        "sum_over_time",
    }
    for rule in _rules():
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not names
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
            if token in functions or re.fullmatch(r"\d*[smhd]|e\d+", token):
                continue
            if ":" in token:
                assert token in recorded, f"{token} in {rule.get('alert') or rule.get('record')} is recorded nowhere"
            elif token.startswith(("llm_", "gpu_")) or token == "up":
                assert token in known, f"{token} in {rule.get('alert') or rule.get('record')} is not in the catalog"


def test_every_alert_is_labelled_documented_and_tested() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    readme = (ALERTS / "README.md").read_text()
    tested = {
        case["alertname"]
        for p in (ALERTS / "tests").glob("*.test.yaml")
        for group in yaml.safe_load(p.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]  # shown firing, not only silent
    }
    silent = {
        case["alertname"]
        for p in (ALERTS / "tests").glob("*.test.yaml")
        for group in yaml.safe_load(p.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    assert len(alerts) == len({a["alert"] for a in alerts}) == 12 + 2 + 14
    for alert in alerts:
        name, labels, annotations = alert["alert"], alert["labels"], alert["annotations"]
        assert labels["severity"] in ("page", "ticket"), name
        if name.endswith(("BudgetBurn1h", "BudgetBurn6h", "BudgetBurn1d", "BudgetBurn3d", "BucketMissing")):
            assert {"slo", "sli"} <= set(labels), name
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == f"alerts/README.md#{name.lower()}"
        assert f"\n### {name}\n" in readme and f"| [{name}](#{name.lower()}) |" in readme
        assert name in tested and name in silent, f"{name} needs a firing and a silent test"
    burn = [a for a in alerts if "BudgetBurn" in a["alert"]]
    assert all({"burn_rate", "budget_remaining"} <= set(a["annotations"]) for a in burn)


def test_le_matcher_takes_both_renderings_and_nothing_else() -> None:
    assert promql.le_matcher(1.0) == 'le=~"1|1\\\\.0"'
    for edge, good, bad in ((1.0, ["1", "1.0"], ["1.5", "10", "1.00", "11.0"]), (0.1, ["0.1"], ["0.15", "0x1"])):
        regex = promql.le_matcher(edge).split('"')[1].replace("\\\\", "\\")
        assert all(re.fullmatch(regex, v) for v in good), edge
        assert not any(re.fullmatch(regex, v) for v in bad), edge
    assert promql.le_values(60.0) == ("60", "60.0") and promql.le_values(1e-5) == ("1e-05",)


def test_burn_thresholds_are_computed_from_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "slos.yaml"
    spec.write_text(SPEC.read_text().replace("period: 30d", "period: 28d"))
    files = generate(load_spec(spec), spec.name)
    ttft = files["rules/slo-ttft.rules.yaml"]
    assert ">= 13.44 * 0.999999" in ttft and ">= 5.6 * 0.999999" in ttft and ">= 2.8 * 0.999999" in ttft
    assert "[28d]" in ttft and "14.4" not in ttft


def test_readme_names_only_known_metrics() -> None:
    known = set(catalog.BY_NAME) | {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    known |= {f"{h.name}_{suffix}" for h in catalog.LATENCY_HISTOGRAMS for suffix in ("bucket", "count")}
    known |= {rule["record"] for rule in _rules() if "record" in rule}
    not_metrics = {"llm_request", "gpu_memory_utilization"}  # the vLLM span name and a vLLM setting
    text = (ALERTS / "README.md").read_text()
    for token in set(re.findall(r"(?<![\w:])(?:[a-z_]+:)?(?:llm|gpu)_[a-z_]+(?::[a-z0-9_]+)?", text)):
        assert token in known | not_metrics, token
