"""Overview: is the service healthy, how busy, how fast, and what it costs, at a glance."""

from __future__ import annotations

from exporter.alerts import rules
from exporter.dashboards import promql as q
from exporter.dashboards.builder import BURN_RATE, REQUESTS, TOKENS_PER_S, DashboardSpec, PanelSpec, Query
from exporter.dashboards.common import FILTERS, VARIABLES
from exporter.metrics import catalog as c

UID = "llm-overview"


def _percentiles(hist: c.MetricSpec) -> tuple[Query, ...]:
    return tuple(Query(q.quantile(p, hist, "model"), f"p{round(p * 100)} {{{{model}}}}") for p in (0.5, 0.95, 0.99))


def spec() -> DashboardSpec:
    """The overview dashboard."""
    http = c.ENGINE_HTTP_RESPONSES
    panels = (
        PanelSpec(
            "Requests/s",
            "Finished requests per second (llm_request spans) over the rate window. A drop with steady traffic "
            "means vLLM stopped sending spans or requests stopped finishing." + FILTERS,
            (Query(q.rate(c.REQUESTS), "requests/s"),),
            kind="stat",
            unit="reqps",
            w=4,
            h=5,
        ),
        PanelSpec(
            "Tokens/s in and out",
            "Prompt (input) and completion (output) tokens per second of finished requests." + FILTERS,
            (
                Query(q.rate(c.TOKENS, "type", type="input"), "in"),
                Query(q.rate(c.TOKENS, "type", type="output"), "out"),
            ),
            kind="stat",
            unit=TOKENS_PER_S,
            w=5,
            h=5,
        ),
        PanelSpec(
            "Error ratio",
            "Share of the vLLM OpenAI API's 2xx+5xx responses that were 5xx over the rate window (0 is good; "
            "the availability SLO counts the same)." + FILTERS,
            (
                Query(
                    q.ratio(
                        q.or_zero(q.rate(http, status_class="5xx")),
                        q.rate(http, status_class="~2xx|5xx"),
                    ),
                    "5xx share",
                ),
            ),
            kind="stat",
            unit="percentunit",
            w=5,
            h=5,
        ),
        PanelSpec(
            "$ per million tokens",
            "Dollars charged to requests per million tokens (usage basis: GPU time the requests used, idle "
            "time excluded; see Cost and energy for the allocation basis)." + FILTERS,
            (Query(f"1e6 * {q.ratio(q.rate(c.COST), q.rate(c.TOKENS))}", "$/Mtok"),),
            kind="stat",
            unit="currencyUSD",
            w=5,
            h=5,
        ),
        PanelSpec(
            "SLO budget remaining",
            "Error budget left per SLO and model over the 30-day SLO period (1 = untouched, 0 = spent, below 0 = "
            "overspent). Red flags here lead to the SLOs dashboard. Filtered by model.",
            (Query(q.sel(rules.BUDGET_LEFT), "{{slo}} {{model}}"),),
            kind="stat",
            unit="percentunit",
            w=5,
            h=5,
        ),
        PanelSpec(
            "Requests/s by model",
            "Finished requests per second, per model and tenant." + FILTERS,
            (Query(q.rate(c.REQUESTS, "model, tenant"), "{{model}} {{tenant}}"),),
            unit="reqps",
        ),
        PanelSpec(
            "Tokens/s by model",
            "Input and output tokens per second per model: the load the GPUs serve." + FILTERS,
            (Query(q.rate(c.TOKENS, "model, type"), "{{model}} {{type}}"),),
            unit=TOKENS_PER_S,
        ),
        PanelSpec(
            "TTFT p50 / p95 / p99",
            "Time to first token percentiles per model, from the exporter's span histograms. p99 far above p50 "
            "means queueing or long prompts; compare with the SLO threshold." + FILTERS,
            _percentiles(c.TTFT),
            unit="s",
        ),
        PanelSpec(
            "TPOT p50 / p95 / p99",
            "Time per output token (decode speed) percentiles per model. Rises with batch size, throttling and "
            "KV-cache pressure." + FILTERS,
            _percentiles(c.TPOT),
            unit="s",
        ),
        PanelSpec(
            "Queue depth",
            "Requests waiting in (and running in) each vLLM engine, from its /metrics. A waiting queue that keeps "
            "growing means the instance is over capacity." + FILTERS,
            (
                Query(f"sum by (model) ({q.sel(c.ENGINE_WAITING)})", "waiting {{model}}"),
                Query(f"sum by (model) ({q.sel(c.ENGINE_RUNNING)})", "running {{model}}"),
            ),
            unit=REQUESTS,
            w=8,
        ),
        PanelSpec(
            "KV-cache usage",
            "Share of each engine's KV-cache blocks in use (0..1). Near 1, vLLM preempts requests." + FILTERS,
            (Query(f"max by (model, vllm_instance) ({q.sel(c.ENGINE_KV_USAGE)})", "{{vllm_instance}}"),),
            unit="percentunit",
            w=8,
        ),
        PanelSpec(
            "GPU memory used",
            "Device memory used as a share of each GPU's total (NVML). vLLM pre-allocates its KV cache, so a "
            "serving GPU sits near its gpu_memory_utilization." + FILTERS,
            (
                Query(
                    q.ratio(
                        f"sum by (index) ({q.sel(c.GPU_MEMORY_USED)})",
                        f"sum by (index) ({q.sel(c.GPU_MEMORY_TOTAL)})",
                    ),
                    "GPU {{index}}",
                ),
            ),
            unit="percentunit",
            w=8,
        ),
        PanelSpec(
            "SLO burn rate (1h)",
            "How fast each SLO spends its error budget over the last hour (1 = exactly on budget over 30 days; "
            "the page fires at 14.4 together with the 5m window). Filtered by model.",
            (Query(q.sel(rules.BURN.format(w="1h")), "{{slo}} {{model}}"),),
            unit=BURN_RATE,
            w=24,
            h=7,
        ),
    )
    return DashboardSpec(
        UID,
        "LLM / Overview",
        "Requests, tokens, latency percentiles, errors, queues, KV cache, GPU memory, cost per token and SLO status "
        "of vLLM served through llm-token-exporter.",
        panels,
        VARIABLES,
    )
