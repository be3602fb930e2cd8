"""The previews read as Grafana would show the panels: values in their units, and every panel kind drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.dashboards import overview
from exporter.dashboards.preview import Series, draw, format_value, number


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (22_200.0, "joule", "22.2 kJ"),
        (8.5e10, "bytes", "79.2 GiB"),
        (-75.0, "percentunit", "-7500%"),
        (0.5, "percentunit", "50%"),
        (0.0588, "currencyUSD", "$0.0588"),
        (2.6e9, "hertz", "2.6 GHz"),
        (0.0123, "s", "12.3 ms"),
        (90.0, "s", "1.5 min"),
        (650.0, "watt", "650 W"),
        (2860.0, "count:tok/s", "2.86K tok/s"),
        (450.0, "count:req", "450 req"),
        (2.31, "reqps", "2.31 req/s"),
        (14.4, "suffix:x", "14.4x"),
        (1.0, "bool_on_off", "On"),
        (0.0, "bool_on_off", "Off"),
        (12.5, "h", "12.5 h"),
        (0.0, "s", "0"),
    ],
)
def test_values_in_their_units(value: float, unit: str, shown: str) -> None:
    assert format_value(value, unit) == shown


def test_numbers_never_in_exponent_notation_for_what_panels_show() -> None:
    assert [number(v) for v in (7500.0, 0.000123, 1.0, 99.94, 1e-9)] == ["7500", "0.000123", "1", "99.9", "1.0e-09"]


def test_draws_every_panel_kind_with_a_note(tmp_path: Path) -> None:
    spec = overview.spec()

    def series(i: int) -> Series:
        return {
            "metric": {"model": f"m{i}", "slo": "ttft"},
            "values": [[1000.0 + 5 * t, str(i + t / 10)] for t in range(30)],
        }

    results = [[[series(i) for i in range(3)] for _ in panel.queries] for panel in spec.panels]
    results[-1] = [[] for _ in spec.panels[-1].queries]  # one panel without data
    png = draw(spec, results, tmp_path / "overview.png", note="a note under the title")
    assert png.read_bytes().startswith(b"\x89PNG")
