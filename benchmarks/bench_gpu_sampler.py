"""GPU sampler cost: CPU per sampling pass over 8 fake GPUs (as % of one core at 1 Hz) and ring-buffer memory.

The fake NVML (exporter/gpu/fake_nvml.py) answers in pure Python, so its own cost is INCLUDED in the CPU figure; a real
NVML call costs its own time in the driver instead (not measured here). Every fake GPU supports every field
(GPM, memory temperature, processes), so every pass makes the full set of calls. Ring memory is measured with
tracemalloc after filling every GPU's ring to its capacity at the default retention and interval.

    .venv/bin/python -m benchmarks.bench_gpu_sampler [--gpus 8] [--passes 2000] [--retention 900] [--interval 1]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for exporter/ when run as a script

from exporter.gpu.fake_nvml import GIB, FakeNvml
from exporter.gpu.sampler import GpuSampler


def busy_fake(gpus: int) -> FakeNvml:
    """A node whose GPUs are all busy, with two processes each, so no field is skipped."""
    fake = FakeNvml.with_gpus(gpus)
    for gpu in fake.gpus:
        gpu.power_w, gpu.gpu_util_pct, gpu.memory_util_pct, gpu.dram_bw_pct = 550.0, 97, 60, 71.0
        gpu.memory_used = 70 * GIB
        gpu.processes = [(1000 + gpu.index, 60 * GIB), (2000 + gpu.index, 1 * GIB)]
    return fake


def cpu_per_pass(gpus: int, passes: int, repeats: int) -> tuple[float, float]:
    """Median and best CPU seconds per sample_once() over `repeats` runs of `passes` passes."""
    fake = busy_fake(gpus)
    sampler = GpuSampler(1.0, 900.0, nvml=fake, clock=fake.time, xid_events=False)
    sampler.sample_once()  # open NVML and prime GPM outside the timing
    results = []
    for _ in range(repeats):
        gc.collect()
        started = time.process_time()
        for _ in range(passes):
            fake.advance(1.0)
            sampler.sample_once()
        results.append((time.process_time() - started) / passes)
    sampler.stop()
    return statistics.median(results), min(results)


def ring_memory(gpus: int, retention_s: float, interval_s: float) -> tuple[int, int]:
    """(bytes held by full rings, samples held)."""
    fake = busy_fake(gpus)
    sampler = GpuSampler(interval_s, retention_s, nvml=fake, clock=fake.time, xid_events=False)
    sampler.open()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(sampler.ring_capacity):
        sampler.sample_once()
        fake.advance(interval_s)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = sum(len(sampler.samples_between(u.uuid, 0, float("inf"))) for u in sampler.identities)
    sampler.stop()
    return after - before, held


def main() -> int:
    """Print the two tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--passes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--retention", type=float, default=900.0, help="seconds (the exporter's default)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds (the exporter's default)")
    args = parser.parse_args()

    median_s, best_s = cpu_per_pass(args.gpus, args.passes, args.repeats)
    print(f"## GPU sampler CPU, {args.gpus} fake GPUs, all fields ({args.passes} passes x {args.repeats})\n")
    print("| per pass (median) | per pass (best) | % of one core at 1 Hz (median) | budget |")
    print("|---|---|---|---|")
    print(f"| {median_s * 1e6:.0f} µs | {best_s * 1e6:.0f} µs | {median_s * 100:.3f} % | ≤ 1 % |")
    print("\nIncludes the fake NVML's own Python cost; real NVML calls spend their time in the driver instead.\n")

    used, held = ring_memory(args.gpus, args.retention, args.interval)
    print(f"## Ring buffers at {args.retention:g} s retention, {args.interval:g} s interval\n")
    print("| samples held | bytes | per sample |")
    print("|---|---|---|")
    print(f"| {held} | {used / 2**20:.2f} MiB | {used / max(held, 1):.0f} B |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
