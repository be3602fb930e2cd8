"""Render every dashboard to JSON files, and check a folder against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.dashboards import cost, gpu, latency, overview, slo
from exporter.dashboards.builder import DashboardSpec, build, render

MODULES = (overview, latency, gpu, cost, slo)


def specs() -> list[DashboardSpec]:
    """Every dashboard's spec, in menu order."""
    return [m.spec() for m in MODULES]


def file_name(spec: DashboardSpec) -> str:
    """The JSON file a dashboard is written to (its uid)."""
    return f"{spec.uid}.json"


def models() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    return {file_name(s): build(s) for s in specs()}


def files() -> dict[str, str]:
    """File name -> file text."""
    return {name: render(data) for name, data in models().items()}


def differences(out: Path) -> list[str]:
    """Files in `out` that are missing, differ, or are stale `*.json` with no dashboard."""
    wanted = files()
    bad = [n for n, text in wanted.items() if not (out / n).is_file() or (out / n).read_text() != text]
    stale = sorted(p.name for p in out.glob("*.json") if p.name not in wanted) if out.is_dir() else []
    return bad + stale


def write(out: Path) -> int:
    """Write every dashboard into `out`, removing stale `*.json`; returns how many were written."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = files()
    for path in out.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        if not (out / name).is_file() or (out / name).read_text() != text:
            (out / name).write_text(text)
    return len(wanted)
