"""Generated `promtool test rules` cases for the SLO rules: every burn tier fires, stays silent and resolves.

For each SLO and tier, with the tier's long window L, short window S and a sample every S/6:
- fire: a clean history of L, then errors at exactly factor x budget: silent two samples before L has passed
  (the Workbook's detection time for that rate), firing at L with the burn rate and budget left in its
  annotations; then twice as many errors for L/2 and none: still firing just after (the long window is still
  over the threshold), resolved within S (the short window is not);
- half: errors at half that rate for L + S: silent throughout, though the burn rate is visibly half the factor;
- guard (page tiers of SLOs with min_request_rate): every request bad but half the minimum rate: no page.
The expected annotations (burn rate, budget left) are computed with Prometheus 2.42's rate() arithmetic (promrate.py),
the version the tests run under. The SLI checks themselves are in sli_tests.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.alerts import promrate, rules
from exporter.alerts.alert import Alert
from exporter.alerts.names import bucket, count
from exporter.alerts.spec import AlertSpec, SloSpec
from exporter.alerts.testfile import GROUP_VALUES, INSTANCE, TestGroup, labels_text, notation, render, with_labels
from exporter.alerts.windows import DEFAULT_TIERS, BurnTier, format_duration
from exporter.metrics import catalog
from exporter.metrics.promql import num, python_le

START = 100_000.0  # counters start high, as on a long-running exporter: no extrapolation towards zero
SAMPLES_PER_SHORT = 6  # a sample every S/6: about 150 evaluations per test group whatever the tier


@dataclass(frozen=True)
class Phase:
    """A stretch of steady traffic: so many samples, and requests and bad requests per sample."""

    samples: int
    requests: float
    bad: float


@dataclass(frozen=True)
class Input:
    """One input series: its selector, its role in the SLI and its samples."""

    selector: str
    role: str  # requests, good (latency bucket), http_good, http_error, engine_error, ignored
    values: list[float]

    def points(self, interval_s: int) -> list[tuple[float, float]]:
        """(seconds, value) pairs."""
        return [(float(i * interval_s), v) for i, v in enumerate(self.values)]


def _cumulative(phases: list[Phase], per_sample: Callable[[float, float], float]) -> list[float]:
    values = [START]
    for phase in phases:
        for _ in range(phase.samples):
            values.append(values[-1] + per_sample(phase.requests, phase.bad))
    return values


def sli_inputs(spec: AlertSpec, slo: SloSpec, phases: list[Phase]) -> list[Input]:
    """The series one exporter would serve for this traffic."""
    if slo.sli == "latency":
        assert slo.threshold_seconds is not None
        base = {"instance": INSTANCE, "job": spec.exporter_job, "model": GROUP_VALUES["model"]}
        base["tenant"] = GROUP_VALUES["tenant"]
        le = python_le(slo.threshold_seconds)  # as this exporter renders it
        return [
            Input(count(slo.histogram) + labels_text(base), "requests", _cumulative(phases, lambda n, b: n)),
            Input(
                bucket(slo.histogram) + labels_text({**base, "le": le}),
                "good",
                _cumulative(phases, lambda n, b: n - b),
            ),
        ]
    base = {"instance": INSTANCE, "job": spec.exporter_job, "vllm_instance": GROUP_VALUES["vllm_instance"]}
    base["model"] = GROUP_VALUES["model"]
    http, finished = catalog.ENGINE_HTTP_RESPONSES.name, catalog.ENGINE_FINISHED.name
    # Half the errors are 5xx, half are engine errors of streamed requests (already answered 2xx); 4xx and client
    # disconnects run alongside and must not count.
    return [
        Input(http + labels_text({**base, "status_class": "2xx"}), "http_good", _cumulative(phases, _streamed)),
        Input(http + labels_text({**base, "status_class": "5xx"}), "http_error", _cumulative(phases, _half_bad)),
        Input(http + labels_text({**base, "status_class": "4xx"}), "ignored", _cumulative(phases, _tenth)),
        Input(
            finished + labels_text({**base, "finished_reason": "error"}), "engine_error", _cumulative(phases, _half_bad)
        ),
        Input(finished + labels_text({**base, "finished_reason": "abort"}), "ignored", _cumulative(phases, _tenth)),
    ]


def _streamed(n: float, bad: float) -> float:
    return n - bad / 2


def _half_bad(n: float, bad: float) -> float:
    return bad / 2


def _tenth(n: float, bad: float) -> float:
    return n / 10


def sli_rates(
    slo: SloSpec, inputs: list[Input], interval_s: int, t: float, window: float
) -> tuple[float, float] | None:
    """(bad requests/s, requests/s) as the recording rules compute them at t; None before there is a rate."""

    def total(*roles: str) -> float | None:
        return promrate.sum_rates([i.points(interval_s) for i in inputs if i.role in roles], t, window)

    if slo.sli == "latency":
        requests, good = total("requests"), total("good")
        return None if requests is None or good is None else (requests - good, requests)
    errors, requests = total("http_error", "engine_error"), total("http_good", "http_error")
    return None if errors is None or requests is None else (errors, requests)


def burn_rate(slo: SloSpec, inputs: list[Input], interval_s: int, t: float, window: float) -> float:
    """slo:burn_rate:ratio_rate<window> at t."""
    rates = sli_rates(slo, inputs, interval_s, t, window)
    assert rates is not None, f"no {window}s rate at {t}s"
    errors, requests = rates
    return errors / requests / slo.budget


def budget_left_percent(slo: SloSpec, inputs: list[Input], interval_s: int, t: int) -> str:
    """The budget_remaining annotation at t: the 5m series summed over every evaluation so far.

    Sparse test samples (a sample every 20m for the 1d tier) leave no 5m rate and so no budget: `unknown`.
    """
    spent_errors = spent_requests = 0.0
    seen = False
    for step in range(interval_s, t + 1, interval_s):
        rates = sli_rates(slo, inputs, interval_s, step, rules.BUDGET_WINDOW)
        if rates is not None:
            spent_errors, spent_requests, seen = spent_errors + rates[0], spent_requests + rates[1], True
    if not seen:
        return "unknown"
    return f"{100 * (1 - (spent_errors / spent_requests) / slo.budget):.0f}%"


def requests_per_sample(spec: AlertSpec, slo: SloSpec) -> float:
    """Requests per sample such that every count in the tests is a whole number (exact in promtool and here)."""
    n = 10_000.0
    while n < 1e9 and not all(_whole(n * t.factor(spec.period_s) * slo.budget / 4) for t in DEFAULT_TIERS):
        n *= 10
    return n


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def _count(value: float) -> float:
    """A request count without float noise (14.4 x 0.01 x 10000 is 1440, not 1440.0000000000002)."""
    return round(value, 6)


def _expected(alert: Alert, spec: AlertSpec, slo: SloSpec, burn: float, budget: str) -> dict[str, Any]:
    group = {label: GROUP_VALUES[label] for label in slo.group_by}
    summary = with_labels(alert.summary.replace(rules.BURN_RATE_TEMPLATE, f"{burn:.2f}"), group)
    extra = {"burn_rate": f"{burn:.2f}", "budget_remaining": budget}
    return {
        "exp_labels": {**group, "severity": alert.severity, **alert.labels},
        "exp_annotations": alert.expected_annotations(spec.runbook_url, summary=summary, extra=extra),
    }


def tier_groups(spec: AlertSpec, slo: SloSpec, tier: BurnTier) -> list[TestGroup]:
    """Fire / resolve, half rate, and (page tiers) the low-traffic guard, for one SLO and tier."""
    interval = tier.short_s // SAMPLES_PER_SHORT
    window = tier.long_s // interval  # samples per long window
    short = tier.short_s // interval
    factor = tier.factor(spec.period_s)
    n = requests_per_sample(spec, slo)
    alert = rules.burn_alert(spec, slo, tier)
    group = {label: GROUP_VALUES[label] for label in slo.group_by}
    burn_expr = rules.BURN.format(w=tier.long) + f'{{slo="{slo.name}"}}'
    groups = []

    # Errors at exactly the factor, then hotter for half a window (so the long window stays over the threshold
    # after the errors stop, and only the short window can end the alert), then none.
    hot = min(2.0, 1 / (factor * slo.budget))
    clean, burning = Phase(window, n, 0.0), Phase(window, n, _count(n * factor * slo.budget))
    phases = [clean, burning, Phase(window // 2, n, _count(n * factor * slo.budget * hot)), Phase(short + 2, n, 0.0)]
    inputs = sli_inputs(spec, slo, phases)
    fire = TestGroup(
        f"{slo.name} {tier.long}/{tier.short}: after a clean {tier.long}, errors at exactly {num(factor)} x budget: "
        f"silent just before {tier.long} has passed, firing at {tier.long}; then {num(hot)} times that for "
        f"{format_duration(tier.long_s // 2)} and none: still firing just after (the {tier.long} window is over "
        f"the threshold), resolved within {tier.short} (the {tier.short} window is not).",
        interval,
        [(i.selector, _values(i)) for i in inputs],
    )
    t0 = window * interval
    fire_at = t0 + tier.long_s
    recovered = fire_at + (window // 2) * interval
    fire.expect_alerts(fire_at - 2 * interval, alert.name, [])
    for at in (fire_at, recovered + interval) if hot >= 1.2 else (fire_at,):
        burn = burn_rate(slo, inputs, interval, at, tier.long_s)
        budget = budget_left_percent(slo, inputs, interval, at)
        fire.expect_alerts(at, alert.name, [_expected(alert, spec, slo, burn, budget)])
    fire.expect_alerts(recovered + tier.short_s, alert.name, [])
    groups.append(fire)

    half = [clean, Phase(window + short + 2, n, _count(n * factor * slo.budget / 2))]
    inputs = sli_inputs(spec, slo, half)
    silent = TestGroup(
        f"{slo.name} {tier.long}/{tier.short}: errors at half of {num(factor)} x budget for {tier.long} and more: "
        "silent, with the burn rate at half the factor.",
        interval,
        [(i.selector, _values(i)) for i in inputs],
    )
    end = t0 + tier.long_s + tier.short_s
    for at in (t0 + tier.long_s, end):
        silent.expect_alerts(at, alert.name, [])
    labels = {**group, "slo": slo.name}
    silent.expect_value(end, f"{burn_expr} >= bool {num(factor / 2)} * {rules.TOLERANCE}", labels, 1)
    silent.expect_value(end, f"{burn_expr} >= bool {num(factor)} * {rules.TOLERANCE}", labels, 0)
    groups.append(silent)

    if tier.severity == "page" and slo.min_request_rate > 0:
        low = slo.min_request_rate / 2 * interval
        inputs = sli_inputs(spec, slo, [Phase(window + short + 2, low, low)])
        guard = TestGroup(
            f"{slo.name} {tier.long}/{tier.short}: every request bad but only {num(slo.min_request_rate / 2)} "
            f"requests/s, under min_request_rate {num(slo.min_request_rate)}: no page.",
            interval,
            [(i.selector, _values(i)) for i in inputs],
        )
        at = tier.long_s + tier.short_s
        guard.expect_alerts(at, alert.name, [])
        guard.expect_value(at, f"{burn_expr} >= bool {num(factor)} * {rules.TOLERANCE}", labels, 1)
        requests = rules.REQUESTS.format(w=tier.long) + f'{{slo="{slo.name}"}}'
        guard.expect_value(at, f"{requests} < bool {num(slo.min_request_rate)}", labels, 1)
        groups.append(guard)
    return groups


def _values(inp: Input) -> str:
    return notation(inp.values)


def tier_file(spec: AlertSpec, spec_name: str, slo: SloSpec, tier: BurnTier) -> str:
    """The test file for one SLO and tier."""
    order = [rules.recording_group_name(slo), rules.alert_group_name(slo)]
    interval = tier.short_s // SAMPLES_PER_SHORT
    return render(spec_name, [f"../rules/{rules.rule_file_name(slo)}"], interval, order, tier_groups(spec, slo, tier))
