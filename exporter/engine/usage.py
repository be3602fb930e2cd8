"""What an instance's work costs its GPUs: vLLM's estimated FLOPs and bytes against each GPU's peak, and the GPU
memory its KV cache takes beside the rest of its processes' memory.

The join of three sources: the engine's counters (per instance), the topology (which GPUs and processes an instance
has) and the GPU sampler (each GPU's product name and its processes' memory). `placements` reads the last two once
per scrape; the arithmetic is pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from exporter.gpu.peaks import PRECISIONS, GpuPeak
from exporter.gpu.records import GpuIdentity, GpuProcess, GpuSnapshot
from exporter.topology.model import Instance, Topology

KV_CACHE, OTHER = "kv_cache", "other"  # llm_engine_gpu_memory_bytes's purpose


@dataclass(frozen=True, slots=True)
class InstanceGpu:
    """One GPU of an instance: who it is, and how much device memory the instance's processes use on it (None when
    NVML does not say, or when the GPU is shared with another instance and the processes are not known)."""

    identity: GpuIdentity
    process_memory_bytes: int | None


Placements = Mapping[str, tuple[InstanceGpu, ...]]  # instance id -> its GPUs that NVML knows


def place(topology: Topology, gpus: GpuSnapshot) -> dict[str, tuple[InstanceGpu, ...]]:
    """Each instance's GPUs as NVML knows them (the topology may name them by UUID or index), with its processes'
    memory on each: the processes with its PIDs when the topology knows them, else every process on a GPU that
    only this instance uses (Kubernetes and static topologies give GPUs, not PIDs)."""
    by_uuid = {v.identity.uuid: v for v in gpus.gpus}
    by_index = {str(v.identity.index): v.identity.uuid for v in gpus.gpus}
    owned: dict[str, list[str]] = {}
    for instance in topology.instances:
        uuids = [u for u in (by_index.get(g, g) for g in instance.gpus) if u in by_uuid]
        owned[instance.id] = list(dict.fromkeys(uuids))
    users = Counter(u for uuids in owned.values() for u in uuids)
    out: dict[str, tuple[InstanceGpu, ...]] = {}
    for instance in topology.instances:
        placed = []
        for uuid in owned[instance.id]:
            view = by_uuid[uuid]
            memory = _process_memory(instance, view.latest.processes if view.latest is not None else None, users[uuid])
            placed.append(InstanceGpu(view.identity, memory))
        out[instance.id] = tuple(placed)
    return out


def _process_memory(instance: Instance, processes: tuple[GpuProcess, ...] | None, users: int) -> int | None:
    if processes is None:
        return None  # NVML did not list processes (unsupported, or the GPU is down)
    pids = set(instance.pids) | ({instance.pid} if instance.pid is not None else set())
    if pids:
        mine = [p.used_memory_bytes for p in processes if p.pid in pids]
    elif users == 1:
        mine = [p.used_memory_bytes for p in processes]
    else:
        return None  # a shared GPU and no PIDs: whose memory is whose cannot be told
    known = [m for m in mine if m is not None]
    return sum(known) if known and len(known) == len(mine) else None


def placements(topology: Callable[[], Topology], gpus: Callable[[], GpuSnapshot]) -> Callable[[], Placements]:
    """A provider of every instance's placement, read from the topology and the sampler when called."""
    return lambda: place(topology(), gpus())


def at_peak_compute(flops: float, peak: GpuPeak) -> dict[str, float]:
    """Seconds `flops` take at the GPU's dense peak, per precision it has units for (never a division by zero)."""
    out = {}
    for precision in PRECISIONS:
        rate = peak.flops(precision)
        if rate is not None and rate > 0:
            out[precision] = flops / rate
    return out


def at_peak_memory(read_bytes: float, write_bytes: float, peak: GpuPeak) -> float | None:
    """Seconds the bytes take at the GPU's peak memory bandwidth (None without a bandwidth)."""
    return (read_bytes + write_bytes) / peak.memory_bandwidth if peak.memory_bandwidth > 0 else None


def memory_by_purpose(kv_bytes: float | None, process_bytes: int | None) -> dict[str, float]:
    """kv_cache and other (the rest of the processes' memory, never below 0), or nothing when either is unknown."""
    if kv_bytes is None or process_bytes is None:
        return {}
    return {KV_CACHE: kv_bytes, OTHER: max(0.0, process_bytes - kv_bytes)}
