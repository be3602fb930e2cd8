"""The fake NVML holds to the answers the real library gave on real GPUs (recorded by scripts/nvml-probe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.gpu.nvml_probe import differences, fake_probe
from tests.support.procs import REPO

RECORDINGS = sorted((REPO / "tests" / "data" / "nvml").glob("probe-*.json"))


def test_there_is_a_recording_of_a_real_gpu() -> None:
    assert RECORDINGS, "tests/data/nvml/ holds no recording of scripts/nvml-probe --record"


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_fake_answers_every_probed_call_like_the_real_library(recording: Path) -> None:
    real = json.loads(recording.read_text())["shapes"]
    fake = fake_probe()
    fake.after_shutdown = "nvmlDeviceGetCount after nvmlShutdown" in real
    fake.run()
    assert differences(real, fake.shapes) == [], {s: (real.get(s), fake.shapes.get(s)) for s in real}
