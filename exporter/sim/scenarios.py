"""Named scenarios: a load shape plus timed changes to the node, each leaving its signature in the metrics.

Times are seconds after the simulation starts; every scenario takes `at` (when its change happens) and its own
knobs as keyword arguments, so a test can compress it into seconds and the demo can stretch it into minutes.

| name | what happens | where it shows |
|---|---|---|
| steady | Poisson arrivals at the tenants' rates | |
| diurnal | the rate follows a day compressed into `period` seconds (x0.25 .. x1.75) | tokens/s, queue |
| spike | the rate jumps `factor` times for `length` seconds | queue, TTFT |
| latency_regression | prefill of `model` (default: the last) gets `factor` times slower (for `length` s) | TTFT p95 |
| power_throttling | the GPUs of `instance` are capped at `watts` | gpu_clock_event_reason sw_power_cap, clocks, TPOT |
| kv_exhaustion | a small KV cache on `instance` and a long-context tenant | llm_engine_preemptions_total, KV usage |
| gpu_lost | GPU `gpu` falls off the bus; its instance dies | gpu_up 0, llm_engine_up 0 |
| engine_restart | `instance` restarts (down `down_s`, loads `startup_s`) | llm_engine_restarts_total, start-up phases |
| span_loss | a share `fraction` of llm_request spans never leaves vLLM | llm_requests_total below the truth |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from exporter.sim.spec import NodeSpec, instance_name
from exporter.sim.workload import ArrivalKind, LengthDist, RateProfile, Tenant


@dataclass(frozen=True)
class PrefillSlowdown:
    """From `at`, prefill on the instances of `model` (None: the node's last model) takes `factor` times longer."""

    at: float
    factor: float
    model: str | None = None


@dataclass(frozen=True)
class PowerCap:
    """From `at`, the GPUs of instance number `instance` (None: every GPU) are capped at `watts`."""

    at: float
    watts: float
    instance: int | None = 0


@dataclass(frozen=True)
class LoseGpu:
    """At `at`, GPU `gpu` is lost (NVML GpuIsLost); the instance on it dies with its requests."""

    at: float
    gpu: int


@dataclass(frozen=True)
class RestartEngine:
    """At `at`, instance number `instance` dies; it comes back `down_s` later and loads for `startup_s`."""

    at: float
    instance: int = 0
    down_s: float = 2.0
    startup_s: float = 8.0


@dataclass(frozen=True)
class SpanLoss:
    """From `at`, each llm_request span is lost with probability `fraction` (vLLM's span queue overflowing)."""

    at: float
    fraction: float


@dataclass(frozen=True)
class AddTenant:
    """From `at`, an extra tenant sends its requests; with `instance`, all of them to that instance's model."""

    at: float
    tenant: Tenant
    instance: int | None = None


@dataclass(frozen=True)
class KvCapacity:
    """Instance number `instance` starts with a KV cache of only `tokens` tokens (a low gpu_memory_utilization)."""

    instance: int
    tokens: int


Event = PrefillSlowdown | PowerCap | LoseGpu | RestartEngine | SpanLoss | AddTenant


def _flat(_t: float) -> float:
    return 1.0


@dataclass(frozen=True)
class Scenario:
    """A load shape and the changes that happen to the node, in time order."""

    name: str
    description: str
    arrival: ArrivalKind = ArrivalKind.POISSON
    profile: RateProfile = _flat
    peak: float = 1.0  # the profile's maximum
    events: tuple[Event, ...] = ()
    kv: tuple[KvCapacity, ...] = ()


def _diurnal(period: float = 300.0, low: float = 0.25, high: float = 1.75) -> RateProfile:
    def profile(t: float) -> float:
        return low + (high - low) * (1.0 - math.cos(2.0 * math.pi * t / period)) / 2.0

    return profile


def _spike(at: float, length: float, factor: float) -> RateProfile:
    def profile(t: float) -> float:
        return factor if at <= t < at + length else 1.0

    return profile


LONG_CONTEXT = Tenant(
    "longctx",
    {},
    LengthDist(6000, 0.2, 3000, 12000),
    LengthDist(900, 0.2, 300, 2000),
    2048,
)


def _instance(node: NodeSpec, index: int | None) -> str:
    """Instance number `index` of the node as the view and /metrics name it (vllm_instance), with its model and
    GPUs; None: every GPU."""
    if index is None:
        return "every GPU"
    placements = node.placements()
    if not 0 <= index < len(placements):
        return f"instance {index}"
    model, replica, gpus = placements[index]
    where = f"GPU{'s' if len(gpus) > 1 else ''} {','.join(str(g) for g in gpus)}"
    return f"{instance_name(model, replica)} ({model.name} on {where})"


def _instance_of_gpu(node: NodeSpec, gpu: int) -> str:
    """The instance GPU `gpu` serves, named as `_instance` names it, or 'no instance'."""
    for index, (_, _, gpus) in enumerate(node.placements()):
        if gpu in gpus:
            return _instance(node, index)
    return "no instance"


def _build(name: str, at: float | None, params: dict[str, Any], node: NodeSpec) -> Scenario:
    def p(key: str, default: Any) -> Any:
        return params.pop(key, default)

    when = 60.0 if at is None else at
    if name == "steady":
        return Scenario(name, "Poisson arrivals at the tenants' rates.", arrival=ArrivalKind(p("arrival", "poisson")))
    if name == "diurnal":
        period, low, high = p("period", 300.0), p("low", 0.25), p("high", 1.75)
        return Scenario(name, f"A day compressed into {period:g} s.", profile=_diurnal(period, low, high), peak=high)
    if name == "spike":
        length, factor = p("length", 30.0), p("factor", 4.0)
        return Scenario(
            name,
            f"x{factor:g} load at {when:g} s for {length:g} s.",
            profile=_spike(when, length, factor),
            peak=max(factor, 1.0),
        )
    if name == "latency_regression":
        # 5x on the 8B model of the default node: TTFT p95 past the 1 s SLO threshold, the queue still stable.
        # `length` (default: none) ends it: prefill is back to normal speed that many seconds later.
        factor, model, length = p("factor", 5.0), p("model", None), p("length", None)
        slowdown = PrefillSlowdown(when, factor, model)
        target = model or node.models[-1].name
        on = ", ".join(instance_name(m, r) for m, r, _ in node.placements() if m.name == target)
        if length is None:
            return Scenario(name, f"Prefill {factor:g}x slower on {target} ({on}) from {when:g} s.", events=(slowdown,))
        if length <= 0:
            raise ValueError(f"latency_regression: length must be positive (got {length!r})")
        return Scenario(
            name,
            f"Prefill {factor:g}x slower on {target} ({on}) from {when:g} s for {length:g} s.",
            events=(slowdown, PrefillSlowdown(when + length, 1.0, model)),
        )
    if name == "power_throttling":
        watts, instance = p("watts", 250.0), p("instance", 0)
        return Scenario(
            name,
            f"GPUs of {_instance(node, instance)} capped at {watts:g} W from {when:g} s.",
            events=(PowerCap(when, watts, instance),),
        )
    if name == "kv_exhaustion":
        instance, tokens, rate = p("instance", 1), p("tokens", 32_768), p("rate", 1.5)
        tenant = Tenant(LONG_CONTEXT.name, {"": rate}, LONG_CONTEXT.prompt, LONG_CONTEXT.output, 2048)
        return Scenario(
            name,
            f"{_instance(node, instance)} with a {tokens}-token KV cache; long-context requests (tenant "
            f"{LONG_CONTEXT.name}) to its model from {when:g} s.",
            events=(AddTenant(when, tenant, instance),),
            kv=(KvCapacity(instance, tokens),),
        )
    if name == "gpu_lost":
        gpu = p("gpu", 3)
        return Scenario(
            name, f"GPU {gpu} lost at {when:g} s; {_instance_of_gpu(node, gpu)} dies.", events=(LoseGpu(when, gpu),)
        )
    if name == "engine_restart":
        instance, down, startup = p("instance", 0), p("down_s", 2.0), p("startup_s", 8.0)
        return Scenario(
            name,
            f"{_instance(node, instance)} restarts at {when:g} s (down {down:g} s, loading {startup:g} s).",
            events=(RestartEngine(when, instance, down, startup),),
        )
    if name == "span_loss":
        fraction = p("fraction", 0.3)
        return Scenario(
            name, f"{fraction:.0%} of llm_request spans lost from {when:g} s.", events=(SpanLoss(when, fraction),)
        )
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


SCENARIOS: tuple[str, ...] = (
    "steady",
    "diurnal",
    "spike",
    "latency_regression",
    "power_throttling",
    "kv_exhaustion",
    "gpu_lost",
    "engine_restart",
    "span_loss",
)


def scenario(name: str, at: float | None = None, node: NodeSpec | None = None, **params: Any) -> Scenario:
    """The scenario called `name` (hyphens or underscores), its change at `at` seconds (default 60), with knobs;
    its description names the instances and GPUs of `node` (default: the demo's) it changes. Raises ValueError
    for an unknown name or knob."""
    key = name.strip().lower().replace("-", "_")
    rest = dict(params)
    built = _build(key, at, rest, node or NodeSpec())
    if rest:
        raise ValueError(f"scenario {key} has no parameter(s) {', '.join(sorted(rest))}")
    return built
