"""alertmanager.yaml: pages to the pager, tickets to the ticket queue, and the inhibitions between alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.alerts.spec import AlertSpec

PAGER, TICKET = "pager", "ticket"


@dataclass(frozen=True)
class Inhibition:
    """One inhibit rule and why it is there."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    equal: tuple[str, ...]
    why: str


def group_labels(spec: AlertSpec) -> list[str]:
    """`slo` and every SLO's group_by label (just `model` by default), in a stable order."""
    labels = ["slo"]
    for slo in spec.slos:
        labels += [label for label in slo.group_by if label not in labels]
    return labels


def inhibitions(spec: AlertSpec) -> list[Inhibition]:
    """The inhibit rules."""
    return [
        Inhibition(
            # Alerts without an `slo` label would compare equal on it (both empty): restrict both sides to SLOs.
            ('severity="page"', 'slo=~".+"'),
            ('severity="ticket"', 'slo=~".+"'),
            tuple(group_labels(spec)),
            "A page of an SLO silences that SLO's tickets for the same model: one burn, one notification.",
        ),
        Inhibition(
            ('alertname="LLMEngineDown"',),
            ('sli="latency"',),
            ("model",),
            "An engine that is down explains its model's latency burn (the rest of the fleet absorbs its load); "
            "the engine-down page is the one to act on.",
        ),
        Inhibition(
            ('alertname="LLMExporterAbsent"',),
            ('alertname="LLMExporterDown"',),
            (),
            "When no exporter is up, one ticket per node adds nothing to the page.",
        ),
    ]


def config(spec: AlertSpec) -> dict[str, Any]:
    """The Alertmanager configuration."""
    return {
        "route": {
            "receiver": TICKET,  # anything without a known severity still reaches a human, slowly
            "group_by": group_labels(spec),
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [
                {"receiver": PAGER, "matchers": ['severity="page"'], "repeat_interval": "1h"},
                {"receiver": TICKET, "matchers": ['severity="ticket"'], "repeat_interval": "24h"},
            ],
        },
        "inhibit_rules": [
            {"source_matchers": list(i.source), "target_matchers": list(i.target), "equal": list(i.equal)}
            if i.equal
            else {"source_matchers": list(i.source), "target_matchers": list(i.target)}
            for i in inhibitions(spec)
        ],
        # Webhooks from the spec; swap in pagerduty_configs / opsgenie_configs / jira_configs as needed.
        "receivers": [
            {"name": PAGER, "webhook_configs": [{"url": spec.routing.pager_url, "send_resolved": True}]},
            {"name": TICKET, "webhook_configs": [{"url": spec.routing.ticket_url, "send_resolved": True}]},
        ],
    }
