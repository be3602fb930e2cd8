"""What a simulated node is made of: models (size, tensor parallelism, replicas), GPUs and tenants.

Step costs and KV capacity are derived from the model's size and the GPU, with effective (not peak) compute and
bandwidth, so a 70B model steps slower than an 8B one and holds fewer KV tokens per GPU, as on real hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from exporter.sim.engine import CostModel
from exporter.sim.power import GIB, GpuSpec
from exporter.sim.workload import ArrivalKind, Tenant, default_tenants

EFFECTIVE_FLOPS = 400e12  # dense bf16 an H100 sustains in serving (peak ~990e12)
EFFECTIVE_BANDWIDTH = 2.5e12  # bytes/s of HBM3 sustained (peak 3.35e12)
ACTIVATION_RESERVE = 3 * GIB  # per GPU: activations, CUDA graphs, NCCL buffers outside the KV pool


@dataclass(frozen=True)
class ModelSpec:
    """A served model and how it is deployed."""

    name: str  # the model label and vLLM's served model_name
    params_b: float  # parameters, billions
    layers: int
    kv_heads: int
    head_dim: int = 128
    bytes_per_param: float = 2.0  # 2: bf16, 1: fp8
    tp: int = 1  # GPUs per instance (tensor parallel)
    replicas: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 4096
    gpu_memory_utilization: float = 0.9
    block_size: int = 16

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V, every layer, bf16 cache (whole model, all GPUs together)."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * 2

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights (whole model)."""
        return self.params_b * 1e9 * self.bytes_per_param

    def cost(self) -> CostModel:
        """Per-step costs at full clock on `tp` GPUs."""
        flops = EFFECTIVE_FLOPS * (2.0 if self.bytes_per_param <= 1.0 else 1.0) * self.tp
        bandwidth = EFFECTIVE_BANDWIDTH * self.tp
        attention_flops = 4.0 * self.layers * self.kv_heads * self.head_dim * 4  # grouped-query: 4 heads per kv head
        return CostModel(
            fixed_s=self.weight_bytes / bandwidth + 0.001,
            prefill_s_per_token=2.0 * self.params_b * 1e9 / flops,
            prefill_s_per_token_context=attention_flops / flops,
            decode_s_per_seq=5e-5,
            decode_s_per_context_token=self.kv_bytes_per_token / bandwidth,
        )

    def kv_bytes_per_gpu(self, gpu: GpuSpec) -> int:
        """The KV pool vLLM allocates on each GPU: its memory share minus weights and activations."""
        usable = gpu.memory_total * self.gpu_memory_utilization - self.weight_bytes / self.tp - ACTIVATION_RESERVE
        return max(int(usable), 0)

    def kv_blocks(self, gpu: GpuSpec) -> int:
        """KV-cache blocks of one instance."""
        tokens = self.kv_bytes_per_gpu(gpu) * self.tp / self.kv_bytes_per_token
        return int(tokens // self.block_size)


LLAMA_70B_FP8 = ModelSpec("llama-3.1-70b-instruct", 70.0, layers=80, kv_heads=8, bytes_per_param=1.0, tp=2)
LLAMA_8B = ModelSpec("llama-3.1-8b-instruct", 8.0, layers=32, kv_heads=8, replicas=2)
# The fleet's other shapes, each a model of its own so that its requests are told apart by the `model` label.
QWEN_32B_FP8 = ModelSpec("qwen2.5-32b-instruct", 32.0, layers=64, kv_heads=8, bytes_per_param=1.0)  # P/D pair
MISTRAL_7B = ModelSpec("mistral-7b-instruct", 7.0, layers=32, kv_heads=8)  # data parallel, 2 engines
QWEN_72B = ModelSpec("qwen2.5-72b-instruct", 72.0, layers=80, kv_heads=8, tp=4)  # a TP group over two nodes

PREFILL, DECODE = "prefill", "decode"


@dataclass(frozen=True)
class Placement:
    """One vLLM server of a node or fleet: its model, name, the node of its API server, its GPUs (global indexes,
    the API server's node's first), its P/D role, its data-parallel engines (the GPUs split evenly among them),
    and its multi-node group name (a TP group whose GPUs span nodes)."""

    model: ModelSpec
    name: str
    node: int = 0
    gpus: tuple[int, ...] = ()
    role: str = ""  # "", PREFILL or DECODE
    engines: int = 1
    group: str = ""


@dataclass(frozen=True)
class NodeSpec:
    """A GPU node: its GPUs, the models deployed on them, and its tenants."""

    models: tuple[ModelSpec, ...] = (LLAMA_70B_FP8, LLAMA_8B)
    gpus: int = 4
    gpu: GpuSpec = field(default_factory=GpuSpec)
    tenants: tuple[Tenant, ...] = ()  # empty: `default_tenants` over the models
    arrival: ArrivalKind = ArrivalKind.POISSON
    gateway_share: float = 1.0  # share of requests that come through the gateway (and so have a tenant)
    rate_scale: float = 1.0  # multiplies every tenant's rate

    def tenant_list(self) -> list[Tenant]:
        """The tenants, defaulted over the models."""
        if self.tenants:
            return list(self.tenants)
        return default_tenants([m.name for m in self.models], self.rate_scale)

    def placements(self) -> list[tuple[ModelSpec, int, tuple[int, ...]]]:
        """(model, replica, GPU indexes) of every instance, GPUs handed out in order; raises ValueError when the
        models need more GPUs than the node has."""
        out, next_gpu = [], 0
        for model in self.models:
            for replica in range(model.replicas):
                gpus = tuple(range(next_gpu, next_gpu + model.tp))
                next_gpu += model.tp
                out.append((model, replica, gpus))
        if next_gpu > self.gpus:
            raise ValueError(f"the models need {next_gpu} GPUs, the node has {self.gpus}")
        return out

    def layout(self) -> list[Placement]:
        """Every server as a Placement (all on node 0), named as `instance_name` names them."""
        return [Placement(m, instance_name(m, r), 0, g) for m, r, g in self.placements()]

    @property
    def nodes(self) -> int:
        """One node."""
        return 1


@dataclass(frozen=True)
class FleetSpec:
    """Several GPU nodes simulated together (one seeded simulation, so requests that cross nodes are exact).

    The layout of `nodes` (>= 3) nodes of 4 GPUs (node-1 is index 0):
    - node-1: the P/D pair's prefill instance (GPU 0), a data-parallel server with 2 engines (GPUs 1, 2), an 8B
      replica (GPU 3);
    - node-2: the P/D pair's decode instance (GPU 0), an 8B replica (GPU 1), the leader of a TP=4 group (GPUs 2, 3,
      and its API server);
    - node-3: the TP group's worker GPUs (0, 1: no API server, no spans, no /metrics), a 70B TP=2 replica (2, 3);
    - node-4 and up: plain replicas, as the single-node demo's node: a 70B TP=2 replica and two 8B replicas.
    """

    nodes: int = 3
    gpus_per_node: int = 4
    gpu: GpuSpec = field(default_factory=GpuSpec)
    tenants: tuple[Tenant, ...] = ()  # empty: `fleet_tenants` over the layout
    arrival: ArrivalKind = ArrivalKind.POISSON
    gateway_share: float = 1.0
    rate_scale: float = 1.0
    pd_model: ModelSpec = QWEN_32B_FP8
    dp_model: ModelSpec = MISTRAL_7B
    tp_model: ModelSpec = QWEN_72B

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError(f"a fleet has at least 3 nodes (got {self.nodes})")

    @property
    def gpus(self) -> int:
        """GPUs in the whole fleet."""
        return self.nodes * self.gpus_per_node

    def node_of_gpu(self, gpu: int) -> int:
        """The node (0-based) GPU `gpu` (a global index) is in."""
        return gpu // self.gpus_per_node

    def layout(self) -> list[Placement]:
        """Every server of the fleet; see the class docstring."""
        per = self.gpus_per_node
        counts: dict[str, int] = {}

        def name(model: ModelSpec, suffix: str = "") -> str:
            replica = counts.get(model.name + suffix, 0)
            counts[model.name + suffix] = replica + 1
            return f"vllm-{model.name}{suffix}-{replica}"

        plain_70b = replace(LLAMA_70B_FP8, replicas=1)
        plain_8b = replace(LLAMA_8B, replicas=1)
        tp = name(self.tp_model)
        out = [
            Placement(self.pd_model, name(self.pd_model, "-prefill"), 0, (0,), role=PREFILL),
            Placement(replace(self.dp_model, replicas=1), name(self.dp_model), 0, (1, 2), engines=2),
            Placement(plain_8b, name(plain_8b), 0, (3,)),
            Placement(self.pd_model, name(self.pd_model, "-decode"), 1, (per,), role=DECODE),
            Placement(plain_8b, name(plain_8b), 1, (per + 1,)),
            Placement(self.tp_model, tp, 1, (per + 2, per + 3, 2 * per, 2 * per + 1), group=tp),
            Placement(plain_70b, name(plain_70b), 2, (2 * per + 2, 2 * per + 3)),
        ]
        for node in range(3, self.nodes):
            base = node * per
            out += [
                Placement(plain_70b, name(plain_70b), node, (base, base + 1)),
                Placement(plain_8b, name(plain_8b), node, (base + 2,)),
                Placement(plain_8b, name(plain_8b), node, (base + 3,)),
            ]
        return out

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """Every model the fleet serves, once, in layout order."""
        return tuple({p.model.name: p.model for p in self.layout()}.values())

    def tenant_list(self) -> list[Tenant]:
        """The tenants, defaulted by `fleet_tenants`."""
        return list(self.tenants) if self.tenants else fleet_tenants(self.layout(), self.rate_scale)


def fleet_tenants(layout: list[Placement], scale: float = 1.0) -> list[Tenant]:
    """The single node's five tenants (their request shapes), each calling every model of the fleet: a model gets
    a share of the tenant's rate per engine that takes arrivals (decode instances take none), a third of what a
    tenant sends to the single node's three instances, so each engine is about as busy as there."""
    entries: dict[str, int] = {}
    for placement in layout:
        if placement.role != DECODE:
            entries[placement.model.name] = entries.get(placement.model.name, 0) + placement.engines
    out = []
    for tenant in default_tenants(["a", "b"], scale):
        per_engine = sum(tenant.rates.values()) / 3.0
        out.append(replace(tenant, rates={m: per_engine * n for m, n in entries.items()}))
    return out


def instance_name(model: ModelSpec, replica: int) -> str:
    """The instance's name: its OTEL_SERVICE_NAME and the exporter's vllm_instance label."""
    return f"vllm-{model.name}-{replica}"
