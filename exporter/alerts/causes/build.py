"""The cause table in the order of the docs, and what it builds: the rule file and one promtool group per case."""

from __future__ import annotations

from typing import Any

from exporter.alerts.causes import engines, exporters, gpus
from exporter.alerts.causes.row import Cause
from exporter.alerts.spec import AlertSpec
from exporter.alerts.testfile import TestGroup
from exporter.alerts.windows import parse_duration

GROUP = "llm-causes"


def table(spec: AlertSpec) -> tuple[Cause, ...]:
    """Every cause alert, in the order of the docs."""
    job = spec.exporter_job
    return (
        engines.ENGINE_DOWN,
        gpus.GPU_DOWN,
        exporters.absent(job),
        exporters.down(job),
        engines.KV_CACHE_FULL,
        engines.QUEUE_GROWING,
        gpus.GPU_MEMORY,
        gpus.GPU_THROTTLED,
        gpus.GPU_XID,
        exporters.SPANS_DROPPED,
        exporters.SPANS_REJECTED,
        exporters.ATTRIBUTION_RESIDUAL,
        engines.SLOW_COLD_START,
        engines.SPANS_MISSING,
    )


def rule_file(spec: AlertSpec) -> dict[str, Any]:
    """The cause rule file: one group."""
    return {"groups": [{"name": GROUP, "rules": [cause.rule(spec.runbook_url) for cause in table(spec)]}]}


def test_groups(spec: AlertSpec) -> list[TestGroup]:
    """One promtool test group per hand-written case."""
    groups = []
    for cause in table(spec):
        for case in cause.cases:
            group = TestGroup(f"{cause.name}: {case.what}", 60, list(case.series.items()))
            expected = [
                {
                    "exp_labels": {**labels, "severity": cause.severity, **cause.labels},
                    "exp_annotations": cause.expected_annotations(spec.runbook_url, summary=summary),
                }
                for labels, summary in case.fires
            ]
            group.expect_alerts(parse_duration(case.at), cause.name, expected)
            groups.append(group)
    return groups
