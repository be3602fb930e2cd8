"""The Prometheus protobuf exposition: length-delimited io.prometheus.client.MetricFamily messages, asked for by
Prometheus (2.40 and later) when its native-histograms feature is on. prometheus_client writes only the text
formats, so this turns its families into messages; a family that carries native buckets (NativeHistogramFamily,
yielded by collectors only while `NATIVE` is set) is written as native histograms: one series per histogram.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample

from exporter.metrics.proto.prometheus import metrics_pb2 as pb
from exporter.requests.native import SCHEMA, ZERO_THRESHOLD, NativeHistogram

CONTENT_TYPE = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
MEDIA_TYPE = "application/vnd.google.protobuf"
# Set while a protobuf answer is collected: collectors may then yield NativeHistogramFamily.
NATIVE: ContextVar[bool] = ContextVar("native_histograms", default=False)
_TYPES = {"counter": pb.COUNTER, "gauge": pb.GAUGE, "histogram": pb.HISTOGRAM, "unknown": pb.UNTYPED}

ClassicBucket = tuple[float, int, Exemplar | None]  # (upper bound, cumulative count, exemplar)


class NativeHistogramFamily(Metric):
    """A histogram family whose series carry native buckets, and their classic buckets for the exemplars."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, "histogram")
        self.label_names = tuple(labels)
        self.series: list[tuple[tuple[str, ...], NativeHistogram, list[ClassicBucket]]] = []

    def add(self, values: Sequence[str], native: NativeHistogram, classic: list[ClassicBucket]) -> None:
        """One series: its label values, native buckets and classic buckets (exemplars ride on these)."""
        self.series.append((tuple(values), native, classic))

    @property
    def series_count(self) -> int:
        """Series it exposes: one per histogram."""
        return len(self.series)


def accepts(accept_header: str) -> bool:
    """Whether the scraper prefers the delimited MetricFamily protobuf to the text formats (highest q wins,
    the first listed on a tie)."""
    best: tuple[float, int] | None = None
    protobuf: tuple[float, int] | None = None
    for position, item in enumerate(accept_header.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        values = dict(p.split("=", 1) for p in params if "=" in p)
        try:
            q = float(values.get("q", "1"))
        except ValueError:
            continue
        rank = (q, -position)
        if media == MEDIA_TYPE:
            if values.get("proto") == "io.prometheus.client.MetricFamily" and values.get("encoding") == "delimited":
                protobuf = rank
        elif media in ("application/openmetrics-text", "text/plain", "*/*") and (best is None or rank > best):
            best = rank
    return protobuf is not None and protobuf[0] > 0 and (best is None or protobuf > best)


def generate(collector: Collector) -> bytes:
    """Every family of `collector` as delimited MetricFamily messages, native histograms where collectors have them."""
    token = NATIVE.set(True)
    try:
        return b"".join(_delimited(family.SerializeToString()) for family in families(collector))
    finally:
        NATIVE.reset(token)


def families(collector: Collector) -> Iterator[pb.MetricFamily]:
    """The messages, one per family."""
    for metric in collector.collect():
        if isinstance(metric, NativeHistogramFamily):
            yield _native_family(metric)
        elif metric.type in _TYPES and metric.samples:
            yield _family(metric)


def _delimited(body: bytes) -> bytes:
    size, prefix = len(body), bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        if size:
            prefix.append(byte | 0x80)
        else:
            prefix.append(byte)
            return bytes(prefix) + body


def _labels(labels: dict[str, str] | Sequence[tuple[str, str]]) -> list[Any]:
    items = labels.items() if isinstance(labels, dict) else labels
    return [pb.LabelPair(name=k, value=v) for k, v in items]


def _exemplar(exemplar: Exemplar | None) -> Any:
    if exemplar is None:
        return None
    out = pb.Exemplar(label=_labels(exemplar.labels), value=exemplar.value)
    if exemplar.timestamp is not None:
        seconds = float(exemplar.timestamp)
        out.timestamp.seconds = int(seconds)
        out.timestamp.nanos = round((seconds - int(seconds)) * 1e9)
    return out


def _family(metric: Metric) -> Any:
    name = f"{metric.name}_total" if metric.type == "counter" else metric.name
    family = pb.MetricFamily(name=name, help=metric.documentation, type=_TYPES[metric.type])
    if metric.type == "histogram":
        family.metric.extend(_classic_histograms(metric))
        return family
    for sample in metric.samples:
        if sample.name.endswith("_created"):
            continue
        if metric.type == "counter":
            family.metric.append(
                pb.Metric(
                    label=_labels(sample.labels),
                    counter=pb.Counter(value=sample.value, exemplar=_exemplar(sample.exemplar)),
                )
            )
        elif metric.type == "gauge":
            family.metric.append(pb.Metric(label=_labels(sample.labels), gauge=pb.Gauge(value=sample.value)))
        else:
            family.metric.append(pb.Metric(label=_labels(sample.labels), untyped=pb.Untyped(value=sample.value)))
    return family


def _classic_histograms(metric: Metric) -> list[Any]:
    """prometheus_client's _bucket/_count/_sum samples, grouped by label set, as Histogram messages."""
    by_series: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for sample in metric.samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        by_series.setdefault(key, []).append(sample)
    out = []
    for labels, samples in by_series.items():
        histogram = pb.Histogram()
        for sample in samples:
            if sample.name == f"{metric.name}_count":
                histogram.sample_count = int(sample.value)
            elif sample.name == f"{metric.name}_sum":
                histogram.sample_sum = sample.value
            elif sample.name == f"{metric.name}_bucket" and sample.labels["le"] != "+Inf":
                histogram.bucket.append(
                    pb.Bucket(
                        cumulative_count=int(sample.value),
                        upper_bound=float(sample.labels["le"]),
                        exemplar=_exemplar(sample.exemplar),
                    )
                )
        out.append(pb.Metric(label=_labels(labels), histogram=histogram))
    return out


def _native_family(metric: NativeHistogramFamily) -> Any:
    family = pb.MetricFamily(name=metric.name, help=metric.documentation, type=pb.HISTOGRAM)
    for values, native, classic in metric.series:
        spans, deltas = native.spans_and_deltas()
        histogram = pb.Histogram(
            sample_count=native.count,
            sample_sum=native.sum,
            schema=SCHEMA,
            zero_threshold=ZERO_THRESHOLD,
            zero_count=native.zero_count,
            positive_span=[pb.BucketSpan(offset=offset, length=length) for offset, length in spans],
            positive_delta=deltas,
            # The classic buckets ride along for their exemplars (a scraper that keeps native histograms reads the
            # native buckets and takes the exemplars from these).
            bucket=[
                pb.Bucket(cumulative_count=count, upper_bound=bound, exemplar=_exemplar(exemplar))
                for bound, count, exemplar in classic
                if not math.isinf(bound)
            ],
        )
        family.metric.append(
            pb.Metric(label=_labels(list(zip(metric.label_names, values, strict=True))), histogram=histogram)
        )
    return family
