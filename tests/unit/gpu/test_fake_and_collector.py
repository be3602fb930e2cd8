"""The fake NVML presents pynvml's own API; the GPU collector keeps to the catalog and to promtool's rules."""

from __future__ import annotations

import inspect
import shutil
import subprocess

import pynvml  # type: ignore[import-untyped]
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.gpu.collector import GpuCollector
from exporter.gpu.fake_nvml import GIB, FakeNvml
from exporter.gpu.sampler import GpuSampler
from exporter.metrics import catalog


def test_fake_functions_have_pynvml_names_and_parameters() -> None:
    fake_functions = {
        name: member
        for name, member in inspect.getmembers(FakeNvml, inspect.isfunction)
        if name.startswith("nvml") and not name.startswith("_")
    }
    assert len(fake_functions) >= 25
    for name, member in fake_functions.items():
        real = getattr(pynvml, name)
        want = [p.name for p in inspect.signature(real).parameters.values()]
        have = [p.name for p in inspect.signature(member).parameters.values()][1:]  # drop self
        assert have == want, name


def test_fake_reuses_pynvml_constants_structures_and_errors() -> None:
    fake = FakeNvml.with_gpus(1)
    assert fake.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost
    assert fake.NVML_CLOCK_SM == pynvml.NVML_CLOCK_SM
    assert fake.c_nvmlGpmMetricsGet_t is pynvml.c_nvmlGpmMetricsGet_t
    with pytest.raises(AttributeError):
        fake.nvmlDeviceGetBAR1MemoryInfo  # noqa: B018  (a pynvml function the fake does not implement)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(handle, pynvml.c_nvmlDevice_t)
    memory = fake.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    assert isinstance(memory, pynvml.c_nvmlMemory_v2_t)
    assert memory.total == memory.free + memory.reserved + memory.used == 80 * GIB
    fake.gpus[0].lost = True
    with pytest.raises(pynvml.NVMLError) as raised:
        fake.nvmlDeviceGetPowerUsage(handle)
    assert raised.value.value == pynvml.NVML_ERROR_GPU_IS_LOST


def full_exposition() -> str:
    fake = FakeNvml.with_gpus(3)
    fake.gpus[0].processes = [(101, 4 * GIB)]
    fake.gpus[1].clock_reasons = pynvml.nvmlClocksEventReasonSwPowerCap
    fake.gpus[2].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_NotSupported
    sampler = GpuSampler(nvml=fake, clock=fake.time)
    sampler.sample_once()
    fake.advance(1.0)
    fake.inject_xid(1, 79)
    sampler.poll_events()
    sampler.sample_once()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(sampler))
    return generate_latest(registry).decode()


def test_every_exposed_family_is_a_gpu_catalog_entry_with_its_labels() -> None:
    specs = {spec.family: spec for spec in catalog.GPU_METRICS}
    families = list(text_string_to_metric_families(full_exposition()))
    assert {f.name for f in families} == set(specs)  # every GPU metric shows up on a well-fed node
    for family in families:
        spec = specs[family.name]
        assert family.type == spec.kind.value
        assert family.documentation == spec.help
        for sample in family.samples:
            assert set(sample.labels) == set(spec.labels), sample


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-system-deps)")
def test_gpu_exposition_passes_promtool_check_metrics() -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=full_exposition(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_power_reading_is_the_mean_over_the_last_second_like_the_real_one() -> None:
    # On an H200 the reading ramps for a second after a load step (scripts/gpu-energy-trace); the fake does too.
    fake = FakeNvml.with_gpus(1)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.gpus[0].power_w = 100.0
    assert fake.nvmlDeviceGetPowerUsage(handle) == 100_000  # no second of history yet: the power of the moment
    for _ in range(10):
        fake.advance(0.1)
    fake.gpus[0].power_w = 500.0
    readings = []
    for _ in range(12):
        fake.advance(0.1)
        readings.append(fake.nvmlDeviceGetPowerUsage(handle) / 1000.0)
    assert readings[0] == pytest.approx(140.0)  # 0.9 s at 100 W + 0.1 s at 500 W
    assert readings[4] == pytest.approx(300.0)
    assert readings[9:] == pytest.approx([500.0] * 3)
    fake.reload_driver()  # the counter starts again: no average across it
    fake.advance(0.1)
    assert fake.nvmlDeviceGetPowerUsage(handle) == 500_000
