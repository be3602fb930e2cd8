"""Picks and builds the topology source the settings ask for (topology_mode), and adapts the GPU sampler's
process lists for the bare-metal source."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from exporter.gpu.records import GpuView
from exporter.service.settings import Settings
from exporter.topology.kubernetes import KubernetesTopology, in_cluster_api_url
from exporter.topology.model import SOURCE_KUBERNETES, SOURCE_PROCESSES, SOURCE_STATIC, TopologySource
from exporter.topology.processes import ComputeProcess, ComputeProcessLister, ProcessTopology
from exporter.topology.static import StaticTopology


def resolve_mode(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The effective mode: as configured, or for `auto` kubernetes (in a cluster, with a node name), else
    static (instances listed), else processes."""
    if settings.topology_mode != "auto":
        return settings.topology_mode
    env = os.environ if environ is None else environ
    in_cluster = bool(settings.kubernetes_api_url or in_cluster_api_url(env))
    if in_cluster and settings.kubernetes_node_name:
        return SOURCE_KUBERNETES
    if settings.instances:
        return SOURCE_STATIC
    return SOURCE_PROCESSES


def build_source(
    settings: Settings,
    gpu_processes: ComputeProcessLister | None = None,
    environ: Mapping[str, str] | None = None,
    proc_root: Path = Path("/proc"),
) -> TopologySource:
    """The configured source, not started; raises TopologyConfigError when the settings cannot work.
    `gpu_processes` feeds the processes mode (e.g. from the GPU sampler; see `compute_processes`)."""
    mode = resolve_mode(settings, environ)
    if mode == SOURCE_KUBERNETES:
        return KubernetesTopology.from_settings(settings, environ)
    if mode == SOURCE_STATIC:
        return StaticTopology(settings.instances)
    return ProcessTopology(gpu_processes, proc_root, refresh_s=max(5.0, settings.engine_scrape_interval_seconds))


def compute_processes(views: Iterable[GpuView]) -> list[ComputeProcess]:
    """The compute processes in the GPU sampler's latest samples, as the processes mode wants them."""
    out: list[ComputeProcess] = []
    for view in views:
        if view.latest is not None and view.latest.processes:
            out.extend(ComputeProcess(p.pid, view.identity.uuid) for p in view.latest.processes)
    return out
