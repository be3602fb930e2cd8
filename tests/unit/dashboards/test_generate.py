"""The committed dashboards are exactly what the generator writes, and the CLI checks and regenerates them."""

from __future__ import annotations

from pathlib import Path

from exporter.cli import main
from exporter.dashboards import generate
from tests.support.procs import REPO

COMMITTED = REPO / "dashboards"
CHART = REPO / "deploy/helm/llm-token-exporter/files/dashboards"


def test_committed_json_is_regenerated_byte_for_byte() -> None:
    files = generate.files()
    assert sorted(files) == sorted(p.name for p in COMMITTED.glob("*.json"))
    for name, text in files.items():
        assert (COMMITTED / name).read_bytes() == text.encode(), (
            f"{name}: run llm-token-exporter dashboards --out dashboards"
        )


def test_the_chart_carries_the_same_dashboards() -> None:
    for path in COMMITTED.glob("*.json"):
        assert (CHART / path.name).read_bytes() == path.read_bytes(), "run scripts/sync-chart-artifacts"


def test_rendering_is_stable_text() -> None:
    first, second = generate.files(), generate.files()
    assert first == second
    assert all(text.endswith("}\n") and not text.endswith("\n\n") for text in first.values())


def test_cli_writes_then_checks_clean_then_flags_a_change(tmp_path: Path) -> None:
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generate.files())
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 0
    first = next(tmp_path.glob("*.json"))
    first.write_text(first.read_text() + " ")
    (tmp_path / "stale.json").write_text("{}\n")
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 1
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "stale.json").exists()
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 0


def test_preview_without_prometheus_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["dashboards", "preview", "--out", str(tmp_path)]) == 2
