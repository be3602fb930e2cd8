"""Overload and soak, short: a real exporter process flooded and churned (the long runs are benchmarks:
benchmarks/bench_overload.py and bench_soak.py, whose numbers are in the README)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.stress import OverloadOptions, SoakOptions, run_overload, run_soak

CHART_MEMORY_LIMIT_MIB = 256  # deploy/helm/llm-token-exporter/values.yaml resources.limits.memory


def test_a_flood_at_three_times_capacity_is_refused_fast_counted_and_survived(tmp_path: Path) -> None:
    report = asyncio.run(
        run_overload(
            OverloadOptions(factor=3.0, flood_s=20, capacity_s=5, recovery_s=10, log_path=tmp_path / "exporter.log")
        )
    )
    flood, recovery = report.flood, report.recovery
    assert flood is not None and recovery is not None
    print(report.table())
    assert report.offered >= 2 * report.capacity  # it was a flood (the load generator shares the machine)
    # Every export was answered, the excess refused before decoding, and each refusal counted by the exporter.
    assert flood.spans_acked + flood.spans_failed == flood.spans_sent
    assert report.refused_exports_sender > 0
    assert report.refused_exports_sender == report.refused_exports_exporter
    assert report.dropped_spans == 0  # nothing accepted was lost: refusals happen before the queue fills
    assert len(report.scrape_ms) >= 10 and max(report.scrape_ms) < 5000  # /metrics kept answering
    assert report.rss_max_mib < CHART_MEMORY_LIMIT_MIB
    # Afterwards it takes everything again, by itself.
    assert recovery.spans_failed == 0 and recovery.spans_acked == recovery.spans_sent
    assert report.recovery_dropped == 0


def test_near_its_memory_ceiling_the_exporter_refuses_and_counts_why(tmp_path: Path) -> None:
    log = tmp_path / "exporter.log"
    report = asyncio.run(
        run_overload(
            OverloadOptions(
                factor=3.0, flood_s=15, capacity_s=4, recovery_s=5, memory_limit_bytes=90 << 20, log_path=log
            )
        )
    )
    assert report.memory_limit_mib == 90
    assert report.refused_exports_sender == report.refused_exports_exporter
    assert "memory_limit" in log.read_text()  # the summary line names the reason
    # A ceiling below the exporter's steady footprint: it stays near it, so afterwards it still refuses now and
    # then (whenever spans are queued), but keeps taking spans.
    assert report.recovery is not None and report.recovery.spans_acked > report.recovery.spans_sent / 2


def test_soak_with_churn_keeps_series_threads_and_fds_bounded(tmp_path: Path) -> None:
    report = asyncio.run(
        run_soak(
            SoakOptions(
                duration_s=100,
                rate=500,
                churn_s=15,
                servers=2,
                gpus=4,
                flap_every_s=20,
                idle_s=20,
                sample_every_s=3,
                log_path=tmp_path / "exporter.log",
            )
        )
    )
    print(report.table())
    warm = report.after_warmup()
    assert report.generations >= 6 and len(warm) >= 15
    assert report.spans_acked == report.spans_sent
    # Series: each generation brings new models, tenants and servers; the departed ones go after idle_s, so the
    # count stays near two generations' worth instead of growing with every generation.
    first_generation = max(s.series for s in report.samples if s.t < report.options.churn_s)
    assert max(s.series for s in warm) <= 3.5 * first_generation
    assert warm[-1].series <= 3.5 * first_generation
    assert max(s.stats.threads for s in warm) <= warm[0].stats.threads + 2
    assert max(s.stats.fds for s in warm) <= warm[0].stats.fds + 4
    # GPUs were lost and came back during the run, and the exporter said so. (Resident memory is not judged
    # here: the de-duplication window alone fills for 131k spans, longer than this run; the hour-long run's
    # slope is in the README.)
    log = (tmp_path / "exporter.log").read_text()
    assert "is down" in log and "is back up" in log
