"""The GPU sampler fed by the fake NVML, observed through its scrape output, its sample rings and its logs."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.gpu.collector import GpuCollector
from exporter.gpu.fake_nvml import GIB, FakeNvml
from exporter.gpu.records import CLOCK_EVENT_REASON_NAMES
from exporter.gpu.sampler import GpuSampler
from exporter.service import components
from exporter.service.settings import load_settings
from tests.support.procs import wait_for
from tests.support.prom import by_label, samples, total

GPU_LOGGER = "exporter.gpu"


def make(count: int = 8, **kwargs: Any) -> tuple[FakeNvml, GpuSampler]:
    fake = FakeNvml.with_gpus(count)
    kwargs.setdefault("energy_every", 1)  # the energy counter on every sample (the default reads every 10th)
    return fake, GpuSampler(nvml=fake, clock=fake.time, **kwargs)


def scrape(sampler: GpuSampler) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(sampler))
    return generate_latest(registry).decode()


def run(fake: FakeNvml, sampler: GpuSampler, seconds: int, dt: float = 1.0) -> None:
    """Sample, then advance the fake clock, `seconds` times (the sample at the start of each step)."""
    for _ in range(seconds):
        sampler.sample_once()
        fake.advance(dt)


def per_gpu(text: str, name: str, where: dict[str, str] | None = None) -> dict[str, float]:
    return by_label(text, name, "index", where)


def gpu_records(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == GPU_LOGGER and r.levelno >= level]


def test_every_field_is_exported_in_base_units() -> None:
    fake, sampler = make(4)
    gpu = fake.gpus[2]
    gpu.power_w = 350.5
    gpu.memory_used = 10 * GIB
    gpu.memory_reserved = 512 << 20
    gpu.gpu_util_pct = 87
    gpu.memory_util_pct = 43
    gpu.dram_bw_pct = 61.5
    gpu.sm_clock_mhz = 1755
    gpu.memory_clock_mhz = 2619
    gpu.temperature_c = 61
    gpu.memory_temperature_c = 70
    gpu.clock_reasons = fake.nvmlClocksEventReasonSwPowerCap | fake.nvmlClocksEventReasonHwThermalSlowdown
    gpu.processes = [(4242, 6 * GIB), (4343, 2 * GIB), (4444, None)]
    run(fake, sampler, 1)
    sampler.sample_once()

    text = scrape(sampler)
    two = {"index": "2"}
    assert total(text, "gpu_power_watts", two) == 350.5
    assert total(text, "gpu_energy_joules_total", two) == 350.5  # 350.5 W for 1 s
    assert total(text, "gpu_memory_used_bytes", two) == 10 * GIB
    assert total(text, "gpu_memory_reserved_bytes", two) == 512 << 20
    assert total(text, "gpu_memory_total_bytes", two) == 80 * GIB
    assert total(text, "gpu_utilization_ratio", two) == pytest.approx(0.87)
    assert total(text, "gpu_memory_busy_ratio", two) == pytest.approx(0.43)
    assert total(text, "gpu_dram_bandwidth_utilization_ratio", two) == pytest.approx(0.615)
    assert total(text, "gpu_sm_clock_hertz", two) == 1.755e9
    assert total(text, "gpu_memory_clock_hertz", two) == 2.619e9
    assert total(text, "gpu_temperature_celsius", two) == 61
    assert total(text, "gpu_memory_temperature_celsius", two) == 70
    reasons = by_label(text, "gpu_clock_event_reason", "reason", two)
    assert set(reasons) == set(CLOCK_EVENT_REASON_NAMES)
    assert {r for r, v in reasons.items() if v == 1} == {"sw_power_cap", "hw_thermal_slowdown"}
    # A process whose memory NVML cannot tell makes no series.
    assert by_label(text, "gpu_process_memory_used_bytes", "pid", two) == {"4242": 6 * GIB, "4343": 2 * GIB}
    info = [labels for n, labels, v in samples(text) if n == "gpu_info" and v == 1]
    assert {"gpu": gpu.uuid, "index": "2", "name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15"} in info
    assert per_gpu(text, "gpu_up") == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert total(text, "llm_exporter_gpu_sampler_up") == 1
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 0  # blocks ~20 ms: never sampled


def test_samples_carry_units_and_timestamps_from_the_clock() -> None:
    fake, sampler = make(1)
    fake.gpus[0].power_w = 123.0
    first = sampler.sample_once()[0]
    assert first.timestamp == fake.now
    assert first.up and first.power_watts == 123.0 and first.dram_bandwidth_ratio is None  # GPM primes first
    fake.advance(2.0)
    second = sampler.sample_once(now=fake.now)[0]
    assert second.energy_joules is not None and first.energy_joules is not None
    assert second.energy_joules - first.energy_joules == 246.0


def test_energy_is_the_integral_of_power() -> None:
    fake, sampler = make(2)
    steps = [(1.0, 300.0), (0.5, 650.0), (2.0, 80.0), (1.5, 400.0)]
    sampler.sample_once()
    start = fake.now
    for dt, watts in steps:
        fake.gpus[1].power_w = watts
        fake.advance(dt)
        sampler.sample_once()
    energies = [s.energy_joules or 0.0 for s in sampler.samples_between(fake.gpus[1].uuid, start, fake.now)]
    deltas = [later - earlier for earlier, later in itertools.pairwise(energies)]
    assert deltas == [dt * w for dt, w in steps]
    assert total(scrape(sampler), "gpu_energy_joules_total", {"index": "1"}) == 300 + 325 + 160 + 600


def test_energy_stays_monotonic_across_a_driver_reload() -> None:
    fake, sampler = make(2)
    fake.gpus[0].power_w = 300.0
    run(fake, sampler, 3)
    sampler.sample_once()  # 900 J so far
    fake.reload_driver()  # the raw counter drops to 0 right after that reading
    fake.gpus[0].power_w = 200.0
    fake.advance(1.0)
    sampler.sample_once()
    fake.advance(1.0)
    sampler.sample_once()

    energies = [s.energy_joules for s in sampler.samples_between(fake.gpus[0].uuid, 0, fake.now)]
    assert energies == [0.0, 300.0, 600.0, 900.0, 1100.0, 1300.0]
    assert total(scrape(sampler), "gpu_energy_joules_total", {"index": "0"}) == 1300.0
    assert fake.gpus[0].energy_mj == 400_000  # the raw counter really went back


def test_driver_reload_is_logged_once_per_gpu(caplog: pytest.LogCaptureFixture) -> None:
    fake, sampler = make(2)
    run(fake, sampler, 3)  # last reading 140 J; the counter is at 210 J when the driver reloads
    fake.reload_driver()
    fake.advance(1.0)
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        sampler.sample_once()
        fake.advance(1.0)
        sampler.sample_once()
    lines = [r.getMessage() for r in gpu_records(caplog, logging.WARNING)]
    assert len(lines) == 2 and all("driver reloaded" in line for line in lines)


def test_a_lost_gpu_is_down_while_the_other_seven_go_on(caplog: pytest.LogCaptureFixture) -> None:
    fake, sampler = make(8, retry_down_s=30.0)
    for gpu in fake.gpus:
        gpu.power_w = 100.0
    run(fake, sampler, 2)
    fake.gpus[5].lost = True
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        run(fake, sampler, 3)
    sampler.sample_once()

    text = scrape(sampler)
    up = per_gpu(text, "gpu_up")
    assert up == {str(i): (0 if i == 5 else 1) for i in range(8)}
    power = per_gpu(text, "gpu_power_watts")
    assert set(power) == {str(i) for i in range(8) if i != 5}
    energy = per_gpu(text, "gpu_energy_joules_total")
    assert energy["5"] == 100.0  # the last value read (at t=1 s), kept so the counter does not vanish
    assert all(energy[str(i)] == 500.0 for i in range(8) if i != 5)  # the others kept integrating
    assert total(text, "llm_exporter_gpu_sampling_errors_total", {"reason": "gpu_is_lost"}) == 1
    down_lines = [r for r in gpu_records(caplog, logging.ERROR) if "is down" in r.getMessage()]
    assert len(down_lines) == 1 and fake.gpus[5].uuid in down_lines[0].getMessage()
    # While it waits for its retry, the lost GPU is not called at all: 7 energy reads per pass, not 8.
    before = fake.calls["nvmlDeviceGetTotalEnergyConsumption"]
    sampler.sample_once()
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] - before == 7
    ring = sampler.samples_between(fake.gpus[5].uuid, 0, fake.now)
    assert [s.up for s in ring] == [True, True, False, False, False, False, False]
    assert ring[-1].power_watts is None and ring[-1].energy_joules is None


def test_a_down_gpu_is_retried_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    fake, sampler = make(2, retry_down_s=10.0)
    fake.gpus[1].power_w = 50.0
    run(fake, sampler, 1)
    fake.gpus[1].lost = True
    run(fake, sampler, 1)  # marked down; next try 10 s later
    fake.gpus[1].lost = False
    run(fake, sampler, 9)
    assert sampler.latest(fake.gpus[1].uuid).up is False  # type: ignore[union-attr]
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        sampler.sample_once()
    back = sampler.latest(fake.gpus[1].uuid)
    assert back is not None and back.up and back.power_watts == 50.0
    assert back.energy_joules == 50.0 * 11  # the counter ran on while we were not reading it
    assert any("back up" in r.getMessage() for r in gpu_records(caplog))
    assert fake.calls["nvmlDeviceGetHandleByUUID"] == 1
    assert per_gpu(scrape(sampler), "gpu_up") == {"0": 1, "1": 1}


@pytest.mark.parametrize(
    ("error", "reason"),
    [("NVMLError_ResetRequired", "reset_required"), ("NVMLError_Unknown", "unknown")],
)
def test_reset_required_and_unknown_errors_mark_the_gpu_down(error: str, reason: str) -> None:
    fake, sampler = make(3)
    fake.gpus[0].errors["nvmlDeviceGetUtilizationRates"] = getattr(fake, error)
    sampler.sample_once()
    text = scrape(sampler)
    assert per_gpu(text, "gpu_up") == {"0": 0, "1": 1, "2": 1}
    assert total(text, "llm_exporter_gpu_sampling_errors_total", {"reason": reason}) == 1


def test_gpm_bandwidth_only_for_gpus_that_support_it(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml.with_gpus(8)
    fake.gpus[3].gpm_supported = False
    for gpu in fake.gpus:
        gpu.dram_bw_pct = 40.0
    sampler = GpuSampler(nvml=fake, clock=fake.time)
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        sampler.sample_once()
        assert per_gpu(scrape(sampler), "gpu_dram_bandwidth_utilization_ratio") == {}  # needs two GPM samples
        fake.advance(0.5)
        for gpu in fake.gpus:
            gpu.dram_bw_pct = 90.0
        fake.advance(0.5)
        sampler.sample_once()
        fake.advance(1.0)
        sampler.sample_once()

    bandwidth = per_gpu(scrape(sampler), "gpu_dram_bandwidth_utilization_ratio")
    assert set(bandwidth) == {str(i) for i in range(8) if i != 3}
    assert bandwidth["0"] == pytest.approx(0.9)
    first = sampler.samples_between(fake.gpus[0].uuid, 0, fake.now)[1]
    assert first.dram_bandwidth_ratio == pytest.approx(0.65)  # the average over the interval, not the end value
    gpm_lines = [r for r in gpu_records(caplog) if "dram_bandwidth" in r.getMessage()]
    assert len(gpm_lines) == 1 and "GPU 3" in gpm_lines[0].getMessage()
    assert fake.calls["nvmlGpmSampleGet"] == 7 * 3  # never asked of the GPU without GPM


def test_gpm_rate_the_library_cannot_compute_is_no_reading_not_nan() -> None:
    # Two GPM samples at the same instant: the real library answers success with a NaN rate (nvml-probe, H200).
    fake, sampler = make(1)
    fake.gpus[0].dram_bw_pct = 50.0
    sampler.sample_once()
    sampler.sample_once()  # the fake clock did not move
    assert sampler.latest(fake.gpus[0].uuid).dram_bandwidth_ratio is None  # type: ignore[union-attr]
    text = scrape(sampler)
    assert "NaN" not in text and "gpu_dram_bandwidth_utilization_ratio{" not in text
    fake.advance(1.0)
    sampler.sample_once()
    assert per_gpu(scrape(sampler), "gpu_dram_bandwidth_utilization_ratio") == {"0": pytest.approx(0.5)}


@pytest.mark.parametrize(
    ("error", "reason"),
    [("NVMLError_NotSupported", "not_supported"), ("NVMLError_FunctionNotFound", "function_not_found")],
)
def test_an_unsupported_field_is_skipped_for_good_after_one_log_line(
    error: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake, sampler = make(4)
    fake.gpus[1].errors["nvmlDeviceGetPowerUsage"] = getattr(fake, error)
    fake.gpus[1].memory_temperature_c = None  # e.g. a GDDR card: the field value reports NOT_SUPPORTED
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        run(fake, sampler, 5)

    lines = [r.getMessage() for r in gpu_records(caplog) if "GPU 1 " in r.getMessage()]
    assert len([line for line in lines if "power" in line]) == 1
    assert len([line for line in lines if "memory_temperature" in line]) == 1
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1 + 3 * 5  # GPU 1 asked once, the others every pass
    text = scrape(sampler)
    assert set(per_gpu(text, "gpu_power_watts")) == {"0", "2", "3"}
    assert set(per_gpu(text, "gpu_memory_temperature_celsius")) == {"0", "2", "3"}
    assert per_gpu(text, "gpu_up")["1"] == 1  # the GPU itself is fine
    assert total(text, "gpu_energy_joules_total", {"index": "1"}) == 70.0 * 4
    errors = by_label(text, "llm_exporter_gpu_sampling_errors_total", "reason")
    expected = Counter({"not_supported": 1})  # the memory temperature
    expected[reason] += 1  # the power
    assert errors == expected


def test_a_transient_error_skips_one_reading_and_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    fake, sampler = make(2)
    fake.gpus[0].errors["nvmlDeviceGetClockInfo"] = fake.NVMLError_Timeout
    with caplog.at_level(logging.INFO, logger=GPU_LOGGER):
        run(fake, sampler, 3)
    assert sampler.latest(fake.gpus[0].uuid).sm_clock_hz is None  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in gpu_records(caplog, logging.WARNING)]
    assert len([w for w in warnings if "sm_clock" in w]) == 1 and len(warnings) == 2  # sm and memory clock
    del fake.gpus[0].errors["nvmlDeviceGetClockInfo"]
    sampler.sample_once()
    text = scrape(sampler)
    assert total(text, "gpu_sm_clock_hertz", {"index": "0"}) == 1.98e9
    # nvmlDeviceGetClockInfo serves both clocks: 3 passes x 2 failed reads.
    assert total(text, "llm_exporter_gpu_sampling_errors_total", {"reason": "timeout"}) == 6


def test_old_driver_without_memory_info_v2_falls_back_to_v1() -> None:
    fake, sampler = make(1)
    fake.gpus[0].memory_v2 = False
    fake.gpus[0].memory_used = 3 * GIB
    sampler.sample_once()
    sampler.sample_once()
    text = scrape(sampler)
    assert total(text, "gpu_memory_used_bytes") == 3 * GIB + (512 << 20)  # v1's used includes reserved
    assert per_gpu(text, "gpu_memory_reserved_bytes") == {}


def test_library_missing_turns_the_gpu_part_off_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml.with_gpus(8, library_missing=True)
    sampler = GpuSampler(nvml=fake, clock=fake.time)
    with caplog.at_level(logging.DEBUG, logger=GPU_LOGGER):
        assert sampler.start() is False
        assert sampler.sample_once() == []
        assert sampler.poll_events() is False
        text = scrape(sampler)
        sampler.stop()
    assert not sampler.alive and not sampler.enabled
    records = gpu_records(caplog, logging.DEBUG)
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING and "NVML library not found" in records[0].getMessage()
    assert total(text, "llm_exporter_gpu_sampler_up") == 0
    assert not [n for n, _, _ in samples(text) if n.startswith("gpu_")]
    assert fake.calls["nvmlInit"] == 1


def test_pynvml_not_importable_turns_the_gpu_part_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    sampler = GpuSampler()
    with caplog.at_level(logging.DEBUG, logger=GPU_LOGGER):
        assert sampler.start() is False
    records = gpu_records(caplog, logging.DEBUG)
    assert len(records) == 1 and "cannot be imported" in records[0].getMessage()
    assert total(scrape(sampler), "llm_exporter_gpu_sampler_up") == 0


def test_real_pynvml_without_a_driver_turns_the_gpu_part_off(caplog: pytest.LogCaptureFixture) -> None:
    import pynvml  # type: ignore[import-untyped]

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver: covered by scripts/gpu-check")
    sampler = GpuSampler()  # the real pynvml, imported by the sampler
    with caplog.at_level(logging.DEBUG, logger=GPU_LOGGER):
        assert sampler.start() is False
    records = gpu_records(caplog, logging.DEBUG)
    assert len(records) == 1 and "GPU metrics off" in records[0].getMessage()


def test_settings_configure_interval_retention_and_switch() -> None:
    fake = FakeNvml.with_gpus(1)
    settings = load_settings({"gpu_sample_interval_seconds": 0.5, "gpu_retention_seconds": 60})
    sampler = components.gpu_sampler(settings, nvml=fake, clock=fake.time)
    assert (sampler.interval_s, sampler.retention_s, sampler.ring_capacity) == (0.5, 60.0, 121)
    off = components.gpu_sampler(load_settings({"gpu_enabled": False}), nvml=fake)
    assert off.start() is False and fake.calls["nvmlInit"] == 0


def test_disabled_by_configuration_never_touches_nvml() -> None:
    fake, sampler = make(2, enabled=False)
    assert sampler.start() is False
    assert sampler.sample_once() == []
    assert fake.calls["nvmlInit"] == 0


def test_xid_errors_are_counted_per_gpu_and_code() -> None:
    fake, sampler = make(8)
    sampler.sample_once()
    for index, xid in [(2, 79), (2, 79), (2, 48), (6, 13)]:
        fake.inject_xid(index, xid)
    handled = 0
    while sampler.poll_events(timeout_ms=0):
        handled += 1
    assert handled == 4
    text = scrape(sampler)
    assert by_label(text, "gpu_xid_errors_total", "xid", {"index": "2"}) == {"79": 2, "48": 1}
    assert by_label(text, "gpu_xid_errors_total", "xid", {"index": "6"}) == {"13": 1}
    assert total(text, "gpu_xid_errors_total") == 4


def test_xid_codes_per_gpu_are_capped() -> None:
    fake, sampler = make(1)
    sampler.sample_once()
    for xid in range(1, 41):
        fake.inject_xid(0, xid)
    while sampler.poll_events():
        pass
    xids = by_label(scrape(sampler), "gpu_xid_errors_total", "xid")
    assert len(xids) == 33 and xids["other"] == 8 and sum(xids.values()) == 40


def test_ring_is_bounded_by_retention_and_answers_time_windows() -> None:
    fake, sampler = make(2, interval_s=1.0, retention_s=10.0)
    t0 = fake.now
    run(fake, sampler, 25)
    uuid = fake.gpus[0].uuid
    kept = sampler.samples_between(uuid, 0, float("inf"))
    assert sampler.ring_capacity == 11
    assert [s.timestamp - t0 for s in kept] == [float(k) for k in range(14, 25)]
    window = sampler.samples_between(uuid, t0 + 20, t0 + 22)
    assert [s.timestamp - t0 for s in window] == [20.0, 21.0, 22.0]  # both ends included
    assert [s.timestamp - t0 for s in sampler.samples_between(uuid, t0 + 20.5, t0 + 21.5)] == [21.0]
    assert sampler.samples_between(uuid, t0, t0 + 13) == []  # older than the retention
    assert sampler.samples_between("GPU-nope", t0, t0 + 30) == []
    assert all(s.uuid == uuid for s in window)


def test_background_threads_start_sample_and_stop_cleanly() -> None:
    fake = FakeNvml.with_gpus(2)
    sampler = GpuSampler(0.01, 10.0, nvml=fake)  # real clock: the thread runs on its own

    def sampled() -> bool:
        return len(sampler.samples_between(fake.gpus[0].uuid, 0, float("inf"))) >= 3

    def xid_counted() -> bool:
        return total(scrape(sampler), "gpu_xid_errors_total") >= 1

    assert sampler.start() is True
    try:
        deadline = time.monotonic() + 5
        wait_for(sampled, 5, "the sampler thread to produce samples", interval=0.005)
        fake.inject_xid(1, 94)
        wait_for(xid_counted, deadline - time.monotonic(), "the event thread to count an XID", interval=0.005)
        assert sampler.alive
    finally:
        started = time.monotonic()
        sampler.stop()
    assert time.monotonic() - started < 2.0
    assert not sampler.alive
    assert fake.initialised == 0  # nvmlShutdown called
    count = len(sampler.samples_between(fake.gpus[0].uuid, 0, float("inf")))
    time.sleep(0.05)
    assert len(sampler.samples_between(fake.gpus[0].uuid, 0, float("inf"))) == count  # nothing after stop
    assert total(scrape(sampler), "llm_exporter_gpu_sampler_up") == 0


class SlowEnergyNvml(FakeNvml):
    """A driver whose energy read busy-waits 3 ms, as an H200's does; the counter is taken halfway through."""

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self.advance(0.0015)
        value = super().nvmlDeviceGetTotalEnergyConsumption(handle)
        self.advance(0.0015)
        return value


def test_each_gpu_is_stamped_when_its_energy_was_read() -> None:
    fake = SlowEnergyNvml.with_gpus(4)
    for gpu in fake.gpus:
        gpu.power_w = 500.0
    sampler = GpuSampler(nvml=fake, clock=fake.time, xid_events=False, energy_every=1)
    start = fake.time()
    samples = sampler.sample_once()
    # Every sample's energy is the counter at its stamp: 500 W since the start, to the joule's thousandth.
    for sample in samples:
        assert sample.energy_joules == pytest.approx(500.0 * (sample.timestamp - start), abs=1e-3)
    assert samples[-1].timestamp - samples[0].timestamp == pytest.approx(0.009, abs=1e-6)  # three 3 ms reads
