"""Topology: which vLLM instances run on this node, where their metrics are, on which GPUs, serving which model.

Plain frozen records plus the interface every discovery source (static, Kubernetes, processes) implements, and
the pure function that maps a span's sender to an instance.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

SOURCE_STATIC = "static"
SOURCE_KUBERNETES = "kubernetes"
SOURCE_PROCESSES = "processes"
SOURCE_PODRESOURCES = "podresources"

# Resource attributes of vLLM's spans that say who sent them (checked on vLLM 0.32).
ATTR_SERVICE_NAME = "service.name"
ATTR_SERVICE_INSTANCE_ID = "service.instance.id"
ATTR_PROCESS_ID = "vllm.process_id"

# An instance's part in prefill/decode disaggregation: prefill-only, decode-only, or both (a plain server).
ROLES = ("prefill", "decode", "both")
POD_ROLE_LABEL = "llm-d.ai/role"  # llm-d marks its prefill and decode pods so


@dataclass(frozen=True, slots=True)
class Instance:
    """One vLLM server on this node: where to scrape it, what it serves, its GPUs and the keys spans match on."""

    id: str  # stable across restarts: "namespace/pod", the configured name, or "host:port"
    url: str  # base URL: its /metrics is scraped (engine.scraper.ScrapeTarget)
    model: str | None = None  # None: learn it from vLLM's own model_name label
    gpus: tuple[str, ...] = ()  # NVML UUIDs (GPU-..., MIG-...) or indexes, as given; () when unknown
    namespace: str | None = None
    pod: str | None = None
    pod_uid: str | None = None
    # Address its spans arrive from: the pod IP in Kubernetes, the URL's IP literal in static mode.
    ip: str | None = None
    pid: int | None = None  # host PID of the API server process (processes mode)
    # Span-matching keys besides `ip`: every PID of the server's process tree (API server, engine core, GPU
    # workers: each sends spans with its own vllm.process_id), and the service.instance.id / service.name
    # values it is known to send.
    pids: tuple[int, ...] = ()
    service_instance_ids: tuple[str, ...] = ()
    service_names: tuple[str, ...] = ()
    role: str | None = None  # prefill, decode or both (ROLES); None when nothing says
    # The multi-node group it leads (LeaderWorkerSet, or the static config's `group`); None when it is alone.
    group: str | None = None


@dataclass(frozen=True, slots=True)
class GroupWorker:
    """A worker of a multi-node group on this node: GPUs busy for the group's leader, with no API server, no spans
    and no /metrics of its own (a LeaderWorkerSet worker pod, a `vllm serve --headless` or Ray worker)."""

    id: str  # "namespace/pod", or the configured name
    group: str  # the group's id: the leader's instance id in Kubernetes, the configured `group` in static mode
    model: str | None = None  # from its own vLLM arguments or the config; None: the leader's (fleet rules join it)
    gpus: tuple[str, ...] = ()
    namespace: str | None = None
    pod: str | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    """The instances one source sees right now; `stale` when its source could not confirm them lately."""

    instances: tuple[Instance, ...] = ()
    observed_at: float = 0.0  # unix time the source last confirmed this view (0: never)
    source: str = ""
    stale: bool = False
    workers: tuple[GroupWorker, ...] = ()  # multi-node group workers on this node (not instances: nothing to scrape)

    def by_id(self, instance_id: str) -> Instance | None:
        """The instance with that id, if present."""
        for instance in self.instances:
            if instance.id == instance_id:
                return instance
        return None


@runtime_checkable
class TopologySource(Protocol):
    """A discovery source. `current()` is cheap, never blocks and is safe from any thread (scrapes render in an
    executor): it returns an immutable snapshot the source swaps atomically."""

    @property
    def source(self) -> str:
        """The source's name, as in the `source` label (static, kubernetes, processes)."""
        ...

    async def start(self) -> None:
        """Begin discovering (spawn background tasks on the running loop); returns without waiting for data."""
        ...

    async def stop(self) -> None:
        """Stop background work and release connections; idempotent."""
        ...

    def current(self) -> Topology:
        """The latest topology."""
        ...

    def error_counts(self) -> dict[tuple[str, str], int]:
        """Failures so far by (source, reason), for llm_exporter_topology_errors_total."""
        ...


def empty_topology(source: str) -> Topology:
    """What a source reports before its first observation: nothing, and stale."""
    return Topology((), 0.0, source, stale=True)


def now() -> float:
    """Wall-clock time for `observed_at` (a seam: one place to read the clock)."""
    return time.time()


# --- Matching a span's sender to an instance ---


@dataclass(frozen=True, slots=True)
class SpanSender:
    """Who sent a span: its resource's identifying attributes and the OTLP connection's peer IP."""

    peer_ip: str | None = None
    process_id: int | None = None
    service_instance_id: str | None = None
    service_name: str | None = None

    @classmethod
    def from_resource(cls, attributes: Mapping[str, object], peer: str | None) -> SpanSender:
        """Build from resource attributes (values as decoded: str, int, ...) and a peer address in any of the
        forms `peer_ip` accepts."""
        return cls(
            peer_ip=peer_ip(peer) if peer else None,
            process_id=_as_pid(attributes.get(ATTR_PROCESS_ID)),
            service_instance_id=_as_text(attributes.get(ATTR_SERVICE_INSTANCE_ID)),
            service_name=_as_text(attributes.get(ATTR_SERVICE_NAME)),
        )


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _as_pid(value: object) -> int | None:
    # vLLM sends vllm.process_id as a string ("14512"); accept an int too.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        pid = int(value.strip())
        return pid if pid > 0 else None
    return None


def peer_ip(peer: str) -> str | None:
    """The IP of a connection's peer, normalised: accepts gRPC's `ipv4:10.0.0.5:4242` / `ipv6:[::1]:4242`,
    `host:port`, `[v6]:port` and bare IPs (aiohttp's `request.remote`); IPv4-mapped IPv6 becomes IPv4.
    None for unix sockets or anything that is not an IP."""
    text = peer.strip()
    if text.startswith(("unix:", "unix-abstract:")):
        return None
    for prefix in ("ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.replace("%5B", "[").replace("%5D", "]")
    candidates = [text]
    if text.startswith("["):
        candidates.insert(0, text[1:].partition("]")[0])
    elif text.count(":") == 1:
        candidates.insert(0, text.partition(":")[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate.partition("%")[0])
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)
    return None


def match_sender(instances: Iterable[Instance], sender: SpanSender) -> Instance | None:
    """The instance that sent a span, or None when no key identifies exactly one.

    Keys are tried from the most to the least specific: peer IP (pod IP), process id, service.instance.id,
    service.name. A key that matches exactly one candidate decides. One that matches several narrows the
    candidates (hostNetwork pods share the node's IP; several servers on one box share 127.0.0.1) and the next
    key decides among them. A key that matches none is skipped: a PID seen inside a container is not a host PID.
    """
    candidates = list(instances)
    for key, value in (
        ("ip", sender.peer_ip),
        ("pid", sender.process_id),
        ("service_instance_id", sender.service_instance_id),
        ("service_name", sender.service_name),
    ):
        if value is None:
            continue
        hits = [i for i in candidates if _has_key(i, key, value)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            candidates = hits
    return None


def _has_key(instance: Instance, key: str, value: str | int) -> bool:
    if key == "ip":
        return instance.ip == value
    if key == "pid":
        return value in instance.pids
    if key == "service_instance_id":
        return value in instance.service_instance_ids
    return value in instance.service_names


def url_ip(url: str) -> str | None:
    """The URL's host when it is a non-loopback IP literal (then spans from it come from that address)."""
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_loopback or address.is_unspecified else str(address)


@dataclass(slots=True)
class ErrorCounts:
    """Failure counters by (source, reason) with log-once bookkeeping; owned by one source, read by scrapes."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, source: str, reason: str) -> int:
        """Count one failure; returns the new count (1 means: first time, log it)."""
        key = (source, reason)
        value = self.counts.get(key, 0) + 1
        self.counts[key] = value
        return value

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy safe to read from another thread."""
        return dict(self.counts)


class TopologyConfigError(Exception):
    """The settings do not describe a usable topology source; the message says why."""
