"""A real prefill/decode pair (two vLLM CPU servers sharing KV through vLLM's ExampleConnector): each request is
counted once per tenant, with the tokens the client received and the TTFT the user saw.

The client plays the proxy as llm-d's does: the prompt goes to the prefill server with max_tokens=1 and
`kv_transfer_params: {do_remote_decode: true}`, then to the decode server (streaming) with the KV parameters the
prefill answered, both under one gateway span naming the tenant (one trace, one caller). The exporter forwards
every span it charged to a capturing trace backend, which gives the truth of both halves' timings.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from exporter.metrics import catalog
from tests.support.otlp_capture import CapturingBackend
from tests.support.procs import ExporterProcess, free_port, wait_for
from tests.support.prom import by_label, total
from tests.support.vllm.server import SERVED_NAME, VllmServer
from tests.support.vllm.workload import Gateway

pytestmark = pytest.mark.vllm  # two real vLLM servers (CPU build)
TENANTS = ("acme", "globex")
REQUESTS = 6
OUTPUT_TOKENS = 16


@dataclass
class Sent:
    """What the client saw of one request."""

    tenant: str
    prompt_tokens: int
    completion_tokens: int
    first_byte_s: float  # from sending the prefill request to the decode answer's first streamed token


@dataclass
class PdRun:
    """The pair, the exporter, what was sent, and what the exporter and the trace backend ended with."""

    sent: list[Sent]
    text: str
    spans: list[tuple[dict[str, str], Any]]


def kv_config(role: str, directory: str) -> str:
    """--kv-transfer-config of one side (vLLM's ExampleConnector: KV shared through a directory)."""
    return json.dumps(
        {
            "kv_connector": "ExampleConnector",
            "kv_role": role,
            "kv_connector_extra_config": {"shared_storage_path": directory},
        }
    )


def send(prefill: str, decode: str, gateway: Gateway, tenant: str, i: int) -> Sent:
    """One request through both servers, under a gateway span for `tenant`."""
    prompt = f"def f{i}(x):\n    return x * {i}\n" * (8 + 4 * i)
    with httpx.Client(timeout=120) as client, gateway.request(tenant) as headers:
        started = time.perf_counter()
        body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                "kv_transfer_params": {"do_remote_decode": True}}  # fmt: skip
        first = client.post(f"{prefill}/v1/completions", json=body, headers=headers)
        first.raise_for_status()
        body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": OUTPUT_TOKENS, "temperature": 0,
                "ignore_eos": True, "kv_transfer_params": first.json().get("kv_transfer_params"),
                "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
        first_byte = None
        usage: dict[str, int] = {}
        with client.stream("POST", f"{decode}/v1/completions", json=body, headers=headers) as answer:
            answer.raise_for_status()
            for line in answer.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first_byte is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                    first_byte = time.perf_counter() - started
                usage = chunk.get("usage") or usage
    assert first_byte is not None and usage
    return Sent(tenant, usage["prompt_tokens"], usage["completion_tokens"], first_byte)


@pytest.fixture(scope="module")
def run() -> Iterator[PdRun]:
    """The pair and the exporter up, the requests sent, everything counted."""
    backend = CapturingBackend()
    prefill_port, decode_port = free_port(), free_port()
    instances = [
        {"url": f"http://127.0.0.1:{prefill_port}", "name": "tiny-prefill", "model": SERVED_NAME, "role": "prefill"},
        {"url": f"http://127.0.0.1:{decode_port}", "name": "tiny-decode", "model": SERVED_NAME, "role": "decode"},
    ]
    settings = {
        "instances": json.dumps(instances),
        "gpu_enabled": "false",
        "tenant_join_window_seconds": "20",
        "pd_join_window_seconds": "30",
        "engine_scrape_interval_seconds": "1",
        "forward_traces_endpoint": f"http://127.0.0.1:{backend.port}",
    }
    with tempfile.TemporaryDirectory(prefix="kv-") as kv_dir, ExporterProcess(settings=settings) as exporter:
        servers = []
        try:
            for port, role, kv_role in (
                (prefill_port, "prefill", "kv_producer"),
                (decode_port, "decode", "kv_consumer"),
            ):
                env = {"OTEL_SERVICE_NAME": f"tiny-{role}", "OTEL_RESOURCE_ATTRIBUTES": f"llm.role={role}"}
                args = ["--kv-transfer-config", kv_config(kv_role, kv_dir)]
                servers.append(VllmServer("http", exporter.otlp_http_url, port=port, extra_args=args, env=env))
            gateway = Gateway(OTLPSpanExporter(endpoint=exporter.otlp_http_url))
            prefill, decode = (s.base_url for s in servers)
            sent = [send(prefill, decode, gateway, TENANTS[i % len(TENANTS)], i) for i in range(REQUESTS)]
            gateway.shutdown()
            wait_for(lambda: total(exporter.scrape(), catalog.REQUESTS.name) >= REQUESTS, 60, "every request counted")
            wait_for(lambda: len(backend.spans()) >= 2 * REQUESTS, 30, "both halves of every request forwarded")
            time.sleep(1.0)  # a second half would be counted by now: the test checks none is
            yield PdRun(sent, exporter.scrape(), backend.spans())
        finally:
            for server in servers:
                server.stop()
            backend.stop()


def attributes(span: Any) -> dict[str, Any]:
    """A forwarded span's attributes by key (numbers as numbers)."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def truth(run: PdRun) -> dict[bytes, float]:
    """The user-visible TTFT of each request from its two forwarded halves: decode start + decode TTFT - prefill
    start."""
    halves: dict[bytes, dict[str, Any]] = {}
    for _, span in run.spans:
        role = "prefill" if attributes(span)["llm.instance"] == "tiny-prefill" else "decode"
        halves.setdefault(span.trace_id, {})[role] = span
    out = {}
    for trace, pair in halves.items():
        decode_ttft = attributes(pair["decode"])["gen_ai.latency.time_to_first_token"]
        out[trace] = (pair["decode"].start_time_unix_nano - pair["prefill"].start_time_unix_nano) / 1e9 + decode_ttft
    return out


def test_each_request_is_counted_once_per_tenant_with_the_tokens_the_client_received(run: PdRun) -> None:
    assert by_label(run.text, catalog.REQUESTS.name, "tenant") == {
        t: float(n) for t, n in Counter(s.tenant for s in run.sent).items()
    }
    assert total(run.text, catalog.TOKENS.name, {"type": "input"}) == sum(s.prompt_tokens for s in run.sent)
    assert total(run.text, catalog.TOKENS.name, {"type": "output"}) == sum(s.completion_tokens for s in run.sent)
    assert sum(s.completion_tokens for s in run.sent) == REQUESTS * OUTPUT_TOKENS  # the decode side's, not 1 + 16
    for side in ("prefill", "decode"):
        joined = total(run.text, catalog.PD_HALVES.name, {"side": side, "outcome": "joined"})
        assert joined == REQUESTS, side
    assert total(run.text, catalog.PD_DECODE_TTFT.name + "_count") == 0


def test_ttft_is_what_the_user_saw_from_the_prefill_start_to_the_decode_first_token(run: PdRun) -> None:
    expected = truth(run)
    assert len(expected) == REQUESTS
    assert total(run.text, catalog.TTFT.name + "_count") == REQUESTS
    assert total(run.text, catalog.TTFT.name + "_sum") == pytest.approx(sum(expected.values()), rel=0.01)
    # The client's own clock agrees within a few ms (it starts before vLLM's arrival time and reads the first byte
    # after the token is sent).
    client = sorted(s.first_byte_s for s in run.sent)
    spans = sorted(expected.values())
    for measured, seen in zip(client, spans, strict=True):
        assert -0.005 <= measured - seen <= 0.1, (measured, seen)
    assert total(run.text, catalog.PD_HANDOFF.name + "_count") == REQUESTS


def test_the_roles_show_on_the_instances(run: PdRun) -> None:
    roles = by_label(run.text, catalog.INSTANCE_INFO.name, "role")
    assert roles == {"prefill": 1.0, "decode": 1.0}
