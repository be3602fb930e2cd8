"""Draw dashboards without Grafana: evaluate every panel's queries against a Prometheus, plot the grid as a PNG."""

from __future__ import annotations

import itertools
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx

from exporter.dashboards.builder import DashboardSpec, PanelSpec, layout
from exporter.dashboards.promql import RANGE, RATE

Series = dict[str, Any]  # Prometheus's matrix result: {"metric": {...}, "values": [[t, "v"], ...]}
_VARIABLE = re.compile(r"\$(namespace|node|model|tenant)\b")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ROW_INCHES = 0.32


def concrete(expr: str, rate: str, range_: str) -> str:
    """The expression as Grafana would send it with every variable on All: windows filled in, variables `.*`."""
    return _VARIABLE.sub(".*", expr.replace(RATE, rate).replace(RANGE, range_))


def query_range(client: httpx.Client, base: str, expr: str, start: float, end: float, step: float) -> list[Series]:
    """A range query's series; raises on an HTTP or PromQL error."""
    params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step}
    body = client.get(f"{base}/api/v1/query_range", params=params, timeout=30).json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')} in {expr}")
    result: list[Series] = body["data"]["result"]
    return result


def evaluate(base: str, spec: DashboardSpec, range_s: float, rate: str) -> list[list[list[Series]]]:
    """Per panel, per query: the series its query returns over the last `range_s` seconds."""
    end = time.time()
    start, step = end - range_s, max(range_s / 120, 1.0)
    range_ = f"{max(round(range_s), 1)}s"
    with httpx.Client() as client:
        return [
            [query_range(client, base, concrete(q.expr, rate, range_), start, end, step) for q in p.queries]
            for p in spec.panels
        ]


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    scaled = {
        "percentunit": (100, "%"),
        "bytes": (1 / 2**30, " GiB"),
        "hertz": (1e-6, " MHz"),
        "currencyUSD": (1, " $"),
        "watt": (1, " W"),
        "joule": (1, " J"),
        "h": (1, " h"),
        "reqps": (1, " req/s"),
    }
    factor, suffix = scaled.get(unit, (1, ""))
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return f"{value * factor:.3g}{suffix}"


def _legend(template: str, metric: dict[str, str]) -> str:
    text = _LEGEND.sub(lambda m: metric.get(m[1], ""), template).strip() or str(metric)
    return text.replace("$", r"\$")  # not matplotlib mathtext


def _points(series: Series) -> tuple[list[float], list[float]]:
    return [float(t) for t, _ in series["values"]], [float(v) for _, v in series["values"]]


def _draw_panel(ax: Any, panel: PanelSpec, results: list[list[Series]]) -> None:
    ax.set_title(panel.title, fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    found = [(q.legend, s) for q, rs in zip(panel.queries, results, strict=True) for s in rs]
    if not found:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color="red", transform=ax.transAxes)
        return
    if panel.kind == "stat":
        ax.axis("off")
        lines = [f"{_legend(t, s['metric'])}: {_fmt(_points(s)[1][-1], panel.unit)}" for t, s in found[:8]]
        ax.text(0.02, 0.85, "\n".join(lines), va="top", fontsize=7, transform=ax.transAxes, family="monospace")
        return
    if panel.kind == "heatmap":
        _draw_heatmap(ax, [s for _, s in found], panel.unit)
        return
    t0 = min(_points(s)[0][0] for _, s in found)
    for template, s in found[:12]:
        xs, ys = _points(s)
        ax.plot([x - t0 for x in xs], ys, linewidth=0.8, label=_legend(template, s["metric"])[:40])
    ax.legend(fontsize=5, loc="upper left", ncol=2, frameon=False)
    ax.set_xlabel("seconds", fontsize=6)


def _draw_heatmap(ax: Any, series: list[Series], unit: str) -> None:
    def le(s: Series) -> float:
        return math.inf if s["metric"].get("le") == "+Inf" else float(s["metric"].get("le", "nan"))

    ordered = sorted(series, key=le)
    times = sorted({float(t) for s in ordered for t, _ in s["values"]})
    index = {t: i for i, t in enumerate(times)}
    rows = []
    for s in ordered:
        row = [0.0] * len(times)
        for t, v in s["values"]:
            row[index[float(t)]] = float(v)
        rows.append(row)
    cells = [rows[0]] + [[max(b - a, 0.0) for a, b in zip(lo, hi, strict=True)] for lo, hi in itertools.pairwise(rows)]
    ax.imshow(cells, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
    ticks = list(range(0, len(ordered), max(len(ordered) // 6, 1)))
    ax.set_yticks(ticks, [_fmt(le(ordered[i]), unit) if le(ordered[i]) != math.inf else "+Inf" for i in ticks])


def draw(spec: DashboardSpec, results: list[list[list[Series]]], path: Path) -> Path:
    """Draw the dashboard's grid with its panels' data into a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = layout(spec.panels)
    rows = max(y + p.h for p, (_, y) in zip(spec.panels, positions, strict=True))
    fig = plt.figure(figsize=(18, rows * ROW_INCHES + 0.6))
    fig.suptitle(spec.title, fontsize=12, x=0.01, ha="left")
    top = 1 - 0.6 / (rows * ROW_INCHES + 0.6)
    for panel, (x, y), result in zip(spec.panels, positions, results, strict=True):
        left, width = x / 24 + 0.025, panel.w / 24 - 0.035
        height = (panel.h / rows) * top - 0.9 / (rows * ROW_INCHES)
        bottom = top - ((y + panel.h) / rows) * top + 0.35 / (rows * ROW_INCHES)
        _draw_panel(fig.add_axes((left, bottom, width, height)), panel, result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def preview_all(base: str, out: Path, range_s: float = 900.0, rate: str = "1m") -> list[Path]:
    """Evaluate and draw every dashboard into `out/<uid>.png`."""
    from exporter.dashboards.generate import specs

    return [draw(s, evaluate(base, s, range_s, rate), out / f"{s.uid}.png") for s in specs()]
