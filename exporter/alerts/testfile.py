"""Building blocks of `promtool test rules` files: series notation, test groups and the file itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.alerts.windows import format_duration
from exporter.alerts.yamlout import dump, header

# Labels every generated test series carries, as Prometheus would attach them when scraping an exporter.
INSTANCE = "node-a:9842"
MODEL = "llama-3-8b"
TENANT = "acme"
VLLM_INSTANCE = "vllm-0"
GROUP_VALUES = {"model": MODEL, "tenant": TENANT, "vllm_instance": VLLM_INSTANCE}


def number(value: float) -> str:
    """A value as promtool reads it back exactly: shortest repr, no `.0` on whole numbers."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def notation(values: list[float]) -> str:
    """promtool's expanding notation (`a+bxn` runs) for a list of samples one interval apart."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        if i + 1 == len(values):
            parts.append(number(values[i]))
            break
        step = values[i + 1] - values[i]
        j = i + 1
        while j + 1 < len(values) and values[j + 1] - values[j] == step:
            j += 1
        sign = "-" if step < 0 else "+"
        parts.append(f"{number(values[i])}{sign}{number(abs(step))}x{j - i}")
        i = j + 1
    return " ".join(parts)


def with_labels(template: str, labels: dict[str, str]) -> str:
    """A Go template with its `{{ $labels.x }}` expanded, as Alertmanager will receive it."""
    for label, value in labels.items():
        template = template.replace(f"{{{{ $labels.{label} }}}}", value)
    return template


def labels_text(labels: dict[str, str]) -> str:
    """`{a="x",b="y"}` in the given order."""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclass
class TestGroup:
    """One promtool test group: its own series, evaluated from time 0."""

    comment: str
    interval_s: int
    series: list[tuple[str, str]] = field(default_factory=list)  # (series selector, values notation)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    exprs: list[dict[str, Any]] = field(default_factory=list)

    def expect_alerts(self, at_s: int, alertname: str, alerts: list[dict[str, Any]]) -> None:
        """Expect exactly `alerts` (exp_labels / exp_annotations dicts) of `alertname` firing at `at_s`."""
        self.alerts.append({"eval_time": format_duration(at_s), "alertname": alertname, "exp_alerts": alerts})

    def expect_value(self, at_s: int, expr: str, labels: dict[str, str], value: float) -> None:
        """Expect `expr` to give one sample with these labels and this value at `at_s`."""
        sample = {"labels": labels_text(labels), "value": value}
        self.exprs.append({"expr": expr, "eval_time": format_duration(at_s), "exp_samples": [sample]})

    def as_dict(self) -> dict[str, Any]:
        """The group as promtool reads it."""
        group: dict[str, Any] = {
            "interval": format_duration(self.interval_s),
            "input_series": [{"series": s, "values": v} for s, v in self.series],
        }
        if self.alerts:
            group["alert_rule_test"] = self.alerts
        if self.exprs:
            group["promql_expr_test"] = self.exprs
        return group


def render(
    spec_name: str, rule_files: list[str], interval_s: int, group_order: list[str], groups: list[TestGroup]
) -> str:
    """A whole test file; each group is preceded by a comment saying what it shows (promtool 2.42 has no names)."""
    head: dict[str, Any] = {
        "rule_files": rule_files,
        "evaluation_interval": format_duration(interval_s),
        # promtool orders groups at random unless told: recording rules first, as the alerts read them.
        "group_eval_order": group_order,
    }
    text = header(spec_name) + dump(head) + "tests:\n"
    for group in groups:
        text += "".join(f"  # {line}\n" for line in group.comment.splitlines())
        text += "".join(f"  {line}\n" for line in dump([group.as_dict()]).splitlines())
    return text
