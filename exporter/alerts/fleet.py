"""Fleet recording rules: per model and tenant across every exporter, and their hand-written tests.

Each exporter knows one node. Prometheus sums them: `sum by (model, tenant)` over every exporter's series, no
node label kept. Names follow level:metric:operations.

A multi-node group (a model sharded over the GPUs of several nodes) is split across exporters: the leader's node
has the spans, so its exporter charges the tenants for the leader's GPUs; a worker's node has only busy GPUs,
charged to the group (`llm_group_*_total`). Only here, with every node in view, can a worker's share reach the
tenants: each tenant gets the worker GPUs' usage in proportion to its share of the leader's (the same requests
ran on every GPU of the group). The leader is found by its `llm_engine_instance_info{group}` series, and its
tenants' series by the scrape target (`instance`) and model they share; this assumes one group leader per model
on a node (a leader of a multi-node group takes its node's GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.alerts import names
from exporter.alerts.testfile import MODEL, TestGroup, labels_text
from exporter.metrics import catalog
from exporter.metrics.promql import rate, sum_by

GROUP = "llm-fleet"
TOKENS = catalog.TOKENS.name
KV_USAGE, KV_CAPACITY = catalog.ENGINE_KV_USAGE.name, catalog.ENGINE_KV_CAPACITY.name
_MT = "model, tenant"

# Recorded series other rules read.
TOKENS_RATE = "model_tenant:llm_tokens:rate5m"
COST_RATE = "model_tenant:llm_cost_usd:rate5m"
ALLOCATION_FACTOR = "instance:llm_cost_allocation_factor:rate5m"
ALLOCATED_COST_RATE = "model_tenant:llm_cost_usd:allocated_rate5m"
KV_FREE = "model:llm_kv_cache_free_tokens:sum"
KV_TOKENS_RATE = "model_tenant:llm_kv_cache_tokens:rate5m"
# A multi-node group's leaders: the scrape target (node) and model of every group.
GROUP_LEADERS = f'group by (group, model, instance) ({names.INSTANCE_INFO}{{group!=""}})'
# Recorded series the dashboards read.
ALLOCATED_USD_PER_MILLION = "model_tenant:llm_usd_per_million_tokens:allocated_rate5m"
KV_HEADROOM = "model:llm_kv_cache_headroom:ratio"


def _rate(name: str, by: str) -> str:
    return sum_by(by, rate(name, "5m"))


def _or_zero(name: str) -> str:
    # An exporter may serve no idle or unattributed series yet: count it as 0, not drop the node.
    return f"({_rate(name, 'instance')} or {_rate(names.COST_USD, 'instance')} * 0)"


@dataclass(frozen=True)
class Record:
    """A recording rule and what it means, for the docs."""

    record: str
    expr: str
    meaning: str


def _leader(metric: str) -> str:
    return f"group_model_tenant:{metric.removesuffix('_total')}:leader_rate5m"


def _worker_share(metric: str) -> str:
    return f"group_model_tenant:{metric.removesuffix('_total')}:worker_rate5m"


def _with_workers(metric: str, by: str = _MT) -> str:
    """The per-(model, tenant) rate of an attribution counter plus the tenants' shares of group workers' usage (0
    where the model has no multi-node group)."""
    own = _rate(metric, by)
    return f"(\n  {own}\n  + (sum by ({by}) ({_worker_share(metric)}) or {own} * 0)\n)"


def group_records(metric: str, worker_metric: str) -> tuple[Record, ...]:
    """A multi-node group's usage per tenant: the leader's own charges plus the workers' by the leader's shares."""
    short = metric.removesuffix("_total")
    leader, worker_share, workers = (
        _leader(metric),
        _worker_share(metric),
        f"group_model:{worker_metric.removesuffix('_total')}:rate5m",
    )
    return (
        Record(
            leader,
            f"sum by (group, model, tenant) (\n  {_rate(metric, 'instance, model, tenant')}\n"
            f"  * on (instance, model) group_left (group)\n  {GROUP_LEADERS}\n)",
            f"{metric} of a multi-node group's leader node, per tenant: what its requests used of the leader's GPUs.",
        ),
        Record(
            workers,
            f"sum by (group) (rate({worker_metric}[5m]))\n* on (group) group_right ()\n"
            f'group by (group, model) ({names.INSTANCE_INFO}{{group!=""}})\nor on (group)\n'
            f"{_rate(worker_metric, 'group, model')}",
            f"{worker_metric} of a group's workers, with the leader's model (the worker's own while the leader is "
            "not in view).",
        ),
        Record(
            worker_share,
            f"{leader}\n/ on (group, model) group_left ()\n(sum by (group, model) ({leader}) > 0)\n"
            f"* on (group, model) group_left ()\n{workers}",
            f"{worker_metric} of a group's workers per tenant, in proportion to the tenant's share of the leader's.",
        ),
        Record(
            f"group_model_tenant:{short}:rate5m",
            f"{leader}\n+ ({worker_share} or {leader} * 0)",
            "Per tenant, every GPU of the group: the leader's charge plus the tenant's share of the workers' usage. "
            "Summed over tenants: the leader's charges and all the workers' usage.",
        ),
    )


GROUP_RECORDS: tuple[Record, ...] = (
    *group_records(names.ENERGY_JOULES, names.GROUP_ENERGY_JOULES),
    *group_records(names.COST_USD, names.GROUP_COST_USD),
    *group_records(names.GPU_SECONDS, names.GROUP_GPU_SECONDS),
)


RECORDS: tuple[Record, ...] = (
    *GROUP_RECORDS,
    Record("model_tenant_type:llm_tokens:rate5m", _rate(TOKENS, f"{_MT}, type"), "Tokens/s by type (input, output)."),
    Record(TOKENS_RATE, _rate(TOKENS, _MT), "Tokens/s, input and output together."),
    Record(
        COST_RATE,
        _with_workers(names.COST_USD),
        "$/s charged to requests (usage), a multi-node group's workers' usage shared as their leader's.",
    ),
    Record(
        "model_tenant:llm_usd_per_million_tokens:usage_rate5m",
        f"1e6 * {COST_RATE} / {TOKENS_RATE}",
        "$ per million tokens, usage basis: only the GPU time the requests used.",
    ),
    Record(
        ALLOCATION_FACTOR,
        f"(\n  {_rate(names.COST_USD, 'instance')}\n  + {_or_zero(names.IDLE_COST_USD)}\n"
        f"  + {_or_zero(names.UNATTRIBUTED_COST_USD)}\n)\n/\n({_rate(names.COST_USD, 'instance')} > 0)",
        "Per exporter: all GPU cost (requests + idle + unattributed) / cost charged to requests; absent where "
        "nothing was charged.",
    ),
    Record(
        ALLOCATED_COST_RATE,
        f"sum by ({_MT}) (\n  {_rate(names.COST_USD, f'instance, {_MT}')}\n  * on (instance) group_left ()\n"
        f"  {ALLOCATION_FACTOR}\n)\n+ (sum by ({_MT}) ({_worker_share(names.COST_USD)}) or {COST_RATE} * 0)",
        "$/s with each node's idle and unattributed cost shared among its users in proportion to their usage (a "
        "group's workers' usage as in the usage rate).",
    ),
    Record(
        ALLOCATED_USD_PER_MILLION,
        f"1e6 * {ALLOCATED_COST_RATE} / {TOKENS_RATE}",
        "$ per million tokens, allocation basis: what the GPUs cost, idle time included.",
    ),
    Record(
        "model_tenant:llm_joules_per_token:rate5m",
        f"{_with_workers(names.ENERGY_JOULES)}\n/\n{TOKENS_RATE}",
        "Joules per token (usage basis: the energy of the requests' GPU time).",
    ),
    Record(
        "model_tenant:llm_gpu_busy:rate5m",
        _with_workers(names.GPU_SECONDS),
        "GPU-seconds per second: how many GPUs' worth of busy time the model and tenant use (a multi-node group's "
        "workers included).",
    ),
    Record(
        "fleet:llm_gpu_busy:ratio_rate5m",
        f"sum (rate({names.GPU_SECONDS}[5m]))\n/\n(\n  sum (rate({names.GPU_SECONDS}[5m]))\n"
        f"  + (sum (rate({names.GPU_IDLE_SECONDS}[5m])) or vector(0))\n"
        f"  + (sum (rate({names.GPU_UNATTRIBUTED_SECONDS}[5m])) or vector(0))\n)",
        "Share of all GPU time spent on requests (the rest is idle or unattributed).",
    ),
    Record(
        KV_FREE,
        f"sum by (model) ((1 - {KV_USAGE}) * {KV_CAPACITY})",
        "KV-cache headroom: tokens that still fit, summed over the model's engines.",
    ),
    Record(
        KV_HEADROOM,
        f"{KV_FREE}\n/\nsum by (model) ({KV_CAPACITY})",
        "KV-cache headroom as a share of the model's capacity.",
    ),
    Record(
        KV_TOKENS_RATE,
        _rate(names.KV_TOKEN_SECONDS, _MT),
        "KV tokens held on average (token-seconds per second) by each model and tenant.",
    ),
    Record(
        "model_tenant:llm_kv_cache_share:ratio_rate5m",
        f"{KV_TOKENS_RATE}\n/ on (model) group_left ()\nsum by (model) ({KV_CAPACITY})",
        "Each tenant's share of its model's KV-cache capacity.",
    ),
)

assert {names.level(r.record) for r in RECORDS} <= set(names.LEVELS), "every record's level needs its labels"


def rule_file() -> dict[str, Any]:
    """The fleet rule file: one group, in order (later rules read earlier ones)."""
    return {"groups": [{"name": GROUP, "rules": [{"record": r.record, "expr": r.expr} for r in RECORDS]}]}


def _series(name: str, labels: dict[str, str], per_minute: float) -> tuple[str, str]:
    return name + labels_text(labels), f"1000+{per_minute:g}x20"


def test_groups() -> list[TestGroup]:
    """Two exporters, two tenants, known per-minute increments; every rule's value checked at 10m."""
    a, b = "node-a:9842", "node-b:9842"
    acme_a = {"instance": a, "model": MODEL, "tenant": "acme", "phase": "decode"}
    acme_b, beta_b = {**acme_a, "instance": b}, {**acme_a, "instance": b, "tenant": "beta"}
    series = [
        # node a: acme pays $0.06/min; the GPU also idles $0.03/min and loses $0.03/min to the residual.
        _series(names.COST_USD, acme_a, 0.06),
        _series(names.IDLE_COST_USD, {"instance": a, "gpu": "GPU-a"}, 0.03),
        _series(names.UNATTRIBUTED_COST_USD, {"instance": a, "gpu": "GPU-a", "reason": "no_spans"}, 0.03),
        # node b: acme and beta $0.06/min each, no idle; no unattributed series at all.
        _series(names.COST_USD, acme_b, 0.06),
        _series(names.COST_USD, beta_b, 0.06),
        _series(names.IDLE_COST_USD, {"instance": b, "gpu": "GPU-b"}, 0),
    ]
    for labels, (tokens_in, tokens_out) in ((acme_a, (4800, 1200)), (acme_b, (4800, 1200)), (beta_b, (9600, 2400))):
        base = {k: labels[k] for k in ("instance", "model", "tenant")}
        series.append(_series(TOKENS, {**base, "type": "input"}, tokens_in))
        series.append(_series(TOKENS, {**base, "type": "output"}, tokens_out))
        series.append(_series(names.ENERGY_JOULES, labels, 30 * (tokens_in + tokens_out) / 1000))
        series.append(_series(names.GPU_SECONDS, labels, 30))
        series.append(_series(names.KV_TOKEN_SECONDS, labels, 60 * 1000))
    series.append(_series(names.GPU_IDLE_SECONDS, {"instance": a, "gpu": "GPU-a"}, 15))
    series.append(_series(names.GPU_UNATTRIBUTED_SECONDS, {"instance": a, "gpu": "GPU-a", "reason": "x"}, 15))
    for node, usage in ((a, 0.75), (b, 0.5)):
        engine = {"instance": node, "vllm_instance": "vllm-0", "model": MODEL}
        series.append((KV_USAGE + labels_text(engine), f"{usage}x20"))
        series.append((KV_CAPACITY + labels_text(engine), "8000x20"))
    group = TestGroup(
        "Two exporters: node a serves acme (and idles), node b serves acme and beta. Every fleet rule, by hand.",
        60,
        series,
    )
    acme, beta = {"model": MODEL, "tenant": "acme"}, {"model": MODEL, "tenant": "beta"}
    at = 600

    def check(expr: str, labels: dict[str, str], value: float) -> None:
        # round(): per-second rates of per-minute increments are not exact in binary; the checks are to 1/1000.
        group.expect_value(at, f"round(1000 * {expr})", labels, value)

    check('model_tenant_type:llm_tokens:rate5m{tenant="acme",type="output"}', {**acme, "type": "output"}, 40_000)
    check(TOKENS_RATE + '{tenant="acme"}', acme, 200_000)
    # acme: $0.002/s for 200 tokens/s = $10 per million; node a's idle and residual double its cost there.
    check('model_tenant:llm_usd_per_million_tokens:usage_rate5m{tenant="acme"}', acme, 10_000)
    check('model_tenant:llm_usd_per_million_tokens:allocated_rate5m{tenant="acme"}', acme, 15_000)
    check('model_tenant:llm_usd_per_million_tokens:usage_rate5m{tenant="beta"}', beta, 5_000)
    check('model_tenant:llm_usd_per_million_tokens:allocated_rate5m{tenant="beta"}', beta, 5_000)
    check(ALLOCATION_FACTOR + '{instance="node-a:9842"}', {"instance": a}, 2_000)
    check('model_tenant:llm_joules_per_token:rate5m{tenant="acme"}', acme, 30)
    check('model_tenant:llm_gpu_busy:rate5m{tenant="acme"}', acme, 1_000)
    check("fleet:llm_gpu_busy:ratio_rate5m", {}, 750)
    check(KV_FREE, {"model": MODEL}, 6_000_000)
    check("model:llm_kv_cache_headroom:ratio", {"model": MODEL}, 375)
    check('model_tenant:llm_kv_cache_share:ratio_rate5m{tenant="acme"}', acme, 125)
    return [group, _group_test()]


def _group_test() -> TestGroup:
    """A model sharded over two nodes: the leader's node charges acme and beta, the worker's node its GPUs."""
    leader, worker, plain = "node-a:9842", "node-b:9842", "node-c:9842"
    big = {"group": "llm/big-0", "model": "big"}
    series = [
        (names.INSTANCE_INFO + labels_text({"instance": leader, "vllm_instance": "llm/big-0", **big}), "1x20"),
        # Another model on the leader's node, and a plain replica of `big` elsewhere: neither is the group's.
        (
            names.INSTANCE_INFO + labels_text({"instance": leader, "vllm_instance": "llm/small", "model": "small"}),
            "1x20",
        ),
        (names.INSTANCE_INFO + labels_text({"instance": plain, "vllm_instance": "llm/big-9", "model": "big"}), "1x20"),
        # The worker's exporter does not know the model (a Ray worker): the leader's comes from its info series.
        _series(names.GROUP_ENERGY_JOULES, {"instance": worker, "group": "llm/big-0", "model": ""}, 90),
        _series(names.GROUP_COST_USD, {"instance": worker, "group": "llm/big-0", "model": ""}, 0.09),
        _series(names.GROUP_GPU_SECONDS, {"instance": worker, "group": "llm/big-0", "model": ""}, 240),
    ]
    # The leader's node: acme uses twice what beta does (60 and 30 J/min); its other model and the plain replica
    # of `big` on node c charge acme too, which must not move the group's shares.
    for instance, model, tenant, per_minute in (
        (leader, "big", "acme", 60),
        (leader, "big", "beta", 30),
        (leader, "small", "acme", 600),
        (plain, "big", "acme", 600),
    ):
        labels = {"instance": instance, "model": model, "tenant": tenant}
        series.append(_series(names.ENERGY_JOULES, labels, per_minute))
        series.append(_series(names.COST_USD, labels, per_minute / 1000))
        series.append(_series(names.GPU_SECONDS, labels, per_minute * 2))
    group = TestGroup("A group over two nodes: the worker's usage goes to the leader's tenants by share.", 60, series)
    at = 600
    acme, beta = {**big, "tenant": "acme"}, {**big, "tenant": "beta"}

    def check(expr: str, labels: dict[str, str], value: float) -> None:
        group.expect_value(at, f"round(1000 * {expr})", labels, value)

    check("group_model:llm_group_energy_joules:rate5m", big, 1_500)  # 90 J/min, with the leader's model
    check('group_model_tenant:llm_energy_joules:leader_rate5m{tenant="acme"}', acme, 1_000)
    # acme: its 1 J/s on the leader + 2/3 of the worker's 1.5 J/s; beta: 0.5 + 1/3 of 1.5.
    check('group_model_tenant:llm_energy_joules:rate5m{tenant="acme"}', acme, 2_000)
    check('group_model_tenant:llm_energy_joules:rate5m{tenant="beta"}', beta, 1_000)
    check('group_model_tenant:llm_cost_usd:rate5m{tenant="acme"}', acme, 2)
    check('group_model_tenant:llm_gpu_seconds:rate5m{tenant="beta"}', beta, 2_333)  # 1 + 4 / 3 GPU-s per second
    check('group_model_tenant:llm_energy_joules:worker_rate5m{tenant="beta"}', beta, 500)
    # Per model and tenant across the fleet, a group's workers count too: acme's $/s for `big` is its leader
    # charge (0.06/min), the plain replica's (0.6/min) and 2/3 of the worker's 0.09/min; beta's 0.03 + 0.03.
    check(f'{COST_RATE}{{model="big",tenant="acme"}}', {"model": "big", "tenant": "acme"}, 12)
    check(f'{COST_RATE}{{model="big",tenant="beta"}}', {"model": "big", "tenant": "beta"}, 1)
    check(f'{COST_RATE}{{model="small"}}', {"model": "small", "tenant": "acme"}, 10)
    # Every GPU of the group, summed over tenants: the leader's charges and all the worker's usage (2.5 J/s).
    check("sum by (group, model) (group_model_tenant:llm_energy_joules:rate5m)", big, 3_000)
    return group
