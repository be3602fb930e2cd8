"""Dashboard lint rules in the spirit of grafana/dashboard-linter, written for these dashboards.

Each rule reads one dashboard's JSON model and returns `Finding`s that name the dashboard, the panel and the rule:

- datasource-variable: a `datasource` variable over Prometheus; every panel and target reads `${datasource}`.
- rate-interval: every `rate`/`irate`/`increase` over `$__rate_interval` (`increase` may total `$__range`).
- rate-over-counters: those only over counters (the catalog's, histogram series, recorded sums), never gauges.
- panel-unit: a unit that says what is measured (not missing, `none` or `short`).
- panel-description: a description.
- histogram-quantile: `histogram_quantile` over `sum by (le, ...)` of a rate of `_bucket` series.
- unique-titles: no two panels of a dashboard with one title.
- target-labels: the exporter's series filtered by each target label the chart's ServiceMonitor attaches (by its
  variable), and `job`/`instance` never pinned to a value: the chart's job is its name, which `nameOverride`
  changes, and the instance is a pod address.

Written here rather than in `exporter.dashboards` because it parses PromQL with promql-parser, a test dependency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser as pp
import yaml

from exporter.dashboards.builder import DATASOURCE
from exporter.dashboards.promql import BUILTIN, RANGE, RATE, TARGET_LABELS
from exporter.metrics import catalog

Json = dict[str, Any]
# Durations no query writes, standing in for Grafana's window variables so that the parser can read them back.
RATE_WINDOW, RANGE_WINDOW = timedelta(seconds=1337), timedelta(seconds=7331)
RANGE_FUNCTIONS = ("rate", "irate", "increase")
VAGUE_UNITS = ("", "none", "short")
# Labels Prometheus Operator puts on every target a ServiceMonitor scrapes (PodMonitor: no service).
OPERATOR_LABELS = ("namespace", "service", "pod", "container", "endpoint", "job", "instance")


@dataclass(frozen=True)
class Finding:
    """A rule a panel (or the whole dashboard: panel "-") breaks."""

    dashboard: str
    panel: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class Context:
    """What the rules know beyond the dashboard: which series are counters and gauges, and the target labels."""

    counters: frozenset[str]
    gauges: frozenset[str]
    raw: frozenset[str]  # the exporter's own series, which carry the scrape's target labels
    target_labels: tuple[str, ...]  # the labels of those the dashboards filter on, each by its variable


def _children(node: Any) -> Iterator[Any]:
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield child
    if isinstance(node, pp.Call):
        yield from node.args


def nodes(node: Any) -> Iterator[Any]:
    """`node` and every node under it."""
    yield node
    for child in _children(node):
        yield from nodes(child)


def _unparen(node: Any) -> Any:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def parse(expr: str) -> Any:
    """A panel query's syntax tree; Grafana's window variables become durations the rules recognise, and the
    template variables stay as written (`$model` is a valid regex)."""
    expr = expr.replace(RATE, f"{RATE_WINDOW.seconds}s").replace(RANGE, f"{RANGE_WINDOW.seconds}s")
    return pp.parse(expr)


def _queries(panel: Json) -> Iterator[tuple[str, Any]]:
    for target in panel.get("targets", []):
        yield target.get("refId", "?"), parse(target["expr"])


def _calls(tree: Any, *names: str) -> Iterator[Any]:
    return (n for n in nodes(tree) if isinstance(n, pp.Call) and n.func.name in names)


def datasource_variable(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """Every panel and target on the `${datasource}` variable (the dashboard-wide variable is checked once)."""
    if panel.get("datasource") != DATASOURCE:
        yield f"panel data source {panel.get('datasource')!r}, not the datasource variable"
    for target in panel.get("targets", []):
        if target.get("datasource") != DATASOURCE:
            yield f"target {target.get('refId')} data source {target.get('datasource')!r}"


def rate_interval(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """Range functions over `$__rate_interval`; `increase` may total the dashboard's `$__range`."""
    for ref, tree in _queries(panel):
        for call in _calls(tree, *RANGE_FUNCTIONS):
            window = _unparen(call.args[0]).range
            allowed = (RATE_WINDOW, RANGE_WINDOW) if call.func.name == "increase" else (RATE_WINDOW,)
            if window not in allowed:
                yield f"{ref}: {call.func.name}(...) over [{pp.display_duration(window)}], not [$__rate_interval]"


def rate_over_counters(data: Json, panel: Json, context: Context) -> Iterator[str]:
    """`rate`, `irate` and `increase` only over counters."""
    for ref, tree in _queries(panel):
        for call in _calls(tree, *RANGE_FUNCTIONS):
            name = _unparen(call.args[0]).vector_selector.name
            if name in context.gauges:
                yield f"{ref}: {call.func.name}({name}) over a gauge"
            elif name not in context.counters:
                yield f"{ref}: {call.func.name}({name}): no counter of the catalog or the recording rules"


def panel_unit(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """A unit that names what is measured."""
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if panel.get("type") == "heatmap":
        unit = panel.get("options", {}).get("yAxis", {}).get("unit")
    if (unit or "") in VAGUE_UNITS:
        yield f"unit {unit!r} says nothing about what is measured"


def panel_description(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """A description: what the panel shows and how to read it."""
    if not str(panel.get("description", "")).strip():
        yield "no description"


def histogram_quantile(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """`histogram_quantile(q, sum by (le, ...) (rate(x_bucket[...])))`."""
    for ref, tree in _queries(panel):
        for call in _calls(tree, "histogram_quantile"):
            inner = _unparen(call.args[1])
            by = inner.modifier if isinstance(inner, pp.AggregateExpr) else None
            if (
                by is None
                or str(inner.op) != "sum"
                or by.type != pp.AggModifierType.By
                or "le" not in (by.labels or [])
            ):
                yield f"{ref}: histogram_quantile not over sum by (le, ...)"
                continue
            rates = list(_calls(inner.expr, *RANGE_FUNCTIONS))
            if not rates or not all(_unparen(r.args[0]).vector_selector.name.endswith("_bucket") for r in rates):
                yield f"{ref}: histogram_quantile over no rate of _bucket series"


def unique_titles(data: Json, panel: Json, _: Context) -> Iterator[str]:
    """No other panel of the dashboard has this panel's title."""
    titles = Counter(p.get("title") for p in data.get("panels", []))
    if titles[panel.get("title")] > 1:
        yield f"{titles[panel.get('title')]} panels are titled {panel.get('title')!r}"


def target_labels(data: Json, panel: Json, context: Context) -> Iterator[str]:
    """The exporter's series filtered by each target label's variable; `job` and `instance` never pinned."""
    for ref, tree in _queries(panel):
        for selector in (n for n in nodes(tree) if isinstance(n, pp.VectorSelector)):
            matchers = {m.name: m for m in selector.matchers.matchers}
            if selector.name in context.raw:
                for label in context.target_labels:
                    m = matchers.get(label)
                    if m is None or m.op != pp.MatchOp.Re or m.value != f"${label}":
                        yield f'{ref}: {selector.name} not filtered by {label}=~"${label}"'
            for label in ("job", "instance"):
                m = matchers.get(label)
                if m is not None and not m.value.startswith("$"):
                    yield f'{ref}: {selector.name} pins {label}="{m.value}" (the chart does not fix it)'


RULES: dict[str, Callable[[Json, Json, Context], Iterator[str]]] = {
    "datasource-variable": datasource_variable,
    "rate-interval": rate_interval,
    "rate-over-counters": rate_over_counters,
    "panel-unit": panel_unit,
    "panel-description": panel_description,
    "histogram-quantile": histogram_quantile,
    "unique-titles": unique_titles,
    "target-labels": target_labels,
}


def lint(data: Json, context: Context) -> list[Finding]:
    """Every rule broken in one dashboard."""
    uid = str(data.get("uid"))
    found = []
    variables = {v.get("name"): v for v in data.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        found.append(Finding(uid, "-", "datasource-variable", "no datasource variable over Prometheus"))
    for panel in data.get("panels", []):
        for rule, check in RULES.items():
            found += [Finding(uid, str(panel.get("title")), rule, message) for message in check(data, panel, context)]
    return found


def _recorded_kind(expr: str, counters: set[str]) -> bool:
    """Whether a recording rule's series is a counter: a plain sum of counters (rates, ratios: gauges)."""
    tree = _unparen(pp.parse(expr))
    if not isinstance(tree, pp.AggregateExpr) or str(tree.op) != "sum":
        return False
    inner = _unparen(tree.expr)
    return isinstance(inner, pp.VectorSelector) and inner.name in counters


def chart_target_labels(chart: Path) -> set[str]:
    """The labels the chart's monitor puts on the exporter's series: Prometheus Operator's, its relabelings'."""
    values = yaml.safe_load((chart / "values.yaml").read_text())["monitor"]
    labels = set(OPERATOR_LABELS)
    if values.get("kind") == "PodMonitor":
        labels.discard("service")
    labels |= {r["targetLabel"] for r in values.get("relabelings") or [] if r.get("targetLabel")}
    return labels


def context(rules_dir: Path, chart: Path) -> Context:
    """The rules' knowledge from the metric catalog, the generated recording rules and the Helm chart."""
    counters = {m.name for m in catalog.ALL if m.kind is catalog.Kind.COUNTER}
    histograms = {
        f"{m.name}{s}" for m in catalog.ALL if m.kind is catalog.Kind.HISTOGRAM for s in ("_bucket", "_count", "_sum")
    }
    counters |= histograms
    gauges = {m.name for m in catalog.ALL if m.kind is catalog.Kind.GAUGE} | set(BUILTIN)
    raw = {m.name for m in catalog.ALL} | histograms
    for path in sorted(rules_dir.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    (counters if _recorded_kind(rule["expr"], counters) else gauges).add(rule["record"])
    missing = set(TARGET_LABELS) - chart_target_labels(chart)
    if missing:
        raise ValueError(f"the dashboards filter on {sorted(missing)}, which the chart's monitor does not attach")
    return Context(frozenset(counters), frozenset(gauges), frozenset(raw), TARGET_LABELS)
