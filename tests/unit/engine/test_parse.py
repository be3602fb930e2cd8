"""vLLM /metrics parsing across versions, and engine state across failures and restarts."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.engine.parse import EngineParseError, parse
from exporter.engine.state import EngineTracker
from tests.support.otlp import SAMPLES

FIXTURE = (SAMPLES / "metrics.txt").read_text()
AT_STARTUP = (SAMPLES / "metrics-at-startup-before-requests.txt").read_text()


def _reference(text: str, name: str) -> float:
    """The value of a vLLM series, read with prometheus_client's own parser (independent of ours)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model_name") == "tiny"
    )


def test_real_032_metrics() -> None:
    reading = parse(FIXTURE)
    m = reading.models["tiny"]
    assert m.running == _reference(FIXTURE, "vllm:num_requests_running")
    assert m.waiting == _reference(FIXTURE, "vllm:num_requests_waiting")
    assert m.kv_usage_ratio == _reference(FIXTURE, "vllm:kv_cache_usage_perc")
    assert m.counters["prompt_tokens"] == _reference(FIXTURE, "vllm:prompt_tokens_total")
    assert m.counters["generation_tokens"] == _reference(FIXTURE, "vllm:generation_tokens_total")
    assert m.counters["prefix_hits"] == _reference(FIXTURE, "vllm:prefix_cache_hits_total")
    assert m.counters["prefix_queries"] == _reference(FIXTURE, "vllm:prefix_cache_queries_total")
    assert m.counters["preemptions"] == _reference(FIXTURE, "vllm:num_preemptions_total")
    assert m.finished["length"] == _reference(FIXTURE, "vllm:request_success_total") > 0
    # cache_config_info: kv_cache_size_tokens="2097152", kv_cache_memory_bytes="1073741824"
    assert m.kv_capacity_tokens == 2097152 and m.kv_bytes_per_token == 1073741824 / 2097152
    [start] = [
        s.value
        for f in text_string_to_metric_families(FIXTURE)
        for s in f.samples
        if s.name == "process_start_time_seconds"
    ]
    assert reading.process_start_time_s == start


OLD_V06 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 3.0
vllm:num_requests_swapped{model_name="llama"} 0.0
vllm:num_requests_waiting{model_name="llama"} 7.0
vllm:gpu_cache_usage_perc{model_name="llama"} 0.42
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="2000",num_cpu_blocks="512"} 1.0
vllm:num_preemptions_total{model_name="llama"} 5.0
vllm:prompt_tokens_total{model_name="llama"} 1000.0
vllm:generation_tokens_total{model_name="llama"} 250.0
vllm:request_success_total{finished_reason="stop",model_name="llama"} 9.0
vllm:request_success_total{finished_reason="length",model_name="llama"} 1.0
vllm:time_per_output_token_seconds_count{model_name="llama"} 240.0
process_start_time_seconds 1.7e9
"""

V08_NO_TOTAL = """\
vllm:num_requests_running{engine="0",model_name="qwen"} 1
vllm:num_requests_running{engine="1",model_name="qwen"} 2
vllm:num_requests_waiting{engine="0",model_name="qwen"} 0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 4
vllm:gpu_cache_usage_perc{engine="0",model_name="qwen"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="qwen"} 0.9
vllm:gpu_prefix_cache_queries{engine="0",model_name="qwen"} 100
vllm:gpu_prefix_cache_hits{engine="0",model_name="qwen"} 40
vllm:prompt_tokens{engine="0",model_name="qwen"} 10
vllm:prompt_tokens{engine="1",model_name="qwen"} 20
vllm:generation_tokens{engine="0",model_name="qwen"} 5
"""


def test_vllm_06_names_and_labels() -> None:
    m = parse(OLD_V06).models["llama"]
    assert (m.running, m.waiting, m.kv_usage_ratio) == (3.0, 7.0, 0.42)
    assert m.kv_capacity_tokens == 2000 * 16 and m.kv_bytes_per_token is None
    assert m.counters == {"preemptions": 5.0, "prompt_tokens": 1000.0, "generation_tokens": 250.0}
    assert m.finished == {"stop": 9.0, "length": 1.0}


def test_old_names_without_total_and_data_parallel_engines() -> None:
    m = parse(V08_NO_TOTAL).models["qwen"]
    assert (m.running, m.waiting) == (3.0, 4.0)  # summed over engines
    assert m.kv_usage_ratio == 0.9  # the fullest engine
    assert m.counters == {"prefix_queries": 100.0, "prefix_hits": 40.0, "prompt_tokens": 30.0, "generation_tokens": 5.0}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "parse_error"),
        (FIXTURE[: len(FIXTURE) // 2], "truncated"),
        ("<html>502 Bad Gateway</html>\n", "parse_error"),
        ("node_cpu_seconds_total 5\n", "parse_error"),
        ('vllm:num_requests_running{model_name="x} 1\n', "parse_error"),
        ('vllm:num_requests_running{model_name="x"} many\n', "parse_error"),
        ("vllm:num_requests_running\n", "parse_error"),
    ],
)
def test_garbage_and_truncation_are_named(text: str, reason: str) -> None:
    with pytest.raises(EngineParseError) as err:
        parse(text)
    assert err.value.reason == reason


def test_label_escapes() -> None:
    text = 'vllm:num_requests_running{model_name="a\\"b\\\\c"} 2\n'
    assert parse(text).models['a"b\\c'].running == 2


def _with_counters(prompt: float, generation: float, start: float, finished: float = 0) -> str:
    return (
        f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}\n'
        f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}\n'
        f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="m"}} {finished}\n'
        f'vllm:num_requests_running{{engine="0",model_name="m"}} 1\n'
        f"process_start_time_seconds {start}\n"
    )


def test_counters_stay_monotonic_across_a_restart_and_it_is_counted() -> None:
    tracker = EngineTracker()
    tracker.success("a", parse(_with_counters(100, 10, start=1000.0, finished=3)), now=2000.0)
    tracker.success("a", parse(_with_counters(150, 20, start=1000.0, finished=5)), now=2005.0)
    tracker.failure("a", "refused")
    state = tracker.instances["a"]
    assert not state.up and state.models == [] and state.errors == {"refused": 1}
    tracker.success("a", parse(_with_counters(30, 4, start=2010.0, finished=1)), now=2040.0)
    state = tracker.instances["a"]
    assert state.up and state.restarts == 1
    assert state.totals[("m", "prompt_tokens")] == 180 and state.totals[("m", "generation_tokens")] == 24
    assert state.finished[("m", "stop")] == 6
    assert state.time_to_ready_s == pytest.approx(30.0)
    assert [p.prompt_tokens for p in state.history["m"]] == [100, 150, 180]


def test_counter_drop_without_start_time_is_a_reset_too() -> None:
    tracker = EngineTracker()
    no_start = 'vllm:prompt_tokens_total{model_name="m"} %s\n'
    for value in (50, 70, 5, 9):
        tracker.success("a", parse(no_start % value), now=float(value))
    assert tracker.instances["a"].totals[("m", "prompt_tokens")] == 79


def test_no_time_to_ready_for_a_server_already_running() -> None:
    tracker = EngineTracker()
    tracker.success("a", parse(_with_counters(1, 1, start=1000.0)), now=99999.0)
    assert tracker.instances["a"].time_to_ready_s is None


def test_configured_model_label_wins_and_departed_instances_are_forgotten_after_a_grace() -> None:
    tracker = EngineTracker()
    tracker.success("a", parse(_with_counters(1, 1, start=1.0)), now=2.0, configured_model="llama-8b")
    tracker.success("b", parse(_with_counters(1, 1, start=1.0)), now=2.0)
    assert tracker.instances["a"].label_of("m") == "llama-8b" and tracker.instances["b"].label_of("m") == "m"
    tracker.present({"b"}, now=10.0, forget_after_s=300.0)
    assert set(tracker.instances) == {"a", "b"} and not tracker.instances["a"].up  # gone: down, kept a while
    tracker.present({"b"}, now=200.0, forget_after_s=300.0)
    assert "a" in tracker.instances
    tracker.present({"b"}, now=310.0, forget_after_s=300.0)
    assert set(tracker.instances) == {"b"}
