"""Command line: `llm-token-exporter serve|demo`, every setting a flag (flags > env > file > defaults)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.alerts import cli as alerts_cli
from exporter.dashboards import cli as dashboards_cli
from exporter.service.settings import ConfigError, Settings, env_of, flag_of, load_settings

DESCRIPTION = """\
Per-node Prometheus exporter for vLLM. Receives vLLM's per-request OpenTelemetry spans (OTLP gRPC and HTTP),
and serves per-request latency (TTFT, TPOT, queue, prefill, decode, e2e) and token metrics by model and tenant
on /metrics.

Every setting can be given as a flag, as an environment variable LLM_TOKEN_EXPORTER_<NAME>, or as a key in the
YAML file passed with --config; flags win over env vars, env vars over the file, the file over defaults.
"""

EPILOG = """\
commands:
  serve    run the exporter
  demo     run the exporter beside a simulated GPU node serving vLLM, with a live view (no GPU, no cluster)
  loadgen  push vLLM-shaped spans at a fixed rate into an exporter (benchmarks)
  alerts   generate SLO and cause alert rules, their promtool tests and alertmanager.yaml from an SLO spec
  dashboards  generate the Grafana dashboards (JSON), or draw them as PNGs from a Prometheus (preview)

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
        help="run the exporter beside a simulated GPU node, with a live view",
        description="Start the exporter on its usual ports (loopback) beside a simulated GPU node serving vLLM "
        "(2 models on 4 GPUs, 5 tenants; real OTLP spans, real vLLM-format /metrics, an NVML that follows the "
        "load), and Prometheus and Alertmanager on loopback when they are on the PATH. Shows per model and tenant "
        "TTFT/TPOT percentiles, tokens/s, queues, KV cache, GPUs, cost and energy per token, SLO burn rates and "
        "firing alerts, refreshed every few seconds. Ctrl-C stops everything it started.",
    )
    from exporter.sim.scenarios import SCENARIOS

    demo.add_argument(
        "--scenario", choices=SCENARIOS, default="steady", help="what happens on the node (default steady)"
    )
    demo.add_argument(
        "--scenario-at",
        dest="scenario_at",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="when the scenario's change happens, seconds after the start (default 60)",
    )
    demo.add_argument("--duration", type=_non_negative, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the simulation (default 1)")
    demo.add_argument("--interval", type=_positive, default=2.0, help="seconds between view refreshes (default 2)")
    demo.add_argument("--window", type=_positive, default=30.0, help="seconds the rates and percentiles cover")
    demo.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus and Alertmanager")
    demo.add_argument(
        "--prometheus.listen-address",
        dest="prometheus_address",
        default="127.0.0.1:9090",
        help="where the demo's Prometheus listens (default 127.0.0.1:9090)",
    )
    demo.add_argument(
        "--alertmanager.listen-address",
        dest="alertmanager_address",
        default="127.0.0.1:9093",
        help="where the demo's Alertmanager listens (default 127.0.0.1:9093)",
    )
    demo.add_argument(
        "--sim.metrics-ports",
        dest="sim_ports",
        type=_ports,
        default=(),
        metavar="PORT,...",
        help="ports of the simulated vLLM servers' /metrics (default: free ports)",
    )
    demo.add_argument(
        "--sim.protocol", dest="protocol", choices=("grpc", "http"), default="grpc", help="OTLP protocol of the node"
    )
    demo.add_argument(
        "--sim.export-delay-seconds",
        dest="export_delay",
        type=_positive,
        default=2.0,
        help="the simulated vLLM's span batch delay (vLLM's default is 5)",
    )
    demo.add_argument("--sim.rate-scale", dest="rate_scale", type=_positive, default=1.0, help="multiply every rate")
    _add_setting_flags(demo)
    alerts = sub.add_parser("alerts", help="generate alert rules from an SLO spec", description=alerts_cli.DESCRIPTION)
    alerts_cli.add_arguments(alerts)
    dashboards = sub.add_parser("dashboards", help="make Grafana dashboards", description=dashboards_cli.DESCRIPTION)
    dashboards_cli.add_arguments(dashboards)
    _add_loadgen(sub)
    return parser


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PORT,PORT,..., got {text!r}") from None
    if any(not 0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be 0..65535, got {text!r}")
    return ports


def _add_loadgen(sub: Any) -> None:
    loadgen = sub.add_parser(
        "loadgen",
        help="push vLLM-shaped spans at a fixed rate (benchmarks)",
        description="Send vLLM 0.32-shaped llm_request spans to an exporter over OTLP at --rate spans/s for "
        "--duration seconds (fresh ids on every span), then report the rate the exporter acknowledged and, with "
        "--metrics-url, the spans it accepted, rejected and dropped meanwhile. --scrape-targets serves simulated "
        "vLLM /metrics endpoints too and prints the exporter's instances setting for them.",
    )
    loadgen.add_argument("--rate", type=_positive, default=20_000.0, help="spans per second (default 20000)")
    loadgen.add_argument("--duration", type=_positive, default=30.0, help="seconds (default 30)")
    loadgen.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    loadgen.add_argument(
        "--endpoint",
        default=None,
        help="grpc: HOST:PORT (default 127.0.0.1:4317); http: URL (default http://127.0.0.1:4318/v1/traces)",
    )
    loadgen.add_argument("--batch-size", type=int, default=512, help="spans per export (default 512, as vLLM)")
    loadgen.add_argument("--concurrency", type=int, default=4, help="exports in flight (default 4)")
    loadgen.add_argument("--models", type=int, default=2, help="distinct service.name values (default 2)")
    loadgen.add_argument("--tenants", type=int, default=20, help="distinct tenant.id values (default 20)")
    loadgen.add_argument("--metrics-url", default=None, help="the exporter's /metrics, to report its drops")
    loadgen.add_argument("--scrape-targets", type=int, default=0, help="simulated vLLM /metrics endpoints to serve")
    loadgen.add_argument("--scrape-base-port", type=int, default=0, help="first port of those (default: free ports)")
    loadgen.add_argument("--seed", type=int, default=1)
    loadgen.add_argument(
        "--body-pool",
        type=int,
        default=0,
        help="serialize this many export bodies up front and cycle them: several times the offered load per core "
        "(ids repeat after pool x batch-size spans; keep that above the exporter's dedup capacity)",
    )
    loadgen.add_argument("--json", action="store_true", help="also print the report as one JSON line")


def run_loadgen(args: argparse.Namespace) -> int:
    """The loadgen subcommand."""
    from exporter.sim.loadgen import LoadOptions, report_json, run_load

    if args.batch_size < 1 or args.concurrency < 1 or args.models < 1 or args.tenants < 1:
        print(
            "llm-token-exporter loadgen: --batch-size, --concurrency, --models, --tenants must be >= 1", file=sys.stderr
        )
        return 2
    default = "127.0.0.1:4317" if args.protocol == "grpc" else "http://127.0.0.1:4318/v1/traces"
    options = LoadOptions(
        rate=args.rate,
        duration=args.duration,
        protocol=args.protocol,
        endpoint=args.endpoint or default,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        models=args.models,
        tenants=args.tenants,
        metrics_url=args.metrics_url,
        scrape_targets=args.scrape_targets,
        scrape_base_port=args.scrape_base_port,
        seed=args.seed,
        body_pool=max(0, args.body_pool),
    )
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        report = asyncio.run(run_load(options))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"llm-token-exporter loadgen: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(report_json(report))
    return 0 if report.spans_acked else 1


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
    # httpx logs every request at INFO: one line per engine scrape would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "alerts":
        return alerts_cli.run(args)  # needs no exporter settings
    if args.command == "dashboards":
        return dashboards_cli.run(args)
    if args.command == "loadgen":
        return run_loadgen(args)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from exporter.service.app import Exporter, StartupError, run_until_signalled

    try:
        if args.command == "serve":
            asyncio.run(run_until_signalled(Exporter(settings)))
        else:
            from exporter.sim.demo import DemoOptions, run_demo

            options = DemoOptions(
                scenario=args.scenario,
                scenario_at=args.scenario_at,
                duration=args.duration,
                seed=args.seed,
                interval=args.interval,
                window=args.window,
                prometheus=not args.no_prometheus,
                prometheus_address=args.prometheus_address,
                alertmanager_address=args.alertmanager_address,
                sim_ports=args.sim_ports,
                protocol=args.protocol,
                export_delay=args.export_delay,
                rate_scale=args.rate_scale,
            )
            return asyncio.run(run_demo(settings, options))
    except StartupError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 1
    return 0
