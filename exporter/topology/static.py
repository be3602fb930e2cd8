"""Static topology: the instances listed in the `instances` setting (bare metal, tests), and that setting's model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from exporter.topology.model import SOURCE_STATIC, Instance, Topology, TopologyConfigError, now, url_ip


class InstanceConfig(BaseModel):
    """One statically configured vLLM server."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="Base URL of the vLLM server, e.g. http://127.0.0.1:8000.")
    model: str | None = Field(None, description="Model label; default: the model_name vLLM reports.")
    gpus: list[str] = Field(default_factory=list, description="NVML GPU UUIDs or indexes it runs on.")
    name: str | None = Field(None, description="Instance label; default: the URL's host:port.")
    role: Literal["prefill", "decode", "both"] | None = Field(
        None, description="Its part in prefill/decode disaggregation; default: from its spans' llm.role, else both."
    )


def instance_from_config(config: InstanceConfig) -> Instance:
    """One configured server as an Instance; its id is the configured name, else the URL's host:port."""
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
    )


def static_instances(configs: Sequence[InstanceConfig]) -> tuple[Instance, ...]:
    """Every configured server; raises TopologyConfigError when two get the same id."""
    instances = tuple(instance_from_config(c) for c in configs)
    seen: set[str] = set()
    for instance in instances:
        if instance.id in seen:
            raise TopologyConfigError(f"two static instances have the id {instance.id!r}: give them distinct names")
        seen.add(instance.id)
    return instances


class StaticTopology:
    """A TopologySource that never changes and is never stale."""

    source = SOURCE_STATIC

    def __init__(self, configs: Sequence[InstanceConfig]) -> None:
        self._topology = Topology(static_instances(configs), now(), SOURCE_STATIC, stale=False)

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
