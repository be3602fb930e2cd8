"""prometheus_client Collector for the attribution counters (per model/tenant/phase, idle, group workers and
unattributed)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.attribution.stage import AttributionStage
from exporter.metrics import catalog
from exporter.metrics.families import counter, gauge


class AttributionCollector(Collector):
    """Reads the Attributor under the stage's lock (the pipeline's worker thread writes it)."""

    def __init__(self, stage: AttributionStage) -> None:
        self.stage = stage

    def collect(self) -> Iterator[Metric]:
        """Every attribution family."""
        seconds, joules, usd = counter(catalog.GPU_SECONDS), counter(catalog.ENERGY), counter(catalog.COST)
        idle = (counter(catalog.IDLE_SECONDS), counter(catalog.IDLE_ENERGY), counter(catalog.IDLE_COST))
        lost = (
            counter(catalog.UNATTRIBUTED_SECONDS),
            counter(catalog.UNATTRIBUTED_ENERGY),
            counter(catalog.UNATTRIBUTED_COST),
        )
        group = (counter(catalog.GROUP_GPU_SECONDS), counter(catalog.GROUP_ENERGY), counter(catalog.GROUP_COST))
        pending, outcomes = gauge(catalog.PENDING_ENERGY), counter(catalog.ATTRIBUTION_SPANS)
        forwarded = counter(catalog.FORWARDED_SPANS)
        if self.stage.forwarder is not None:
            for outcome, count in sorted(self.stage.forwarder.counts().items()):
                forwarded.add_metric([outcome], count)
        by_phase = (
            counter(catalog.GPU_SECONDS_BY_PHASE),
            counter(catalog.ENERGY_BY_PHASE),
            counter(catalog.COST_BY_PHASE),
        )
        a = self.stage.attributor
        with self.stage.lock:
            pairs: dict[tuple[str, str], list[float]] = {}
            for (model, tenant, _), amount in a.attributed.items():
                total = pairs.setdefault((model, tenant), [0.0, 0.0, 0.0])
                total[0] += amount.gpu_seconds
                total[1] += amount.joules
                total[2] += amount.usd
            for (model, tenant), (gpu_seconds, energy, dollars) in sorted(pairs.items()):
                seconds.add_metric([model, tenant], gpu_seconds)
                joules.add_metric([model, tenant], energy)
                usd.add_metric([model, tenant], dollars)
            for (model, phase), amount in sorted(a.by_phase.items()):
                for family, value in zip(by_phase, (amount.gpu_seconds, amount.joules, amount.usd), strict=True):
                    family.add_metric([model, phase], value)
            for gpu, amount in sorted(a.idle.items()):
                for family, value in zip(idle, (amount.gpu_seconds, amount.joules, amount.usd), strict=True):
                    family.add_metric([gpu], value)
            for (name, model), amount in sorted(a.group.items()):
                for family, value in zip(group, (amount.gpu_seconds, amount.joules, amount.usd), strict=True):
                    family.add_metric([name, model], value)
            for (gpu, reason), amount in sorted(a.unattributed.items()):
                for family, value in zip(lost, (amount.gpu_seconds, amount.joules, amount.usd), strict=True):
                    family.add_metric([gpu, reason], value)
            for gpu in sorted(a.measured):
                pending.add_metric([gpu], a.pending_amount(gpu).joules)
            for outcome, count in sorted(a.spans.items()):
                outcomes.add_metric([outcome], count)
        yield from (seconds, joules, usd, *by_phase, *idle, *group, *lost, pending, outcomes, forwarded)
