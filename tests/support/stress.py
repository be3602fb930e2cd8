"""Overload and soak runs against a real exporter process: the harness behind benchmarks/bench_overload.py,
benchmarks/bench_soak.py and tests/e2e/test_stress.py (which run them short).

overload  measures the exporter's capacity (4 exports in flight, as fast as answered), floods it at `factor`
          times that with many concurrent senders, then sends half its capacity: answer times, refusals (the
          loadgen's count against the exporter's), /metrics answer times, resident memory, and whether it took
          everything again afterwards.
soak      runs the exporter with fake GPUs that are lost and come back, beside fake vLLM servers (processes the
          exporter discovers through /proc) that are replaced every `churn_s` by servers of new models, while
          spans of those models arrive for tenants that change with them: resident memory, series, threads
          and file descriptors over time.

`python -m tests.support.stress target|fake-vllm ...` are the two kinds of child process the runs start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from exporter.sim import vllm_server
from exporter.sim.loadgen import LoadOptions, LoadReport, run_load
from tests.support.procs import ExporterProcess, ProcStats, free_port, proc_stats
from tests.support.prom import total

MIB = 1 << 20
REFUSALS = ("overloaded", "memory_limit")


def series_count(text: str) -> int:
    """Samples in an exposition."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by rank; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_target(settings: dict[str, str], log_path: Path, gpus: int = 0, flap_every_s: float = 0.0) -> ExporterProcess:
    """The exporter as a child process (`target`, with `gpus` fake GPUs), settings through the environment."""
    command = [sys.executable, "-m", "tests.support.stress", "target", "--gpus", str(gpus)]
    command += ["--flap-every", str(flap_every_s)]
    return ExporterProcess(command=command, settings=settings, settings_as="env", log_path=log_path, stop_timeout=20.0)


@dataclass
class Sample:
    """What the monitor saw at one moment."""

    t: float
    stats: ProcStats
    scrape_s: float
    series: int
    text: str = field(repr=False, default="")


async def monitor(target: ExporterProcess, every_s: float, into: list[Sample], keep_text: bool = False) -> None:
    """Sample the exporter's resources and a timed /metrics scrape every `every_s` until cancelled."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            began = time.perf_counter()
            text = (await client.get(target.url("/metrics"))).text
            took = time.perf_counter() - began
            into.append(
                Sample(time.monotonic() - started, proc_stats(target.pid), took, series_count(text), text * keep_text)
            )
            await asyncio.sleep(max(0.0, every_s - took))


async def scrape(url: str) -> str:
    """One /metrics body."""
    async with httpx.AsyncClient(timeout=30) as client:
        return (await client.get(url)).text


# --- overload ---


@dataclass(frozen=True)
class OverloadOptions:
    """How long and how hard."""

    factor: float = 3.0
    flood_s: float = 120.0
    capacity_s: float = 10.0
    recovery_s: float = 20.0
    senders: int = 64
    memory_limit_bytes: int = 0  # 0: the exporter's default (its cgroup's limit)
    log_path: Path = Path("overload-exporter.log")


@dataclass
class OverloadReport:
    """What the run measured."""

    options: OverloadOptions
    capacity: float = 0.0  # spans/s the exporter acknowledged, 4 exports in flight
    offered: float = 0.0  # spans/s sent during the flood
    accepted: float = 0.0  # spans/s acknowledged during the flood
    flood: LoadReport | None = None
    recovery: LoadReport | None = None
    refused_exports_sender: int = 0  # exports the senders saw refused
    refused_exports_exporter: float = 0.0  # exports the exporter counted as refused (overloaded, memory_limit)
    dropped_spans: float = 0.0  # spans dropped after acceptance (queue_full) during the flood
    recovery_dropped: float = 0.0
    rss_max_mib: float = 0.0
    memory_limit_mib: float = 0.0
    scrape_ms: list[float] = field(default_factory=list)
    rss_start_mib: float = 0.0

    def table(self) -> str:
        """A markdown table of the numbers."""
        flood, recovery = self.flood, self.recovery
        assert flood is not None and recovery is not None
        rows = [
            ("capacity (4 exports in flight, as fast as answered)", f"{self.capacity:,.0f} spans/s"),
            ("offered during the flood", f"{self.offered:,.0f} spans/s = {self.offered / self.capacity:.1f}x"),
            ("acknowledged during the flood", f"{self.accepted:,.0f} spans/s"),
            (
                "flood answer time p50 / p99 / max",
                f"{flood.ack_p50_ms:.0f} / {flood.ack_p99_ms:.0f} / {flood.ack_max_ms:.0f} ms",
            ),
            (
                "refused exports: senders saw / exporter counted",
                f"{self.refused_exports_sender:,} / {self.refused_exports_exporter:,.0f}",
            ),
            ("accepted then dropped (queue full)", f"{self.dropped_spans:,.0f} spans"),
            (
                "/metrics answer p50 / p99 / max during the flood",
                f"{percentile(self.scrape_ms, 0.5):.0f} / "
                f"{percentile(self.scrape_ms, 0.99):.0f} / {max(self.scrape_ms, default=0):.0f} ms",
            ),
            (
                "resident memory at start / max",
                f"{self.rss_start_mib:.0f} / {self.rss_max_mib:.0f} MiB (ceiling {self.memory_limit_mib:.0f} MiB)"
                if self.memory_limit_mib
                else f"{self.rss_start_mib:.0f} / {self.rss_max_mib:.0f} MiB (no ceiling)",
            ),
            (
                f"after: half capacity for {self.options.recovery_s:g} s",
                f"{recovery.spans_acked:,} of {recovery.spans_sent:,} spans taken, "
                f"{self.recovery_dropped:,.0f} dropped, answer p99 {recovery.ack_p99_ms:.0f} ms",
            ),
        ]
        lines = ["| overload | measured |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
        return "\n".join(lines)


async def run_overload(options: OverloadOptions) -> OverloadReport:
    """Capacity, flood, recovery; see the module's docstring."""
    settings = {"gpu_enabled": "false", "topology_mode": "static", "tenant_join_window_seconds": "0"}
    if options.memory_limit_bytes:
        settings["memory_limit_bytes"] = str(options.memory_limit_bytes)
    report = OverloadReport(options)
    quiet = io.StringIO()
    with start_target(settings, options.log_path) as target:
        report.rss_start_mib = proc_stats(target.pid).rss_bytes / MIB
        text = await scrape(target.url("/metrics"))
        report.memory_limit_mib = total(text, "llm_exporter_memory_limit_bytes") / MIB
        base = LoadOptions(protocol="http", endpoint=target.otlp_http_url, body_pool=16, models=2, tenants=20)
        # Capacity as bench_ingest measures it: as fast as answers come, 4 exports in flight.
        measured = await run_load(replace(base, rate=1e7, duration=options.capacity_s, concurrency=4), quiet)
        report.capacity = measured.achieved_rate
        before = await scrape(target.url("/metrics"))
        samples: list[Sample] = []
        watcher = asyncio.create_task(monitor(target, 1.0, samples))
        try:
            flood = await run_load(
                replace(
                    base, rate=options.factor * report.capacity, duration=options.flood_s, concurrency=options.senders
                ),
                quiet,
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await asyncio.sleep(2.0)  # the worker drains what was acknowledged
        after = await scrape(target.url("/metrics"))
        report.flood = flood
        report.offered = flood.spans_sent / flood.seconds
        report.accepted = flood.achieved_rate
        report.refused_exports_sender = flood.spans_failed // base.batch_size
        report.refused_exports_exporter = sum(
            total(after, "llm_exporter_batches_rejected_total", {"reason": r})
            - total(before, "llm_exporter_batches_rejected_total", {"reason": r})
            for r in REFUSALS
        )
        report.dropped_spans = total(after, "llm_exporter_spans_dropped_total", {"reason": "queue_full"}) - (
            total(before, "llm_exporter_spans_dropped_total", {"reason": "queue_full"})
        )
        report.scrape_ms = [1e3 * s.scrape_s for s in samples]
        report.rss_max_mib = max((s.stats.rss_bytes for s in samples), default=0) / MIB
        recovery = await run_load(
            replace(base, rate=0.5 * report.capacity, duration=options.recovery_s, concurrency=4), quiet
        )
        report.recovery = recovery
        final = await scrape(target.url("/metrics"))
        report.recovery_dropped = total(final, "llm_exporter_spans_dropped_total") - total(
            after, "llm_exporter_spans_dropped_total"
        )
        report.rss_max_mib = max(report.rss_max_mib, proc_stats(target.pid).rss_bytes / MIB)
    return report


# --- soak ---


@dataclass(frozen=True)
class SoakOptions:
    """How long, how fast, how often things change."""

    duration_s: float = 3600.0
    rate: float = 1000.0  # spans/s, realistic for a busy 8-GPU node
    churn_s: float = 300.0  # a new generation of vLLM servers, models and tenants this often
    servers: int = 2  # fake vLLM servers alive at once
    gpus: int = 4
    flap_every_s: float = 120.0  # a GPU is lost (and comes back half this later) this often
    idle_s: float = 600.0  # series.idle-seconds and engine.forget-after-seconds of the exporter
    sample_every_s: float = 10.0
    log_path: Path = Path("soak-exporter.log")


@dataclass
class SoakReport:
    """What the run measured, after a warm-up of a quarter of the run (at least two churn periods)."""

    options: SoakOptions
    samples: list[Sample] = field(default_factory=list)
    generations: int = 0
    spans_sent: int = 0
    spans_acked: int = 0
    warmup_s: float = 0.0

    def after_warmup(self) -> list[Sample]:
        """The samples past the warm-up."""
        return [s for s in self.samples if s.t >= self.warmup_s]

    def rss_slope_mib_per_hour(self) -> float:
        """Least-squares slope of resident memory after the warm-up."""
        points = self.after_warmup()
        if len(points) < 3:
            return float("nan")
        xs = [s.t for s in points]
        ys = [s.stats.rss_bytes / MIB for s in points]
        return statistics.linear_regression(xs, ys).slope * 3600

    def table(self) -> str:
        """A markdown table of the numbers."""
        warm = self.after_warmup()
        rss = [s.stats.rss_bytes / MIB for s in warm]
        rows = [
            ("length / warm-up", f"{self.options.duration_s:.0f} s / {self.warmup_s:.0f} s"),
            (
                "churn",
                f"{self.generations} generations of {self.options.servers} vLLM servers, models and tenants "
                f"(every {self.options.churn_s:g} s); a GPU lost every {self.options.flap_every_s:g} s",
            ),
            ("spans sent / acknowledged", f"{self.spans_sent:,} / {self.spans_acked:,}"),
            (
                "resident memory after warm-up: min / max / slope",
                f"{min(rss, default=0):.0f} / "
                f"{max(rss, default=0):.0f} MiB / {self.rss_slope_mib_per_hour():+.1f} MiB per hour",
            ),
            (
                "series after warm-up: min / max / last",
                f"{min((s.series for s in warm), default=0):,} / "
                f"{max((s.series for s in warm), default=0):,} / {warm[-1].series if warm else 0:,}",
            ),
            (
                "threads after warm-up: first / max / last",
                f"{warm[0].stats.threads} / {max(s.stats.threads for s in warm)} / {warm[-1].stats.threads}"
                if warm
                else "-",
            ),
            (
                "open fds after warm-up: first / max / last",
                f"{warm[0].stats.fds} / {max(s.stats.fds for s in warm)} / {warm[-1].stats.fds}" if warm else "-",
            ),
            (
                "/metrics answer p50 / max",
                f"{percentile([1e3 * s.scrape_s for s in warm], 0.5):.0f} / "
                f"{max((1e3 * s.scrape_s for s in warm), default=0):.0f} ms",
            ),
        ]
        lines = ["| soak | measured |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
        return "\n".join(lines)


# Imports only the installed package: the script runs from a temporary directory, where `tests` is not importable.
FAKE_VLLM = "import sys\nfrom exporter.sim.vllm_server import main\nraise SystemExit(main(sys.argv[1:]))\n"


@contextlib.contextmanager
def fake_vllm_script() -> Iterator[Path]:
    """A script whose path ends like vLLM's API server module, so the exporter's /proc discovery finds it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vllm" / "entrypoints" / "openai" / "api_server.py"
        path.parent.mkdir(parents=True)
        path.write_text(FAKE_VLLM)
        yield path


def still_serving(server: subprocess.Popen[bytes]) -> None:
    """Raise if a fake vLLM server exited by itself (the exporter would have had nothing to discover)."""
    if server.poll() is not None:
        raise RuntimeError(f"a fake vLLM server exited by itself (code {server.returncode}): {server.args!r}")


async def run_soak(options: SoakOptions) -> SoakReport:
    """Generations of servers, models and tenants, GPUs flapping; see the module's docstring."""
    settings = {
        "topology_mode": "processes",
        "tenant_join_window_seconds": "0",
        "engine_scrape_interval_seconds": "2",
        "series_idle_seconds": str(options.idle_s),
        "engine_forget_after_seconds": str(options.idle_s),
        "gpu_energy_every_passes": "1",
    }
    report = SoakReport(options, warmup_s=max(options.duration_s / 4, 2 * options.churn_s))
    quiet = io.StringIO()
    servers: list[subprocess.Popen[bytes]] = []
    with (
        fake_vllm_script() as script,
        start_target(settings, options.log_path, options.gpus, options.flap_every_s) as target,
    ):
        watcher = asyncio.create_task(monitor(target, options.sample_every_s, report.samples))
        started = time.monotonic()
        try:
            while time.monotonic() - started < options.duration_s:
                tag = f"g{report.generations}-"
                report.generations += 1
                for m in range(options.servers):
                    port = free_port()
                    args = [sys.executable, str(script), "--port", str(port), "--served-model-name"]
                    servers.append(subprocess.Popen([*args, f"loadgen-model-{tag}{m}"]))
                while len(servers) > options.servers:  # the previous generation's pods go away
                    old = servers.pop(0)
                    still_serving(old)
                    old.terminate()
                    old.wait(10)
                left = options.duration_s - (time.monotonic() - started)
                load = await run_load(
                    LoadOptions(
                        rate=options.rate,
                        duration=max(1.0, min(options.churn_s, left)),
                        protocol="http",
                        endpoint=target.otlp_http_url,
                        batch_size=64,
                        concurrency=2,
                        models=options.servers,
                        tenants=10,
                        tag=tag,
                        seed=report.generations,
                    ),
                    quiet,
                )
                report.spans_sent += load.spans_sent
                report.spans_acked += load.spans_acked
            for server in servers:
                still_serving(server)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for server in servers:
                server.terminate()
                server.wait(10)
    return report


# --- child processes ---


def target_main(argv: list[str]) -> int:
    """The exporter (settings from the environment) with `--gpus` fake GPUs; every `--flap-every` seconds one
    of them is lost, and comes back half that later."""
    from exporter.cli import configure_logging
    from exporter.service.app import Exporter, run_until_signalled
    from exporter.service.settings import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--flap-every", type=float, default=0.0)
    args = parser.parse_args(argv)
    settings = load_settings({})
    configure_logging(settings.log_level)
    nvml: Any = None
    if args.gpus:
        nvml = flapping_nvml(args.gpus, args.flap_every)
    asyncio.run(run_until_signalled(Exporter(settings, nvml=nvml)))
    return 0


def flapping_nvml(count: int, every_s: float) -> Any:
    """A FakeNvml on the wall clock whose GPUs are lost in turn, each for half of `every_s` (0: never)."""
    from exporter.gpu.fake_nvml import FakeNvml

    class FlappingNvml(FakeNvml):
        def refresh(self) -> None:
            now = time.time()
            if now > self.now:
                for gpu in self.gpus:
                    gpu.power_w = 120.0 + 80.0 * ((int(now) + gpu.index) % 3)
                self.advance(now - self.now)
            if every_s > 0:
                lost = int(now // every_s) % len(self.gpus)
                down = (now % every_s) < every_s / 2
                for gpu in self.gpus:
                    gpu.lost = down and gpu.index == lost

    fake = FlappingNvml.with_gpus(count)
    fake.now = time.time()
    return fake


def main(argv: list[str] | None = None) -> int:
    """`target` or `fake-vllm` (the child processes of the runs; fake-vllm is exporter.sim.vllm_server's main)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["target"]:
        return target_main(args[1:])
    if args[:1] == ["fake-vllm"]:
        return vllm_server.main(args[1:])
    print("usage: python -m tests.support.stress target|fake-vllm ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
