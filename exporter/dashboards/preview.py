"""Draw dashboards without Grafana: evaluate every panel's queries against a Prometheus, plot the grid as a PNG.

The drawing follows what Grafana shows: values in the panel's unit (`22.2 kJ`, `78.5 GiB`, `-75 %`), clock time
on the x axis, the legend under the plot, a stat panel's last value per series, an instant query's value at the
range's end only.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from exporter.dashboards.builder import DashboardSpec, PanelSpec, Query, layout
from exporter.dashboards.promql import RANGE, RATE

Series = dict[str, Any]  # Prometheus's matrix result: {"metric": {...}, "values": [[t, "v"], ...]}
_VARIABLE = re.compile(r"\$(namespace|node|model|tenant)\b")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ROW_INCHES = 0.36  # one grid unit of height
WIDTH_INCHES = 18.0  # the 24 grid units across
LEGEND_COLUMN_INCHES = 2.4
LEGEND_ROW_INCHES = 0.105
MAX_SERIES = 64  # lines drawn per panel
MAX_LEGEND = 15  # legend entries per panel; the rest are summed up as "+N more"


def concrete(expr: str, rate: str, range_: str) -> str:
    """The expression as Grafana would send it with every variable on All: windows filled in, variables `.*`."""
    return _VARIABLE.sub(".*", expr.replace(RATE, rate).replace(RANGE, range_))


def _get(client: httpx.Client, url: str, params: dict[str, str | float], expr: str) -> Any:
    body = client.get(url, params=params, timeout=30).json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')} in {expr}")
    return body["data"]["result"]


def query_range(client: httpx.Client, base: str, expr: str, start: float, end: float, step: float) -> list[Series]:
    """A range query's series; raises on an HTTP or PromQL error."""
    params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step}
    result: list[Series] = _get(client, f"{base}/api/v1/query_range", params, expr)
    return result


def query_instant(client: httpx.Client, base: str, expr: str, at: float) -> list[Series]:
    """An instant query's series at `at`, each as a one-point matrix series; raises on an HTTP or PromQL error."""
    result = _get(client, f"{base}/api/v1/query", {"query": expr, "time": at}, expr)
    return [{"metric": s["metric"], "values": [s["value"]]} for s in result]


def evaluate(base: str, spec: DashboardSpec, range_s: float, rate: str) -> list[list[list[Series]]]:
    """Per panel, per query: the series its query returns over the last `range_s` seconds (an instant query: at
    the end)."""
    end = time.time()
    start, step = end - range_s, max(range_s / 120, 1.0)
    range_ = f"{max(round(range_s), 1)}s"

    def run(client: httpx.Client, query: Query) -> list[Series]:
        expr = concrete(query.expr, rate, range_)
        return (
            query_instant(client, base, expr, end)
            if query.instant
            else query_range(client, base, expr, start, end, step)
        )

    with httpx.Client() as client:
        return [[run(client, q) for q in p.queries] for p in spec.panels]


# --- values in Grafana's units ---

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"))
_COUNT = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"), (1.0, ""))
_IEC = ((2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B"))
_SECONDS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "µs"))
_SI_UNITS = {"hertz": "Hz", "watt": "W", "joule": "J"}


def number(value: float) -> str:
    """Three significant digits, never in exponent notation for what a panel shows (`0.0588`, `7500`, `-75`)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if abs(value) < 1e-4:
        return f"{value:.1e}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def _scaled(value: float, steps: tuple[tuple[float, str], ...], unit: str, count: bool = False) -> str:
    """`22.2 kJ` (a prefix of the unit), or for a count `2.86K tok/s` (a multiple of the number)."""
    factor, prefix = next(((f, p) for f, p in steps if abs(value) >= f), steps[-1])
    if count:
        return f"{number(value / factor)}{prefix} {unit}".rstrip()
    return f"{number(value / factor)} {prefix}{unit}".rstrip()


def format_value(value: float, unit: str) -> str:
    """`value` as Grafana shows it in `unit` (the unit ids the dashboards use, and Grafana's custom units)."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0 and unit not in ("bool_on_off",):
        return "0" + ("%" if unit in ("percentunit", "percent") else "")
    if unit == "percentunit":
        return f"{number(value * 100)}%"
    if unit == "percent":
        return f"{number(value)}%"
    if unit == "bytes":
        return _scaled(value, _IEC, "")
    if unit in _SI_UNITS:
        return _scaled(value, _SI, _SI_UNITS[unit])
    if unit == "s":
        return _scaled(value, _SECONDS, "")
    if unit == "h":
        return f"{number(value)} h"
    if unit == "currencyUSD":
        return f"{'-' if value < 0 else ''}${number(abs(value))}"
    if unit == "reqps":
        return _scaled(value, _COUNT, "req/s", count=True)
    if unit == "bool_on_off":
        return "On" if value else "Off"
    if unit.startswith("count:"):
        return _scaled(value, _COUNT, unit.removeprefix("count:"), count=True)
    if unit.startswith("suffix:"):
        return number(value) + unit.removeprefix("suffix:")
    return _scaled(value, _COUNT, "", count=True)


# --- drawing ---


def _day_number(t: float) -> float:
    """matplotlib's date number (days since 1970) of the local clock time at unix time `t`, as lines plot it."""
    return (datetime.fromtimestamp(t) - datetime(1970, 1, 1)).total_seconds() / 86_400


def _clock(ax: Any, span_s: float) -> None:
    """Clock time on the x axis, as Grafana labels it: a tick every round number of minutes, about six across."""
    import matplotlib.dates as mdates

    step = next((m for m in (1, 2, 5, 10, 15, 30, 60) if span_s / 60 / m <= 7), 120)
    if step < 60:
        ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, step)))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]


def _legend(template: str, metric: dict[str, str]) -> str:
    text = " ".join(_LEGEND.sub(lambda m: metric.get(m[1], ""), template).split())
    if not text or template == "__auto":
        text = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__") or "value"
    return text.replace("$", r"\$")  # not matplotlib mathtext


def _points(series: Series) -> tuple[list[float], list[float]]:
    return [float(t) for t, _ in series["values"]], [float(v) for _, v in series["values"]]


def _legend_rows(count: int, width_in: float) -> int:
    columns = max(1, int(width_in // LEGEND_COLUMN_INCHES))
    return math.ceil(count / columns)


def _draw_stat(ax: Any, panel: PanelSpec, found: list[tuple[str, Series]], height_in: float) -> None:
    ax.axis("off")
    rows = [(_legend(t, s["metric"]), format_value(_points(s)[1][-1], panel.unit)) for t, s in found]
    room = max(1, int((height_in - 0.3) / 0.14))
    shown = rows if len(rows) <= room else [*rows[: room - 1], (f"... {len(rows) - room + 1} more", "")]
    width = max(len(label) for label, _ in shown)
    text = "\n".join(f"{label:<{width}}  {value}" for label, value in shown)
    ax.text(0.02, 0.92, text, va="top", fontsize=7, transform=ax.transAxes, family="monospace")


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
    extent = (_day_number(times[0]), _day_number(times[-1]))
    ax.imshow(
        cells,
        aspect="auto",
        origin="lower",
        cmap="Oranges",
        interpolation="nearest",
        extent=(extent[0], extent[1], -0.5, len(ordered) - 0.5),
    )
    ax.xaxis_date()
    _clock(ax, times[-1] - times[0])
    ticks = list(range(0, len(ordered), max(len(ordered) // 6, 1)))
    ax.set_yticks(ticks, [format_value(le(ordered[i]), unit) if le(ordered[i]) != math.inf else "+Inf" for i in ticks])


def _draw_panel(
    fig: Any, rect: tuple[float, float, float, float], panel: PanelSpec, results: list[list[Series]]
) -> None:
    """Draw one panel into `rect` (figure fractions: left, bottom, width, height)."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter

    left, bottom, width, height = rect
    fig_w, fig_h = fig.get_size_inches()
    found = [(q.legend or "__auto", s) for q, rs in zip(panel.queries, results, strict=True) for s in rs]
    legend_h = 0.0
    if panel.kind == "timeseries" and found:
        rows = _legend_rows(min(len(found), MAX_LEGEND + 1), width * fig_w)
        legend_h = (rows * LEGEND_ROW_INCHES + 0.22) / fig_h
    ax = fig.add_axes((left, bottom + legend_h, width, height - legend_h))
    ax.set_title(panel.title, fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    if not found:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color="red", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.kind == "stat":
        _draw_stat(ax, panel, found, height * fig_h)
        return
    if panel.kind == "heatmap":
        _draw_heatmap(ax, [s for _, s in found], panel.unit)
        return
    if len(found) > 10:
        ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i % 20) for i in range(20)])
    span = [float("inf"), float("-inf")]
    for i, (template, s) in enumerate(found[:MAX_SERIES]):
        xs, ys = _points(s)
        span = [min(span[0], xs[0]), max(span[1], xs[-1])]
        label = _legend(template, s["metric"])[:44] if i < MAX_LEGEND else "_hidden"  # `_`: not in the legend
        ax.plot([datetime.fromtimestamp(x) for x in xs], ys, linewidth=0.8, label=label)
    if len(found) > MAX_LEGEND:
        ax.plot([], [], linewidth=0, label=f"+{len(found) - MAX_LEGEND} more")
    _clock(ax, span[1] - span[0])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, panel.unit)))
    if panel.unit == "bool_on_off":
        ax.set_yticks([0, 1])
        ax.set_ylim(-0.1, 1.1)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    columns = max(1, int(width * fig_w // LEGEND_COLUMN_INCHES))
    ax.legend(
        fontsize=5.5,
        loc="upper left",
        bbox_to_anchor=(0.0, -0.12),
        ncol=columns,
        frameon=False,
        borderaxespad=0.0,
        handlelength=1.5,
        columnspacing=1.2,
    )


def draw(spec: DashboardSpec, results: list[list[list[Series]]], path: Path, note: str = "") -> Path:
    """Draw the dashboard's grid with its panels' data into a PNG at `path`; `note` goes under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = layout(spec.panels)
    rows = max(y + p.h for p, (_, y) in zip(spec.panels, positions, strict=True))
    header = 0.75 if note else 0.6
    fig_h = rows * ROW_INCHES + header
    fig = plt.figure(figsize=(WIDTH_INCHES, fig_h))
    fig.suptitle(spec.title, fontsize=12, x=0.01, y=1 - 0.15 / fig_h, ha="left", va="top")
    if note:
        fig.text(0.01, 1 - 0.42 / fig_h, note, fontsize=7, color="dimgray", ha="left", va="top")
    top = 1 - header / fig_h
    unit_h = top / rows
    for panel, (x, y), result in zip(spec.panels, positions, results, strict=True):
        left, width = x / 24 + 0.03, panel.w / 24 - 0.04
        bottom = top - (y + panel.h) * unit_h + 0.3 / fig_h
        height = panel.h * unit_h - 0.62 / fig_h
        _draw_panel(fig, (left, bottom, width, height), panel, result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def preview_all(base: str, out: Path, range_s: float = 900.0, rate: str = "1m", note: str = "") -> list[Path]:
    """Evaluate and draw every dashboard into `out/<uid>.png`."""
    from exporter.dashboards.generate import specs

    return [draw(s, evaluate(base, s, range_s, rate), out / f"{s.uid}.png", note) for s in specs()]
