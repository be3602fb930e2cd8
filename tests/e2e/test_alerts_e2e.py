"""End to end: a latency regression pages through real Prometheus and Alertmanager, and its ticket is inhibited.

A simulated node (one 8B model, four replicas on four GPUs) runs `latency_regression` for REGRESSION_S seconds
after HEALTHY_S healthy ones; an in-process exporter turns its spans into TTFT histograms; Prometheus 2.42 scrapes
it every second and evaluates the generated TTFT SLO rules, time-compressed x150 (the 30d period becomes 4h48m,
1h 24 s, 5m 2 s; the factors stay 14.4, 6, 3, 1); Alertmanager 0.25 runs the generated routing and inhibition and
posts to webhook receivers in this test. Everything listens on 127.0.0.1.

Timeline (seconds after the node starts, as measured on 2 cores; the whole test takes about 180 s):
  0 .. 15   healthy: TTFT about 0.05 s, nothing fires.
  15 .. 30  prefill 30x slower: every TTFT over 1 s. At ~20 both pages (1h/5m, 6h/30m) and both tickets (1d/2h,
            3d/6h) fire; the page reaches the pager, the tickets are muted by it. The 1h/5m page may flap (its 5m
            window is 2 s and may hold no finished request); the 6h/30m one holds.
  ~45       the 6h/30m page resolves (its 30m window is 12 s): the pager gets a resolved notification; only now,
            unmuted, the tickets reach the ticket queue. ~80 the 1d/2h ticket resolves (2h: 48 s).
  ~177      the 3d/6h ticket resolves once the regression has left its 6h window (144 s): nothing fires.

With a fresh Prometheus the long windows hold only the test's own history, so the tickets' low thresholds (1 %
over 3d) are crossed as soon as the page's (14.4 % over 1h), here in the same evaluation; in production, with
30 days of history, the page comes well first (after 8.6 min of a total burn against 43 min). The ticket route's
group_wait is raised to TICKET_WAIT_S to stand in for that order: the page reaches Alertmanager while the ticket
group waits, so the inhibition, not a race, decides whether the ticket is sent.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from aiohttp import web

from exporter.alerts.generate import generate
from exporter.alerts.spec import parse_spec
from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from exporter.sim.node import NodeOptions, SimNode
from exporter.sim.promstack import ALERTMANAGER, PROMETHEUS, find_binary
from exporter.sim.scenarios import scenario
from exporter.sim.spec import LLAMA_8B, NodeSpec
from exporter.sim.workload import LengthDist, Tenant
from tests.support.procs import free_port, wait_for_async

T = TypeVar("T")
Note = tuple[float, dict[str, Any]]  # (arrival unix time, webhook body)

SCALE = 150.0  # the most the spec allows: the 5m window becomes 2 s, two 1 s scrapes
HEALTHY_S, REGRESSION_S = 15.0, 15.0
# The exporter sees a request's TTFT when its span ends, so requests are short (1000-token prompts, 2-token
# answers) and the bad TTFTs arrive while the regression runs. Such a prefill takes 0.04 s, 1.2 s at x30; 2.5
# requests/s over 4 replicas keep the engines 75 % busy, so the queue stays short and drains at once.
FACTOR, REPLICAS = 30.0, 4
TENANT = Tenant("e2e", {LLAMA_8B.name: 2.5}, LengthDist(1000, 0.05, 900, 1100), LengthDist(2, 0.1, 1, 3), 4)
TICKET_WAIT_S = 10  # see the module docstring
SIX_HOURS_S = 6 * 3600 / SCALE  # the 3d/6h ticket's short window: it resolves about this long after the burn
SPEC = {
    "period": "30d",
    "time_scale": SCALE,
    "slos": [
        {
            "name": "ttft",
            "sli": "latency",
            "metric": "time_to_first_token",
            "threshold_seconds": 1.0,
            "objective": 0.99,
            "group_by": ["model"],
            "min_request_rate": 0.05,
        }
    ],
}


@dataclass
class Webhook:
    """Alertmanager's webhook receivers: every POST to /<receiver> as (receiver, arrival unix time, JSON body)."""

    port: int = 0
    got: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    t0: float = field(default_factory=time.time)  # the summary's zero: set when the node starts

    async def start(self, stack: AsyncExitStack) -> None:
        """Listen on a free port of 127.0.0.1 until `stack` closes."""

        async def receive(request: web.Request) -> web.Response:
            self.got.append((request.match_info["receiver"], time.time(), await request.json()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{receiver}", receive)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = int(runner.addresses[0][1])

    def url(self, receiver: str) -> str:
        """Where Alertmanager posts for `receiver`."""
        return f"http://127.0.0.1:{self.port}/{receiver}"

    def notes(self, receiver: str, status: str | None = None) -> list[Note]:
        """`receiver`'s notifications about the TTFT SLO (of `status`: firing, resolved), oldest first."""
        return [
            (at, body)
            for name, at, body in self.got
            if name == receiver and body["commonLabels"].get("slo") == "ttft" and status in (None, body["status"])
        ]

    def summary(self) -> str:
        """One line per notification (seconds after t0, receiver, status, alerts), for failure messages."""
        return "\n".join(
            f"  {at - self.t0:6.1f} s {name} {body['status']}: "
            + ", ".join(f"{a['labels']['alertname']} {a['status']}" for a in body["alerts"])
            for name, at, body in self.got
        )


def _binary(names: tuple[str, ...]) -> str:
    path = find_binary(names)
    assert path, f"{names[0]} is not installed: run scripts/install-system-deps (Debian: prometheus-alertmanager)"
    return path


async def _spawn(stack: AsyncExitStack, args: list[str], ready_url: str, log: Path) -> None:
    """Start a child that `stack` stops (SIGTERM, then SIGKILL) and wait until `ready_url` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(_stop, proc)
    async with httpx.AsyncClient(timeout=1.0) as client:

        async def ready() -> bool:
            assert proc.poll() is None, f"{args[0]} exited:\n{log.read_text(errors='replace')[-2000:]}"
            with suppress(httpx.HTTPError):
                return (await client.get(ready_url)).status_code == 200
            return False

        try:
            await wait_for_async(ready, 30, ready_url, interval=0.2)
        except TimeoutError:
            output = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{args[0]} not ready after 30 s:\n{output}") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_files(tmp: Path, hook: Webhook) -> Path:
    """Generate the compressed files into `tmp`, raise the ticket route's group_wait; returns the TTFT rule file."""
    spec = parse_spec({**SPEC, "routing": {"pager_url": hook.url("pager"), "ticket_url": hook.url("ticket")}})
    for rel, text in generate(spec, "e2e.yaml").items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    config = yaml.safe_load((tmp / "alertmanager.yaml").read_text())
    for route in config["route"]["routes"]:
        if route["receiver"] == "ticket":
            route["group_wait"] = f"{TICKET_WAIT_S}s"
    (tmp / "alertmanager.yaml").write_text(yaml.safe_dump(config))
    return tmp / "rules" / "slo-ttft.rules.yaml"


async def _start_stack(stack: AsyncExitStack, tmp: Path, hook: Webhook, exporter_port: int) -> tuple[str, str]:
    """Alertmanager, then Prometheus scraping the exporter every second; returns their base URLs."""
    prom_port, am_port = free_port(), free_port()
    rules = _write_files(tmp, hook)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "llm-token-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
        ],
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    am, prom = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    am_args = [
        _binary(ALERTMANAGER),
        f"--config.file={tmp / 'alertmanager.yaml'}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",  # no HA gossip (it would bind 0.0.0.0:9094)
    ]
    await _spawn(stack, am_args, f"{am}/-/ready", tmp / "alertmanager.log")
    prom_args = [
        _binary(PROMETHEUS),
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--rules.alert.resend-delay=2s",
    ]
    await _spawn(stack, prom_args, f"{prom}/-/ready", tmp / "prometheus.log")
    return prom, am


async def _start_node(stack: AsyncExitStack, exporter_port: int) -> None:
    """The simulated node under the regression and the exporter watching it, stopped by `stack`."""
    grpc_port, http_port = free_port(), free_port()
    spec = NodeSpec(models=(replace(LLAMA_8B, replicas=REPLICAS),), gpus=REPLICAS, tenants=(TENANT,))
    regression = scenario("latency_regression", at=HEALTHY_S, factor=FACTOR, length=REGRESSION_S)
    node = SimNode(spec, regression, NodeOptions(otlp_endpoint=f"127.0.0.1:{grpc_port}", export_delay_s=0.5))
    started: list[Exporter] = []

    async def stop_exporter() -> None:
        for exporter in started:
            await exporter.stop()

    stack.push_async_callback(stop_exporter)
    stack.push_async_callback(node.stop)  # first (last in, first out): it sends what it holds to the exporter
    await node.serve_metrics()
    settings = load_settings(
        {
            "web_listen_address": f"127.0.0.1:{exporter_port}",
            "otlp_grpc_listen_address": f"127.0.0.1:{grpc_port}",
            "otlp_http_listen_address": f"127.0.0.1:{http_port}",
            "instances": node.instance_configs(),
            "engine_scrape_interval_seconds": 0.5,
            "gpu_sample_interval_seconds": 0.5,
        }
    )
    exporter = Exporter(settings, nvml=node.nvml)
    started.append(exporter)
    await exporter.start()
    await node.start()


async def _until(what: str, deadline: float, check: Callable[[], Awaitable[T]], hook: Webhook) -> T:
    """Await `check()` every 0.5 s until it is truthy; fail naming `what` (and what arrived) after `deadline`."""
    try:
        return await wait_for_async(check, deadline - time.monotonic(), what, interval=0.5)
    except TimeoutError:
        raise AssertionError(f"not seen in time: {what}; notifications:\n{hook.summary()}") from None


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_a_latency_regression_pages_inhibits_its_ticket_and_both_resolve(tmp_path: Path) -> None:
    async def main() -> None:
        hook, exporter_port = Webhook(), free_port()
        async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=5.0) as client:
            await hook.start(stack)
            prom, am = await _start_stack(stack, tmp_path, hook, exporter_port)
            await _start_node(stack, exporter_port)
            hook.t0 = time.time()
            await _expect(client, prom, am, hook, started=time.monotonic())
            print(f"notifications:\n{hook.summary()}")  # the timeline, with -s

    asyncio.run(main())


async def _expect(client: httpx.AsyncClient, prom: str, am: str, hook: Webhook, started: float) -> None:
    end = started + HEALTHY_S + REGRESSION_S

    async def firing_in_prometheus() -> list[dict[str, Any]]:
        body = (await client.get(f"{prom}/api/v1/alerts")).json()
        return [a for a in body["data"]["alerts"] if a["labels"].get("slo") == "ttft"]

    async def counted() -> bool:
        query = {"query": 'slo:sli_requests:rate1h{slo="ttft"} > 0'}
        return bool((await client.get(f"{prom}/api/v1/query", params=query)).json()["data"]["result"])

    async def inhibited_tickets() -> list[dict[str, Any]]:
        alerts = (await client.get(f"{am}/api/v2/alerts", params={"filter": 'slo="ttft"'})).json()
        pages = {a["fingerprint"] for a in alerts if a["labels"]["severity"] == "page"}
        return [
            a
            for a in alerts
            if a["labels"]["severity"] == "ticket"
            and a["labels"]["model"] == LLAMA_8B.name
            and a["status"]["state"] == "suppressed"
            and set(a["status"]["inhibitedBy"]) & pages
        ]

    async def quiet() -> bool:
        return not await firing_in_prometheus()

    async def notes(receiver: str, status: str) -> list[Note]:
        return hook.notes(receiver, status)

    # Healthy: the recording rules count requests and nothing fires.
    await _until("TTFT requests in the recording rules", started + HEALTHY_S - 2, counted, hook)
    await asyncio.sleep(max(0.0, started + HEALTHY_S - 1 - time.monotonic()))
    assert await firing_in_prometheus() == [], "a TTFT alert while healthy"

    # The regression pages the pager; the ticket of the same SLO and model fires too and is held back by the page.
    page = (await _until("the TTFT page at the pager", end, lambda: notes("pager", "firing"), hook))[0][1]
    assert {a["labels"]["severity"] for a in page["alerts"]} == {"page"}
    assert page["commonLabels"]["model"] == LLAMA_8B.name
    tickets = await _until("a TTFT ticket inhibited by the page in Alertmanager", end, inhibited_tickets, hook)
    assert {t["labels"]["alertname"] for t in tickets} <= {"LLMTtftBudgetBurn1d", "LLMTtftBudgetBurn3d"}

    # The regression ends: the page resolves at the pager, and then nothing fires in Prometheus.
    resolved = await _until("the page resolved at the pager", end + 40, lambda: notes("pager", "resolved"), hook)
    page_start = min(_unix(a["startsAt"]) for a in page["alerts"])
    page_end = max(_unix(a["endsAt"]) for a in resolved[0][1]["alerts"])
    await _until("no TTFT alert in Prometheus", end + SIX_HOURS_S + 30, quiet, hook)
    await _until(
        "the tickets resolved at the ticket queue", time.monotonic() + 15, lambda: notes("ticket", "resolved"), hook
    )

    # The tickets reached the ticket queue only once the page had resolved: never while it fired.
    sent = [at for at, _ in hook.notes("ticket", "firing")]
    assert sent, "the tickets were never sent, even after the page resolved"
    assert all(at > page_end for at in sent), (
        f"a ticket was sent while the page fired ({page_start:.1f} .. {page_end:.1f}):\n{hook.summary()}"
    )
