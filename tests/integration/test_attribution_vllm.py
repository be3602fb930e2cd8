"""Attribution with a real vLLM server and a fake NVML whose power follows the server's real load.

The exporter runs in this process (the fake NVML is the hardware edge) and finds vLLM through /proc (processes
topology), the fake GPU listing vLLM's PID as its compute process. Two tenants send work of known sizes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from exporter.attribution.attributor import Amount
from exporter.gpu.fake_nvml import FakeNvml
from exporter.metrics import catalog
from exporter.service.settings import load_settings
from tests.support.inproc import InProcessExporter
from tests.support.procs import free_port, wait_for
from tests.support.prom import by_label, total
from tests.support.vllm import workload
from tests.support.vllm.server import SERVED_NAME, VllmServer

pytestmark = pytest.mark.vllm  # a real vLLM server (CPU build)

IDLE_W, PER_REQUEST_W = 80.0, 60.0


class LiveNvml(FakeNvml):
    """The fake NVML on the wall clock: its energy counter is brought up to date whenever it is read, so every
    reading is exact for the moment it is taken; a log of (time, joules) is the truth to compare with."""

    def __init__(self) -> None:
        fake = FakeNvml.with_gpus(1)
        super().__init__(fake.gpus)
        self.lock = threading.Lock()
        self.last = time.time()
        self.log: list[tuple[float, float]] = [(self.last, 0.0)]

    def sync(self) -> None:
        """Integrate power up to now."""
        with self.lock:
            now = time.time()
            self.advance(now - self.last)
            self.last = now
            self.log.append((now, self.gpus[0].energy_mj / 1000.0))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        self.sync()
        return super().nvmlDeviceGetTotalEnergyConsumption(handle)

    def energy_between(self, start: float, end: float) -> float:
        """True energy between two times (power is constant between log points)."""

        def at(t: float) -> float:
            for (t0, e0), (t1, e1) in zip(self.log, self.log[1:], strict=False):
                if t0 <= t <= t1:
                    return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e0
            raise ValueError(f"{t} outside the log")

        return at(end) - at(start)


class PowerModel:
    """Sets the fake GPU's power from vLLM's running requests: idle power plus a share per running request."""

    def __init__(self, nvml: LiveNvml, metrics_url: str) -> None:
        self.nvml, self.metrics_url = nvml, metrics_url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self.stop.is_set():
                try:
                    running = total(client.get(self.metrics_url, timeout=1).text, "vllm:num_requests_running")
                except httpx.HTTPError:
                    running = 0.0
                self.nvml.sync()  # close the old power's stretch before changing it
                with self.nvml.lock:
                    self.nvml.gpus[0].power_w = IDLE_W + PER_REQUEST_W * running
                self.stop.wait(0.05)


@dataclass
class Run:
    """The outcome of the workload."""

    text: str
    exporter: InProcessExporter
    nvml: LiveNvml
    gpu: str
    work_by_tenant: dict[str, float]
    sequences: int


def _tenant_calls(tenant: str, scale: int) -> list[workload.Call]:
    return [
        workload.Call(
            f"{tenant}-{i}",
            "/v1/completions",
            {
                "model": SERVED_NAME,
                "prompt": workload.MEDIUM[: 200 * scale],
                "max_tokens": 24 * scale,
                "ignore_eos": True,
                "stream": False,
            },
            tenant,
        )
        for i in range(6)
    ]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    nvml = LiveNvml()
    nvml.gpus[0].power_w = IDLE_W
    web, http_port, vllm_port = free_port(), free_port(), free_port()
    settings = load_settings(
        {
            "web_listen_address": f"127.0.0.1:{web}",
            "otlp_http_listen_address": f"127.0.0.1:{http_port}",
            "otlp_grpc_listen_address": "",
            "topology_mode": "processes",
            "engine_scrape_interval_seconds": "1",
            "gpu_sample_interval_seconds": "0.25",
            # The counter every pass: this run checks the accounting against the true energy to 0.1 %, which the
            # interpolation between reads (tests/unit/attribution/test_energy.py, on a real H200 trace) is
            # not meant to reach at a 0.25 s sampling interval, a quarter of NVML's 1 s power average.
            "gpu_energy_every_passes": "1",
            "gpu_retention_seconds": "300",
            "tenant_join_window_seconds": "20",
        }
    )
    with InProcessExporter(settings, nvml=nvml) as exporter:
        server = VllmServer("http", f"http://127.0.0.1:{http_port}/v1/traces", port=vllm_port)
        power = PowerModel(nvml, f"{server.base_url}/metrics")
        try:
            nvml.gpus[0].processes = [(server.proc.pid, 2 << 30)]
            instance = f"127.0.0.1:{vllm_port}"
            scrape = f"http://127.0.0.1:{web}/metrics"
            wait_for(
                # This server only (the /proc topology also finds any other vLLM on the host), up, and with its
                # GPU known: requests charged before that would be counted no_gpus.
                lambda: (
                    total(
                        httpx.get(scrape).text,
                        catalog.INSTANCE_INFO.name,
                        {"vllm_instance": instance, "gpus": nvml.gpus[0].uuid},
                    )
                    == 1
                    and total(httpx.get(scrape).text, catalog.ENGINE_UP.name, {"vllm_instance": instance}) == 1
                ),
                30,
                "the exporter to find vLLM through NVML and /proc",
                interval=0.5,
            )
            time.sleep(2)
            calls = [c for pair in zip(_tenant_calls("small", 1), _tenant_calls("big", 3), strict=True) for c in pair]
            gateway = workload.Gateway(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces"))
            work: Counter[str] = Counter()
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                from concurrent.futures import ThreadPoolExecutor

                def send(call: workload.Call) -> None:
                    with gateway.request(call.tenant) as headers:
                        usage = (
                            client.post(call.path, json=call.body, headers=headers).raise_for_status().json()["usage"]
                        )
                    work[call.tenant or ""] += usage["prompt_tokens"] + usage["completion_tokens"]

                with ThreadPoolExecutor(2) as pool:
                    list(pool.map(send, calls))
            gateway.shutdown()
            outcome = catalog.ATTRIBUTION_SPANS.name
            try:
                wait_for(
                    lambda: total(httpx.get(scrape).text, outcome, {"outcome": "charged"}) >= len(calls),
                    30,
                    "every request to be charged",
                    interval=0.5,
                )
            except TimeoutError as exc:
                text = httpx.get(scrape).text
                raise AssertionError(
                    f"{exc}: outcomes {by_label(text, outcome, 'outcome')}, "
                    f"requests by model {by_label(text, catalog.REQUESTS.name, 'model')}"
                ) from None
            # The last request's intervals close just after its power step down; two more seconds of idle put the
            # newest interval's end where power has been flat for several reads, as the first one's is (the
            # exporter idled before the workload), so the energy over the ring is compared between two flat edges.
            # (At an edge inside a power step, interpolating between reads 0.25 s apart is off by up to the
            # step x 0.125 s: 8 J, 1 % of this run, which the test is not about.)
            time.sleep(2.0)
            yield Run(httpx.get(scrape).text, exporter, nvml, nvml.gpus[0].uuid, dict(work), len(calls))
        finally:
            power.stop.set()
            server.stop()


def test_every_request_is_charged_to_its_tenant(run: Run) -> None:
    outcomes = by_label(run.text, catalog.ATTRIBUTION_SPANS.name, "outcome")
    assert outcomes == {"charged": run.sequences}
    tenants = by_label(run.text, catalog.ENERGY.name, "tenant", {"model": SERVED_NAME})
    assert set(tenants) == {"small", "big"} and all(v > 0 for v in tenants.values())


def test_conservation_against_the_gpus_true_energy(run: Run) -> None:
    stage = run.exporter.exporter.attribution
    with run.exporter.exporter.pipeline.lock:
        a = stage.attributor
        measured = a.measured[run.gpu]
        parts = Amount()
        parts.add(a.attributed_by_gpu[run.gpu])
        parts.add(a.idle.get(run.gpu, Amount()))
        for (gpu, _), amount in a.unattributed.items():
            if gpu == run.gpu:
                parts.add(amount)
        parts.add(a.pending_amount(run.gpu))
        [ring] = [r for r in a.intervals.values() if r]
        in_intervals = sum(i.per_gpu[run.gpu].joules for i in ring)
        first, last = ring[0].start, ring[-1].end
    # Every joule measured is attributed, idle, unattributed or still pending: exactly.
    assert parts.joules == pytest.approx(measured.joules, rel=1e-9)
    # What the exporter measured over its intervals (contiguous, none expired yet) against the GPU's true energy.
    assert in_intervals == pytest.approx(run.nvml.energy_between(first, last), rel=1e-3)
    assert last - first > 3  # several intervals, spanning the whole workload


def test_tenant_split_follows_the_token_work_sent(run: Run) -> None:
    energy = by_label(run.text, catalog.ENERGY.name, "tenant", {"model": SERVED_NAME})
    share = energy["big"] / (energy["big"] + energy["small"])
    work_share = run.work_by_tenant["big"] / (run.work_by_tenant["big"] + run.work_by_tenant["small"])
    assert share == pytest.approx(work_share, abs=0.1)
