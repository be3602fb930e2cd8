"""Command line: `llm-token-exporter serve|demo`, every setting a flag (flags > env > file > defaults)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.config import ConfigError, Settings, env_of, flag_of, load_settings

DESCRIPTION = """\
Per-node Prometheus exporter for vLLM. Receives vLLM's per-request OpenTelemetry spans (OTLP gRPC and HTTP),
and serves per-request latency (TTFT, TPOT, queue, prefill, decode, e2e) and token metrics by model and tenant
on /metrics.

Every setting can be given as a flag, as an environment variable LLM_TOKEN_EXPORTER_<NAME>, or as a key in the
YAML file passed with --config; flags win over env vars, env vars over the file, the file over defaults.
"""

EPILOG = """\
commands:
  serve   run the exporter
  demo    run the exporter and replay real vLLM spans into it, printing what it sees (no GPU, no cluster)

Point vLLM at it:  --otlp-traces-endpoint http://EXPORTER:4317  (gRPC, vLLM's default)
  or, with OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf, http://EXPORTER:4318/v1/traces
"""


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also an env var and a YAML key)")
    group.add_argument("--config", type=Path, metavar="FILE", help="YAML file of settings (keys as below).")
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = ",".join(str(v) for v in default) if isinstance(default, list) else default
        if isinstance(default, dict):
            shown = ",".join(f"{k}={v}" for k, v in default.items()) or "none"
        group.add_argument(
            flag_of(name),
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=f"{info.description} Default: {shown!s}. Env {env_of(name)}; YAML key {name}.",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="llm-token-exporter",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the exporter",
        description="Run the exporter until SIGTERM or Ctrl-C. " + DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_setting_flags(serve)
    demo = sub.add_parser(
        "demo",
        help="run the exporter fed by a replay of real vLLM spans",
        description="Start the exporter on its usual ports and replay the real vLLM 0.32 spans shipped in the "
        "package into it over OTLP/HTTP, with gateway spans giving five tenants. Prints per model and tenant "
        "request counts, TTFT and TPOT percentiles every few seconds. Ctrl-C stops it.",
    )
    demo.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=50.0, help="request spans per second to replay (default 50)")
    demo.add_argument("--seed", type=int, default=1, help="random seed for tenants and jitter (default 1)")
    demo.add_argument("--interval", type=float, default=5.0, help="seconds between printed tables (default 5)")
    _add_setting_flags(demo)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags, env and the optional YAML file."""
    flags: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    return load_settings(flags, args.config)


def configure_logging(level: str) -> None:
    """Plain, timestamped logs on stderr."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from exporter.server import Exporter, StartupError, run_until_signalled

    try:
        if args.command == "serve":
            asyncio.run(run_until_signalled(Exporter(settings)))
        else:
            from exporter.demo import run_demo

            asyncio.run(run_demo(Exporter(settings), args.duration, args.rate, args.seed, args.interval))
    except StartupError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 1
    return 0
