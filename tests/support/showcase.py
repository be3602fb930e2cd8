"""A node that fills every panel: the simulator with several scenarios at once, the exporter, and Prometheus.

A development tool, not part of the exporter: used by tests/e2e/test_dashboards_live.py and to draw the README
previews (from the repository root, with the `preview` extra installed):

    python -m tests.support.showcase --out docs/dashboards --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

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
async def showcase(workdir: Path, scrape_interval_s: float = 1.0) -> AsyncIterator[Showcase]:
    """Start everything on loopback (free ports); stop everything on exit."""
    binary = find_binary(PROMETHEUS)
    if binary is None:
        raise RuntimeError("prometheus is not on the PATH")
    web, grpc_port, http_port = free_port(), free_port(), free_port()
    node = SimNode(
        NodeSpec(),
        showcase_scenario(),
        NodeOptions(otlp_endpoint=f"127.0.0.1:{grpc_port}", export_delay_s=0.5, seed=7),
    )
    exporter: Exporter | None = None
    stack = PromStack(
        workdir, f"127.0.0.1:{web}", prometheus_address=f"127.0.0.1:{free_port()}", scrape_interval_s=scrape_interval_s
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
        node.nvml.inject_xid(XID_GPU, XID)
        yield Showcase(node, exporter, stack)
    finally:
        await stack.stop()
        await node.stop()
        if exporter is not None:
            await exporter.stop()


async def _main(out: Path, seconds: float) -> None:
    from exporter.dashboards.preview import preview_all

    with tempfile.TemporaryDirectory() as tmp:
        async with showcase(Path(tmp)) as run:
            await asyncio.sleep(seconds)
            for path in await asyncio.to_thread(preview_all, run.prometheus, out, seconds, "30s"):
                print(f"wrote {path}")


def main() -> None:
    """Run the showcase for a while, then draw every dashboard from its Prometheus."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboards"))
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    asyncio.run(_main(args.out, args.seconds))


if __name__ == "__main__":
    main()
