"""What every dashboard shares: its variables and the note on filters."""

from __future__ import annotations

from exporter.dashboards.builder import Variable
from exporter.metrics import catalog

_TARGET = 'namespace=~"$namespace", node=~"$node"'
VARIABLES: tuple[Variable, ...] = (
    Variable("namespace", "Namespace", f"label_values({catalog.BUILD_INFO.name}, namespace)"),
    Variable("node", "Node", f'label_values({catalog.BUILD_INFO.name}{{namespace=~"$namespace"}}, node)'),
    Variable("model", "Model", f"label_values({catalog.REQUESTS.name}{{{_TARGET}}}, model)"),
    Variable("tenant", "Tenant", f'label_values({catalog.REQUESTS.name}{{{_TARGET}, model=~"$model"}}, tenant)'),
)
FILTERS = (
    " Filtered by the namespace, node, model and tenant variables where the series carries the label (All "
    "matches series without it too)."
)
