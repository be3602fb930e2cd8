"""The SLO spec: the committed defaults load, and every problem is named at once with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.alerts.spec import SpecError, load_spec, parse_spec
from exporter.metrics import catalog
from tests.support.procs import REPO


def _latency(**overrides: Any) -> dict[str, Any]:
    slo = {
        "name": "ttft",
        "sli": "latency",
        "metric": "time_to_first_token",
        "threshold_seconds": 1.0,
        "objective": 0.99,
    }
    return {**slo, **overrides}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "spec.yaml")
    return str(info.value)


def test_committed_spec_loads_with_the_documented_defaults() -> None:
    spec = load_spec(REPO / "exporter" / "alerts" / "slos.yaml")
    by_name = {slo.name: slo for slo in spec.slos}
    assert spec.period == "30d" and spec.period_s == 30 * 86_400
    assert by_name["ttft"].threshold_seconds == 1.0 and by_name["ttft"].objective == 0.99
    assert by_name["tpot"].threshold_seconds == 0.1 and by_name["tpot"].histogram is catalog.TPOT
    assert by_name["availability"].objective == 0.999 and by_name["availability"].budget == 0.001
    assert all(slo.group_by == ["model"] and slo.min_request_rate == 0.05 for slo in spec.slos)


def test_threshold_off_the_bucket_edges_is_refused_naming_the_nearest_edges() -> None:
    message = _error({"slos": [_latency(threshold_seconds=0.9)]})
    assert "slos[0] (ttft).threshold_seconds" in message
    assert "0.9 s is not a bucket edge of llm_request_time_to_first_token_seconds" in message
    assert "nearest: 0.75, 1" in message and "buckets" in message


def test_a_buckets_override_makes_its_edges_valid_and_others_not() -> None:
    spec = parse_spec({"slos": [_latency(threshold_seconds=0.9, buckets=[0.3, 0.9, 3.0])]})
    assert spec.slos[0].threshold_seconds == 0.9
    message = _error({"slos": [_latency(threshold_seconds=1.0, buckets=[0.3, 0.9, 3.0])]})
    assert "not a bucket edge" in message and "the given buckets" in message
    assert "strictly increasing" in _error({"slos": [_latency(buckets=[1.0, 0.5])]})


def test_every_problem_is_named_at_once() -> None:
    message = _error(
        {
            "period": "30d",
            "slos": [
                _latency(threshold_seconds=0.9, objective=1.5),
                _latency(name="x", metric="nope"),
                {"name": "avail", "sli": "availability", "objective": 0.999, "group_by": ["tenant"], "extra": 1},
            ],
        }
    )
    assert message.startswith("invalid spec.yaml (5 problems):")
    for needle in (
        "slos[0] (ttft).threshold_seconds: 0.9 s is not a bucket edge",
        "slos[0] (ttft).objective: objective must be between 0 and 1",
        "slos[1] (x).metric: unknown metric 'nope': one of time_to_first_token, time_per_output_token",
        "slos[2] (avail).group_by: cannot group this availability SLO by tenant",
        "slos[2] (avail).extra: not a known key",
    ):
        assert needle in message, needle


@pytest.mark.parametrize("objective", [0.0, 1.0, -0.5, 99.0])
def test_objective_out_of_range(objective: float) -> None:
    assert "objective must be between 0 and 1 exclusive" in _error({"slos": [_latency(objective=objective)]})


def test_objective_too_loose_for_the_fast_tier_is_refused() -> None:
    # 14.4 x 10% = 1.44: no error ratio reaches it, so the page could never fire.
    message = _error({"slos": [_latency(objective=0.9)]})
    assert "too loose for a 30d period" in message and "1.44" in message
    assert parse_spec({"period": "7d", "slos": [_latency(objective=0.9)]}).slos[0].objective == 0.9


def test_sli_kinds_take_their_own_fields() -> None:
    assert "needs a metric" in _error({"slos": [_latency(metric=None)]})
    assert "needs threshold_seconds" in _error({"slos": [_latency(threshold_seconds=None)]})
    availability = {"name": "a", "sli": "availability", "objective": 0.999, "metric": "e2e", "threshold_seconds": 1}
    message = _error({"slos": [availability]})
    assert "takes no metric" in message and "takes no threshold_seconds" in message


def test_spec_level_problems() -> None:
    assert "SLO names must be unique: ttft" in _error({"slos": [_latency(), _latency()]})
    assert "shorter than the longest alert window (3d)" in _error({"period": "1d", "slos": [_latency()]})
    assert "not a duration" in _error({"period": "a month", "slos": [_latency()]})
    assert "slos: required" in _error({"period": "30d"})
    assert "must hold a mapping" in _error([])  # type: ignore[arg-type]


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read SLO spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("slos: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_grouped_by_tenant_a_latency_slo_reads_the_per_tenant_histogram_and_its_edges() -> None:
    spec = parse_spec({"slos": [_latency(group_by=["model", "tenant"])]})
    assert spec.slos[0].histogram is catalog.TENANT_TTFT
    assert parse_spec({"slos": [_latency()]}).slos[0].histogram is catalog.TTFT
    # 0.75 s is an edge per model, not among the few per-tenant edges.
    assert "not a bucket edge of llm_tenant_time_to_first_token_seconds" in _error(
        {"slos": [_latency(threshold_seconds=0.75, group_by=["model", "tenant"])]}
    )
    assert parse_spec({"slos": [_latency(threshold_seconds=0.75)]}).slos[0].threshold_seconds == 0.75


def test_only_ttft_and_tpot_can_be_grouped_by_tenant() -> None:
    message = _error({"slos": [_latency(metric="e2e", threshold_seconds=30.0, group_by=["model", "tenant"])]})
    assert "cannot group this latency SLO by tenant" in message and "TTFT and TPOT only" in message
