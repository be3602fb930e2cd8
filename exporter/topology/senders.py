"""Which vLLM instance sent a span, and its model: the topology's instances matched to the span's sender, their
model as configured or else the one model their own /metrics reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from exporter.topology.model import Instance, SpanSender, TopologySource, match_sender

# instance id -> the model names its vLLM /metrics reports (the engine scraper's view)
ServedModels = Callable[[str], Sequence[str]]


class SenderResolver:
    """Resolves senders against the topology's current view; safe from any thread (both sources are)."""

    def __init__(self, topology: TopologySource, served_models: ServedModels) -> None:
        self.topology = topology
        self.served_models = served_models

    def model_of(self, instance: Instance) -> str | None:
        """An instance's model: configured, else the one model its /metrics serves (None for none or several)."""
        if instance.model:
            return instance.model
        served = self.served_models(instance.id)
        return served[0] if len(served) == 1 else None

    def sender(self, resource: dict[str, str], peer: str | None) -> tuple[str, str | None, str | None] | None:
        """The vLLM instance that sent a span (its id, model and role), or None when the sender matches none."""
        instance = match_sender(self.topology.current().instances, SpanSender.from_resource(resource, peer))
        return None if instance is None else (instance.id, self.model_of(instance), instance.role)

    def instance_of_model(self, model: str) -> str:
        """The one instance serving `model` (for senders the topology cannot tell apart), or ""."""
        found = [i.id for i in self.topology.current().instances if self.model_of(i) == model]
        return found[0] if len(found) == 1 else ""
