"""Against a real vLLM server (CPU build, tiny model): the exporter's per-request metrics agree with vLLM's own.

vLLM is started once per OTLP protocol (gRPC, its default, then HTTP), with its traces pointed at a real
exporter process; one mixed workload runs against each, and every test reads the result.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExporter

from exporter.metrics import catalog
from tests.support.procs import ExporterProcess, free_port, wait_for
from tests.support.prom import by_label, total
from tests.support.vllm import workload
from tests.support.vllm.series import Series, exporter_side, vllm_side
from tests.support.vllm.server import SERVED_NAME, SERVICE_NAME, VllmServer

pytestmark = pytest.mark.vllm  # a real vLLM server (CPU build)

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
    exporter: ExporterProcess
    server: VllmServer
    engine: dict[str, str]  # the llm_engine_* labels of this run's vLLM instance

    @property
    def instance_label(self) -> dict[str, str]:
        """Just the vllm_instance label."""
        return {"vllm_instance": self.engine["vllm_instance"]}

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


@pytest.fixture(scope="module", params=["grpc", "http"])  # module: the last server stops with the module
def live(request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    """Exporter + vLLM over one OTLP protocol, the workload sent, everything scraped when counts are complete.

    gRPC run: static topology (the instance listed, the model mapped from service.name). HTTP run: no instance
    and no map: the exporter finds vLLM through /proc and names the model from the sender's vllm.process_id.
    """
    protocol: str = request.param
    vllm_port = free_port()
    if protocol == "grpc":
        instance = "vllm-0"
        topology = [
            "--model.map",
            f"{SERVICE_NAME}={SERVED_NAME}",
            "--instances",
            json.dumps([{"url": f"http://127.0.0.1:{vllm_port}", "name": instance}]),
        ]
    else:
        instance = f"127.0.0.1:{vllm_port}"
        topology = ["--topology.mode", "processes"]
    args = ["--tenant.join-window-seconds", "20", "--engine.scrape-interval-seconds", "1", *topology]
    with ExporterProcess(args) as exporter:
        endpoint = f"http://{exporter.otlp_grpc_target}" if protocol == "grpc" else exporter.otlp_http_url
        server = VllmServer(protocol, endpoint, port=vllm_port)
        try:
            engine = {"vllm_instance": instance, "model": SERVED_NAME}
            wait_for(
                lambda: total(exporter.scrape(), catalog.ENGINE_UP.name, engine) == 1,
                30,
                f"the exporter to find and scrape {instance}",
                interval=0.5,
            )
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
            yield LiveRun(
                protocol,
                expected,
                before,
                after,
                exporter.scrape(),
                exporter.scrape(openmetrics=True),
                exporter,
                server,
                engine,
            )
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


def test_engine_counters_equal_vllms_own(live: LiveRun) -> None:
    want_prompt = total(live.vllm_after, VLLM_PROMPT, {"model_name": SERVED_NAME})
    want_generation = total(live.vllm_after, VLLM_GENERATION, {"model_name": SERVED_NAME})
    wait_for(
        lambda: total(live.exporter.scrape(), catalog.ENGINE_PROMPT_TOKENS.name, live.engine) == want_prompt,
        15,
        "the engine scrape to catch up",
        interval=0.5,
    )
    text = live.exporter.scrape()
    assert total(text, catalog.ENGINE_UP.name, live.engine) == 1
    assert total(text, catalog.ENGINE_GENERATION_TOKENS.name, live.engine) == want_generation
    capacity = float(_cache_label(live.vllm_after, "kv_cache_size_tokens"))
    assert total(text, catalog.ENGINE_KV_CAPACITY.name, live.engine) == capacity > 0
    assert total(text, catalog.ENGINE_RUNNING.name, live.engine) == 0


def test_carried_engine_series_equal_vllms_own(live: LiveRun) -> None:
    """Every series the exporter carries from vLLM's /metrics (estimated FLOPs and bytes, cached prompt tokens by
    source, external prefix cache, waiting by reason, sleep state, KV block residency, prefill-computed tokens)
    equals vLLM's own, sample for sample (bucket by bucket), once the exporter has scraped the quiet server."""
    want = vllm_side(httpx.get(f"{live.server.base_url}/metrics", timeout=10).text, SERVED_NAME)
    instance = live.engine["vllm_instance"]
    text = _caught_up(live.exporter, instance, want)
    assert exporter_side(text, instance) == want, _differences(exporter_side(text, instance), want)
    assert len(want) == 105  # 3 estimates, 3 + 1 + 5 prompt-token series, 2 external, 2 + 3 gauges, 4 histograms
    # Not just zeros: the workload did work the estimates count and evicted blocks the residency histograms saw.
    assert total(text, catalog.ENGINE_ESTIMATED_FLOPS.name, live.engine) > 0
    assert total(text, catalog.ENGINE_KV_BLOCK_LIFETIME.name + "_count", live.engine) > 0
    assert total(text, catalog.ENGINE_PROMPT_TOKENS_CACHED.name, live.engine) > 0  # the shared long prefix
    info = by_label(text, catalog.INSTANCE_INFO.name, "mfu_metrics", live.instance_label)
    assert info == {"on": 1.0}


def _cache_label(text: str, label: str) -> str:
    from tests.support.prom import samples

    [value] = [labels[label] for name, labels, _ in samples(text) if name == "vllm:cache_config_info"]
    return value


def test_startup_spans_give_cold_start_phases(live: LiveRun) -> None:
    text = live.exporter.scrape()
    # Start-up spans come before the exporter can have found vLLM in /proc: in the processes run their model
    # is the raw service.name; the phases are what is checked here.
    total_load = total(text, catalog.ENGINE_STARTUP_PHASE.name, {"phase": "total"})
    load_model = total(text, catalog.ENGINE_STARTUP_PHASE.name, {"phase": "load_model"})
    assert 0 < load_model < total_load < 600


def test_zz_vllm_killed_and_restarted_is_reported_and_survived(live: LiveRun) -> None:
    """Runs last for its server: kills vLLM mid-run, restarts it on the same port."""
    exporter, server = live.exporter, live.server
    before = exporter.scrape()
    prompt_before = total(before, catalog.ENGINE_PROMPT_TOKENS.name, live.engine)
    carried_before = exporter_side(before, live.engine["vllm_instance"])
    server.stop()
    wait_for(
        lambda: total(exporter.scrape(), catalog.ENGINE_UP.name, live.engine) == 0, 15, "llm_engine_up to drop to 0"
    )
    down = exporter.scrape()
    assert catalog.ENGINE_RUNNING.name + "{" not in down  # no stale gauge served as current
    assert total(down, catalog.ENGINE_SCRAPE_ERRORS.name, {**live.instance_label, "reason": "refused"}) >= 1
    server.start()
    httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": SERVED_NAME, "prompt": "after restart", "max_tokens": 4, "ignore_eos": True},
        timeout=60,
    ).raise_for_status()
    wait_for(
        lambda: total(exporter.scrape(), catalog.ENGINE_PROMPT_TOKENS.name, live.engine) > prompt_before,
        20,
        "the restarted engine's tokens to be counted",
        interval=0.5,
    )
    after = exporter.scrape()
    assert exporter.proc.poll() is None
    assert total(after, catalog.ENGINE_UP.name, live.engine) == 1
    assert total(after, catalog.ENGINE_RESTARTS.name, live.instance_label) == 1
    vllm_now = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    fresh_prompt = total(vllm_now, VLLM_PROMPT, {"model_name": SERVED_NAME})
    assert total(after, catalog.ENGINE_PROMPT_TOKENS.name, live.engine) == prompt_before + fresh_prompt  # monotonic
    # The carried counters and histograms too: what the old process counted plus what the new one has; gauges are
    # the new process's.
    want = _continued(carried_before, vllm_side(vllm_now, SERVED_NAME))
    instance = live.engine["vllm_instance"]
    carried = exporter_side(_caught_up(exporter, instance, want), instance)
    assert carried == want, _differences(carried, want)
    ready = total(after, catalog.ENGINE_TIME_TO_READY.name, live.instance_label)
    assert 1 < ready < 300


def _continued(before: Series, fresh: Series) -> Series:
    """The exporter's carried series after a restart: counters and histogram samples add up, gauges are new."""
    gauges = {catalog.ENGINE_WAITING_BY_REASON.name, catalog.ENGINE_SLEEP_STATE.name}
    return {key: value + (0.0 if key[0] in gauges else before[key]) for key, value in fresh.items()}


def _caught_up(exporter: ExporterProcess, instance: str, want: Series, timeout_s: float = 15) -> str:
    """The exporter's answer once its carried series for `instance` are `want` (or the last one after the timeout)."""
    with contextlib.suppress(TimeoutError):  # the assertion after says what differs
        wait_for(lambda: exporter_side(exporter.scrape(), instance) == want, timeout_s, "the engine scrape")
    return exporter.scrape()


def _differences(got: Series, want: Series) -> str:
    keys = sorted(set(got) | set(want), key=str)
    return "\n".join(f"{k}: exporter {got.get(k)!r}, vLLM {want.get(k)!r}" for k in keys if got.get(k) != want.get(k))
