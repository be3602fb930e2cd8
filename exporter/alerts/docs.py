"""alerts/README.md: every alert (what it means, threshold and why, what to do), from the rules' own source."""

from __future__ import annotations

from exporter.alerts import causes, fleet, routing, rules
from exporter.alerts.alert import Alert
from exporter.alerts.rules import percent
from exporter.alerts.spec import AlertSpec
from exporter.alerts.windows import DEFAULT_TIERS, humanize_seconds
from exporter.metrics.promql import num


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def all_alerts(spec: AlertSpec) -> list[Alert]:
    """SLO alerts, SLO by SLO, then the cause alerts."""
    alerts = [a for slo in spec.slos for a in rules.slo_alerts(spec, slo)]
    return [*alerts, *causes.table(spec)]


def _slos(spec: AlertSpec) -> list[str]:
    lines = [
        "## SLOs",
        "",
        f"Counted over {spec.period}. A latency SLI counts a request good when it lands in the threshold's "
        'histogram bucket (`le` matched as both "1" and "1.0", since exporters render edges differently), so the '
        "threshold must be a bucket edge.",
        "",
        f"| SLO | good request | objective over {spec.period} | error budget | grouped by | pages only above |",
        "|---|---|---|---|---|---|",
    ]
    for slo in spec.slos:
        guard = f"{num(slo.min_request_rate)} requests/s" if slo.min_request_rate > 0 else "-"
        group = ", ".join(f"`{label}`" for label in slo.group_by) or "-"
        lines.append(
            f"| `{slo.name}` | {_cell(slo.good)} | {percent(slo.objective)} | {percent(slo.budget)} | {group} "
            f"| {guard} |"
        )
    lines += [
        "",
        "Availability, from vLLM's own counters: bad = 5xx responses of its OpenAI API (server errors, and the 503 "
        "vLLM answers when it refuses a request for capacity) + requests the engine finished with "
        '`finished_reason="error"` (a streamed request has answered 200 by then, so only this counter sees it). '
        "Counted = 2xx + 5xx. Neither counts 4xx (the client's mistake) or client disconnects "
        '(`finished_reason="abort"`). A non-streamed engine error is both a 500 and an `error` finish and counts '
        "twice: the SLI errs towards paging. A server with several models reports its HTTP responses under "
        "model `unknown`.",
        "",
    ]
    return lines


def _tiers(spec: AlertSpec) -> list[str]:
    lines = [
        "## Burn-rate tiers",
        "",
        "Multiwindow, multi-burn-rate alerts (SRE Workbook, ch. 5). The burn rate is the error ratio divided by the "
        "error budget: at 1 the budget lasts exactly the period. Each tier fires when both its windows burn at "
        f"least factor = budget share x period / long window; computed for {spec.period}:",
        "",
        "| severity | long / short window | budget share | factor | the budget lasts | alert fires after |",
        "|---|---|---|---|---|---|",
    ]
    for tier in DEFAULT_TIERS:
        factor = tier.factor(spec.period_s)
        lines.append(
            f"| {tier.severity} | {tier.long} / {tier.short} | {tier.budget_share:.0%} | {num(factor)} | "
            f"{humanize_seconds(tier.exhausts_in_s(spec.period_s))} | {tier.long} at exactly that rate, sooner "
            "above it |"
        )
    lines += [
        "",
        "The generated tests (`tests/slo-*-<window>.test.yaml`) show each tier firing at exactly factor x budget "
        "when the long window has passed and not before, staying silent at half that rate, resolving within the "
        "short window once the errors stop, and (pages) not paging below the SLO's minimum request rate.",
        "",
    ]
    return lines


def _alert_table(spec: AlertSpec) -> list[str]:
    lines = [
        "## Alerts",
        "",
        "| alert | severity | what it means | threshold and why | what to do |",
        "|---|---|---|---|---|",
    ]
    for alert in all_alerts(spec):
        lines.append(
            f"| [{alert.name}](#{alert.name.lower()}) | {alert.severity} | {_cell(alert.meaning)} | "
            f"{_cell(alert.threshold)} | {_cell(alert.action)} |"
        )
    return [*lines, ""]


def _routing(spec: AlertSpec) -> list[str]:
    labels = ", ".join(f"`{label}`" for label in routing.group_labels(spec))
    lines = [
        "## Routing and inhibitions",
        "",
        f'`alertmanager.yaml`: `severity="page"` goes to the `{routing.PAGER}` receiver, `severity="ticket"` (and '
        f"anything else) to `{routing.TICKET}`, grouped by {labels}. The receivers are webhooks from the spec's "
        "`routing`; swap in your pager's and ticket system's integrations.",
        "",
        "| source | inhibits | when equal on | why |",
        "|---|---|---|---|",
    ]
    for rule in routing.inhibitions(spec):
        source = ", ".join(f"`{m}`" for m in rule.source)
        target = ", ".join(f"`{m}`" for m in rule.target)
        equal = ", ".join(f"`{label}`" for label in rule.equal) or "-"
        lines.append(f"| {source} | {target} | {equal} | {_cell(rule.why)} |")
    return [*lines, ""]


def _recording(spec: AlertSpec) -> list[str]:
    period = spec.period
    lines = [
        "## Recording rules",
        "",
        f"Per SLO (label `slo`, plus its group_by labels), for each window {', '.join(rules.windows())}:",
        "",
        "| series | meaning |",
        "|---|---|",
        f"| `{rules.REQUESTS.format(w='<window>')}` | requests/s the SLI counts |",
        f"| `{rules.ERRORS.format(w='<window>')}` | bad requests/s |",
        f"| `{rules.RATIO.format(w='<window>')}` | error ratio: bad / counted |",
        f"| `{rules.BURN.format(w='<window>')}` | burn rate: error ratio / error budget |",
        f"| `{rules.BUDGET_LEFT}` | share of the {period} error budget left (negative once overspent), from the "
        f"5m series summed over {period} |",
        "",
        "Fleet-wide (`rules/fleet.rules.yaml`), summed over every exporter:",
        "",
        "| series | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{r.record}` | {_cell(r.meaning)} |" for r in fleet.RECORDS]
    return [*lines, ""]


def _runbooks(spec: AlertSpec) -> list[str]:
    lines = ["## Runbooks", ""]
    for alert in all_alerts(spec):
        when = f", for {alert.for_}" if alert.for_ else ""
        lines += [
            f"### {alert.name}",
            "",
            f"Severity **{alert.severity}**{when}. {alert.meaning}",
            "",
            "```promql",
            alert.expr,
            "```",
            "",
            f"Threshold: {alert.threshold}",
            "",
            f"What to do: {alert.action}",
            "",
        ]
    return lines


def readme(spec: AlertSpec, spec_name: str) -> str:
    """The whole alerts/README.md."""
    lines = [
        "# Alerts",
        "",
        f"<!-- Generated by `llm-token-exporter alerts --slo-spec {spec_name} --out DIR`; do not edit. -->",
        "",
        f"Generated by `exporter/alerts/` from the SLO spec `exporter/alerts/{spec_name}`: edit those, then run "
        f"`llm-token-exporter alerts --slo-spec exporter/alerts/{spec_name} --out alerts` (`--check` tells whether "
        "the files are current). Load `rules/*.rules.yaml` into Prometheus and `alertmanager.yaml` into Alertmanager.",
        "",
        "Check them with the real tools: `promtool check rules alerts/rules/*.yaml`, `promtool test rules "
        "alerts/tests/*.test.yaml` (run from anywhere: paths are relative to each test file), `amtool check-config "
        "alerts/alertmanager.yaml`; `pytest tests/unit/alerts/test_tools.py` runs them all, with route tests.",
        "",
        *_slos(spec),
        *_tiers(spec),
        *_alert_table(spec),
        *_routing(spec),
        *_recording(spec),
        *_runbooks(spec),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
