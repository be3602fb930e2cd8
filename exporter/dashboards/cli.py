"""`llm-token-exporter dashboards`: write (or check) the dashboard JSON, or draw previews from a Prometheus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Generate the Grafana dashboards (JSON) into DIR, or check DIR is current with --check. With `preview`, "
    "evaluate every panel's queries against a Prometheus and draw each dashboard as a PNG into DIR."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("action", nargs="?", choices=("generate", "preview"), default="generate")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write (dashboards)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if DIR is out of date")
    parser.add_argument("--prometheus", metavar="URL", help="preview: the Prometheus to query")
    parser.add_argument("--range", dest="range_s", type=float, default=900.0, help="preview: seconds shown (900)")
    parser.add_argument("--rate-interval", default="1m", help="preview: what $__rate_interval becomes (1m)")


def run(args: argparse.Namespace) -> int:
    """Generate, check or preview; 0 on success, 1 if --check finds differences, 2 on bad use."""
    from exporter.dashboards import generate

    out: Path = args.out
    if args.action == "preview":
        if not args.prometheus:
            print("llm-token-exporter: dashboards preview needs --prometheus URL", file=sys.stderr)
            return 2
        from exporter.dashboards.preview import preview_all

        for path in preview_all(args.prometheus.rstrip("/"), out, args.range_s, args.rate_interval):
            print(f"wrote {path}")
        return 0
    if args.check:
        differ = generate.differences(out)
        for name in differ:
            print(f"out of date: {out / name}", file=sys.stderr)
        return 1 if differ else 0
    print(f"wrote {generate.write(out)} dashboards under {out}")
    return 0
