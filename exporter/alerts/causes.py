"""Cause alerts: what is wrong, when the SLOs say users hurt (or cannot see). Each has a reason to exist and tests.

The SLO alerts page on symptoms. These name causes, so a page comes with its likely reason, and they cover
what the SLOs cannot see: a down engine or exporter makes no bad requests, it makes no requests at all.
"""

from __future__ import annotations

from typing import Any

from exporter.alerts import causes_engine, causes_exporter, causes_gpu, names
from exporter.alerts.cause import Cause
from exporter.alerts.spec import AlertSpec
from exporter.alerts.testfile import TestGroup
from exporter.alerts.windows import parse_duration

GROUP = "llm-causes"


def causes(spec: AlertSpec) -> list[Cause]:
    """Every cause alert, in the order of the docs."""
    job = spec.exporter_job
    up = f'{names.UP}{{job="{job}"}}'
    return [
        causes_engine.engine_down(),
        causes_gpu.gpu_down(),
        causes_exporter.exporter_absent(up, job),
        causes_exporter.exporter_down(up, job),
        causes_engine.kv_full(),
        causes_engine.queue_growing(),
        causes_gpu.gpu_memory(),
        causes_gpu.gpu_throttled(),
        causes_gpu.xid(),
        causes_exporter.spans_dropped(),
        causes_exporter.spans_rejected(),
        causes_exporter.residual(),
        causes_engine.slow_start(),
        causes_engine.spans_missing(),
    ]


def rule_file(spec: AlertSpec) -> dict[str, Any]:
    """The cause rule file: one group."""
    return {"groups": [{"name": GROUP, "rules": [c.alert.rule(spec.runbook_url) for c in causes(spec)]}]}


def test_groups(spec: AlertSpec) -> list[TestGroup]:
    """One promtool test group per hand-written case."""
    groups = []
    for cause in causes(spec):
        for case in cause.cases:
            group = TestGroup(f"{cause.alert.name}: {case.what}", 60, list(case.series))
            expected = [
                {
                    "exp_labels": {**labels, "severity": cause.alert.severity, **cause.alert.labels},
                    "exp_annotations": cause.alert.expected_annotations(spec.runbook_url, summary=summary),
                }
                for labels, summary in case.fires
            ]
            group.expect_alerts(parse_duration(case.at), cause.alert.name, expected)
            groups.append(group)
    return groups
