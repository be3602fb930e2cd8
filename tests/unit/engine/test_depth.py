"""What vLLM computes beyond the basics, carried: estimated FLOPs and bytes (and against each GPU's peak), cached
prompt tokens by source, KV block residency, waiting by reason, sleep state, speculative decoding, and the GPU
memory an instance's KV cache takes. Held against real vLLM 0.32 captures, and absent where vLLM does not serve it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.engine import usage
from exporter.engine.collector import EngineCollector
from exporter.engine.parse import parse
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.engine.state import MFU_ABSENT, MFU_OFF, MFU_ON, MFU_UNKNOWN, EngineTracker, InstanceState
from exporter.gpu.peaks import PEAKS, GpuPeak, PeakTable
from exporter.gpu.records import GpuIdentity, GpuProcess, GpuSample, GpuSnapshot, GpuView
from exporter.metrics import catalog
from exporter.topology.model import Instance, Topology
from tests.support.otlp import SAMPLES
from tests.support.prom import by_label, samples, total
from tests.support.vllm.series import exporter_side, vllm_side

OPT_IN = (SAMPLES / "metrics-mfu-kv-cache-metrics.txt").read_text()  # --enable-mfu-metrics --kv-cache-metrics
FLAG_OFF = (SAMPLES / "metrics.txt").read_text()  # neither flag
PD = Path(__file__).resolve().parents[2] / "data" / "vllm-0.32-cpu-pd"
DECODE = (PD / "metrics-decode.txt").read_text()  # a P/D decode server: KV from the prefill server's connector
H100 = GpuIdentity("GPU-h100", 0, "NVIDIA H100 80GB HBM3", "580.0")
LABELS = {"vllm_instance": "vllm-0", "model": "tiny"}


def _scraper(*bodies: str) -> EngineScraper:
    """A scraper whose target answers each body in turn (the last one from then on)."""
    answers = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=answers.pop(0) if len(answers) > 1 else answers[0])

    return EngineScraper(lambda: [ScrapeTarget("vllm-0", "http://v")], transport=httpx.MockTransport(handler))


def _render(scraper: EngineScraper, placements: usage.Placements | None = None, peaks: PeakTable | None = None) -> str:
    asyncio.run(scraper.scrape_once())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(scraper, (lambda: placements) if placements is not None else None, peaks))
    return generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("body", "samples_carried"),
    [(OPT_IN, 105), (DECODE, 32)],  # with the residency histograms; a P/D decode server with a KV connector
    ids=["mfu-and-kv-cache-metrics", "pd-decode"],
)
def test_every_carried_series_equals_vllms_own(body: str, samples_carried: int) -> None:
    want = vllm_side(body, "tiny")
    got = exporter_side(_render(_scraper(body)), "vllm-0")
    assert len(want) == samples_carried
    assert got == want


def test_the_captures_show_what_each_series_is_for() -> None:
    opt_in = _render(_scraper(OPT_IN))
    assert total(opt_in, catalog.ENGINE_ESTIMATED_FLOPS.name, LABELS) == 4.475001856e09
    assert total(opt_in, catalog.ENGINE_KV_BLOCK_LIFETIME.name + "_count", LABELS) == 23  # blocks evicted for reuse
    assert by_label(opt_in, catalog.ENGINE_PROMPT_TOKENS_CACHED_BY_SOURCE.name, "source")["device"] == 4096
    assert by_label(opt_in, catalog.ENGINE_SLEEP_STATE.name, "sleep_state") == {
        "awake": 1,
        "weights_offloaded": 0,
        "discard_all": 0,
    }
    decode = _render(_scraper(DECODE))
    by_source = by_label(decode, catalog.ENGINE_PROMPT_TOKENS_BY_SOURCE.name, "source")
    assert by_source == {"local_compute": 386, "local_cache_hit": 0, "external_kv_transfer": 1024}
    assert total(decode, catalog.ENGINE_EXTERNAL_PREFIX_HITS.name) == 1024
    assert total(decode, catalog.ENGINE_EXTERNAL_PREFIX_QUERIES.name) == 1410


OLD_V06 = """\
vllm:num_requests_running{model_name="llama"} 3.0
vllm:num_requests_waiting{model_name="llama"} 7.0
vllm:gpu_cache_usage_perc{model_name="llama"} 0.42
vllm:prompt_tokens_total{model_name="llama"} 1000.0
vllm:generation_tokens_total{model_name="llama"} 250.0
"""


def test_an_older_vllm_gives_no_series_of_what_it_does_not_serve_not_zeros() -> None:
    text = _render(_scraper(OLD_V06), {"vllm-0": (usage.InstanceGpu(H100, 40 << 30),)})
    for spec in catalog.ENGINE_METRICS[catalog.ENGINE_METRICS.index(catalog.ENGINE_ESTIMATED_FLOPS) :]:
        assert f"\n{spec.name}{{" not in text and f"\n{spec.name}_count{{" not in text, spec.name
    state = _tracked(OLD_V06)
    assert state.mfu_metrics == MFU_ABSENT


def _tracked(*bodies: str) -> InstanceState:
    tracker = EngineTracker()
    for i, body in enumerate(bodies):
        tracker.success("vllm-0", parse(body), float(i))
    return tracker.instances["vllm-0"]


def test_mfu_metrics_says_on_off_absent_or_unknown() -> None:
    tracker = EngineTracker()
    assert tracker.instance("vllm-0").mfu_metrics == MFU_UNKNOWN  # not scraped yet
    assert _tracked(OPT_IN).mfu_metrics == MFU_ON
    assert _tracked(FLAG_OFF).mfu_metrics == MFU_OFF  # served, 0 after work
    idle = (SAMPLES / "metrics-at-startup-before-requests.txt").read_text()
    assert _tracked(idle).mfu_metrics == MFU_UNKNOWN  # no work yet to tell


def test_utilisation_is_the_estimate_over_the_gpus_peak_and_absent_with_the_flag_off() -> None:
    placed = {"vllm-0": (usage.InstanceGpu(H100, None),)}
    text = _render(_scraper(OPT_IN), placed)
    peak = PEAKS["nvidia h100 80gb hbm3"]
    flops = 4.475001856e09
    compute = by_label(text, catalog.ENGINE_COMPUTE_AT_PEAK.name, "precision", {**LABELS, "gpu": "GPU-h100"})
    assert compute == {"bf16": flops / 989.4e12, "fp8": flops / 1978.9e12}
    assert peak.bf16_flops == 989.4e12 and peak.memory_bandwidth == 3.35e12
    traffic = total(text, catalog.ENGINE_MEMORY_TRAFFIC_AT_PEAK.name, {**LABELS, "gpu": "GPU-h100"})
    assert traffic == (6.82793472e08 + 2.0226048e07) / 3.35e12
    # The flag off: vLLM serves zeros, which are re-exported as its own; no utilisation is made of them.
    off = _render(_scraper(FLAG_OFF), placed)
    assert total(off, catalog.ENGINE_ESTIMATED_FLOPS.name, LABELS) == 0
    assert catalog.ENGINE_COMPUTE_AT_PEAK.name + "{" not in off
    assert catalog.ENGINE_MEMORY_TRAFFIC_AT_PEAK.name + "{" not in off


def test_an_unknown_gpu_gives_no_utilisation_and_one_log_line_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    odd = GpuIdentity("GPU-odd", 1, "NVIDIA Imaginary X1", "580.0")
    scraper = _scraper(OPT_IN)
    peaks = PeakTable()
    placed = {"vllm-0": (usage.InstanceGpu(H100, None), usage.InstanceGpu(odd, None))}
    with caplog.at_level(logging.WARNING, logger="exporter.gpu"):
        first = _render(scraper, placed, peaks)
        second = _render(scraper, placed, peaks)
    for text in (first, second):
        gpus = by_label(text, catalog.ENGINE_MEMORY_TRAFFIC_AT_PEAK.name, "gpu")
        assert set(gpus) == {"GPU-h100"}
        assert 'gpu="GPU-odd"' not in text
    lines = [r.getMessage() for r in caplog.records if "Imaginary" in r.getMessage()]
    assert len(lines) == 1 and "'NVIDIA Imaginary X1'" in lines[0] and "peak table" in lines[0]


def test_a_peak_of_zero_is_never_divided_by() -> None:
    zero = GpuPeak("Broken", 0.0, None, 0.0, "test")
    assert usage.at_peak_compute(1e12, zero) == {}
    assert usage.at_peak_memory(1.0, 1.0, zero) is None
    assert PeakTable({"b": zero}).lookup("broken") is zero  # names match in any case and spacing


def test_product_names_match_exactly_not_by_family() -> None:
    table = PeakTable()
    assert table.lookup("NVIDIA H100 PCIe") is not table.lookup("NVIDIA H100 80GB HBM3")
    assert table.lookup("nvidia  h200") is PEAKS["nvidia h200"]
    assert table.lookup("NVIDIA H100") is None  # a name NVML does not give is not guessed at
    for peak in PEAKS.values():
        assert peak.source and peak.bf16_flops > 0 and peak.memory_bandwidth > 0
        # FP8 runs at twice BF16 on every GPU that has it (the L40S datasheet's own figures differ by 1.2 %).
        assert peak.fp8_flops is None or peak.fp8_flops == pytest.approx(2 * peak.bf16_flops, rel=0.015)


def test_kv_memory_beside_the_rest_of_the_instances_processes_memory() -> None:
    # 1 GiB of KV cache per GPU (cache_config_info kv_cache_memory_bytes) in a process that holds 3 GiB of it.
    text = _render(_scraper(OPT_IN), {"vllm-0": (usage.InstanceGpu(H100, 3 << 30),)})
    purposes = by_label(text, catalog.ENGINE_GPU_MEMORY.name, "purpose", {**LABELS, "gpu": "GPU-h100"})
    assert purposes == {"kv_cache": 1 << 30, "other": 2 << 30}
    assert not usage.memory_by_purpose(None, 3 << 30) and not usage.memory_by_purpose(1 << 30, None)


def _view(identity: GpuIdentity, processes: tuple[GpuProcess, ...] | None) -> GpuView:
    return GpuView(identity, GpuSample(identity.uuid, identity.index, 0.0, True, processes=processes), 0.0, {})


def test_an_instances_memory_is_its_pids_or_its_own_gpus_processes_never_a_shared_gpus() -> None:
    a100 = GpuIdentity("GPU-a", 1, "NVIDIA A100-SXM4-80GB", "580.0")
    snapshot = GpuSnapshot(
        True,
        (
            _view(H100, (GpuProcess(10, 5 << 30), GpuProcess(11, 1 << 30))),
            _view(a100, (GpuProcess(20, 7 << 30), GpuProcess(21, None))),
        ),
        {},
        None,
    )
    topology = Topology(
        (
            Instance("by-pid", "http://a", gpus=("0",), pids=(10,)),  # by index; its worker's PID
            Instance("other-pid", "http://b", gpus=("GPU-h100",), pids=(11,)),
            Instance("own-gpu", "http://c", gpus=("GPU-a", "GPU-missing")),  # no PIDs (Kubernetes, static)
            Instance("shared", "http://d", gpus=("GPU-h100",)),  # shares GPU 0 without PIDs: unknown
        )
    )
    placed = usage.place(topology, snapshot)
    assert placed["by-pid"] == (usage.InstanceGpu(H100, 5 << 30),)
    assert placed["other-pid"] == (usage.InstanceGpu(H100, 1 << 30),)
    assert placed["own-gpu"] == (usage.InstanceGpu(a100, None),)  # one process NVML could not measure
    assert placed["shared"] == (usage.InstanceGpu(H100, None),)


TWO_ENGINES = """\
vllm:estimated_flops_per_gpu_total{engine="0",model_name="m"} 100.0
vllm:estimated_flops_per_gpu_total{engine="1",model_name="m"} 300.0
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 10.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 8.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="10"} 1.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="m",position="0"} 6.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 3.0
vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="capacity"} 1.0
"""


def test_data_parallel_engines_sum_but_per_gpu_estimates_average() -> None:
    m = parse(TWO_ENGINES).models["m"]
    assert m.counters["flops"] == 200.0  # each GPU of the instance: the mean of its engines' per-GPU counts
    assert m.counters["spec_drafts"] == 20.0
    assert m.labelled[("spec_accepted_per_pos", "0")] == 14.0
    assert m.gauges[("waiting_by_reason", "capacity")] == 4.0
    text = _render(_scraper(TWO_ENGINES.replace('model_name="m"', 'model_name="tiny"')))
    positions = [
        labels["position"]
        for name, labels, _ in samples(text)
        if name == catalog.ENGINE_SPEC_ACCEPTED_PER_POSITION.name
    ]
    assert positions == ["0", "2", "10"]  # in numeric order


RESTARTED = "process_start_time_seconds 2.0e9\n"


def test_histograms_and_labelled_counters_stay_monotonic_across_a_restart() -> None:
    first = OPT_IN
    # The same server after a restart: a new start time and smaller counts (one eviction, 10 tokens from source).
    second = (
        RESTARTED
        + 'vllm:prompt_tokens_by_source_total{engine="0",model_name="tiny",source="local_compute"} 10.0\n'
        + "".join(
            f'vllm:kv_block_lifetime_seconds_bucket{{engine="0",le="{le}",model_name="tiny"}} {n}\n'
            for le, n in (("0.001", 0.0), ("0.5", 1.0), ("+Inf", 1.0))
        )
        + 'vllm:kv_block_lifetime_seconds_sum{engine="0",model_name="tiny"} 0.25\n'
        + 'vllm:kv_block_lifetime_seconds_count{engine="0",model_name="tiny"} 1.0\n'
    )
    before = _render(_scraper(first))
    scraper = _scraper(first, second)
    _render(scraper)
    after = _render(scraper)
    source = {**LABELS, "source": "local_compute"}
    by_source = catalog.ENGINE_PROMPT_TOKENS_BY_SOURCE.name
    assert total(after, by_source, source) == total(before, by_source, source) + 10
    lifetime = catalog.ENGINE_KV_BLOCK_LIFETIME.name
    # vLLM's bucket edges changed with the restart: the histogram starts over rather than mixing two layouts.
    assert by_label(after, lifetime + "_bucket", "le", LABELS) == {"0.001": 0.0, "0.5": 1.0, "+Inf": 1.0}
    assert total(after, catalog.ENGINE_RESTARTS.name, {"vllm_instance": "vllm-0"}) == 1
    same_edges = first.replace("process_start_time_seconds 1.7", "process_start_time_seconds 1.8")
    assert same_edges != first
    scraper = _scraper(first, same_edges)
    _render(scraper)
    twice = _render(scraper)
    assert total(twice, lifetime + "_count", LABELS) == 2 * total(before, lifetime + "_count", LABELS) == 46
    assert total(twice, lifetime + "_sum", LABELS) == 2 * total(before, lifetime + "_sum", LABELS)


def test_a_histogram_with_a_bad_edge_or_without_its_sum_is_not_re_exported() -> None:
    lines = [
        'vllm:kv_block_lifetime_seconds_bucket{engine="0",le="0.0",model_name="m"} 1.0',
        'vllm:kv_block_lifetime_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0',
        'vllm:kv_block_lifetime_seconds_sum{engine="0",model_name="m"} 3.0',
        'vllm:kv_block_lifetime_seconds_count{engine="0",model_name="m"} 2.0',
        'vllm:kv_block_idle_before_evict_seconds_bucket{engine="0",le="soon",model_name="m"} 1.0',
        'vllm:kv_block_idle_before_evict_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1.0',
        'vllm:kv_block_idle_before_evict_seconds_sum{engine="0",model_name="m"} 1.0',
        'vllm:kv_block_idle_before_evict_seconds_count{engine="0",model_name="m"} 1.0',
        'vllm:kv_block_reuse_gap_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1.0',
    ]
    histograms = parse("\n".join(reversed(lines)) + "\n").models["m"].histograms
    assert set(histograms) == {"kv_block_lifetime"}
    assert histograms["kv_block_lifetime"].buckets == (("0.0", 1.0), ("+Inf", 2.0))  # an edge of 0 sorts first


def test_until_a_restart_a_carried_value_is_vllms_own_bit_for_bit() -> None:
    def body(seconds: float, count: float) -> str:
        return (
            'vllm:kv_block_lifetime_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} ' + f"{count}\n"
            'vllm:kv_block_lifetime_seconds_sum{engine="0",model_name="tiny"} ' + f"{seconds!r}\n"
            'vllm:kv_block_lifetime_seconds_count{engine="0",model_name="tiny"} ' + f"{count}\n"
        )

    sums = (0.22694029922859627, 2.3355131413909214, 2.422715394557338, 4.164876425987141)  # seconds, growing
    added_up = sums[0] + (sums[1] - sums[0]) + (sums[2] - sums[1]) + (sums[3] - sums[2])
    assert added_up != sums[-1]  # what adding up the growth between scrapes would serve: 4.164876425987142
    scraper = _scraper(*(body(seconds, float(i + 1)) for i, seconds in enumerate(sums)))
    for _ in sums[:-1]:
        _render(scraper)
    text = _render(scraper)
    assert total(text, catalog.ENGINE_KV_BLOCK_LIFETIME.name + "_sum", LABELS) == sums[-1]
    assert total(text, catalog.ENGINE_KV_BLOCK_LIFETIME.name + "_count", LABELS) == 4
