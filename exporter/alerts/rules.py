"""SLO rules: SLI error ratios and burn rates per window, budget left, and multiwindow burn-rate alerts."""

from __future__ import annotations

from typing import Any

from exporter.alerts.alert import Alert
from exporter.alerts.names import bucket, count
from exporter.alerts.spec import AlertSpec, SloSpec
from exporter.alerts.windows import DEFAULT_TIERS, BurnTier, format_duration, humanize_seconds, sli_windows
from exporter.metrics import catalog
from exporter.metrics.promql import le_matcher, num, rate, selector, sum_by

# Recorded series, one per SLO (label `slo`) and value of its group_by labels; `{w}` is the window (5m, 1h, ...).
REQUESTS = "slo:sli_requests:rate{w}"  # requests/s the SLI counts
ERRORS = "slo:sli_errors:rate{w}"  # bad requests/s
RATIO = "slo:sli_error:ratio_rate{w}"  # bad / all
BURN = "slo:burn_rate:ratio_rate{w}"  # error ratio / error budget: 1 spends exactly the budget over the period
BUDGET_LEFT = "slo:error_budget_remaining:ratio"  # 1 - budget spent over the period (negative once overspent)
BUDGET_WINDOW = 300  # the budget sums the 5m series over the period: request-weighted and cheap

# A burn exactly at a tier's factor must fire (that is what steady traffic at factor x budget produces), whatever
# the last floating-point bit of rate() does; one part in a million is far below any meaningful burn rate.
TOLERANCE = "0.999999"

# Availability: what a failed request is. The SLI reads vLLM's OpenAI API responses (POST /v1/*) and its finish
# reasons. Bad: 5xx (server errors, and vLLM's 503 for requests refused at admission for capacity, which are also
# counted in the engine's admission-rejection counter and so not added again) plus finished_reason="error" (engine
# errors; a streamed request has already answered 200 when the engine fails it, so only this counter sees it).
# Counted: 2xx and 5xx. Not counted either way: 4xx (the client's mistake) and client disconnects
# (finished_reason="abort"; a non-streamed one may show as 2xx).
GOOD_OR_SERVER_ERROR = "2xx|5xx"
SERVER_ERROR = "5xx"
ENGINE_ERROR = "error"

LATENCY_ACTIONS = {
    "time_to_first_token": f"TTFT is queue + prefill: compare `{catalog.QUEUE.name}` and "
    f"`{catalog.PREFILL.name}`. Queue-bound: add replicas or lower the offered load; prefill-bound: long "
    "prompts (enable chunked prefill and prefix caching, cap max_model_len).",
    "time_per_output_token": "TPOT grows with the decode batch: check KV-cache preemptions, GPU throttling and "
    "memory bandwidth; lower max_num_seqs or add replicas.",
}
DEFAULT_LATENCY_ACTION = "Find which phase grew (queue, prefill, decode histograms) and the cause alerts firing."
AVAILABILITY_ACTION = (
    f'Split the errors: `{catalog.ENGINE_HTTP_RESPONSES.name}{{status_class="5xx"}}` (with '
    f"`{catalog.ENGINE_ADMISSION_REJECTIONS.name}`: requests refused for capacity, answered 503: add replicas) and "
    f'`{catalog.ENGINE_FINISHED.name}{{finished_reason="error"}}` (engine errors: read the vLLM log; restart a '
    "wedged engine)."
)


def camel(name: str) -> str:
    """`ttft_chat` -> `TtftChat`, for alert names."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def percent(ratio: float) -> str:
    """0.144 -> `14.4%`, 0.001 -> `0.1%`, for alert and docs texts."""
    return f"{ratio * 100:.4g}%"


def windows() -> tuple[str, ...]:
    """The SLI windows as durations: 5m, 30m, 1h, 2h, 6h, 1d, 3d."""
    return tuple(format_duration(w) for w in sli_windows())


def requests_expr(slo: SloSpec, window: str) -> str:
    """Requests/s the SLI counts over `window`, by the SLO's group_by labels."""
    if slo.sli == "latency":
        return sum_by(slo.group_by, rate(count(slo.histogram), window))
    http = selector(catalog.ENGINE_HTTP_RESPONSES.name, status_class="~" + GOOD_OR_SERVER_ERROR)
    return sum_by(slo.group_by, rate(http, window))


def errors_expr(slo: SloSpec, window: str) -> str:
    """Bad requests/s over `window`: slower than the threshold, or failed (see GOOD_OR_SERVER_ERROR)."""
    if slo.sli == "latency":
        assert slo.threshold_seconds is not None
        good = f"{bucket(slo.histogram)}{{{le_matcher(slo.threshold_seconds)}}}"
        total = sum_by(slo.group_by, rate(count(slo.histogram), window))
        return f"{total}\n-\n{sum_by(slo.group_by, rate(good, window))}"
    # `or` unions the two: their label sets differ (status_class vs finished_reason), so nothing is dropped.
    http = selector(catalog.ENGINE_HTTP_RESPONSES.name, status_class=SERVER_ERROR)
    failed = selector(catalog.ENGINE_FINISHED.name, finished_reason=ENGINE_ERROR)
    return sum_by(slo.group_by, f"\n  {rate(http, window)}\n  or\n  {rate(failed, window)}\n")


def _on(slo: SloSpec, name: str) -> str:
    return selector(name, slo=slo.name)


def recording_group(spec: AlertSpec, slo: SloSpec) -> dict[str, Any]:
    """One group per SLO; rules in a group run in order, so later ones read the earlier ones' results."""
    rules: list[dict[str, Any]] = []
    labels = {"slo": slo.name}
    for w in windows():
        rules.append({"record": REQUESTS.format(w=w), "expr": requests_expr(slo, w), "labels": labels})
        rules.append({"record": ERRORS.format(w=w), "expr": errors_expr(slo, w), "labels": labels})
    for w in windows():
        ratio = f"{_on(slo, ERRORS.format(w=w))}\n/\n{_on(slo, REQUESTS.format(w=w))}"
        rules.append({"record": RATIO.format(w=w), "expr": ratio, "labels": labels})
    for w in windows():
        burn = f"{_on(slo, RATIO.format(w=w))} / {num(slo.budget)}"
        rules.append({"record": BURN.format(w=w), "expr": burn, "labels": labels})
    short = format_duration(BUDGET_WINDOW)
    # Sums of per-second rates sampled at the same instants: their quotient is the request-weighted error ratio.
    spent = (
        f"  sum_over_time({_on(slo, ERRORS.format(w=short))}[{spec.period}])\n"
        f"  /\n  sum_over_time({_on(slo, REQUESTS.format(w=short))}[{spec.period}])"
    )
    rules.append({"record": BUDGET_LEFT, "expr": f"1 - (\n{spent}\n) / {num(slo.budget)}", "labels": labels})
    return {"name": recording_group_name(slo), "rules": rules}


def recording_group_name(slo: SloSpec) -> str:
    """Name of an SLO's recording group."""
    return f"slo-{slo.name}-recording"


def alert_group_name(slo: SloSpec) -> str:
    """Name of an SLO's alerting group."""
    return f"slo-{slo.name}-alerts"


def burn_alert_name(slo: SloSpec, tier: BurnTier) -> str:
    """`LLMTtftBudgetBurn1h`: one alert name per SLO and tier, so each tier fires, resolves and is tested alone."""
    return f"LLM{camel(slo.name)}BudgetBurn{tier.long}"


def _who(slo: SloSpec) -> str:
    return "/".join(f"{{{{ $labels.{label} }}}}" for label in slo.group_by) or "all models"


def budget_template(slo: SloSpec) -> str:
    """Go template: the budget left over the period, in whole percent, or `unknown`."""
    matchers = ",".join([f'slo="{slo.name}"', *(f'{label}="%s"' for label in slo.group_by)])
    query = f"`100 * {BUDGET_LEFT}{{{matchers}}}`"
    args = "".join(f" $labels.{label}" for label in slo.group_by)
    source = f"printf {query}{args} | query" if slo.group_by else f"query {query}"
    return f'{{{{ with {source} }}}}{{{{ . | first | value | printf "%.0f%%" }}}}{{{{ else }}}}unknown{{{{ end }}}}'


BURN_RATE_TEMPLATE = '{{ $value | printf "%.2f" }}'


def burn_alert(spec: AlertSpec, slo: SloSpec, tier: BurnTier) -> Alert:
    """The alert for one tier: both windows burn at least `factor` x budget (and enough traffic, for pages)."""
    factor = tier.factor(spec.period_s)
    threshold = f"{num(factor)} * {TOLERANCE}"
    conditions = [
        f"{_on(slo, BURN.format(w=tier.long))} >= {threshold}",
        f"and {_on(slo, BURN.format(w=tier.short))} >= {threshold}",
    ]
    guarded = tier.severity == "page" and slo.min_request_rate > 0
    if guarded:
        conditions.append(f"and {_on(slo, REQUESTS.format(w=tier.long))} >= {num(slo.min_request_rate)}")
    share, ratio = f"{tier.budget_share:.0%}", factor * slo.budget
    lasts = humanize_seconds(tier.exhausts_in_s(spec.period_s))
    why = (
        f"Burn rate >= {factor:g} over both {tier.long} and {tier.short} (error ratio >= {percent(ratio)}): {share} of "
        f"the {spec.period} error budget spent in {tier.long}, the SRE Workbook's {tier.severity} tier; factor = "
        f"{share} x {spec.period} / {tier.long}. The {tier.short} window lets it resolve soon after the burn stops."
    )
    if guarded:
        why += (
            f" Pages only above {num(slo.min_request_rate)} requests/s over {tier.long}: with less traffic a handful "
            "of bad requests would page."
        )
    if slo.sli == "latency":
        assert slo.metric is not None
        action = LATENCY_ACTIONS.get(slo.metric, DEFAULT_LATENCY_ACTION)
    else:
        action = AVAILABILITY_ACTION
    if tier.severity == "ticket":
        action = f"A slow burn: the budget still lasts {lasts} at this rate, so fix it in working hours. {action}"
    else:
        action = f"The budget is gone in {lasts} at this rate. Check the cause alerts for this model first. {action}"
    return Alert(
        name=burn_alert_name(slo, tier),
        severity=tier.severity,
        expr="\n".join(conditions),
        summary=f"{_who(slo)}: {slo.title} SLO burning its {spec.period} error budget at {BURN_RATE_TEMPLATE}x the "
        f"sustainable rate ({tier.severity} at {factor:.2f}x over {tier.long} and {tier.short})",
        meaning=f"More than {percent(ratio)} of requests were bad (good: {slo.good}) over both the last {tier.long} "
        f"and {tier.short}; the objective is {percent(slo.objective)} good over {spec.period}. At {factor:g}x the "
        f"whole error budget lasts {lasts}.",
        threshold=why,
        action=action,
        labels={"slo": slo.name, "sli": slo.sli, "window": f"{tier.long}/{tier.short}"},
        annotations={"burn_rate": BURN_RATE_TEMPLATE, "budget_remaining": budget_template(slo)},
    )


def bucket_missing_alert(slo: SloSpec) -> Alert:
    """A latency SLO whose threshold bucket is not exported can never fire: say so."""
    assert slo.threshold_seconds is not None
    on = f"on ({', '.join(slo.group_by)})"
    good = f"{bucket(slo.histogram)}{{{le_matcher(slo.threshold_seconds)}}}"
    return Alert(
        name=f"LLM{camel(slo.name)}ThresholdBucketMissing",
        severity="ticket",
        expr=f"{sum_by(slo.group_by, rate(count(slo.histogram), '1h'))} > 0\nunless {on}\n"
        f"{sum_by(slo.group_by, rate(good, '1h'))}",
        for_="15m",
        summary=f"{_who(slo)}: no {slo.threshold_seconds:g} s bucket in {slo.histogram.name}; the {slo.name} SLO is "
        "blind",
        meaning=f"Requests are counted but no exporter serves the le={slo.threshold_seconds:g} bucket the {slo.name} "
        "SLO counts good requests with, so its burn-rate alerts cannot fire.",
        threshold="Any traffic for 15 minutes without the bucket: the SLO is silently off, whatever the traffic.",
        action="Make the exporters' --buckets.* include the threshold (or give the spec the buckets they use and "
        "pick one of them), then regenerate the rules.",
        labels={"slo": slo.name, "sli": slo.sli},
    )


def slo_alerts(spec: AlertSpec, slo: SloSpec) -> list[Alert]:
    """Every alert of one SLO: a burn alert per tier, and the missing-bucket check for latency SLOs."""
    alerts = [burn_alert(spec, slo, tier) for tier in DEFAULT_TIERS]
    if slo.sli == "latency":
        alerts.append(bucket_missing_alert(slo))
    return alerts


def rule_file(spec: AlertSpec, slo: SloSpec) -> dict[str, Any]:
    """One SLO's rule file: its recording group, then its alerting group (drop the file to drop the SLO)."""
    alerts = [a.rule(spec.runbook_url) for a in slo_alerts(spec, slo)]
    return {"groups": [recording_group(spec, slo), {"name": alert_group_name(slo), "rules": alerts}]}


def rule_file_name(slo: SloSpec) -> str:
    """`slo-ttft.rules.yaml`."""
    return f"slo-{slo.name}.rules.yaml"
