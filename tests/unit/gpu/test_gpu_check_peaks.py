"""scripts/gpu-check's peak-table step, fed the figures a real H200 gave (README: the copy reached 4,268 GB/s while
GPM read 0.89 of peak): the table's H200 row passes, a wrong row fails, an unknown GPU is reported, not failed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gpu-check"


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


GPU_CHECK = _script()
COPY = GPU_CHECK.PhaseTotals(4268e9 * 8.0, 8.0, 0.89)  # 8 s at 4,268 GB/s, GPM 0.89
MATMUL = GPU_CHECK.PhaseTotals(2.0 * 8192**3 * 5600, 8.0, None)  # 5,600 8192^3 bf16 matmuls in 8 s: 770 TFLOP/s


def _run(product: str, copy: Any = COPY, bus_peak: float | None = None) -> Any:
    checks = GPU_CHECK.Checks()
    GPU_CHECK.check_peaks(checks, product, copy, MATMUL, bus_peak, 0.10)
    return checks


def test_the_h200_row_agrees_with_what_a_real_h200_measured(capsys: pytest.CaptureFixture[str]) -> None:
    checks = _run("NVIDIA H200")
    assert checks.failed == [] and checks.passed == 3  # GPM, copy and matmul below the peaks
    assert "GPM implies a peak of 4.80 TB/s" in capsys.readouterr().out


def test_a_wrong_row_fails() -> None:
    checks = _run("NVIDIA H100 80GB HBM3")  # the H100's 3.35 TB/s: the copy would be at 1.27 of it
    assert any("GPM" in f for f in checks.failed)
    assert any("no faster" in f for f in checks.failed)


def test_without_gpm_the_bus_width_peak_is_compared(capsys: pytest.CaptureFixture[str]) -> None:
    no_gpm = GPU_CHECK.PhaseTotals(COPY.work, COPY.seconds, float("nan"))
    checks = _run("NVIDIA H200", no_gpm, bus_peak=6144 / 8 * 3201e6 * 2)  # 4.92 TB/s: 2.4 % off the table
    assert checks.failed == []
    assert "bus width" in capsys.readouterr().out


def test_an_unknown_gpu_is_reported_not_failed(capsys: pytest.CaptureFixture[str]) -> None:
    checks = _run("NVIDIA Imaginary X1")
    assert checks.failed == [] and checks.passed == 0
    assert "no row for 'NVIDIA Imaginary X1'" in capsys.readouterr().out
