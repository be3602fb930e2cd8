"""The exporter's own /metrics at rest, from a process: every family as the catalog defines it, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import catalog
from tests.support.procs import ExporterProcess


@pytest.fixture(scope="module")
def exposition() -> str:
    """/metrics of a fresh exporter (no GPUs, no vLLM)."""
    with ExporterProcess(["--gpu.enabled", "false"]) as exporter:
        return exporter.scrape()


def test_every_served_family_is_a_catalog_entry_with_its_type_and_help(exposition: str) -> None:
    served = {}
    for family in text_string_to_metric_families(exposition):
        name = family.name + "_total" if family.type == "counter" else family.name
        served[name] = family
        spec = catalog.BY_NAME.get(name)
        assert spec is not None, f"{name} is served but not in the catalog"
        assert (family.type, family.documentation) == (spec.kind.value, spec.help), name
    assert {spec.name for spec in catalog.PROCESS_METRICS} <= set(served)  # prometheus_client's and ours


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-system-deps)")
def test_the_exposition_passes_promtool_check_metrics(exposition: str) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
