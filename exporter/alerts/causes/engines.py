"""Cause alerts about vLLM engines: down, KV cache full, queue growing, slow start, spans missing."""

from __future__ import annotations

from exporter.alerts.causes.row import Case, Cause, engine_labels, series
from exporter.alerts.testfile import INSTANCE, MODEL, VLLM_INSTANCE
from exporter.metrics import catalog

KV_FULL = 0.9
SLOW_START_S = 600

_UP, _WAITING = catalog.ENGINE_UP.name, catalog.ENGINE_WAITING.name
_KV_USAGE, _PREEMPTIONS = catalog.ENGINE_KV_USAGE.name, catalog.ENGINE_PREEMPTIONS.name
_READY = catalog.ENGINE_TIME_TO_READY.name
_FINISHED, _REQUESTS = catalog.ENGINE_FINISHED.name, catalog.REQUESTS.name

_ENGINE, _OTHER = engine_labels(), engine_labels(vllm_instance="vllm-1")
# The time-to-ready gauge is per vLLM server, without a model label.
_SERVER = {"instance": INSTANCE, "job": "llm-token-exporter", "vllm_instance": VLLM_INSTANCE}
_STOPPED = engine_labels(finished_reason="stop")
_SPANS = {"instance": INSTANCE, "job": "llm-token-exporter", "model": MODEL, "tenant": "acme"}

ENGINE_DOWN = Cause(
    name="LLMEngineDown",
    severity="page",
    expr=f"{_UP} == 0",
    for_="5m",
    summary="{{ $labels.model }} on {{ $labels.vllm_instance }} ({{ $labels.instance }}): vLLM engine down",
    meaning="The exporter cannot scrape this vLLM server's /metrics: it is down, restarting or wedged. A down "
    "engine makes no bad requests, it makes none, so the SLO alerts cannot see it: this alert does.",
    threshold=f"{_UP} == 0 for 5 minutes: longer than a failed scrape or two, so a restart that is back "
    "within minutes does not page.",
    action="Look at the vLLM pod or process: crash loop (CUDA OOM, XID, a bad flag), or still loading (see "
    f"LLMEngineSlowColdStart). `{catalog.ENGINE_SCRAPE_ERRORS.name}` says why scrapes fail. While it is down "
    "the model's latency SLO alerts are inhibited: this page is the one to act on.",
    cases=(
        Case(
            "down for 7 minutes: page",
            {series(_UP, _ENGINE): "1 0x10"},
            "7m",
            ((_ENGINE, f"{MODEL} on {VLLM_INSTANCE} ({INSTANCE}): vLLM engine down"),),
        ),
        Case("down for 3 minutes, then back: silent", {series(_UP, _ENGINE): "1 0 0 0 1x10"}, "7m"),
    ),
)

KV_CACHE_FULL = Cause(
    name="LLMEngineKVCacheFullPreempting",
    severity="ticket",
    expr=f"{_KV_USAGE} >= {KV_FULL}\nand\nincrease({_PREEMPTIONS}[10m]) > 0",
    for_="10m",
    summary="{{ $labels.model }} on {{ $labels.vllm_instance }}: KV cache {{ $value | humanizePercentage }} full "
    "and preempting requests",
    meaning="The engine's KV cache is nearly full and it is preempting running requests (recomputing or "
    "swapping them): latency, TPOT first, degrades for everyone in the batch.",
    threshold=f"Usage >= {KV_FULL:.0%} with preemptions in the last 10 minutes, for 10 minutes. A full cache "
    "alone is fine (vLLM fills it on purpose); preemptions are the harm, and brief ones are normal at peaks.",
    action="Give the KV cache room: lower max_num_seqs or max_model_len, raise gpu_memory_utilization, use an "
    "fp8 KV cache, enable prefix caching, or add replicas. Check the model's TPOT SLO.",
    cases=(
        Case(
            "95% full, 2 preemptions a minute: ticket",
            {series(_KV_USAGE, _ENGINE): "0.95x20", series(_PREEMPTIONS, _ENGINE): "0+2x20"},
            "15m",
            ((_ENGINE, f"{MODEL} on {VLLM_INSTANCE}: KV cache 95% full and preempting requests"),),
        ),
        Case(
            "95% full without preemptions, and preempting at 50%: silent",
            {
                series(_KV_USAGE, _ENGINE): "0.95x20",
                series(_PREEMPTIONS, _ENGINE): "7x20",
                series(_KV_USAGE, _OTHER): "0.5x20",
                series(_PREEMPTIONS, _OTHER): "0+2x20",
            },
            "15m",
        ),
    ),
)

QUEUE_GROWING = Cause(
    name="LLMEngineQueueGrowing",
    severity="ticket",
    expr=f"min_over_time({_WAITING}[15m]) > 0\nand\nderiv({_WAITING}[15m]) > 0",
    for_="10m",
    summary="{{ $labels.model }} on {{ $labels.vllm_instance }}: queue not empty for 15m and growing "
    "({{ $value }} waiting at least)",
    meaning="Requests arrive faster than the engine serves them: its queue has not emptied for 15 minutes and "
    "keeps growing. Queue time is part of TTFT, so the TTFT SLO follows.",
    threshold="Never empty over 15 minutes and a positive trend, for 10 minutes: bursts that drain do not "
    "fire, a steady backlog that is not growing does not either.",
    action="Add replicas or move load (is the router balancing?), check for a slow engine (throttled GPU, "
    "preemptions), or set max_num_queued_reqs so excess load is refused fast rather than served late.",
    cases=(
        Case(
            "one more request waiting each minute: ticket",
            {series(_WAITING, _ENGINE): "1+1x40"},
            "30m",
            ((_ENGINE, f"{MODEL} on {VLLM_INSTANCE}: queue not empty for 15m and growing (16 waiting at least)"),),
        ),
        Case(
            "a steady 5 waiting, and bursts that drain: silent",
            {series(_WAITING, _ENGINE): "5x40", series(_WAITING, _OTHER): "0 5 10 " * 13 + "0"},
            "30m",
        ),
    ),
)

SLOW_COLD_START = Cause(
    name="LLMEngineSlowColdStart",
    severity="ticket",
    # The gauge keeps the last start's time: fire for an hour after a slow start is seen, not forever.
    expr=f"{_READY} > {SLOW_START_S}\nand (\n  changes({_READY}[1h]) > 0\n"
    f"  or\n  ({_READY} unless {_READY} offset 1h)\n)",
    summary="{{ $labels.vllm_instance }} on {{ $labels.instance }}: vLLM took {{ $value | humanizeDuration }} "
    "to become ready",
    meaning="A vLLM server took long to start serving. Scale-up and recovery from every crash take as long, "
    "and requests queue meanwhile.",
    threshold=f"More than {SLOW_START_S // 60} minutes from process start to ready (shown for an hour after). "
    "A cached model loads in a few minutes; longer usually means weights downloaded at start, no compile cache, "
    "or slow storage.",
    action=f"`{catalog.ENGINE_STARTUP_PHASE.name}` splits the time (load_weights, warmup, allocate_kv_cache, ...): "
    "pre-pull weights to local disk, persist the torch.compile/CUDA-graph cache, use faster storage.",
    cases=(
        Case(
            "a start taking 15 minutes: ticket",
            {series(_READY, _SERVER): "_x5 900x30"},
            "10m",
            ((_SERVER, f"{VLLM_INSTANCE} on {INSTANCE}: vLLM took 15m 0s to become ready"),),
        ),
        Case("a 2-minute start: silent", {series(_READY, _SERVER): "_x5 120x30"}, "10m"),
        Case("a slow start seen more than an hour ago: silent", {series(_READY, _SERVER): "900x90"}, "80m"),
    ),
)

SPANS_MISSING = Cause(
    name="LLMSpansMissing",
    severity="ticket",
    expr=f'sum by (model) (rate({_FINISHED}{{finished_reason!="abort"}}[15m])) > 0\nunless on (model)\n'
    f"sum by (model) (rate({_REQUESTS}[15m])) > 0",
    for_="15m",
    summary="{{ $labels.model }}: vLLM finishes requests but no request spans arrive; latency SLOs are blind",
    meaning="vLLM serves the model but the exporter receives no llm_request spans for it, so its latency SLOs "
    "and cost attribution see nothing.",
    threshold="Requests finished and not one span for 15 minutes, for 15 minutes.",
    action="Check vLLM's --otlp-traces-endpoint (gRPC :4317, or HTTP :4318/v1/traces with "
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf), OTEL_SERVICE_NAME and the model mapping, network "
    f"policies, and `{catalog.SPANS_RECEIVED.name}`.",
    cases=(
        Case(
            "10 requests a minute, no spans: ticket",
            {series(_FINISHED, _STOPPED): "0+10x40"},
            "35m",
            (
                (
                    {"model": MODEL},
                    f"{MODEL}: vLLM finishes requests but no request spans arrive; latency SLOs are blind",
                ),
            ),
        ),
        Case(
            "10 requests and 10 spans a minute: silent",
            {series(_FINISHED, _STOPPED): "0+10x40", series(_REQUESTS, _SPANS): "0+10x40"},
            "35m",
        ),
    ),
)
