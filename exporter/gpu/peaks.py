"""Peak dense compute and memory bandwidth of NVIDIA data-centre GPUs, keyed by NVML's product name. Pure.

vLLM's `--enable-mfu-metrics` counts estimated FLOPs and bytes per GPU; against these peaks they become model FLOPs
utilisation (MFU) and memory-bandwidth utilisation. The figures are the vendor's dense (no 2:4 sparsity) Tensor
Core peaks at BF16/FP16 and FP8 and the HBM/GDDR bandwidth, per GPU, from the sources cited on each row: NVIDIA's
datasheets print the BF16/FP16 and FP8 figures "with sparsity", which is twice the dense peak, so the rows below
are those halved. A GPU not in the table has no peak: its utilisation series are left out and its product name is
logged once, rather than divided by a guess. AMD (MI-class) GPUs are not sampled through NVML and are left out.

`scripts/gpu-check` holds a row against a real GPU: GPM's measured DRAM bandwidth during a copy must agree with
the table's bandwidth within 10 %.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger("exporter.gpu")

TERA = 1e12

# Sources (retrieved 2026; figures per GPU):
_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 datasheet)"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM and NVL specifications)"
_H20 = (
    "NVIDIA HGX H20 product brief (distributed to partners, not on nvidia.com): 148 TFLOPS BF16 and 296 TFLOPS FP8 "
    "dense, 96 GB HBM3 at 4.0 TB/s, as reproduced by vendors' spec sheets"
)
_A100 = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (A100 datasheet; no FP8 Tensor Cores)"
)
_L40S = "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413 (L40S datasheet)"
_L4 = "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet (L4 datasheet)"
_B200 = "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200, individual Blackwell GPU specifications)"
_GB200 = "https://www.nvidia.com/en-us/data-center/gb200-nvl72/ (GB200 NVL72, individual Blackwell GPU specifications)"


@dataclass(frozen=True, slots=True)
class GpuPeak:
    """One product's peaks: dense BF16/FP16 and FP8 Tensor Core FLOP/s (None: no FP8 units), memory bandwidth in
    bytes/s, and where the figures come from."""

    product: str  # NVML's nvmlDeviceGetName, as nvidia-smi prints it
    bf16_flops: float
    fp8_flops: float | None
    memory_bandwidth: float
    source: str

    def flops(self, precision: str) -> float | None:
        """Dense peak FLOP/s at `precision` (one of PRECISIONS), None when the GPU has no such units."""
        return self.bf16_flops if precision == BF16 else self.fp8_flops if precision == FP8 else None


BF16, FP8 = "bf16", "fp8"  # the `precision` label: BF16/FP16 dense, FP8 dense
PRECISIONS = (BF16, FP8)

# name, BF16/FP16 dense TFLOPS, FP8 dense TFLOPS, memory TB/s, source
_ROWS: tuple[tuple[str, float, float | None, float, str], ...] = (
    ("NVIDIA H100 80GB HBM3", 989.4, 1978.9, 3.35, _H100),  # SXM5: 1,979 / 3,958 TFLOPS with sparsity
    ("NVIDIA H100 PCIe", 756.5, 1513.0, 2.0, _H100),  # 1,513 / 3,026 with sparsity; HBM2e
    ("NVIDIA H100 NVL", 835.5, 1670.5, 3.9, _H100),  # 1,671 / 3,341 with sparsity; 94 GB
    ("NVIDIA H200", 989.4, 1978.9, 4.8, _H200),  # SXM: the H100 SXM's compute, 141 GB HBM3e
    ("NVIDIA H200 NVL", 835.5, 1670.5, 4.8, _H200),
    ("NVIDIA H20", 148.0, 296.0, 4.0, _H20),
    ("NVIDIA A100-SXM4-40GB", 312.0, None, 1.555, _A100),  # 624 with sparsity; HBM2
    ("NVIDIA A100-SXM4-80GB", 312.0, None, 2.039, _A100),  # HBM2e
    ("NVIDIA A100-PCIE-40GB", 312.0, None, 1.555, _A100),
    ("NVIDIA A100 80GB PCIe", 312.0, None, 1.935, _A100),
    ("NVIDIA L40S", 362.05, 733.0, 0.864, _L40S),  # 733 / 1,466 with sparsity; GDDR6
    ("NVIDIA L4", 121.0, 242.5, 0.3, _L4),  # 242 / 485 with sparsity; GDDR6
    ("NVIDIA B200", 2250.0, 4500.0, 7.7, _B200),  # 4.5 / 9 PFLOPS with sparsity; 180 GB HBM3e
    ("NVIDIA GB200", 2500.0, 5000.0, 8.0, _GB200),  # 5 / 10 PFLOPS with sparsity; 186 GB HBM3e
)


def _key(product: str) -> str:
    """NVML names differ across drivers only in case and spacing; nothing looser (H100 PCIe is not H100 SXM)."""
    return " ".join(product.split()).casefold()


PEAKS: dict[str, GpuPeak] = {
    _key(name): GpuPeak(name, bf16 * TERA, fp8 * TERA if fp8 is not None else None, tbps * TERA, source)
    for name, bf16, fp8, tbps, source in _ROWS
}


class PeakTable:
    """Looks products up in PEAKS (or a given table); an unknown product is logged once and has no peak."""

    def __init__(self, peaks: dict[str, GpuPeak] | None = None) -> None:
        self.peaks = {_key(p.product): p for p in peaks.values()} if peaks is not None else PEAKS
        self._lock = threading.Lock()  # scrapes render in executor threads
        self._unknown: set[str] = set()

    def lookup(self, product: str) -> GpuPeak | None:
        """The product's peaks, or None (one log line per unknown product, for the life of the process)."""
        peak = self.peaks.get(_key(product))
        if peak is None:
            with self._lock:
                if product in self._unknown:
                    return None
                self._unknown.add(product)
            log.warning(
                "GPU %r is not in the peak table (exporter/gpu/peaks.py): no MFU or bandwidth utilisation series "
                "for its vLLM instances",
                product,
            )
        return peak
