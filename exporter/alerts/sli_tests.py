"""Generated `promtool test rules` checks of each SLI: `le` as "1" or "1.0", and what availability counts.

Also the ticket for a latency threshold that no exporter serves as a bucket.
"""

from __future__ import annotations

from exporter.alerts import rules
from exporter.alerts.names import bucket, count
from exporter.alerts.spec import AlertSpec, SloSpec
from exporter.alerts.testfile import GROUP_VALUES, INSTANCE, TestGroup, labels_text, number, render, with_labels
from exporter.alerts.tests_gen import START
from exporter.metrics import catalog
from exporter.metrics.promql import le_values, python_le


def _latency_series(spec: AlertSpec, slo: SloSpec, instance: str, le: str | None) -> str:
    base = {"instance": instance, "job": spec.exporter_job, **{k: GROUP_VALUES[k] for k in ("model", "tenant")}}
    if le is None:
        return count(slo.histogram) + labels_text(base)
    return bucket(slo.histogram) + labels_text({**base, "le": le})


def sli_groups(spec: AlertSpec, slo: SloSpec) -> list[TestGroup]:
    """Checks of the SLI itself: `le` in either rendering, what availability counts, a missing threshold bucket."""
    minute, at = 60, 600
    labels = {**{label: GROUP_VALUES[label] for label in slo.group_by}, "slo": slo.name}
    ratio = f'round(1000 * {rules.RATIO.format(w="5m")}{{slo="{slo.name}"}})'
    if slo.sli == "availability":
        http, finished = catalog.ENGINE_HTTP_RESPONSES.name, catalog.ENGINE_FINISHED.name
        base = {"instance": INSTANCE, "job": spec.exporter_job, "vllm_instance": GROUP_VALUES["vllm_instance"]}
        base["model"] = GROUP_VALUES["model"]
        per_minute = [
            (http, "status_class", "2xx", 70),  # 20 of them streamed requests the engine then failed
            (http, "status_class", "5xx", 10),
            (http, "status_class", "4xx", 50),
            (finished, "finished_reason", "error", 20),
            (finished, "finished_reason", "abort", 30),
            (finished, "finished_reason", "stop", 50),
        ]
        group = TestGroup(
            f"{slo.name}: per minute 70 2xx (20 of them streams the engine failed), 10 5xx, 50 4xx, 30 client "
            "disconnects: bad = 10 + 20 of 80 counted (4xx and disconnects are not the server's failures).",
            minute,
            [
                (name + labels_text({**base, label: value}), f"{number(START)}+{n}x20")
                for name, label, value, n in per_minute
            ],
        )
        group.expect_value(at, ratio, labels, 375)
        return [group]
    assert slo.threshold_seconds is not None
    edges = slo.buckets or list(slo.histogram.default_buckets)
    above = [b for b in edges if b > slo.threshold_seconds]
    decoy = above[0] if above else slo.threshold_seconds * 2
    go, python = le_values(slo.threshold_seconds)[0], python_le(slo.threshold_seconds)
    start = number(START)
    series = [
        (_latency_series(spec, slo, "node-a:9842", None), f"{start}+100x20"),
        (_latency_series(spec, slo, "node-a:9842", go), f"{start}+100x20"),
        (_latency_series(spec, slo, "node-b:9842", None), f"{start}+100x20"),
        (_latency_series(spec, slo, "node-b:9842", python), f"{start}+50x20"),
    ]
    decoys = [
        (_latency_series(spec, slo, node, le), f"{start}+100x20")
        for node, le in (("node-a:9842", le_values(decoy)[0]), ("node-b:9842", python_le(decoy)))
    ]
    matching = TestGroup(
        f'{slo.name}: one exporter renders le="{go}", another le="{python}"; both count as good (150 of 200 '
        f"requests: error ratio 0.25) and the next edge ({decoy:g}) does not.",
        minute,
        series + decoys,
    )
    matching.expect_value(at, ratio, labels, 250)
    missing_alert = rules.bucket_missing_alert(slo)
    group_labels = {label: GROUP_VALUES[label] for label in slo.group_by}
    summary = with_labels(missing_alert.summary, group_labels)
    missing = TestGroup(
        f"{slo.name}: requests counted but no exporter serves the {slo.threshold_seconds:g} s bucket: ticket after "
        "15m; with the bucket present (even with every request slower) it stays silent.",
        minute,
        [series[0], decoys[0]],
    )
    expected = {
        "exp_labels": {**group_labels, "severity": missing_alert.severity, **missing_alert.labels},
        "exp_annotations": missing_alert.expected_annotations(spec.runbook_url, summary=summary),
    }
    missing.expect_alerts(20 * minute, missing_alert.name, [expected])
    present = TestGroup(
        f"{slo.name}: the threshold bucket is there but every request is slower: no missing-bucket ticket.",
        minute,
        [series[0], (_latency_series(spec, slo, "node-a:9842", python), f"{start}+0x20")],
    )
    present.expect_alerts(20 * minute, missing_alert.name, [])
    return [matching, missing, present]


def sli_file(spec: AlertSpec, spec_name: str, slo: SloSpec) -> str:
    """The SLI test file of one SLO."""
    order = [rules.recording_group_name(slo), rules.alert_group_name(slo)]
    return render(spec_name, [f"../rules/{rules.rule_file_name(slo)}"], 60, order, sli_groups(spec, slo))
