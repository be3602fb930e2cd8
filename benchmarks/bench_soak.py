"""Soak: the exporter for a long time under churn (tests.support.stress): vLLM servers, models and tenants
replaced every few minutes, GPUs lost and back; prints resident memory, series, threads and fds over the run.

    python -m benchmarks.bench_soak                          # one hour (the README's numbers)
    python -m benchmarks.bench_soak --duration 300 --churn 30 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.support.stress import SoakOptions, run_soak


def main() -> int:
    """Run and print a markdown table (and, with --samples, every sample)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--rate", type=float, default=1000.0, help="spans per second (default 1000)")
    parser.add_argument("--churn", type=float, default=300.0, help="a new generation this often (default 300 s)")
    parser.add_argument("--flap", type=float, default=120.0, help="a GPU lost this often (default 120 s)")
    parser.add_argument("--idle", type=float, default=600.0, help="series idle / engine forget after (default 600 s)")
    parser.add_argument("--every", type=float, default=10.0, help="sample every (default 10 s)")
    parser.add_argument("--samples", action="store_true", help="also print every sample")
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench-soak-exporter.log"))
    args = parser.parse_args()
    options = SoakOptions(
        duration_s=args.duration,
        rate=args.rate,
        churn_s=args.churn,
        flap_every_s=args.flap,
        idle_s=args.idle,
        sample_every_s=args.every,
        log_path=args.log,
    )
    report = asyncio.run(run_soak(options))
    if args.samples:
        for s in report.samples:
            print(f"{s.t:7.0f} s  rss {s.stats.rss_bytes / 2**20:6.1f} MiB  series {s.series:6}  "
                  f"threads {s.stats.threads:3}  fds {s.stats.fds:3}  scrape {1e3 * s.scrape_s:6.1f} ms")  # fmt: skip
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
