"""The exporter's process metrics: prometheus_client's own plus the extras, every one as the catalog defines it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import catalog
from exporter.service.admission import Admission
from exporter.service.process_collector import register_process_collectors


def registry() -> CollectorRegistry:
    """A registry as the exporter builds it, with only the process collectors."""
    registry = CollectorRegistry(auto_describe=False)
    register_process_collectors(registry, Admission(8, 256 << 20, lambda: 0))
    return registry


def test_every_process_metric_is_served_as_the_catalog_defines_it() -> None:
    families = list(registry().collect())
    served = {f.name + "_total" if f.type == "counter" else f.name: f for f in families}
    assert set(served) == {spec.name for spec in catalog.PROCESS_METRICS}
    for spec in catalog.PROCESS_METRICS:
        family = served[spec.name]
        assert family.type == spec.kind.value, spec.name
        assert family.documentation == spec.help, spec.name
        assert [s.labels for s in family.samples] == [{}], spec.name
    value = {name: family.samples[0].value for name, family in served.items()}
    assert value[catalog.PROCESS_THREADS.name] >= 1
    assert value[catalog.PROCESS_RESIDENT_MEMORY.name] > 0 and value[catalog.PROCESS_OPEN_FDS.name] > 0
    assert value[catalog.MEMORY_LIMIT.name] == 256 << 20 and value[catalog.EXPORTS_IN_PROGRESS.name] == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-system-deps)")
def test_process_exposition_passes_promtool_check_metrics() -> None:
    text = generate_latest(registry()).decode()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
