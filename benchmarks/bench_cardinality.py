"""Series, bytes and /metrics answer times at 8, 60 and 600 (model, tenant) pairs, and what a real Prometheus pays.

For each size the exporter runs as `llm-token-exporter serve` on one core (`taskset -c 0`, default settings, no
GPU), the load generator (on the other core) sends vLLM-shaped spans for 3 models and pairs/3 tenants (8 pairs: 2
models x 4 tenants) until every pair has requests, and then, with the load stopped (an idle platform):
- series and bytes of one scrape, as Prometheus text and as OpenMetrics;
- /metrics answer time over `--scrapes` scrapes of each format (median, p99): the first answer after the load
  renders the per-request part, later ones reuse it;
- the same while the load keeps adding spans (`--busy-rate`, every scrape re-renders the per-request part);
- a real Prometheus (Debian's 2.42) scraping the exporter every 5 s for `--prometheus-seconds`: its head series
  (`prometheus_tsdb_head_series`) and the exporter job's `scrape_duration_seconds` beside ours.

    python -m benchmarks.bench_cardinality                 # 8, 60, 600 pairs (the README's numbers)
    python -m benchmarks.bench_cardinality --pairs 600 --prometheus-seconds 0
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from exporter.sim.loadgen import LoadOptions, run_load
from tests.support.procs import ExporterProcess, free_port, wait_for

TEXT = "text/plain; version=0.0.4"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
MODELS = 3


@dataclass
class Answers:
    """Answer times of one format, in ms."""

    median: float
    p99: float


@dataclass
class Row:
    """What one size measured."""

    pairs: int
    series: int
    text_bytes: int
    openmetrics_bytes: int
    idle: dict[str, Answers]
    busy: dict[str, Answers]
    prometheus_head_series: float | None = None
    prometheus_scrape_ms: float | None = None
    native_head_series: float | None = None
    native_scrape_ms: float | None = None


def series_of(text: str) -> int:
    """Sample lines of an exposition."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def answers(url: str, accept: str, scrapes: int, pause_s: float = 0.0) -> Answers:
    """Time `scrapes` sequential scrapes in one format, `pause_s` apart."""
    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(scrapes):
            started = time.perf_counter()
            client.get(url, headers={"Accept": accept}).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(pause_s)
    return Answers(statistics.median(times), percentile(times, 0.99))


def models_of(pairs: int) -> int:
    """3 models where the size divides (60, 600), else 2 (8 pairs: 2 models x 4 tenants)."""
    return MODELS if pairs % MODELS == 0 else 2


def load(exporter: ExporterProcess, pairs: int, rate: float, seconds: float, tag: str) -> None:
    """Spans for every pair of the size (models x pairs/models tenants) at `rate` for `seconds`."""
    options = LoadOptions(
        rate=rate,
        duration=seconds,
        protocol="grpc",
        endpoint=exporter.otlp_grpc_target,
        models=models_of(pairs),
        tenants=max(1, pairs // models_of(pairs)),
        tag=tag,
        batch_size=256,
    )
    with open("/dev/null", "w") as out:
        asyncio.run(run_load(options, out))


def prometheus_view(target: str, seconds: float, native: bool = False) -> tuple[float | None, float | None]:
    """(head series, mean scrape duration in ms of the exporter job) of a Prometheus scraping `target` every 5 s
    (with `native`, with native histograms on: it then asks for the protobuf exposition)."""
    binary = shutil.which("prometheus")
    if binary is None or seconds <= 0:
        return None, None
    with tempfile.TemporaryDirectory(prefix="bench-cardinality-") as tmp:
        work = Path(tmp)
        port = free_port()
        config = {
            "global": {"scrape_interval": "5s"},
            "scrape_configs": [{"job_name": "llm", "static_configs": [{"targets": [target]}]}],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        args = [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *(["--enable-feature=native-histograms"] if native else []),
        ]
        with (work / "prometheus.log").open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(base), 30, "Prometheus ready")
            time.sleep(seconds)
            own = httpx.get(f"{base}/metrics", timeout=10).text
            head = next(
                float(line.split()[-1]) for line in own.splitlines() if line.startswith("prometheus_tsdb_head_series ")
            )
            query = {"query": 'avg_over_time(scrape_duration_seconds{job="llm"}[1h])'}
            result = httpx.get(f"{base}/api/v1/query", params=query, timeout=10).json()["data"]["result"]
            scrape_ms = float(result[0]["value"][1]) * 1000 if result else None
            return head, scrape_ms
        finally:
            process.terminate()
            process.wait(20)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def measure(pairs: int, args: argparse.Namespace) -> Row:
    """One size, end to end."""
    command = [args.exporter, "serve"] if args.exporter else []
    settings = {"gpu_enabled": "false", "topology_mode": "static"}
    with ExporterProcess(cpus="0", settings=settings, command=command) as exporter:
        url = exporter.url("/metrics")
        # Enough spans that every pair has several requests (the loadgen picks a pair per span at random).
        load(exporter, pairs, rate=min(5000.0, 200.0 * pairs), seconds=max(3.0, pairs * 12 / 5000.0), tag="a")
        wait_for(lambda: exporter.scrape().count("llm_requests_total{") >= pairs, 30, f"{pairs} pairs counted")
        text = httpx.get(url, headers={"Accept": TEXT}, timeout=30).text
        openmetrics = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=30).text
        idle = {name: answers(url, accept, args.scrapes) for name, accept in (("text", TEXT), ("om", OPENMETRICS))}
        busy: dict[str, Answers] = {}
        if args.busy_rate > 0:
            for name, accept in (("text", TEXT), ("om", OPENMETRICS)):
                # The load runs in a thread beside the scrapes: every scrape finds new spans counted.
                # Scrapes 0.25 s apart, so each finds spans counted since the last one (as Prometheus's would).
                seconds = 2.0 + args.scrapes * 0.35
                loader = threading.Thread(
                    target=load, args=(exporter, pairs, args.busy_rate, seconds, "a"), daemon=True
                )
                loader.start()
                time.sleep(1.0)
                busy[name] = answers(url, accept, args.scrapes, pause_s=0.25)
                loader.join()
        target = f"127.0.0.1:{exporter.web_port}"
        head, scrape_ms = prometheus_view(target, args.prometheus_seconds)
        native = prometheus_view(target, args.prometheus_seconds, native=True) if args.native else (None, None)
    return Row(
        pairs, series_of(text), len(text.encode()), len(openmetrics.encode()), idle, busy, head, scrape_ms, *native
    )


def table(rows: list[Row]) -> str:
    """The markdown table of the README."""
    lines = [
        "| pairs | series | text bytes | OpenMetrics bytes | idle text ms (median / p99) | idle OpenMetrics ms "
        "| busy text ms | busy OpenMetrics ms | Prometheus head series (classic / native) "
        "| Prometheus scrape ms (classic / native) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def fmt(a: Answers | None) -> str:
            return "-" if a is None else f"{a.median:.1f} / {a.p99:.1f}"

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        head = f"{num(r.prometheus_head_series, ',.0f')} / {num(r.native_head_series, ',.0f')}"
        scrape = f"{num(r.prometheus_scrape_ms, '.1f')} / {num(r.native_scrape_ms, '.1f')}"
        lines.append(
            f"| {r.pairs} | {r.series:,} | {r.text_bytes:,} | {r.openmetrics_bytes:,} | {fmt(r.idle['text'])} | "
            f"{fmt(r.idle['om'])} | {fmt(r.busy.get('text'))} | {fmt(r.busy.get('om'))} | {head} | {scrape} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Measure each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="8,60,600", help="comma-separated sizes (default 8,60,600)")
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes per format and state (default 40)")
    parser.add_argument("--busy-rate", type=float, default=2000.0, help="spans/s while busy scrapes run (0: skip)")
    parser.add_argument("--prometheus-seconds", type=float, default=60.0, help="Prometheus scraping time (0: skip)")
    parser.add_argument("--native", action="store_true", help="also a Prometheus with native histograms on")
    parser.add_argument("--exporter", default="", help="another llm-token-exporter binary (e.g. an older build)")
    args = parser.parse_args()
    rows = []
    for pairs in (int(p) for p in args.pairs.split(",")):
        rows.append(measure(pairs, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
