"""A node that fills every panel: the simulator with several scenarios, the exporter, and Prometheus.

A development tool, not part of the exporter. tests/e2e/test_dashboards_live.py runs `showcase_scenario` (every
change at once, so that 45 s light every panel). The README previews (docs/dashboards/*.png) come from
`preview_scenario`, ten minutes of one incident after another on a node that recovers from each, with the SLO
rules time-compressed (TIME_SCALE) so that their windows move within the run; from the repository root, with the
`preview` extra installed (about 11 minutes):

    python -m tests.support.showcase --out docs/dashboards
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.alerts.generate import RULES_DIR, generate
from exporter.alerts.spec import DEFAULT_SPEC, load_spec
from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from exporter.sim.node import NodeOptions, SimNode
from exporter.sim.promstack import PROMETHEUS, PromStack, find_binary
from exporter.sim.scenarios import (
    LONG_CONTEXT,
    AddTenant,
    KvCapacity,
    PowerCap,
    PrefillSlowdown,
    RestartEngine,
    Scenario,
    SpanLoss,
)
from exporter.sim.spec import NodeSpec
from exporter.sim.workload import Tenant
from tests.support.procs import free_port

XID_GPU, XID = 3, 13  # an application fault on the last GPU
PREVIEW_S = 600.0
PREVIEW_XID_S = 200.0  # when the preview run's XID happens
PREVIEW_RATE = "1m"  # $__rate_interval for the previews: Grafana's at a 15 s scrape interval
# x60: the 5m window is 5 s, 1h is 1 min, 6h 6 min, the 30-day budget period 12 h. The run holds the page windows
# whole; the tickets' 1d and 3d windows (and the budget's) hold only the run, as on any fresh Prometheus.
TIME_SCALE = 60.0


def showcase_scenario(at: float = 3.0) -> Scenario:
    """Power capping, KV exhaustion, a prefill regression, an engine restart and span loss, all from `at`."""
    longctx = Tenant(LONG_CONTEXT.name, {"": 1.5}, LONG_CONTEXT.prompt, LONG_CONTEXT.output, 2048)
    return Scenario(
        "showcase",
        "Every panel's signal: throttling, KV exhaustion, a TTFT regression, a restart, lost spans.",
        events=(
            PowerCap(at, 250.0, 0),
            AddTenant(at, longctx, 1),
            PrefillSlowdown(at, 5.0, None),
            SpanLoss(at, 0.2),
            RestartEngine(at + 3.0, 2, 1.0, 3.0),
        ),
        kv=(KvCapacity(1, 32_768),),
    )


def preview_scenario() -> Scenario:
    """Ten minutes on the default node, one incident after another, none overloading it for good (so that no
    latency percentile runs off to the top bucket).

    90-270 s: the 70B's GPUs capped at 350 W (sw_power_cap, lower clocks, slower TTFT/TPOT); 180-270 s: the 8B's
    prefill 5x slower (a TTFT regression); 330 s: the second 8B replica restarts; from 360 s: a fifth of the spans
    lost; from 420 s: a long-context tenant on the 8B, whose first replica has a small KV cache (preemptions; how
    long its queue and TTFT stay up varies from run to run). The XID comes at PREVIEW_XID_S.
    """
    longctx = Tenant(LONG_CONTEXT.name, {"": 0.3}, LONG_CONTEXT.prompt, LONG_CONTEXT.output, 2048)
    return Scenario(
        "preview",
        "A power cap, a TTFT regression, KV exhaustion, a restart and span loss, one after another.",
        events=(
            PowerCap(90.0, 350.0, 0),
            PrefillSlowdown(180.0, 5.0, None),
            PowerCap(270.0, NodeSpec().gpu.max_w, 0),
            PrefillSlowdown(270.0, 1.0, None),
            RestartEngine(330.0, 2, 3.0, 10.0),
            SpanLoss(360.0, 0.2),
            AddTenant(420.0, longctx, 1),
        ),
        kv=(KvCapacity(1, 32_768),),
    )


def rule_files(time_scale: float = 1.0) -> dict[str, str]:
    """The package spec's rule files, `time_scale` times faster ({path under the working directory: text})."""
    spec = load_spec(DEFAULT_SPEC).model_copy(update={"time_scale": time_scale})
    return {path: text for path, text in generate(spec, DEFAULT_SPEC.name).items() if path.startswith(f"{RULES_DIR}/")}


@dataclass
class Showcase:
    """The running node, exporter and Prometheus."""

    node: SimNode
    exporter: Exporter
    stack: PromStack

    @property
    def prometheus(self) -> str:
        """Prometheus's base URL."""
        url = self.stack.url("prometheus")
        assert url is not None
        return url


@asynccontextmanager
async def showcase(
    workdir: Path,
    scrape_interval_s: float = 1.0,
    scenario: Scenario | None = None,
    time_scale: float = 1.0,
    xid_at_start: bool = True,
) -> AsyncIterator[Showcase]:
    """Start everything on loopback (free ports), `scenario` (default: `showcase_scenario`) with the SLO rules
    `time_scale` times faster, the XID at once unless `xid_at_start` is false; stop everything on exit."""
    binary = find_binary(PROMETHEUS)
    if binary is None:
        raise RuntimeError("prometheus is not on the PATH")
    web, grpc_port, http_port = free_port(), free_port(), free_port()
    node = SimNode(
        NodeSpec(),
        scenario or showcase_scenario(),
        NodeOptions(otlp_endpoint=f"127.0.0.1:{grpc_port}", export_delay_s=0.5, seed=7),
    )
    exporter: Exporter | None = None
    stack = PromStack(
        workdir,
        f"127.0.0.1:{web}",
        prometheus_address=f"127.0.0.1:{free_port()}",
        scrape_interval_s=scrape_interval_s,
        rules=rule_files(time_scale),
    )
    try:
        await node.serve_metrics()
        settings = load_settings(
            {
                "web_listen_address": f"127.0.0.1:{web}",
                "otlp_grpc_listen_address": f"127.0.0.1:{grpc_port}",
                "otlp_http_listen_address": f"127.0.0.1:{http_port}",
                "engine_scrape_interval_seconds": 0.5,
                "gpu_sample_interval_seconds": 0.25,
                "tenant_join_window_seconds": 2.0,
                "gpu_retention_seconds": 10.0,
                "instances": node.instance_configs(),
            }
        )
        exporter = Exporter(settings, nvml=node.nvml)
        await exporter.start()
        await node.start()
        await stack.start(binary, None)
        if xid_at_start:
            node.nvml.inject_xid(XID_GPU, XID)
        yield Showcase(node, exporter, stack)
    finally:
        await stack.stop()
        await node.stop()
        if exporter is not None:
            await exporter.stop()


def preview_note(seconds: float) -> str:
    """What the previews show, under each title."""
    return (
        f"A simulated node (llm-token-exporter's simulator: a 70B on 2 H100s, an 8B on 2 more), {seconds / 60:g} "
        f"minutes of tests.support.showcase.preview_scenario, $__rate_interval = {PREVIEW_RATE}. SLO rules "
        f"time-compressed x{TIME_SCALE:g} (1h window = {3600 / TIME_SCALE:g} s); on this fresh Prometheus the 1d, 3d "
        "and 30d windows hold only the run."
    )


async def _main(out: Path, seconds: float) -> None:
    from exporter.dashboards.preview import preview_all

    with tempfile.TemporaryDirectory() as tmp:
        async with showcase(Path(tmp), scenario=preview_scenario(), time_scale=TIME_SCALE, xid_at_start=False) as run:
            await asyncio.sleep(min(PREVIEW_XID_S, seconds / 3))
            run.node.nvml.inject_xid(XID_GPU, XID)
            await asyncio.sleep(seconds - min(PREVIEW_XID_S, seconds / 3))
            paths = await asyncio.to_thread(
                preview_all, run.prometheus, out, seconds, PREVIEW_RATE, preview_note(seconds)
            )
            for path in paths:
                print(f"wrote {path}")


def main() -> None:
    """Run the preview scenario, then draw every dashboard from its Prometheus."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboards"))
    parser.add_argument("--seconds", type=float, default=PREVIEW_S)
    args = parser.parse_args()
    asyncio.run(_main(args.out, args.seconds))


if __name__ == "__main__":
    main()
