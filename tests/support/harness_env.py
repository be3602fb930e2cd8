"""The test harness's own environment variables, named outside the exporter's reserved `LLM_TOKEN_EXPORTER_` prefix.

The exporter refuses every unknown `LLM_TOKEN_EXPORTER_*` variable at start (a mistyped setting must not pass
silently), so a harness variable under that prefix would stop every exporter a test starts. These are read by the
harness only; README.md documents them, and scripts/setup-vllm-env reads the same VLLM_VENV name.
"""

from __future__ import annotations

PREFIX = "LLM_EXPORTER_TEST_"
VLLM_VENV = PREFIX + "VLLM_VENV"  # the vLLM CPU environment (default ~/.cache/llm-token-exporter/vllm-0.32-venv)
CACHE = PREFIX + "CACHE"  # the cache the environment and the tiny model live in (default ~/.cache/llm-token-exporter)
FUZZ_EXAMPLES = PREFIX + "FUZZ_EXAMPLES"  # hypothesis examples per parser property (default 1000)
FUZZ_CORPUS_SCALE = PREFIX + "FUZZ_CORPUS_SCALE"  # multiplies every count of the corpus fuzzer (default 1)
FUZZ_SEED = PREFIX + "FUZZ_SEED"  # the corpus fuzzer's seed

# The names these had before, under the exporter's prefix: set, they would be refused by every exporter started.
RENAMED = {
    "LLM_TOKEN_EXPORTER_VLLM_VENV": VLLM_VENV,
    "LLM_TOKEN_EXPORTER_TEST_CACHE": CACHE,
    "LLM_TOKEN_EXPORTER_FUZZ_EXAMPLES": FUZZ_EXAMPLES,
    "LLM_TOKEN_EXPORTER_FUZZ_CORPUS_SCALE": FUZZ_CORPUS_SCALE,
    "LLM_TOKEN_EXPORTER_FUZZ_SEED": FUZZ_SEED,
}


def renamed_in(environ: dict[str, str]) -> list[str]:
    """One line per old harness name set in `environ`, naming its new name."""
    return [f"{old} is now {new}" for old, new in RENAMED.items() if old in environ]
