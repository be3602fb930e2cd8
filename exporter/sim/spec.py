"""What a simulated node is made of: models (size, tensor parallelism, replicas), GPUs and tenants.

Step costs and KV capacity are derived from the model's size and the GPU, with effective (not peak) compute and
bandwidth, so a 70B model steps slower than an 8B one and holds fewer KV tokens per GPU, as on real hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def instance_name(model: ModelSpec, replica: int) -> str:
    """The instance's name: its OTEL_SERVICE_NAME and the exporter's vllm_instance label."""
    return f"vllm-{model.name}-{replica}"
