"""Burn-rate tiers: factors computed from the period and budget shares, and Prometheus durations."""

from __future__ import annotations

import pytest

from exporter.alerts.windows import DEFAULT_TIERS, format_duration, parse_duration, sli_windows


def test_workbook_factors_for_30_days() -> None:
    assert [t.budget_share for t in DEFAULT_TIERS] == [0.02, 0.05, 0.10, 0.10]
    assert [t.factor(parse_duration("30d")) for t in DEFAULT_TIERS] == [14.4, 6, 3, 1]
    assert [t.severity for t in DEFAULT_TIERS] == ["page", "page", "ticket", "ticket"]
    assert [(t.long, t.short) for t in DEFAULT_TIERS] == [("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")]


def test_factors_follow_the_period() -> None:
    factors = [t.factor(parse_duration("28d")) for t in DEFAULT_TIERS]
    assert factors == pytest.approx([13.44, 5.6, 2.8, 28 / 30])
    assert factors != [t.factor(parse_duration("30d")) for t in DEFAULT_TIERS]
    assert DEFAULT_TIERS[0].exhausts_in_s(parse_duration("30d")) == pytest.approx(50 * 3600)


def test_sli_windows() -> None:
    assert [format_duration(w) for w in sli_windows()] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2_592_000), ("5m", 300), ("2m30s", 150), ("1w", 604_800), ("1h5m", 3_900)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "0s", "-1h", "30 d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
