"""Against a real vLLM server (CPU build, tiny model): the exporter's per-request metrics agree with vLLM's own.

vLLM is started once per OTLP protocol (gRPC, its default, then HTTP), with its traces pointed at a real
exporter process; one mixed workload runs against each, and every test reads the result.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExporter

from exporter import catalog
from tests.integration import workload
from tests.support.procs import ExporterProcess, wait_for
from tests.support.prom import by_label, total
from tests.vllm.server import SERVED_NAME, SERVICE_NAME, VllmServer

pytestmark = pytest.mark.integration

VLLM_TTFT_COUNT = "vllm:time_to_first_token_seconds_count"
VLLM_TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
VLLM_TPOT_COUNT = "vllm:request_time_per_output_token_seconds_count"
VLLM_TPOT_SUM = "vllm:request_time_per_output_token_seconds_sum"
VLLM_PROMPT = "vllm:prompt_tokens_total"
VLLM_GENERATION = "vllm:generation_tokens_total"


@dataclass
class LiveRun:
    """One workload through vLLM and the exporter, with both sides' metrics before and after."""

    protocol: str
    expected: workload.Expected
    vllm_before: str
    vllm_after: str
    exporter_text: str
    exporter_openmetrics: str

    def vllm_delta(self, name: str) -> float:
        """How much a vLLM series grew during the workload."""
        where = {"model_name": SERVED_NAME}
        return total(self.vllm_after, name, where) - total(self.vllm_before, name, where)

    def ours(self, name: str, where: dict[str, str] | None = None) -> float:
        """Sum of one of the exporter's series for the served model."""
        return total(self.exporter_text, name, {"model": SERVED_NAME, **(where or {})})


def _gateway_exporter(protocol: str, exporter: ExporterProcess) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=exporter.otlp_grpc_target, insecure=True)
    return HttpSpanExporter(endpoint=exporter.otlp_http_url)


@pytest.fixture(scope="session", params=["grpc", "http"])
def live(request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    """Exporter + vLLM over one OTLP protocol, the workload sent, everything scraped when counts are complete."""
    protocol: str = request.param
    with ExporterProcess(
        ["--model.map", f"{SERVICE_NAME}={SERVED_NAME}", "--tenant.join-window-seconds", "20"]
    ) as exporter:
        endpoint = f"http://{exporter.otlp_grpc_target}" if protocol == "grpc" else exporter.otlp_http_url
        server = VllmServer(protocol, endpoint)
        try:
            before = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            expected = workload.run(server.base_url, workload.Gateway(_gateway_exporter(protocol, exporter)))
            requests_name = catalog.REQUESTS.name
            wait_for(
                lambda: total(exporter.scrape(), requests_name) >= expected.sequences,
                60,
                f"the exporter to count {expected.sequences} requests",
                interval=0.5,
            )
            after = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            yield LiveRun(protocol, expected, before, after, exporter.scrape(), exporter.scrape(openmetrics=True))
        finally:
            server.stop()


def test_request_count_per_tenant_equals_spans_sent(live: LiveRun) -> None:
    counted = by_label(live.exporter_text, catalog.REQUESTS.name, "tenant", {"model": SERVED_NAME})
    assert counted == {t: float(n) for t, n in live.expected.sequences_by_tenant.items()}
    assert total(live.exporter_text, catalog.REQUESTS.name) == live.expected.sequences  # no other model label


def test_ttft_matches_vllm(live: LiveRun) -> None:
    vllm_count = live.vllm_delta(VLLM_TTFT_COUNT)
    assert vllm_count == live.expected.sequences
    assert live.ours(catalog.TTFT.name + "_count") == vllm_count
    assert live.ours(catalog.TTFT.name + "_sum") == pytest.approx(live.vllm_delta(VLLM_TTFT_SUM), rel=0.01)


def test_tpot_matches_vllm_without_its_zero_observations(live: LiveRun) -> None:
    vllm_count = live.vllm_delta(VLLM_TPOT_COUNT)
    assert live.expected.at_most_one_output_token > 0
    assert live.ours(catalog.TPOT.name + "_count") == vllm_count - live.expected.at_most_one_output_token
    assert live.ours(catalog.TPOT.name + "_sum") == pytest.approx(live.vllm_delta(VLLM_TPOT_SUM), rel=0.01)


def test_tokens_match_vllm_counters(live: LiveRun) -> None:
    assert live.ours(catalog.TOKENS.name, {"type": "input"}) == live.vllm_delta(VLLM_PROMPT)
    assert live.ours(catalog.TOKENS.name, {"type": "output"}) == live.vllm_delta(VLLM_GENERATION)
    assert live.ours(catalog.TOKENS.name, {"type": "input"}) == live.expected.prompt_tokens
    assert live.ours(catalog.TOKENS.name, {"type": "output"}) == live.expected.completion_tokens


def test_every_latency_histogram_counts_every_sequence(live: LiveRun) -> None:
    for spec in (catalog.QUEUE, catalog.PREFILL, catalog.DECODE, catalog.E2E):
        assert live.ours(spec.name + "_count") == live.expected.sequences, spec.name


def test_nothing_rejected_or_dropped_and_startup_spans_set_aside(live: LiveRun) -> None:
    assert total(live.exporter_text, catalog.SPANS_REJECTED.name) == 0
    assert total(live.exporter_text, catalog.SPANS_DROPPED.name) == 0
    accepted = total(live.exporter_text, catalog.SPANS_ACCEPTED.name, {"protocol": live.protocol})
    assert accepted == live.expected.sequences
    other = by_label(live.exporter_text, catalog.OTHER_SPANS.name, "name")
    assert other.get("gateway POST", 0) == sum(
        n for t, n in live.expected.sequences_by_tenant.items() if t != "unknown"
    ) - _n2_extra(live)


def _n2_extra(live: LiveRun) -> int:
    """Gateway spans are one per call, sequences are n per call: the difference for tenant calls with n=2."""
    sequential, concurrent = workload.calls()
    return sum(c.sequences - 1 for c in sequential + concurrent if c.tenant is not None)


def test_exemplars_carry_trace_ids_in_openmetrics(live: LiveRun) -> None:
    lines = [
        line
        for line in live.exporter_openmetrics.splitlines()
        if line.startswith(catalog.TTFT.name + "_bucket") and " # {trace_id=" in line
    ]
    assert lines, "no exemplar on any TTFT bucket"
    trace_id = lines[0].split('trace_id="', 1)[1].split('"', 1)[0]
    assert len(trace_id) == 32 and int(trace_id, 16) >= 0


def test_scrape_passes_promtool_check_metrics(live: LiveRun, tmp_path: Path) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=live.exporter_text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )
