"""The README's metric table is generated from the catalog and current."""

from __future__ import annotations

from exporter.metrics import catalog
from exporter.metrics.docs import render_readme
from tests.support.procs import REPO


def test_readme_metrics_table_is_current() -> None:
    text = (REPO / "README.md").read_text()
    assert render_readme(text) == text, "run: python -m exporter.metrics.docs README.md"
    for spec in catalog.ALL:
        assert f"`{spec.name}`" in text
