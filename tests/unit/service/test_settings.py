"""Settings: flags > env > file > defaults, and one message naming every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.metrics import catalog
from exporter.service.settings import (
    HELP_GROUPS,
    ConfigError,
    Settings,
    closest_setting,
    env_of,
    flag_of,
    group_of,
    load_settings,
    metavar_of,
)


def test_defaults() -> None:
    s = load_settings()
    assert (s.web_listen_address, s.otlp_grpc_listen_address, s.otlp_http_listen_address) == (
        "0.0.0.0:9842",
        "0.0.0.0:4317",
        "0.0.0.0:4318",
    )
    assert s.otlp_max_body_bytes >= 16 * 1024 * 1024
    assert s.tenant_cap == 200 and s.tenant_attribute_keys == ["tenant.id"]
    assert s.histogram_buckets()[catalog.TTFT.name] == list(catalog.TTFT.default_buckets)


def test_slo_thresholds_are_bucket_edges_by_default() -> None:
    s = load_settings()
    assert {0.1, 0.25, 0.5, 1.0, 2.5} <= set(s.buckets_ttft)
    assert {0.01, 0.02, 0.05, 0.1, 0.2} <= set(s.buckets_tpot)
    assert min(s.buckets_tpot) < 0.01 and min(s.buckets_ttft) < 0.01  # finer than vLLM's at the low end


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tenant_cap: 10\nmodel_cap: 11\nqueue_capacity_spans: 1024\nmodel_map: {a: b}\n")
    monkeypatch.setenv(env_of("model_cap"), "21")
    monkeypatch.setenv(env_of("queue_capacity_spans"), "2048")
    s = load_settings({"queue_capacity_spans": "4096"}, config)
    assert s.tenant_cap == 10  # file
    assert s.model_cap == 21  # env over file
    assert s.queue_capacity_spans == 4096  # flag over env
    assert s.model_map == {"a": "b"}
    assert s.dedup_capacity_spans == Settings.model_fields["dedup_capacity_spans"].default


def test_list_and_map_values_from_env_in_plain_and_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_of("tenant_attribute_keys"), "tenant.id, org.id")
    monkeypatch.setenv(env_of("model_map"), "vllm-a=llama,vllm-b=qwen")
    monkeypatch.setenv(env_of("buckets_ttft"), "[0.1, 0.5, 1]")
    s = load_settings()
    assert s.tenant_attribute_keys == ["tenant.id", "org.id"]
    assert s.model_map == {"vllm-a": "llama", "vllm-b": "qwen"}
    assert s.buckets_ttft == [0.1, 0.5, 1.0]


def test_every_problem_is_named_in_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tenant_cap: 0\nno_such_setting: 1\n")
    monkeypatch.setenv(env_of("buckets_tpot"), "0.2,0.1")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_TYPO_SETTING", "1")
    with pytest.raises(ConfigError) as err:
        load_settings({"web_listen_address": "localhost", "otlp_max_body_bytes": "12"}, config)
    message = str(err.value)
    for needle in (
        "web_listen_address",
        flag_of("web_listen_address"),
        "otlp_max_body_bytes",
        "tenant_cap",
        "no_such_setting",
        "buckets_tpot",
        "strictly increasing",
        "LLM_TOKEN_EXPORTER_TYPO_SETTING",
    ):
        assert needle in message, needle


def test_bad_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_file=missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_file=broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config_file=listy)


def test_receivers_can_be_disabled_but_not_web() -> None:
    s = load_settings({"otlp_grpc_listen_address": "", "otlp_http_listen_address": ""})
    assert s.otlp_grpc_listen_address == "" and s.otlp_http_listen_address == ""
    with pytest.raises(ConfigError, match="web_listen_address"):
        load_settings({"web_listen_address": ""})


def test_a_mistyped_env_var_is_refused_with_the_setting_it_most_likely_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_PRICE_GPU_PER_HOUR", "H100=2")  # the flag's words: --price.gpu-per-hour
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_TENANT_CPA", "3")
    monkeypatch.setenv("LLM_TOKEN_EXPORTER_NOTHING_LIKE_IT", "1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert (
        "  - LLM_TOKEN_EXPORTER_PRICE_GPU_PER_HOUR: not a known setting (env var); did you mean "
        "LLM_TOKEN_EXPORTER_GPU_PRICE_PER_HOUR?"
    ) in lines
    assert (
        "  - LLM_TOKEN_EXPORTER_TENANT_CPA: not a known setting (env var); did you mean LLM_TOKEN_EXPORTER_TENANT_CAP?"
        in lines
    )
    assert "  - LLM_TOKEN_EXPORTER_NOTHING_LIKE_IT: not a known setting (env var)" in lines  # no wild guess


def test_a_mistyped_config_key_is_refused_with_the_key_it_most_likely_meant(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tenant_cpa: 3\nbuckets_tfft: [1]\nprice_gpu_per_hour: {H100: 2}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=config)
    message = str(err.value)
    for typo, meant in (
        ("tenant_cpa", "tenant_cap"),
        ("buckets_tfft", "buckets_ttft"),
        ("price_gpu_per_hour", "gpu_price_per_hour"),
    ):
        assert f"{typo} (unknown setting): not a known setting; did you mean {meant}?" in message, typo


def test_closest_setting_reads_every_spelling_of_a_setting() -> None:
    for spelled, meant in (
        ("--tenant.cpa", "tenant_cap"),
        ("--gpu-price-per-hour", "gpu_price_per_hour"),  # the key's words as a flag
        ("price.gpu-per-hour", "gpu_price_per_hour"),
        ("LLM_TOKEN_EXPORTER_WEB_LISTEN_ADRESS", "web_listen_address"),
        ("model_cap", "model_cap"),
        ("cap_model", "model_cap"),  # the same words in another order
    ):
        assert closest_setting(spelled) == meant, spelled
    assert closest_setting("LLM_TOKEN_EXPORTER_TYPO_SETTING") is None


def test_every_setting_has_a_help_group_and_a_metavar_that_says_what_goes_there() -> None:
    assert all(group_of(name) in HELP_GROUPS for name in Settings.model_fields), [
        name for name in Settings.model_fields if group_of(name) not in HELP_GROUPS
    ]
    assert set(HELP_GROUPS) == {group_of(name) for name in Settings.model_fields}  # no empty group
    metavars = {name: metavar_of(name) for name in Settings.model_fields}
    assert metavars["gpu_price_per_hour"] == "PRODUCT=USD,..." and metavars["energy_price_per_kwh"] == "USD"
    assert metavars["buckets_ttft"] == "SECONDS,..." and metavars["web_listen_address"] == "HOST:PORT"
    assert metavars["gpu_enabled"] == "true|false" and metavars["log_level"] == "debug|info|warning|error"
    assert metavars["tenant_cap"] == "N" and metavars["memory_limit_bytes"] == "BYTES"
    # The last word of the name in capitals (HOUR, KWH, TTFT, CAP, ENABLED, MAX) said nothing of the value.
    naive = {name: name.split("_")[-1].upper() for name in Settings.model_fields}
    units = {"SECONDS", "BYTES", "FILE", "URL", "SELECTOR", "ATTRIBUTE", "ANNOTATION", "WEIGHT", "NAME"}
    assert [n for n in Settings.model_fields if metavars[n] == naive[n] and naive[n] not in units] == []
