"""One alerting rule with the documentation that goes with it, so rules and docs come from one source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.alerts.windows import Severity


@dataclass(frozen=True)
class Alert:
    """An alerting rule and its runbook entry (meaning, threshold and why, what to do)."""

    name: str
    severity: Severity
    expr: str
    summary: str  # Go template; may use $labels and $value
    meaning: str  # what it means (also the `description` annotation)
    threshold: str  # the threshold and why it is there
    action: str  # what to do
    for_: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # extra templated annotations

    def rule(self, runbook_base: str) -> dict[str, Any]:
        """The Prometheus rule as a plain dict, keys in the conventional order."""
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_:
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = self.expected_annotations(runbook_base, summary=self.summary, extra=self.annotations)
        return rule

    def expected_annotations(
        self, runbook_base: str, summary: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The annotations with the given (template or expanded) summary and extras, as rules and tests hold them."""
        return {
            "summary": summary,
            "description": self.meaning,
            **(extra or {}),
            "runbook_url": self.runbook_url(runbook_base),
        }

    def runbook_url(self, runbook_base: str) -> str:
        """Link to this alert's section of alerts/README.md (GitHub's heading anchor)."""
        return f"{runbook_base}#{self.name.lower()}"
