"""Static topology: the instances listed in the `instances` setting (bare metal, tests), and that setting's model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exporter.topology.model import (
    SOURCE_STATIC,
    GroupWorker,
    Instance,
    Topology,
    TopologyConfigError,
    now,
    url_ip,
)


class InstanceConfig(BaseModel):
    """One statically configured vLLM server, or (no url, a group) a worker of a multi-node group."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Base URL of the vLLM server, e.g. http://127.0.0.1:8000; leave it out for a group's worker.",
    )
    model: str | None = Field(None, description="Model label; default: the model_name vLLM reports.")
    gpus: list[str] = Field(default_factory=list, description="NVML GPU UUIDs or indexes it runs on.")
    name: str | None = Field(None, description="Instance label; default: the URL's host:port.")
    role: Literal["prefill", "decode", "both"] | None = Field(
        None, description="Its part in prefill/decode disaggregation; default: from its spans' llm.role, else both."
    )
    group: str | None = Field(
        None,
        description="The multi-node group (tensor/pipeline parallel across nodes) it belongs to: the same name on "
        "the leader (with its url) and on each worker node's entry (without a url: GPUs busy for the leader).",
    )

    @model_validator(mode="after")
    def _url_or_group(self) -> InstanceConfig:
        if self.url is None and not self.group:
            raise ValueError("needs a url (a vLLM server), or a group (a worker of a multi-node group)")
        if self.url is None and self.role is not None:
            raise ValueError("a group's worker (no url) has no role: its leader's entry carries it")
        return self

    @property
    def is_worker(self) -> bool:
        """True for a group's worker: GPUs without an API server of their own."""
        return self.url is None


def instance_from_config(config: InstanceConfig) -> Instance:
    """One configured server as an Instance; its id is the configured name, else the URL's host:port."""
    if config.url is None:
        raise TopologyConfigError(f"group {config.group!r}: a worker entry is not an instance")
    parts = urlsplit(config.url)
    default_port = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    host_text = f"[{host}]" if ":" in host else host
    instance_id = config.name or f"{host_text}:{parts.port or default_port}"
    # Operators usually set OTEL_SERVICE_NAME to the instance's name or its model; both identify the sender.
    names = tuple(dict.fromkeys(v for v in (config.name, config.model) if v))
    return Instance(
        id=instance_id,
        url=config.url.rstrip("/"),
        model=config.model,
        gpus=tuple(config.gpus),
        ip=url_ip(config.url),
        service_instance_ids=(config.name,) if config.name else (),
        service_names=names,
        role=config.role,
        group=config.group,
    )


def worker_from_config(config: InstanceConfig) -> GroupWorker:
    """One configured group worker; its id is the configured name, else `<group>/worker`."""
    group = config.group or ""
    return GroupWorker(id=config.name or f"{group}/worker", group=group, model=config.model, gpus=tuple(config.gpus))


def static_instances(configs: Sequence[InstanceConfig]) -> tuple[Instance, ...]:
    """Every configured server; raises TopologyConfigError when two entries get the same id."""
    instances = tuple(instance_from_config(c) for c in configs if not c.is_worker)
    _unique([i.id for i in instances] + [w.id for w in static_workers(configs)])
    return instances


def static_workers(configs: Sequence[InstanceConfig]) -> tuple[GroupWorker, ...]:
    """Every configured group worker (entries without a url)."""
    return tuple(worker_from_config(c) for c in configs if c.is_worker)


def _unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for instance_id in ids:
        if instance_id in seen:
            raise TopologyConfigError(f"two static instances have the id {instance_id!r}: give them distinct names")
        seen.add(instance_id)


class StaticTopology:
    """A TopologySource that never changes and is never stale."""

    source = SOURCE_STATIC

    def __init__(self, configs: Sequence[InstanceConfig]) -> None:
        self._topology = Topology(
            static_instances(configs), now(), SOURCE_STATIC, stale=False, workers=static_workers(configs)
        )

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def current(self) -> Topology:
        """The configured instances."""
        return self._topology

    def error_counts(self) -> dict[tuple[str, str], int]:
        """Static configuration cannot fail at run time."""
        return {}
