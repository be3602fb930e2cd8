# Quick start:  make demo   (run the exporter on its built-in demo; make demo SCENARIO=kv_exhaustion picks what
#                            happens, DEMO_ARGS='--duration 300 --scenario-at 30' passes any demo flag)
#               make test   (install what the tests need, then run them all: about 16 minutes on 2 cores)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
SCENARIO ?=
DEMO_ARGS ?=

.PHONY: demo test unit lint bench install install-test clean sync-chart

$(BIN)/llm-token-exporter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e . 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import exporter.cli"
	touch $@

$(VENV)/.test-deps: $(BIN)/llm-token-exporter
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import pytest, hypothesis, opentelemetry.sdk"
	touch $@

install: $(BIN)/llm-token-exporter

install-test: $(VENV)/.test-deps
	scripts/install-system-deps
	scripts/setup-vllm-env

demo: install
	$(BIN)/llm-token-exporter demo $(if $(SCENARIO),--scenario $(SCENARIO)) $(DEMO_ARGS)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check exporter tests benchmarks scripts/gpu-check scripts/nvml-probe scripts/sync-chart-artifacts
	$(BIN)/ruff format --check exporter tests benchmarks scripts/gpu-check scripts/nvml-probe scripts/sync-chart-artifacts
	$(BIN)/mypy
	$(BIN)/mypy scripts/gpu-check
	$(BIN)/mypy scripts/nvml-probe
	$(BIN)/mypy scripts/sync-chart-artifacts
	$(BIN)/python scripts/sync-chart-artifacts --check

test: install-test lint
	$(BIN)/pytest -ra $(PYTEST_ARGS)

unit: $(VENV)/.test-deps
	$(BIN)/pytest -ra -m "not integration and not e2e" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.bench_render
	$(BIN)/python -m benchmarks.bench_cardinality --native
	$(BIN)/python -m benchmarks.bench_ingest
	$(BIN)/python -m benchmarks.bench_engine_parse
	$(BIN)/python -m benchmarks.bench_gpu_sampler
	$(BIN)/python -m benchmarks.bench_attribution
	$(BIN)/python -m benchmarks.bench_at_rest
	$(BIN)/python -m benchmarks.bench_overload

sync-chart: install
	$(BIN)/python scripts/sync-chart-artifacts

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
