"""What a cause alert is (the alert and its hand-written cases), its thresholds and its test series' labels."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.alerts.alert import Alert
from exporter.alerts.testfile import INSTANCE, MODEL, VLLM_INSTANCE, labels_text

GPU_UUID = "GPU-5d1e2a7c-0000-4000-8000-000000000000"

# Clock-event reasons that mean trouble. Not sw_power_cap (normal at full load: the GPU runs at its power limit),
# not idle, sync_boost, applications_clocks_setting or display_clock_setting (configuration, not faults).
THROTTLE_REASONS = "hw_slowdown|hw_thermal_slowdown|hw_power_brake_slowdown|sw_thermal_slowdown"
KV_FULL = 0.9
MEMORY_FULL = 0.98
SLOW_START_S = 600


@dataclass(frozen=True)
class Case:
    """A hand-written promtool case: these series (1m apart) and, at `at`, exactly these alerts."""

    what: str
    series: tuple[tuple[str, str], ...]
    at: str
    fires: tuple[tuple[dict[str, str], str], ...] = ()  # (labels beyond alertname and severity, summary)


@dataclass(frozen=True)
class Cause:
    """A cause alert and the cases showing it fires when it should and stays silent when it should."""

    alert: Alert
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
