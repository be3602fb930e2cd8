"""Empty prometheus_client metric families for catalog entries: what every collector builds its samples into."""

from __future__ import annotations

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from exporter.metrics.catalog import Kind, MetricSpec


def le_label(bound: float) -> str:
    """A bucket bound as Prometheus clients write `le` (1.0, 0.25, +Inf)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def counter(spec: MetricSpec) -> CounterMetricFamily:
    """An empty counter family for a catalog entry."""
    assert spec.kind is Kind.COUNTER, spec.name
    return CounterMetricFamily(spec.family, spec.help, labels=list(spec.labels))


def gauge(spec: MetricSpec) -> GaugeMetricFamily:
    """An empty gauge family for a catalog entry."""
    assert spec.kind is Kind.GAUGE, spec.name
    return GaugeMetricFamily(spec.family, spec.help, labels=list(spec.labels))


def histogram(spec: MetricSpec) -> HistogramMetricFamily:
    """An empty histogram family for a catalog entry."""
    assert spec.kind is Kind.HISTOGRAM, spec.name
    return HistogramMetricFamily(spec.family, spec.help, labels=list(spec.labels))
