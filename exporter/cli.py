"""Command line: `llm-token-exporter serve|demo`, every setting a flag (flags > env > file > defaults)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from exporter import __version__
from exporter.alerts import cli as alerts_cli
from exporter.dashboards import cli as dashboards_cli
from exporter.service.settings import (
    HELP_GROUPS,
    ConfigError,
    Settings,
    closest_setting,
    env_of,
    flag_of,
    group_of,
    load_settings,
    metavar_of,
)

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


class _Parser(argparse.ArgumentParser):
    """argparse with errors that come first and suggest the flag, value or command that was probably meant."""

    def error(self, message: str) -> NoReturn:
        """The problem first, then the short usage: under a long usage the message would scroll out of sight."""
        self.exit(2, f"{self.prog}: error: {message}\n{self.format_usage()}See '{self.prog} --help'.\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, but an unknown flag is reported by the command it was given to, with a suggestion."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._command_parser(getattr(parsed, "command", None))
            parser.error(_unrecognized(parser, extras))
        return parsed

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                parser: argparse.ArgumentParser = action.choices[command]
                return parser
        return self

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(action, exc.message + hint) from None


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's message for arguments nobody took, with the flag each unknown one most likely meant."""
    lines = [f"unrecognized arguments: {' '.join(extras)}"]
    for arg in extras:
        if arg.startswith("--"):
            meant = _closest_flag(parser, arg.partition("=")[0])
            if meant:
                lines.append(f"  {arg.partition('=')[0]}: did you mean {meant}?")
    return "\n".join(lines)


def _closest_flag(parser: argparse.ArgumentParser, option: str) -> str | None:
    """The parser's flag closest to `option`: by spelling, else the setting it names in another form (a field
    name, an env var, the words in another order)."""
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    close = difflib.get_close_matches(option, flags, n=1, cutoff=0.75)
    if close:
        return close[0]
    name = closest_setting(option)
    return flag_of(name) if name is not None and flag_of(name) in flags else None


class _SettingsHelpFormatter(argparse.HelpFormatter):
    """Help under each flag, indented; text wrapped between words only, a long `Default:` kept on one line (a bucket
    list is read whole), and `Env` split from its YAML key only when the pair does not fit."""

    def __init__(self, prog: str) -> None:
        width = min(shutil.get_terminal_size().columns, 120) - 2
        super().__init__(prog, max_help_position=6, width=width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
        return "\n\n".join(textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent) for p in paragraphs)

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines: list[str] = []
        for paragraph in text.splitlines():
            if paragraph.startswith("Default: "):
                lines.append(paragraph)
            elif paragraph.startswith("Env ") and len(paragraph) > width:
                lines += paragraph.split("; ")
            else:
                glued = paragraph.replace("Default: ", "Default:" + _GLUE)
                wrapped = textwrap.wrap(glued, width, break_long_words=False, break_on_hyphens=False)
                lines += [line.replace(_GLUE, " ") for line in wrapped]
        return lines


# Joins "Default:" to its value so that wrapping cannot part them; printed as a space. textwrap breaks at ASCII
# whitespace only, and a non-breaking space could not be printed in every locale.
_GLUE = "\x00"


def _shown(value: Any) -> str:
    """A default as it is typed on the command line ('' for none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_shown(v)}" for k, v in value.items())
    return str(value)


def _setting_help(name: str) -> str:
    """A setting's help: its description with a short default, then a long default and its env var and YAML key,
    each on a line of its own."""
    info = Settings.model_fields[name]
    text, lines = str(info.description), []
    default = _shown(info.get_default(call_default_factory=True))
    if default and len(default) <= 24:
        text += f" Default: {default}."
    elif default:
        lines.append(f"Default: {default}")
    lines.append(f"Env {env_of(name)}; YAML key {name}.")
    return "\n".join([text, *lines]).replace("%", "%%")  # argparse %-formats help


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag, in the groups of HELP_GROUPS; --config first."""
    config = parser.add_argument_group("configuration file")
    config.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML file of settings (the keys below; flags and env vars win).",
    )
    groups = {key: parser.add_argument_group(title) for key, title in HELP_GROUPS.items()}
    for name in Settings.model_fields:
        group = group_of(name)
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        groups[group].add_argument(
            flag_of(name), dest=name, default=None, metavar=metavar_of(name), help=_setting_help(name)
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = _Parser(
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
        usage="%(prog)s [--config FILE] [--SETTING VALUE ...]",
        formatter_class=_SettingsHelpFormatter,
    )
    _add_setting_flags(serve)
    demo = sub.add_parser(
        "demo",
        help="run the exporter beside a simulated GPU node, with a live view",
        usage="%(prog)s [--scenario NAME] [--duration SECONDS] [--DEMO-FLAG VALUE ...] [--SETTING VALUE ...]",
        description="Start the exporter on its usual ports (loopback) beside a simulated GPU node serving vLLM "
        "(2 models on 4 GPUs, 5 tenants; real OTLP spans, real vLLM-format /metrics, an NVML that follows the "
        "load), and Prometheus and Alertmanager on loopback when they are on the PATH. Shows per model and tenant "
        "TTFT/TPOT percentiles, tokens/s, queues, KV cache, GPUs, cost and energy per token, SLO burn rates and "
        "firing and pending alerts, refreshed every few seconds. Ctrl-C stops everything it started. The exporter's "
        "settings apply as in serve, except that the demo binds loopback and scrapes vLLM every 2 s unless told "
        "otherwise.",
        formatter_class=_SettingsHelpFormatter,
    )
    _add_demo_flags(demo.add_argument_group("demo"))
    _add_setting_flags(demo)
    alerts = sub.add_parser("alerts", help="generate alert rules from an SLO spec", description=alerts_cli.DESCRIPTION)
    alerts_cli.add_arguments(alerts)
    dashboards = sub.add_parser("dashboards", help="make Grafana dashboards", description=dashboards_cli.DESCRIPTION)
    dashboards_cli.add_arguments(dashboards)
    _add_loadgen(sub)
    return parser


def _add_demo_flags(demo: argparse._ArgumentGroup) -> None:
    """The demo's own flags (the exporter's settings follow them)."""
    from exporter.alerts.timescale import DEMO_TIME_SCALE
    from exporter.sim.scenarios import SCENARIOS

    demo.add_argument(
        "--scenario",
        type=_scenario_name,
        choices=SCENARIOS,
        default="steady",
        metavar="NAME",
        help=f"what happens on the node: {', '.join(SCENARIOS)}. Default: steady.",
    )
    demo.add_argument(
        "--scenario-at",
        dest="scenario_at",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="when the scenario's change happens, seconds after the start. Default: 60.",
    )
    demo.add_argument(
        "--duration",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="stop after this many seconds. Default: 0 (until Ctrl-C).",
    )
    demo.add_argument("--seed", type=int, default=1, metavar="N", help="random seed of the simulation. Default: 1.")
    demo.add_argument(
        "--nodes",
        type=_nodes,
        default=1,
        metavar="N",
        help="simulate a fleet of N >= 3 nodes, one process and one exporter each (on --web.listen-address's port "
        "+ 0..N-1), with a prefill/decode pair across two nodes, a data-parallel server and a tensor-parallel "
        "group spanning two nodes, one Prometheus scraping them all (steady scenario only). Default: 1 (one node).",
    )
    demo.add_argument(
        "--interval", type=_positive, default=2.0, metavar="SECONDS", help="seconds between views. Default: 2."
    )
    demo.add_argument(
        "--window",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="seconds the view's rates and percentiles cover. Default: 30.",
    )
    demo.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus and Alertmanager.")
    demo.add_argument(
        "--prometheus.listen-address",
        dest="prometheus_address",
        default="127.0.0.1:9090",
        metavar="HOST:PORT",
        help="where the demo's Prometheus listens. Default: 127.0.0.1:9090.",
    )
    demo.add_argument(
        "--alertmanager.listen-address",
        dest="alertmanager_address",
        default="127.0.0.1:9093",
        metavar="HOST:PORT",
        help="where the demo's Alertmanager listens. Default: 127.0.0.1:9093.",
    )
    demo.add_argument(
        "--alerts.time-scale",
        dest="time_scale",
        type=_time_scale,
        default=DEMO_TIME_SCALE,
        metavar="FACTOR",
        help="run the demo's alert rules this many times faster than real time: every window, `for:` and "
        "Alertmanager timer divided by it (the 1h/5m page becomes 1 min/5 s at 60), so alerts fire within minutes "
        f"of a scenario's change; 1 runs the production rules unchanged. Default: {DEMO_TIME_SCALE:g}.",
    )
    demo.add_argument(
        "--sim.metrics-ports",
        dest="sim_ports",
        type=_ports,
        default=(),
        metavar="PORT,...",
        help="ports of the simulated vLLM servers' /metrics. Default: free ports.",
    )
    demo.add_argument(
        "--sim.protocol",
        dest="protocol",
        choices=("grpc", "http"),
        default="grpc",
        metavar="grpc|http",
        help="OTLP protocol of the node. Default: grpc.",
    )
    demo.add_argument(
        "--sim.export-delay-seconds",
        dest="export_delay",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="the simulated vLLM's span batch delay (vLLM's default is 5). Default: 2.",
    )
    demo.add_argument(
        "--sim.rate-scale",
        dest="rate_scale",
        type=_positive,
        default=1.0,
        metavar="FACTOR",
        help="multiply every tenant's request rate. Default: 1.",
    )


def _nodes(text: str) -> int:
    """A node count: 1 (the single node) or a fleet of 3 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value != 1 and value < 3:
        raise argparse.ArgumentTypeError(f"1 (one node) or a fleet of at least 3 nodes, not {value}")
    return value


def _scenario_name(text: str) -> str:
    """A scenario name as typed, hyphens or underscores, any case."""
    return text.strip().lower().replace("-", "_")


def _time_scale(text: str) -> float:
    """A demo time scale: 1 (real time) up to the most the SLI windows allow."""
    from exporter.alerts.timescale import MAX_TIME_SCALE

    value = float(text)
    if not 1 <= value <= MAX_TIME_SCALE:
        raise argparse.ArgumentTypeError(
            f"must be 1 (real time) .. {MAX_TIME_SCALE:g} (the 5m window at least 2 s), got {text}"
        )
    return value


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
                time_scale=args.time_scale,
                nodes=args.nodes,
            )
            return asyncio.run(run_demo(settings, options))
    except StartupError as exc:
        print(f"llm-token-exporter: {exc}", file=sys.stderr)
        return 1
    return 0
