"""The GPU sampler: reads every local GPU through NVML at a fixed interval and keeps bounded rings of samples.

Lifecycle: `start()` opens NVML and runs two daemon threads (sampling, XID events); `stop()` ends them and closes
NVML. Tests drive `sample_once(now)` and `poll_events()` instead, without threads. When NVML is missing the
sampler logs one line and stays off; nothing here raises out of a thread.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from exporter.gpu.device import GpuDevice, GpuDown, NvmlErrors, error_reason, text
from exporter.gpu.events import XidWatcher
from exporter.gpu.records import GpuIdentity, GpuSample, GpuSnapshot, GpuView

log = logging.getLogger("exporter.gpu")

DEFAULT_RETRY_DOWN_S = 30.0  # a lost GPU's calls can block for seconds: don't hammer it every interval
INTERVAL_S = 1.0
RETENTION_S = 900.0  # long requests plus the span delay, for attribution
# One energy read busy-waits ~3 ms of CPU (H200, driver 580); between reads attribution spreads the delta by power.
ENERGY_EVERY_PASSES = 10


def _import_pynvml() -> Any:
    import pynvml  # type: ignore[import-untyped]

    return pynvml


class GpuSampler:
    """Samples all GPUs; scrapes read `snapshot()`, attribution reads `samples_between()`."""

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        retention_s: float = RETENTION_S,
        *,
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
        enabled: bool = True,
        retry_down_s: float = DEFAULT_RETRY_DOWN_S,
        xid_events: bool = True,
        energy_every: int = ENERGY_EVERY_PASSES,
    ) -> None:
        self.interval_s = interval_s
        self.energy_every = energy_every
        self.retention_s = retention_s
        self.ring_capacity = math.ceil(retention_s / interval_s) + 1
        self.clock = clock
        self.retry_down_s = retry_down_s
        self._nvml = nvml
        self._want = enabled
        self._xid_wanted = xid_events
        self._opened = False
        self._enabled = False
        self._devices: list[GpuDevice] = []
        self._retry_at: dict[str, float] = {}  # uuid -> when to try a down GPU again (sampler thread only)
        self._xid: XidWatcher | None = None
        self.lock = threading.Lock()  # guards everything below: sampler thread writes, scrapes/attribution read
        self._rings: dict[str, deque[GpuSample]] = {}
        self._energy: dict[str, float] = {}
        self._failures: Counter[str] = Counter()
        self._last_pass_s: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        """Whether NVML opened and GPUs are being sampled."""
        return self._enabled

    @property
    def identities(self) -> tuple[GpuIdentity, ...]:
        """The GPUs found at open, in NVML index order."""
        return tuple(d.identity for d in self._devices)

    def open(self) -> bool:
        """Load NVML and enumerate GPUs (once); False, after one log line, when the GPU part is off."""
        if self._opened:
            return self._enabled
        self._opened = True
        if not self._want:
            log.info("GPU sampling disabled by configuration")
            return False
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = self._nvml = _import_pynvml()
            except Exception as exc:
                log.warning("GPU metrics off: nvidia-ml-py (pynvml) cannot be imported (%s); all else works", exc)
                return False
        errors = NvmlErrors(nvml)
        try:
            nvml.nvmlInit()
        except errors.library_missing as exc:
            log.warning("GPU metrics off: NVML library not found (%s; no NVIDIA driver here?); all else works", exc)
            return False
        except Exception as exc:
            log.warning("GPU metrics off: NVML failed to initialise (%s); all else works", exc)
            return False
        try:
            self._devices = self._enumerate(nvml, errors)
        except Exception as exc:
            log.warning("GPU metrics off: NVML could not list GPUs (%s); all else works", exc)
            self._shutdown_nvml()
            return False
        if not self._devices:
            log.warning("GPU metrics off: NVML found no GPU")
            self._shutdown_nvml()
            return False
        with self.lock:
            self._rings = {d.identity.uuid: deque(maxlen=self.ring_capacity) for d in self._devices}
        if self._xid_wanted:
            by_uuid = {d.identity.uuid: d for d in self._devices}
            xid = XidWatcher(nvml, errors, by_uuid, self.lock)
            self._xid = xid if xid.open() else None
        self._enabled = True
        log.info(
            "NVML: %d GPU(s), driver %s; sampling every %g s, keeping %g s",
            len(self._devices),
            self._devices[0].identity.driver_version,
            self.interval_s,
            self.retention_s,
        )
        return True

    def _enumerate(self, nvml: Any, errors: NvmlErrors) -> list[GpuDevice]:
        try:
            driver = text(nvml.nvmlSystemGetDriverVersion())
        except errors.base:
            driver = "unknown"
        devices = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = text(nvml.nvmlDeviceGetUUID(handle))
                name = text(nvml.nvmlDeviceGetName(handle))
            except errors.base as exc:
                # Without a UUID there is nothing stable to label it with; it is left out until restart.
                self._failures[error_reason(exc)] += 1
                log.warning("GPU %d: cannot identify it (%s); not sampled", index, exc)
                continue
            devices.append(GpuDevice(nvml, errors, handle, GpuIdentity(uuid, index, name, driver), self.energy_every))
        return devices

    def sample_once(self, now: float | None = None) -> list[GpuSample]:
        """Read every GPU once (opening NVML if needed) and store the samples; `now` defaults to the clock.

        For tests and tools: not to be called while the sampling thread runs (a GPU's reader is single-threaded).
        """
        if not self.open():
            return []
        started = time.perf_counter()
        timestamp = self.clock() if now is None else now
        # On the clock, each GPU's sample is stamped when it is read; a given `now` (tests) stamps them all.
        clock = self.clock if now is None else None
        samples = [self._sample(device, timestamp, clock) for device in self._devices]
        elapsed = time.perf_counter() - started
        with self.lock:
            for device, sample in zip(self._devices, samples, strict=True):
                self._rings[sample.uuid].append(sample)
                if sample.energy_joules is not None:
                    self._energy[sample.uuid] = sample.energy_joules
                self._failures.update(device.failures)
                device.failures.clear()
            self._last_pass_s = elapsed
        return samples

    def _sample(self, device: GpuDevice, now: float, clock: Callable[[], float] | None = None) -> GpuSample:
        uuid = device.identity.uuid
        retry_at = self._retry_at.get(uuid)
        if retry_at is not None and now < retry_at:
            return device.down_sample(now)
        try:
            if retry_at is not None:
                device.reacquire()
            sample = device.read(now, clock)
        except GpuDown as exc:
            if retry_at is None:
                log.error(
                    "%s is down (%s): reported as gpu_up 0, other GPUs go on; retrying every %g s",
                    device.label,
                    exc,
                    self.retry_down_s,
                )
            self._retry_at[uuid] = now + self.retry_down_s
            return device.down_sample(now)
        if retry_at is not None:
            del self._retry_at[uuid]
            log.warning("%s is back up", device.label)
        return sample

    def poll_events(self, timeout_ms: int = 0) -> bool:
        """Handle at most one pending NVML event (XID), waiting up to `timeout_ms`; True when one was handled."""
        if self._xid is None or not self._enabled:
            return False
        try:
            return self._xid.poll(timeout_ms)
        except Exception as exc:
            with self.lock:
                self._failures[error_reason(exc)] += 1
            return False

    def latest(self, uuid: str) -> GpuSample | None:
        """The newest sample of a GPU, or None."""
        with self.lock:
            ring = self._rings.get(uuid)
            return ring[-1] if ring else None

    def latest_energy(self, uuid: str) -> GpuSample | None:
        """The newest sample that read the energy counter or found the GPU down, or None."""
        with self.lock:
            for sample in itertools.islice(reversed(self._rings.get(uuid, ())), self.energy_every + 1):
                if sample.energy_joules is not None or not sample.up:
                    return sample
            return None

    def oldest(self, uuid: str) -> GpuSample | None:
        """The oldest sample of a GPU still kept, or None."""
        with self.lock:
            ring = self._rings.get(uuid)
            return ring[0] if ring else None

    def samples_between(self, uuid: str, start: float, end: float) -> list[GpuSample]:
        """The samples of a GPU with start <= timestamp <= end, oldest first (down samples included)."""
        with self.lock:
            ring = self._rings.get(uuid)
            if not ring:
                return []
            # Samples are appended in time order, so the ring is sorted by timestamp.
            lo = bisect.bisect_left(ring, start, key=lambda s: s.timestamp)
            hi = bisect.bisect_right(ring, end, key=lambda s: s.timestamp)
            return [ring[i] for i in range(lo, hi)]

    def snapshot(self) -> GpuSnapshot:
        """A consistent copy of what a scrape shows."""
        with self.lock:
            failures = Counter(self._failures)
            if self._xid is not None:
                failures.update(self._xid.failures)
            views = tuple(
                GpuView(
                    identity=d.identity,
                    latest=self._rings[d.identity.uuid][-1] if self._rings.get(d.identity.uuid) else None,
                    energy_joules=self._energy.get(d.identity.uuid),
                    xid_errors=dict(self._xid.counts.get(d.identity.uuid, {})) if self._xid is not None else {},
                )
                for d in self._devices
            )
            return GpuSnapshot(self._enabled, views, dict(failures), self._last_pass_s)

    def start(self) -> bool:
        """Open NVML and start the sampling and XID threads; False (and no threads) when the GPU part is off."""
        if not self.open() or self._threads:
            return self._enabled
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name="gpu-sampler", daemon=True)]
        if self._xid is not None:
            self._threads.append(
                threading.Thread(target=self._xid.run, args=(self._stop,), name="gpu-xid-events", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        return True

    @property
    def alive(self) -> bool:
        """Whether the sampling thread is running."""
        return bool(self._threads) and self._threads[0].is_alive()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # a bug must not end GPU sampling for the life of the process
                log.exception("GPU sampler: a sampling pass failed")
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # overran (slow NVML): skip the missed ticks rather than burst to catch up
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the threads and close NVML; the samples stay readable."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        if self._enabled:
            if self._xid is not None:
                self._xid.close()
            for device in self._devices:
                device.close()
            self._shutdown_nvml()
            self._enabled = False

    def _shutdown_nvml(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)
