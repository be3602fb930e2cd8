"""Overload: the exporter's capacity, then a flood at several times it, then half of it (tests.support.stress).

python -m benchmarks.bench_overload                     # 3x for 120 s (the README's numbers)
python -m benchmarks.bench_overload --flood-seconds 600 --factor 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.support.stress import OverloadOptions, run_overload


def main() -> int:
    """Run and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=3.0, help="flood at this many times capacity (default 3)")
    parser.add_argument("--flood-seconds", type=float, default=120.0)
    parser.add_argument("--recovery-seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=64, help="concurrent exports during the flood (default 64)")
    parser.add_argument("--memory-limit-bytes", type=int, default=0, help="the exporter's memory ceiling")
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench-overload-exporter.log"))
    args = parser.parse_args()
    options = OverloadOptions(
        factor=args.factor,
        flood_s=args.flood_seconds,
        recovery_s=args.recovery_seconds,
        senders=args.senders,
        memory_limit_bytes=args.memory_limit_bytes,
        log_path=args.log,
    )
    report = asyncio.run(run_overload(options))
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
