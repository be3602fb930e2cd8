"""The vLLM series the exporter carries one to one (renamed), and both sides read from text for comparing them."""

from __future__ import annotations

from exporter.metrics import catalog
from exporter.metrics.catalog import MetricSpec
from tests.support.prom import samples

# vLLM family (counters without _total) -> the exporter's metric; extra labels keep their names.
CARRIED: dict[str, MetricSpec] = {
    "vllm:estimated_flops_per_gpu": catalog.ENGINE_ESTIMATED_FLOPS,
    "vllm:estimated_read_bytes_per_gpu": catalog.ENGINE_ESTIMATED_READ,
    "vllm:estimated_write_bytes_per_gpu": catalog.ENGINE_ESTIMATED_WRITE,
    "vllm:prompt_tokens_by_source": catalog.ENGINE_PROMPT_TOKENS_BY_SOURCE,
    "vllm:prompt_tokens_cached": catalog.ENGINE_PROMPT_TOKENS_CACHED,
    "vllm:prompt_tokens_cached_by_source": catalog.ENGINE_PROMPT_TOKENS_CACHED_BY_SOURCE,
    "vllm:external_prefix_cache_queries": catalog.ENGINE_EXTERNAL_PREFIX_QUERIES,
    "vllm:external_prefix_cache_hits": catalog.ENGINE_EXTERNAL_PREFIX_HITS,
    "vllm:num_requests_waiting_by_reason": catalog.ENGINE_WAITING_BY_REASON,
    "vllm:engine_sleep_state": catalog.ENGINE_SLEEP_STATE,
    "vllm:kv_block_lifetime_seconds": catalog.ENGINE_KV_BLOCK_LIFETIME,
    "vllm:kv_block_idle_before_evict_seconds": catalog.ENGINE_KV_BLOCK_IDLE,
    "vllm:kv_block_reuse_gap_seconds": catalog.ENGINE_KV_BLOCK_REUSE_GAP,
    "vllm:request_prefill_kv_computed_tokens": catalog.ENGINE_PREFILL_KV_COMPUTED,
    "vllm:spec_decode_num_drafts": catalog.ENGINE_SPEC_DRAFTS,
    "vllm:spec_decode_num_draft_tokens": catalog.ENGINE_SPEC_DRAFT_TOKENS,
    "vllm:spec_decode_num_accepted_tokens": catalog.ENGINE_SPEC_ACCEPTED,
    "vllm:spec_decode_num_accepted_tokens_per_pos": catalog.ENGINE_SPEC_ACCEPTED_PER_POSITION,
}
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _ours(name: str) -> str | None:
    """The exporter's sample name for a vLLM sample name of a carried family (None for the rest, _created too)."""
    if name in CARRIED:  # a gauge
        return CARRIED[name].name
    if name.endswith("_total") and name.removesuffix("_total") in CARRIED:
        return CARRIED[name.removesuffix("_total")].name
    for suffix in ("_bucket", "_sum", "_count"):
        spec = CARRIED.get(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if spec is not None and spec.kind is catalog.Kind.HISTOGRAM:
            return spec.name + suffix
    return None


def vllm_side(text: str, model: str) -> Series:
    """vLLM's samples of the carried families for `model`, under the exporter's names and labels (engines summed;
    one engine in the tests)."""
    out: Series = {}
    for name, labels, value in samples(text):
        ours = _ours(name)
        if ours is None or labels.get("model_name") != model:
            continue
        rest = frozenset((k, v) for k, v in labels.items() if k not in ("model_name", "engine"))
        key = (ours, rest)
        out[key] = out.get(key, 0.0) + value
    return out


def exporter_side(text: str, instance: str) -> Series:
    """The exporter's samples of the carried metrics for one vLLM instance, labels as vllm_side gives them."""
    names = {spec.name for spec in CARRIED.values()}
    out: Series = {}
    for name, labels, value in samples(text):
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in names:
                family = name.removesuffix(suffix)
        if family not in names or labels.get("vllm_instance") != instance:
            continue
        rest = frozenset((k, v) for k, v in labels.items() if k not in ("vllm_instance", "model"))
        out[(name, rest)] = value
    return out
