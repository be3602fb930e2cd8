"""Time compression (`time_scale`, tests and demos only): every duration divided, nothing else changed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.alerts.generate import generate
from exporter.alerts.spec import SpecError, load_spec, parse_spec
from exporter.alerts.timescale import (
    MAX_TIME_SCALE,
    MIN_SCALED_WINDOW_S,
    compress_alertmanager,
    compress_expr,
    compress_rules,
    scale_duration,
    scale_seconds,
)
from exporter.alerts.windows import parse_duration
from tests.support.procs import REPO

SPEC = REPO / "exporter" / "alerts" / "slos.yaml"


def _spec_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return {**data, **overrides}


def _seconds(duration: str) -> float:
    return int(duration[:-2]) / 1000 if duration.endswith("ms") else parse_duration(duration)


@pytest.mark.parametrize(
    ("text", "scale", "scaled"),
    [("5m", 150, "2s"), ("5m", 120, "2500ms"), ("1h", 120, "30s"), ("30d", 150, "4h48m"), ("3d", 7, "37028571ms")],
)
def test_durations_are_divided_into_whole_seconds_or_milliseconds(text: str, scale: float, scaled: str) -> None:
    assert scale_duration(text, scale) == scaled


def test_a_duration_that_rounds_to_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="rounds to 0 ms"):
        scale_seconds(1, 10_000)


def test_ranges_subqueries_and_offsets_are_divided_and_the_rest_is_kept() -> None:
    expr = 'sum(rate(x{le=~"1|1\\\\.0"}[1h])) / 14.4 and max_over_time(y[6h:5m]) and z[30m:] unless w offset 1h'
    assert compress_expr(expr, 120) == (
        'sum(rate(x{le=~"1|1\\\\.0"}[30s])) / 14.4 and max_over_time(y[3m:2500ms]) and z[15s:] unless w offset 30s'
    )


def test_a_range_compressed_under_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="under the 2 s minimum"):
        compress_expr("rate(x[1m])", 60)


def test_rules_keep_their_names_and_factors_and_get_shorter_for() -> None:
    record = {"record": "a:rate1h", "expr": "rate(x[1h])"}
    alert = {"alert": "A", "expr": "a:rate1h >= 14.4 * 0.999999", "for": "15m"}
    rules: dict[str, Any] = {"groups": [{"name": "g", "rules": [record, alert]}]}
    assert compress_rules(rules, 150) == {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"record": "a:rate1h", "expr": "rate(x[24s])"},
                    {"alert": "A", "expr": "a:rate1h >= 14.4 * 0.999999", "for": "6s"},
                ],
            }
        ]
    }
    assert record["expr"] == "rate(x[1h])" and alert["for"] == "15m"  # a copy: the input is left alone


def test_alertmanager_timers_are_divided_in_every_route() -> None:
    config = {
        "route": {"group_wait": "30s", "group_interval": "5m", "routes": [{"receiver": "p", "repeat_interval": "1h"}]},
        "receivers": [{"name": "p"}],
    }
    assert compress_alertmanager(config, 120) == {
        "route": {
            "group_wait": "250ms",
            "group_interval": "2500ms",
            "routes": [{"receiver": "p", "repeat_interval": "30s"}],
        },
        "receivers": [{"name": "p"}],
    }


def test_time_scale_defaults_to_1_and_1_changes_nothing() -> None:
    assert load_spec(SPEC).time_scale == 1.0
    assert generate(parse_spec(_spec_data(time_scale=1)), SPEC.name) == generate(load_spec(SPEC), SPEC.name)


@pytest.mark.parametrize("scale", [0, -2, float("inf"), float("nan")])
def test_time_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(SpecError, match="time_scale must be a positive number"):
        parse_spec(_spec_data(time_scale=scale))


def test_time_scale_may_not_shrink_the_shortest_window_under_the_minimum() -> None:
    assert MIN_SCALED_WINDOW_S == 2.0 and MAX_TIME_SCALE == 150.0
    assert parse_spec(_spec_data(time_scale=150)).time_scale == 150
    with pytest.raises(SpecError) as info:
        parse_spec(_spec_data(time_scale=151))
    assert "time_scale 151 makes the 5m window 1.99 s" in str(info.value)
    assert "at least 2 s (two 1 s scrapes), so time_scale <= 150" in str(info.value)


def _compressed(scale: float) -> dict[str, str]:
    return generate(parse_spec(_spec_data(time_scale=scale)), SPEC.name)


def test_a_compressed_spec_gets_compressed_rules_and_alertmanager_and_no_promtool_tests() -> None:
    files = _compressed(150)
    assert sorted(files) == sorted(p for p in generate(load_spec(SPEC), SPEC.name) if not p.startswith("tests/"))
    assert all("Time-compressed (time_scale 150)" in text for text in files.values())
    text = "\n".join(text for path, text in files.items() if path.startswith("rules/"))
    ranges = re.findall(r"\[([0-9a-z]+)(?::[0-9a-z]*)?\]", text)
    assert min(_seconds(r) for r in ranges) == MIN_SCALED_WINDOW_S
    assert "[4h48m]" in text and "[1h]" not in text and "[5m]" not in text  # the period, and no window left
    assert "slo:burn_rate:ratio_rate1h" in text and "14.4 * 0.999999" in text  # names and factors as for 30 d
    route = yaml.safe_load(files["alertmanager.yaml"])["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("200ms", "2s", "4m48s")


def test_compressed_files_pass_promtool_and_amtool(tmp_path: Path) -> None:
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    if not promtool or not amtool:
        pytest.skip("promtool and amtool are not installed (scripts/install-system-deps)")
    for path, text in _compressed(120).items():  # 120: millisecond durations (5m -> 2500ms)
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    rules = sorted(str(p) for p in (tmp_path / "rules").glob("*.yaml"))
    for args in ([promtool, "check", "rules", *rules], [amtool, "check-config", str(tmp_path / "alertmanager.yaml")]):
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
