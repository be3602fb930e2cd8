"""A row of the cause table: the alert with its runbook texts and its hand-written promtool cases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.alerts.alert import Alert
from exporter.alerts.testfile import INSTANCE, MODEL, VLLM_INSTANCE, labels_text

GPU_UUID = "GPU-5d1e2a7c-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Case:
    """A hand-written promtool case: these series (1m apart) and, at `at`, exactly these alerts."""

    what: str
    series: Mapping[str, str]  # series selector -> values notation
    at: str
    fires: tuple[tuple[dict[str, str], str], ...] = ()  # (labels beyond alertname and severity, summary)


@dataclass(frozen=True, kw_only=True)
class Cause(Alert):
    """A cause alert and the cases showing it fires when it should and stays silent when it should."""

    cases: tuple[Case, ...]


def engine_labels(**extra: str) -> dict[str, str]:
    """Labels of a vLLM engine's series as Prometheus stores them."""
    return {"instance": INSTANCE, "job": "llm-token-exporter", "vllm_instance": VLLM_INSTANCE, "model": MODEL, **extra}


def gpu_labels(index: str = "0", **extra: str) -> dict[str, str]:
    """Labels of a GPU's series as Prometheus stores them."""
    uuid = GPU_UUID[:-1] + index
    return {"instance": INSTANCE, "job": "llm-token-exporter", "gpu": uuid, "index": index, **extra}


def series(name: str, labels: dict[str, str]) -> str:
    """A test series selector."""
    return name + labels_text(labels)
