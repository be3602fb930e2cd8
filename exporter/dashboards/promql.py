"""PromQL the dashboards use: metric selectors filtered by the dashboard variables, built from catalog names.

Every selector goes through `sel`, so a metric is named once (in the catalog or the recording rules) and gets
exactly the variable filters its labels allow: `model`/`tenant` where the series has them, and the scrape's
target labels `namespace`/`node` on the exporter's own series (recording rules aggregate them away). With the
variables' "All" value `.*`, a matcher such as `namespace=~".*"` also matches a series without the label.
The text itself comes from `exporter.metrics.promql`, as the rules' does, and a recording rule's labels from
its level as the rules name it (`exporter.alerts.names.LEVELS`).
"""

from __future__ import annotations

from exporter.alerts import names
from exporter.metrics import catalog
from exporter.metrics import promql as base
from exporter.metrics.catalog import MetricSpec

RATE = "$__rate_interval"  # Grafana's rate window; the live test and the preview put a concrete one in
RANGE = "$__range"  # the dashboard's time range
TARGET_LABELS = ("namespace", "node")  # added by the ServiceMonitor/PodMonitor relabelling, absent elsewhere
VARIABLE_LABELS = ("model", "tenant")
BUILTIN = ("ALERTS",)  # Prometheus's own series the dashboards read


def labels_of(name: str) -> tuple[tuple[str, ...], bool]:
    """(labels a series has, whether it is the exporter's raw series carrying the scrape's target labels)."""
    if ":" in name:
        return names.LEVELS.get(names.level(name), ()), False
    if name in BUILTIN:
        return ("alertname", "alertstate", "severity", "slo", "model"), False
    for suffix in ("_bucket", "_count", "_sum"):
        histogram = name.removesuffix(suffix)
        if histogram != name and histogram in catalog.BY_NAME:
            return catalog.BY_NAME[histogram].labels, True
    return catalog.BY_NAME[name].labels, True


def sel(metric: MetricSpec | str, suffix: str = "", **match: str) -> str:
    """`name{...}`: the given matchers (as `base.matcher` reads them) plus the variable filters its labels allow."""
    name = (metric.name if isinstance(metric, MetricSpec) else metric) + suffix
    labels, raw = labels_of(name)
    parts = [base.matcher(k, v) for k, v in match.items()]
    parts += [base.matcher(k, f"~${k}") for k in VARIABLE_LABELS if k in labels and k not in match]
    if raw:
        parts += [base.matcher(k, f"~${k}") for k in TARGET_LABELS]
    return f"{name}{{{', '.join(parts)}}}"  # `, ` between matchers, as the dashboards have always written them


def rate(metric: MetricSpec | str, by: str = "", suffix: str = "", window: str = RATE, **match: str) -> str:
    """`sum by (by) (rate(sel[window]))`; `sum (...)` when `by` is empty."""
    return base.sum_by(by, base.rate(sel(metric, suffix, **match), window))


def increase(metric: MetricSpec | str, by: str = "", window: str = RANGE, **match: str) -> str:
    """`sum by (by) (increase(sel[window]))`, over the dashboard's range by default."""
    return base.sum_by(by, base.increase(sel(metric, **match), window))


def quantile(q: float, hist: MetricSpec, by: str = "") -> str:
    """The q-quantile of a histogram over the rate window, per `by`."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, {rate(hist, group, '_bucket')})"


def ratio(numerator: str, denominator: str) -> str:
    """`(a) / (b)`."""
    return f"({numerator})\n/\n({denominator})"


def or_zero(expr: str) -> str:
    """`expr`, or a single 0 when it has no series (for counters that only appear once something happened)."""
    return f"({expr}) or on () vector(0)"
