"""`llm-token-exporter alerts`: write the rule files, their tests, alertmanager.yaml and README.md from a spec."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Generate Prometheus recording and alerting rules (SLO burn rates, causes, fleet), their promtool tests, "
    "alertmanager.yaml and a README of every alert from an SLO spec. Needs no exporter settings."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's flags."""
    parser.add_argument(
        "--slo-spec", type=Path, required=True, metavar="FILE", help="SLO spec (exporter/alerts/slos.yaml)."
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write into (alerts).")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR differs from what would be written"
    )


def run(args: argparse.Namespace) -> int:
    """Generate (or check) the files; 0 on success, 1 if --check finds differences, 2 for a bad spec."""
    # Imported here so that `serve` does not load the generator.
    from exporter.alerts.generate import generate, stale
    from exporter.alerts.spec import SpecError, load_spec

    try:
        spec = load_spec(args.slo_spec)
    except SpecError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    files = generate(spec, args.slo_spec.name)
    old = stale(out, files)
    if args.check:
        differ = [p for p, text in files.items() if not _same(out / p, text)]
        for name in differ + [p.relative_to(out).as_posix() for p in old]:
            print(f"out of date: {out / name}", file=sys.stderr)
        return 1 if differ or old else 0
    for path in old:
        path.unlink()
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _same(target, text):
            target.write_text(text)
    print(f"wrote {len(files)} files under {out} ({len(old)} stale removed)")
    return 0


def _same(path: Path, text: str) -> bool:
    try:
        return path.read_text() == text
    except OSError:
        return False
