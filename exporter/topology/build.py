"""Picks and builds the topology source the options ask for (`mode`), and adapts the GPU sampler's process lists
for the bare-metal source."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from exporter.gpu.records import GpuView
from exporter.topology.kubernetes import KubernetesOptions, KubernetesTopology, in_cluster_api_url
from exporter.topology.model import (
    SOURCE_KUBERNETES,
    SOURCE_PROCESSES,
    SOURCE_STATIC,
    TopologyConfigError,
    TopologySource,
)
from exporter.topology.podresources import DEFAULT_SOCKET, PodResourcesClient
from exporter.topology.processes import ComputeProcess, ComputeProcessLister, ProcessTopology
from exporter.topology.static import InstanceConfig, StaticTopology

MODES = ("auto", SOURCE_STATIC, SOURCE_KUBERNETES, SOURCE_PROCESSES)
MIN_PROCESS_REFRESH_S = 5.0  # walking /proc costs ~ms per process: not more often than this


@dataclass(frozen=True)
class TopologyOptions:
    """Which source finds the vLLM instances, and each source's own options."""

    mode: str = "auto"
    instances: tuple[InstanceConfig, ...] = ()
    kubernetes: KubernetesOptions = field(default_factory=KubernetesOptions)
    podresources_socket: str = DEFAULT_SOCKET
    processes_refresh_s: float = MIN_PROCESS_REFRESH_S


def resolve_mode(options: TopologyOptions, environ: Mapping[str, str] | None = None) -> str:
    """The effective mode: as configured, or for `auto` kubernetes (in a cluster, with a node name), else
    static (instances listed), else processes."""
    if options.mode != "auto":
        return options.mode
    env = os.environ if environ is None else environ
    in_cluster = bool(options.kubernetes.api_url or in_cluster_api_url(env))
    if in_cluster and options.kubernetes.node_name:
        return SOURCE_KUBERNETES
    if options.instances:
        return SOURCE_STATIC
    return SOURCE_PROCESSES


def kubernetes_source(
    options: TopologyOptions, environ: Mapping[str, str] | None = None, with_podresources: bool = True
) -> KubernetesTopology:
    """The Kubernetes source (the in-cluster API server unless one is given); raises TopologyConfigError."""
    env = os.environ if environ is None else environ
    kube = options.kubernetes
    api_url = kube.api_url or in_cluster_api_url(env)
    if not api_url:
        raise TopologyConfigError(
            "topology mode kubernetes needs kubernetes_api_url, or KUBERNETES_SERVICE_HOST (in a pod)"
        )
    if not kube.node_name:
        raise TopologyConfigError(
            "topology mode kubernetes needs kubernetes_node_name (set it from spec.nodeName via the downward API)"
        )
    lookup = (
        PodResourcesClient(options.podresources_socket) if with_podresources and options.podresources_socket else None
    )
    return KubernetesTopology(replace(kube, api_url=api_url.rstrip("/")), lookup)


def build_source(
    options: TopologyOptions,
    gpu_processes: ComputeProcessLister | None = None,
    environ: Mapping[str, str] | None = None,
    proc_root: Path = Path("/proc"),
) -> TopologySource:
    """The configured source, not started; raises TopologyConfigError when the options cannot work.
    `gpu_processes` feeds the processes mode (e.g. from the GPU sampler; see `compute_processes`)."""
    mode = resolve_mode(options, environ)
    if mode == SOURCE_KUBERNETES:
        return kubernetes_source(options, environ)
    if mode == SOURCE_STATIC:
        return StaticTopology(options.instances)
    return ProcessTopology(gpu_processes, proc_root, refresh_s=options.processes_refresh_s)


def compute_processes(views: Iterable[GpuView]) -> list[ComputeProcess]:
    """The compute processes in the GPU sampler's latest samples, as the processes mode wants them."""
    out: list[ComputeProcess] = []
    for view in views:
        if view.latest is not None and view.latest.processes:
            out.extend(ComputeProcess(p.pid, view.identity.uuid) for p in view.latest.processes)
    return out
