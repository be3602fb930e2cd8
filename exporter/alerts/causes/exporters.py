"""Cause alerts about the exporters: absent, down, spans dropped or rejected, attribution residual.

Absent and down watch the spec's exporter job, so they are rows made for a job rather than constants.
"""

from __future__ import annotations

from exporter.alerts import names
from exporter.alerts.causes.row import Case, Cause, gpu_labels, series
from exporter.alerts.testfile import INSTANCE
from exporter.metrics import catalog
from exporter.metrics.promql import selector

_RECEIVED, _DROPPED = catalog.SPANS_RECEIVED.name, catalog.SPANS_DROPPED.name
_REJECTED, _UNATTRIBUTED = catalog.SPANS_REJECTED.name, names.GPU_UNATTRIBUTED_SECONDS

_NODE = {"instance": INSTANCE, "job": "llm-token-exporter"}
_RESIDUAL = {k: v for k, v in gpu_labels(reason="no_spans").items() if k != "index"}  # {gpu, reason}: no index


def _targets(job: str) -> tuple[dict[str, str], dict[str, str]]:
    return {"instance": "node-a:9842", "job": job}, {"instance": "node-b:9842", "job": job}


def absent(job: str) -> Cause:
    """LLMExporterAbsent for the exporters scraped by `job`."""
    a, b = _targets(job)
    summary = "No llm-token-exporter target is up: every LLM SLO and cause alert is blind"
    return Cause(
        name="LLMExporterAbsent",
        severity="page",
        expr=f"absent({selector(names.UP, job=job)} == 1)",
        for_="10m",
        summary=summary,
        meaning="Prometheus scrapes no healthy exporter in its job: every SLO and cause alert evaluates on nothing "
        "and stays silent, whatever users see.",
        threshold="No target up for 10 minutes: a DaemonSet rollout replaces exporters faster than that.",
        action="Check the exporter DaemonSet, the scrape config (the job must be the spec's exporter_job), and "
        "network policies between Prometheus and the nodes.",
        cases=(
            Case("every target down for 15 minutes: page", {series(names.UP, a): "0x15"}, "15m", (({}, summary),)),
            Case(
                "one target down, one up: silent (that is LLMExporterDown)",
                {series(names.UP, a): "0x15", series(names.UP, b): "1x15"},
                "15m",
            ),
        ),
    )


def down(job: str) -> Cause:
    """LLMExporterDown for the exporters scraped by `job`."""
    a, b = _targets(job)
    return Cause(
        name="LLMExporterDown",
        severity="ticket",
        expr=f"{selector(names.UP, job=job)} == 0",
        for_="10m",
        summary="Exporter {{ $labels.instance }} is down: its node's engines and GPUs are unmonitored",
        meaning="One exporter cannot be scraped: its node's requests are missing from every SLI and its GPUs from "
        "every cause alert.",
        threshold="up == 0 for 10 minutes: longer than a rolling restart of the exporter.",
        action="Look at the exporter pod on that node: crash loop (its log names the problem), OOM kill, or the "
        "node itself down. LLMExporterAbsent inhibits this when no exporter at all is up.",
        cases=(
            Case(
                "one of two down for 15 minutes: ticket for it",
                {series(names.UP, a): "0x15", series(names.UP, b): "1x15"},
                "15m",
                ((a, "Exporter node-a:9842 is down: its node's engines and GPUs are unmonitored"),),
            ),
            Case("both up: silent", {series(names.UP, a): "1x15", series(names.UP, b): "1x15"}, "15m"),
        ),
    )


SPANS_DROPPED = Cause(
    name="LLMExporterSpansDropped",
    severity="ticket",
    expr=f'sum by (instance, job) (rate({_DROPPED}{{reason!="duplicate"}}[10m]))\n/\n'
    f"sum by (instance, job) (rate({_RECEIVED}[10m]))\n> 0.001",
    for_="10m",
    summary="Exporter {{ $labels.instance }} dropped {{ $value | humanizePercentage }} of spans: its SLIs and "
    "cost attribution undercount",
    meaning="The exporter is dropping valid spans (its processing queue is full: it is short of CPU). Dropped "
    "requests are missing from the latency SLIs and from attribution.",
    threshold="More than 0.1% of received spans for 10 minutes. Duplicates (re-delivered spans, counted once) "
    "are harmless and not counted.",
    action=f"Give the exporter more CPU (its limit), check `{catalog.QUEUE_DEPTH.name}` against its capacity, or "
    "raise --queue.capacity-spans for bursts.",
    cases=(
        Case(
            "10 of 1000 spans a minute dropped for a full queue: ticket",
            {
                series(_RECEIVED, {**_NODE, "protocol": "grpc"}): "0+1000x30",
                series(_DROPPED, {**_NODE, "reason": "queue_full"}): "0+10x30",
            },
            "25m",
            ((_NODE, f"Exporter {INSTANCE} dropped 1% of spans: its SLIs and cost attribution undercount"),),
        ),
        Case(
            "50 duplicates a minute, no queue drops: silent",
            {
                series(_RECEIVED, {**_NODE, "protocol": "grpc"}): "0+1000x30",
                series(_DROPPED, {**_NODE, "reason": "duplicate"}): "0+50x30",
                series(_DROPPED, {**_NODE, "reason": "queue_full"}): "0x30",
            },
            "25m",
        ),
    ),
)

_HTTP = series(_RECEIVED, {**_NODE, "protocol": "http"})
_NEGATIVE = series(_REJECTED, {**_NODE, "reason": "negative"})
SPANS_REJECTED = Cause(
    name="LLMExporterSpansRejected",
    severity="ticket",
    expr=f"sum by (instance, job) (rate({_REJECTED}[15m]))\n/\nsum by (instance, job) (rate({_RECEIVED}[15m]))\n> 0.01",
    for_="15m",
    summary="Exporter {{ $labels.instance }} rejected {{ $value | humanizePercentage }} of spans as malformed",
    meaning="Spans arrive with bad values (missing or mistyped attributes, negative durations): a vLLM version "
    "or a proxy changed them. Rejected requests are missing from the SLIs.",
    threshold="More than 1% for 15 minutes: a stray bad span is noise, a steady share is a systematic change.",
    action=f"`{_REJECTED}` has the reason; the exporter log has the first offending spans. "
    "Compare the vLLM version with the one the exporter was checked against.",
    cases=(
        Case(
            "5% rejected: ticket",
            {_HTTP: "0+1000x40", _NEGATIVE: "0+50x40"},
            "35m",
            ((_NODE, f"Exporter {INSTANCE} rejected 5% of spans as malformed"),),
        ),
        Case("0.5% rejected: silent", {_HTTP: "0+1000x40", _NEGATIVE: "0+5x40"}, "35m"),
    ),
)

ATTRIBUTION_RESIDUAL = Cause(
    name="LLMAttributionResidualHigh",
    severity="ticket",
    # Each GPU's time is split into requests + idle + unattributed, so this rate is a share of its time.
    expr=f"sum by (instance, job, gpu) (rate({_UNATTRIBUTED}[30m])) > 0.1",
    for_="30m",
    summary="GPU {{ $labels.gpu }} on {{ $labels.instance }}: {{ $value | humanizePercentage }} of its time "
    "attributed to no request",
    meaning="The exporter sees the GPU working but cannot tie the work to requests: spans are missing (tracing "
    "off on a vLLM, spans dropped or rejected) or the topology maps engines to the wrong GPUs. Cost and energy "
    "per model and tenant undercount by that share.",
    threshold="More than 10% of the GPU's time for 30 minutes: a few percent is the normal edge of sampling.",
    action="`reason` on the series says why. Check that every vLLM sends spans (LLMSpansMissing), the "
    f"span-loss alerts, and `{catalog.INSTANCE_INFO.name}` for the GPUs each engine is mapped to.",
    cases=(
        Case(
            "15 s of every minute unattributed: ticket (once the 30m rate has filled and held 30m)",
            {series(_UNATTRIBUTED, _RESIDUAL): "0+15x60"},
            "50m",
            (
                (
                    {**_NODE, "gpu": _RESIDUAL["gpu"]},
                    f"GPU {_RESIDUAL['gpu']} on {INSTANCE}: 25% of its time attributed to no request",
                ),
            ),
        ),
        Case("3 s of every minute: silent", {series(_UNATTRIBUTED, _RESIDUAL): "0+3x60"}, "50m"),
    ),
)
