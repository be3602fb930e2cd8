"""Attribution cost per span on a node with 8 GPUs and 8 instances at 5,000 spans/s, and the memory the GPU
sample rings and accounting intervals hold at the default retention (900 s). Prints a markdown table."""

from __future__ import annotations

import random
import time
import tracemalloc

from exporter.attribution.attributor import Attributor, InstanceInputs, Pricing, throttled
from exporter.attribution.energy import interpolate_energy
from exporter.engine.state import CounterPoint
from exporter.gpu.fake_nvml import FakeNvml
from exporter.gpu.sampler import GpuSampler
from exporter.requests.records import RequestSpan

GPUS = INSTANCES = 8
RETENTION_S = 900.0
SCRAPE_S = 5.0
RATE = 5000  # spans/s on the node
SECONDS = 30  # of spans charged


def main() -> None:
    """Fill the rings for the retention window, then time throttled() + submit + charge for 30 s of spans."""
    rng = random.Random(1)
    t0 = 1_800_000_000.0
    fake = FakeNvml.with_gpus(GPUS)
    tracemalloc.start()
    sampler = GpuSampler(1.0, RETENTION_S, nvml=fake, clock=fake.time, xid_events=False)
    sampler.open()
    fake.now = t0
    for _ in range(int(RETENTION_S)):
        fake.advance(1.0)
        sampler.sample_once(fake.now)
    rings_bytes = tracemalloc.get_traced_memory()[0]
    uuids = [i.uuid for i in sampler.identities]
    end = fake.now
    per_instance = RATE / INSTANCES
    prompt, output = 800, 200  # tokens per request
    points = {
        f"i{k}": tuple(
            CounterPoint(t, per_instance * prompt * (t - t0), per_instance * output * (t - t0))
            for t in (t0 + j * SCRAPE_S for j in range(1, int((end - t0) / SCRAPE_S)))
        )
        for k in range(INSTANCES)
    }
    attributor = Attributor(Pricing({"H100": 3.0}), lambda g: "NVIDIA H100", retention_s=RETENTION_S)

    def energy_at(gpu: str, t: float) -> float | None:
        return interpolate_energy(sampler.samples_between(gpu, t - 3, t + 3), t)

    before_intervals = tracemalloc.get_traced_memory()[0]
    for k in range(INSTANCES):
        attributor.close_intervals(
            InstanceInputs(f"i{k}", (uuids[k],), points[f"i{k}"]), energy_at, lambda g, s, e: False
        )
    intervals_bytes = tracemalloc.get_traced_memory()[0] - before_intervals
    tracemalloc.stop()
    spans = []
    for n in range(RATE * SECONDS):
        finish = end - 20 - rng.random() * SECONDS
        arrival = finish - 4.0
        spans.append(
            (
                f"i{n % INSTANCES}",
                RequestSpan(
                    rng.randbytes(16),
                    rng.randbytes(8),
                    b"",
                    int(arrival * 1e9),
                    int(finish * 1e9),
                    "m",
                    "t",
                    "span",
                    "id",
                    0.3,
                    4.0,
                    0.05,
                    0.25,
                    3.7,
                    prompt,
                    output,
                    f"i{n % INSTANCES}",
                ),
            )
        )
    started = time.perf_counter()
    for instance, span in spans:
        start, stop = span.window
        gpu = uuids[int(instance[1:])]
        throttled([s.clock_event_reasons for s in sampler.samples_between(gpu, start - 1, stop + 1)])
        attributor.submit(instance, span, "t")
    submitted = time.perf_counter()
    charges = attributor.charge_ready(end)
    finished = time.perf_counter()
    n = len(spans)
    per_span = (finished - started) / n * 1e6
    print(f"{n:,} spans, {len(charges):,} charged; 8 GPUs, 8 instances, retention {RETENTION_S:.0f} s")
    print()
    print("| step | µs per span | % of one core at 5,000 spans/s |")
    print("|---|---|---|")
    for label, seconds in (
        ("throttled check + submit", submitted - started),
        ("charge (claims over intervals)", finished - submitted),
        ("total", finished - started),
    ):
        us = seconds / n * 1e6
        print(f"| {label} | {us:.1f} | {us * RATE / 1e4:.1f} % |")
    print()
    print("| held at default retention | MiB |")
    print("|---|---|")
    print(f"| GPU sample rings (8 GPUs, 900 samples each) | {rings_bytes / 2**20:.2f} |")
    print(f"| accounting intervals (8 instances, 5 s scrapes) | {intervals_bytes / 2**20:.2f} |")
    assert per_span > 0


if __name__ == "__main__":
    main()
