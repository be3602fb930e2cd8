"""Data-parallel vLLM servers: each engine's queue and KV cache kept beside the folded values, and exported only
when a server has more than one engine."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.engine.collector import EngineCollector
from exporter.engine.parse import EngineGauges, parse
from exporter.engine.scraper import EngineScraper, ScrapeTarget
from exporter.metrics import catalog
from tests.support.otlp import SAMPLES
from tests.support.prom import by_label, samples, total

CAPTURE = (SAMPLES / "metrics.txt").read_text()  # vLLM 0.32, one engine: every per-engine line has engine="0"
LABELS = {"vllm_instance": "vllm-0", "model": "tiny"}
DP_SPECS = (catalog.ENGINE_DP_RUNNING, catalog.ENGINE_DP_WAITING, catalog.ENGINE_DP_KV_USAGE)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
# The capture's own values of these gauges are all 0 (scraped idle): each engine gets its own, engine 1 the fuller.
ENGINE_VALUES: dict[str, dict[str, float]] = {
    "0": {"vllm:num_requests_running": 3.0, "vllm:num_requests_waiting": 1.0, "vllm:kv_cache_usage_perc": 0.25},
    "1": {"vllm:num_requests_running": 5.0, "vllm:num_requests_waiting": 7.0, "vllm:kv_cache_usage_perc": 0.875},
}


def _with_value(line: str, value: float) -> str:
    """The sample line with its value replaced."""
    return f"{line.rsplit(' ', 1)[0]} {value!r}"


def dp_body(values: Mapping[str, Mapping[str, float]] = ENGINE_VALUES) -> str:
    """The real capture as a server with `--data-parallel-size 2` writes it: each engine="0" line followed by the
    same line for engine="1" (counters and histograms alike), with `values` for the three gauges per engine."""
    out: list[str] = []
    for line in CAPTURE.splitlines():
        if 'engine="0"' not in line or line.startswith("#"):
            out.append(line)
            continue
        name = line[: line.index("{")]
        for engine in ("0", "1"):
            copy = line.replace('engine="0"', f'engine="{engine}"')
            out.append(_with_value(copy, values[engine][name]) if name in GAUGES else copy)
    return "\n".join(out) + "\n"


def _reference(text: str, name: str) -> dict[str, float]:
    """`name`'s values by engine for model tiny, read with prometheus_client's own parser (independent of ours)."""
    return {
        s.labels["engine"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model_name") == "tiny"
    }


def _render(*bodies: str) -> str:
    """The engine collector's exposition after one scrape of each body in turn (the last one is served)."""
    state = {"body": bodies[0]}
    scraper = EngineScraper(
        lambda: [ScrapeTarget("vllm-0", "http://vllm-0:8000")],
        5.0,
        1.0,
        transport=httpx.MockTransport(lambda _: httpx.Response(200, text=state["body"])),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(scraper))
    for body in bodies:
        state["body"] = body
        asyncio.run(scraper.scrape_once())
    return generate_latest(registry).decode()


def _dp_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [s for s in samples(text) if s[0] in {spec.name for spec in DP_SPECS}]


def test_the_dp_body_is_the_capture_with_a_second_engine() -> None:
    body = dp_body()
    assert _reference(body, "vllm:kv_cache_usage_perc") == {"0": 0.25, "1": 0.875}
    assert _reference(body, "vllm:prompt_tokens_total") == {"0": 8494.0, "1": 8494.0}
    assert body.count('engine="1"') == CAPTURE.count('engine="0"') > 300


def test_parse_keeps_each_engine_and_the_folded_values_unchanged() -> None:
    body = dp_body()
    m = parse(body).models["tiny"]
    assert m.per_engine == {
        "0": EngineGauges(running=3.0, waiting=1.0, kv_usage_ratio=0.25),
        "1": EngineGauges(running=5.0, waiting=7.0, kv_usage_ratio=0.875),
    }
    # Folded as before: queues summed over the engines, KV usage the fullest engine's.
    assert m.running == sum(_reference(body, "vllm:num_requests_running").values()) == 8.0
    assert m.waiting == sum(_reference(body, "vllm:num_requests_waiting").values()) == 8.0
    assert m.kv_usage_ratio == max(_reference(body, "vllm:kv_cache_usage_perc").values()) == 0.875
    assert m.counters["prompt_tokens"] == 2 * 8494.0


def test_the_capture_has_one_engine() -> None:
    m = parse(CAPTURE).models["tiny"]
    assert m.per_engine == {"0": EngineGauges(running=0.0, waiting=0.0, kv_usage_ratio=0.0)}


OLD_NAMES_DP = """\
vllm:num_requests_running{engine="0",model_name="qwen"} 1
vllm:num_requests_running{engine="1",model_name="qwen"} 2
vllm:num_requests_waiting{engine="0",model_name="qwen"} 0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 4
vllm:gpu_cache_usage_perc{engine="0",model_name="qwen"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="qwen"} 0.9
"""
NO_ENGINE_LABEL = """\
vllm:num_requests_running{model_name="llama"} 3.0
vllm:num_requests_waiting{model_name="llama"} 7.0
vllm:gpu_cache_usage_perc{model_name="llama"} 0.42
vllm:prompt_tokens_total{model_name="llama"} 1000.0
"""


def test_old_names_are_kept_per_engine_too() -> None:
    m = parse(OLD_NAMES_DP).models["qwen"]
    assert m.per_engine == {"0": EngineGauges(1.0, 0.0, 0.5), "1": EngineGauges(2.0, 4.0, 0.9)}
    assert (m.running, m.waiting, m.kv_usage_ratio) == (3.0, 4.0, 0.9)


def test_a_line_without_an_engine_label_is_engine_0() -> None:
    m = parse(NO_ENGINE_LABEL).models["llama"]
    assert m.per_engine == {"0": EngineGauges(running=3.0, waiting=7.0, kv_usage_ratio=0.42)}
    # ... so it is one engine with an engine="1" line beside it, and a plain server when alone.
    mixed = parse(NO_ENGINE_LABEL + 'vllm:num_requests_running{engine="1",model_name="llama"} 2.0\n')
    assert mixed.models["llama"].per_engine["0"].running == 3.0
    assert mixed.models["llama"].per_engine["1"] == EngineGauges(running=2.0)
    assert _dp_samples(_render(NO_ENGINE_LABEL)) == []


def test_collector_exposes_each_engine_with_its_labels() -> None:
    text = _render(dp_body())
    for spec, field in zip(DP_SPECS, GAUGES, strict=True):
        assert by_label(text, spec.name, "engine", LABELS) == {e: v[field] for e, v in ENGINE_VALUES.items()}
    assert {tuple(sorted(labels)) for _, labels, _ in _dp_samples(text)} == {("engine", "model", "vllm_instance")}
    assert len(_dp_samples(text)) == 3 * 2
    # The folded series are unchanged: the sums and the fullest engine.
    assert total(text, catalog.ENGINE_RUNNING.name, LABELS) == 8.0
    assert total(text, catalog.ENGINE_WAITING.name, LABELS) == 8.0
    assert total(text, catalog.ENGINE_KV_USAGE.name, LABELS) == 0.875


def test_a_single_engine_server_has_none_of_the_series() -> None:
    text = _render(CAPTURE)
    assert total(text, catalog.ENGINE_RUNNING.name, LABELS) == 0 and catalog.ENGINE_RUNNING.name + "{" in text
    assert _dp_samples(text) == []
    for spec in DP_SPECS:
        assert f"# TYPE {spec.name} gauge" in text and f"\n{spec.name}{{" not in text
    # A server that scaled down to one engine stops serving them.
    assert _dp_samples(_render(dp_body(), CAPTURE)) == []


def test_engines_in_rank_order() -> None:
    body = "".join(f'vllm:num_requests_running{{engine="{e}",model_name="m"}} {e}\n' for e in range(12))
    text = _render(body)
    engines = [labels["engine"] for name, labels, _ in samples(text) if name == catalog.ENGINE_DP_RUNNING.name]
    assert engines == [str(e) for e in range(12)]
