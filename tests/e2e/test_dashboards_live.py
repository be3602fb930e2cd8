"""Live: a real Prometheus scrapes the exporter fed by the simulator, with the recording rules loaded, and every
query of every panel returns at least one series; then the preview draws every dashboard as a PNG.

One showcase run (power capping, KV exhaustion, a TTFT regression, an engine restart, lost spans and an XID at
once), ~45 s of traffic; the Prometheus has no namespace or node target labels, so the variables' All value must
match series without them.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx
import pytest

from exporter.dashboards.generate import specs
from exporter.dashboards.preview import concrete, draw, evaluate
from exporter.metrics import catalog
from exporter.sim.promstack import PROMETHEUS, find_binary
from tests.support.showcase import XID, XID_GPU, showcase

RUN_S = 45.0
RATE = "20s"

pytestmark = pytest.mark.skipif(find_binary(PROMETHEUS) is None, reason="prometheus is not on the PATH")


def _instant(base: str, expr: str) -> list[dict[str, object]]:
    body = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def test_every_panel_query_returns_series_and_the_preview_draws_them(tmp_path: Path) -> None:
    empty: list[str] = []
    pngs: list[Path] = []
    xids: list[dict[str, object]] = []

    async def main() -> None:
        with tempfile.TemporaryDirectory() as work:
            async with showcase(Path(work)) as run:
                await asyncio.sleep(RUN_S)
                base = run.prometheus
                for spec in specs():
                    results = await asyncio.to_thread(evaluate, base, spec, RUN_S, RATE)
                    for panel, per_query in zip(spec.panels, results, strict=True):
                        for query, series in zip(panel.queries, per_query, strict=True):
                            if not series and not panel.fleet_only:  # test_fleet.py checks those
                                empty.append(f"{spec.uid} / {panel.title}: {query.expr}")
                    pngs.append(await asyncio.to_thread(draw, spec, results, tmp_path / f"{spec.uid}.png"))
                # The scenario-only signals are really there, not just the panels' `or vector(0)` fallbacks.
                signals = {
                    "XID": f'{catalog.GPU_XID_ERRORS.name}{{xid="{XID}"}}',
                    "preemptions": f"{catalog.ENGINE_PREEMPTIONS.name} > 0",
                    "power cap": f'{catalog.GPU_CLOCK_EVENT_REASON.name}{{reason="sw_power_cap"}} == 1',
                    "throttled TTFT": f'{catalog.TTFT.name}_count{{throttled="true"}} > 0',
                    "restart": f"{catalog.ENGINE_TIME_TO_READY.name}",
                    "unattributed": f"{catalog.UNATTRIBUTED_SECONDS.name} > 0",
                }
                missing = [k for k, e in signals.items() if not await asyncio.to_thread(_instant, base, e)]
                assert not missing, f"scenario signals absent: {missing}"
                # The XID panel counts the one XID over a range that holds it: its counter appears already at 1,
                # which increase() alone never counts.
                panel = next(p for s in specs() for p in s.panels if p.title == "XID errors over the range")
                xids.extend(await asyncio.to_thread(_instant, base, concrete(panel.queries[0].expr, RATE, "10m")))

    asyncio.run(main())
    assert not empty, "panels with an empty query:\n" + "\n".join(empty)
    assert [(s["metric"], s["value"][1]) for s in xids] == [({"index": str(XID_GPU), "xid": str(XID)}, "1")], xids  # type: ignore[index]
    assert len(pngs) == len(specs())
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 40_000, f"{png.name}: {len(data)} bytes"
