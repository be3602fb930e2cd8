"""Attribution through the running exporter: fake NVML (the hardware edge), a vLLM /metrics whose counters follow
one request, its span over OTLP/HTTP; the request is charged its GPU time, the rest is idle, nothing is lost."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from exporter.gpu.fake_nvml import FakeNvml
from exporter.metrics import catalog
from exporter.service.settings import load_settings
from tests.support.inproc import InProcessExporter
from tests.support.otlp import fresh, request_of, sample_request_spans, with_attribute
from tests.support.otlp_capture import CapturingBackend, attributes
from tests.support.procs import free_port, wait_for
from tests.support.prom import by_label, total

POWER_W = 250.0
MEMORY_BUSY_PCT = 37
PROMPT, OUTPUT = 400, 41
PREFILL_S, DECODE_S = 0.5, 4.0


class Timeline:
    """One request at a known time; vLLM's counters grow with it, uniformly over its prefill and decode."""

    def __init__(self, start: float) -> None:
        self.prefill_start = start
        self.first_token = start + PREFILL_S
        self.end = self.first_token + DECODE_S

    def counters(self, now: float) -> tuple[float, float]:
        prompt = PROMPT * min(1.0, max(0.0, (now - self.prefill_start) / PREFILL_S))
        output = OUTPUT * min(1.0, max(0.0, (now - self.first_token) / DECODE_S))
        return prompt, output


def vllm_metrics(timeline: Timeline, started: float) -> str:
    prompt, output = timeline.counters(time.time())
    return (
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {1 if prompt > 0 and output < OUTPUT else 0}\n'
        f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}\n'
        f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {output}\n'
        f"process_start_time_seconds {started}\n"
    )


def test_a_request_is_charged_its_gpu_time_and_the_rest_is_idle() -> None:
    timeline = Timeline(time.time() + 3.0)
    started = time.time() - 100

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = vllm_metrics(timeline, started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    vllm = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=vllm.serve_forever, daemon=True).start()
    nvml = FakeNvml.with_gpus(2)
    for gpu in nvml.gpus:
        gpu.power_w = POWER_W
        gpu.memory_used = 7 << 30
        gpu.memory_util_pct = MEMORY_BUSY_PCT
    stop = threading.Event()

    def advance() -> None:  # the fake GPU's energy counter runs on the wall clock
        last = time.time()
        while not stop.wait(0.05):
            now = time.time()
            nvml.advance(now - last)
            last = now

    threading.Thread(target=advance, daemon=True).start()
    web = free_port()
    http = free_port()
    backend = CapturingBackend()
    settings = load_settings(
        {
            "web_listen_address": f"127.0.0.1:{web}",
            "otlp_http_listen_address": f"127.0.0.1:{http}",
            "otlp_grpc_listen_address": "",
            "instances": json.dumps([{"url": f"http://127.0.0.1:{vllm.server_port}", "gpus": ["0"], "name": "v0"}]),
            "model_map": "vllm-tiny=m",
            "engine_scrape_interval_seconds": "1",
            "gpu_sample_interval_seconds": "0.25",
            "gpu_price_per_hour": "H100=3.6",
            "tenant_join_window_seconds": "0",
            "forward_traces_endpoint": backend.endpoint,
        }
    )
    try:
        with InProcessExporter(settings, nvml=nvml):
            wait_for(lambda: time.time() > timeline.end + 0.2, 15, "the request to finish")
            rng = random.Random(5)
            template = with_attribute(sample_request_spans()[0], "tenant.id", "acme")
            span = fresh(template, rng)
            arrival = timeline.prefill_start - 0.01
            span.start_time_unix_nano = int(arrival * 1e9)
            span.end_time_unix_nano = int(timeline.end * 1e9)
            for key, value in (
                ("gen_ai.latency.time_to_first_token", timeline.first_token - arrival),
                ("gen_ai.latency.time_in_queue", 0.01),
                ("gen_ai.latency.time_in_model_prefill", PREFILL_S),
                ("gen_ai.latency.time_in_model_decode", DECODE_S),
                ("gen_ai.latency.e2e", timeline.end - arrival),
                ("gen_ai.usage.prompt_tokens", PROMPT),
                ("gen_ai.usage.completion_tokens", OUTPUT),
            ):
                span = with_attribute(span, key, value)
            r = httpx.post(
                f"http://127.0.0.1:{http}/v1/traces",
                content=request_of([span]).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert r.status_code == 200
            scrape = f"http://127.0.0.1:{web}/metrics"
            wait_for(
                lambda: total(httpx.get(scrape).text, catalog.ATTRIBUTION_SPANS.name, {"outcome": "charged"}) == 1,
                15,
                "the request to be charged",
                interval=0.25,
            )
            time.sleep(1.5)  # one more tick: GPU 1 (unassigned) idle
            text = httpx.get(scrape).text
            wait_for(lambda: len(backend.spans()) == 1, 10, "the enriched span at the backend")
    finally:
        stop.set()
        vllm.shutdown()
        backend.stop()
    where = {"model": "m", "tenant": "acme"}
    joules = total(text, catalog.ENERGY.name, where)
    seconds = total(text, catalog.GPU_SECONDS.name, where)
    # Charged whole scrape intervals that held its work: at least its own 4.5 s, at most that + two intervals.
    assert PREFILL_S + DECODE_S - 0.01 <= seconds <= PREFILL_S + DECODE_S + 2.2
    assert joules == pytest.approx(POWER_W * seconds, rel=0.1)
    assert total(text, catalog.COST.name, where) == pytest.approx(seconds * 3.6 / 3600, rel=1e-6)
    phases = by_label(text, catalog.ENERGY_BY_PHASE.name, "phase", {"model": "m"})  # its only request
    assert phases["prefill"] > 0 and phases["decode"] > phases["prefill"]
    gpu0 = nvml.gpus[0].uuid
    assert total(text, catalog.IDLE_ENERGY.name, {"gpu": gpu0}) > 0  # before and after the request
    assert total(text, catalog.IDLE_ENERGY.name, {"gpu": nvml.gpus[1].uuid}) > 0  # no instance uses GPU 1
    assert total(text, catalog.UNATTRIBUTED_ENERGY.name) == 0
    assert total(text, catalog.KV_TOKEN_SECONDS.name, where) == pytest.approx(
        PROMPT * PREFILL_S / 2 + (PROMPT + OUTPUT / 2) * DECODE_S, rel=1e-6
    )
    assert total(text, catalog.TTFT.name + "_count", {"model": "m", "throttled": "false"}) == 1  # per model
    [(_, forwarded)] = backend.spans()
    enriched = attributes(forwarded)
    assert forwarded.trace_id == span.trace_id and forwarded.span_id == span.span_id
    assert enriched["llm.energy.joules"] == pytest.approx(joules)
    assert enriched["llm.gpu.seconds"] == pytest.approx(seconds)
    assert enriched["llm.cost.usd"] == pytest.approx(total(text, catalog.COST.name, where))
    assert enriched["llm.gpu.uuids"] == [gpu0] and enriched["llm.gpu.throttled"] == "false"
    assert enriched["llm.instance"] == "v0" and enriched["llm.tenant"] == "acme"
    assert enriched["llm.gpu.memory_used_peak_bytes"] == nvml.gpus[0].memory_used
    assert enriched["llm.gpu.memory_busy_ratio_mean"] == pytest.approx(MEMORY_BUSY_PCT / 100)
