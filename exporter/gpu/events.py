"""XID error counting from NVML events, on a thread of its own (nvmlEventSetWait blocks)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from exporter.gpu.device import GpuDevice, NvmlErrors, error_reason, handle_key, text
from exporter.requests.records import OTHER

log = logging.getLogger("exporter.gpu")

MAX_XID_CODES_PER_GPU = 32  # XID codes are a small fixed set; the cap only guards against a driver gone wild
WAIT_MS = 500  # how long one wait blocks: bounds how long stop() takes
ERROR_BACKOFF_S = 5.0


class XidWatcher:
    """Counts critical XID errors per GPU and XID code. `poll` handles one event; `run` loops until stopped."""

    def __init__(self, nvml: Any, errors: NvmlErrors, devices: Mapping[str, GpuDevice], lock: threading.Lock) -> None:
        self.nvml = nvml
        self.errors = errors
        self.lock = lock  # the sampler's: guards `counts` and `failures` (scrapes read them)
        self.counts: dict[str, Counter[str]] = {uuid: Counter() for uuid in devices}
        self.failures: Counter[str] = Counter()
        self._devices = devices
        self._by_handle = {handle_key(d.handle): uuid for uuid, d in devices.items()}
        self._event_set: Any = None
        self._failing = False

    def open(self) -> bool:
        """Create the event set and register every GPU that supports XID events; False when none does."""
        nvml = self.nvml
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except (self.errors.base, AttributeError) as exc:
            log.info("NVML events unavailable (%s): XID errors are not counted", exc)
            return False
        registered = 0
        for device in self._devices.values():
            try:
                nvml.nvmlDeviceRegisterEvents(device.handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
                registered += 1
            except self.errors.base as exc:
                with self.lock:
                    self.failures[error_reason(exc)] += 1
                log.info("%s: XID events unavailable (%s): its XID errors are not counted", device.label, exc)
        if not registered:
            self.close()
        return registered > 0

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to `timeout_ms` for one event and count it; True when one came. Raises NVML errors."""
        try:
            data = self.nvml.nvmlEventSetWait_v2(self._event_set, timeout_ms)
        except self.errors.timeout:
            return False
        if int(data.eventType) & int(self.nvml.nvmlEventTypeXidCriticalError):
            self._count(data.device, int(data.eventData))
        return True

    def run(self, stop: threading.Event) -> None:
        """Wait for events until `stop` is set; never raises."""
        while not stop.is_set():
            try:
                self.poll(WAIT_MS)
                self._failing = False
            except Exception as exc:
                with self.lock:
                    self.failures[error_reason(exc)] += 1
                if not self._failing:  # one line per run of failures, not one per retry
                    log.warning("NVML event wait failed (%s); retrying every %.0f s", exc, ERROR_BACKOFF_S)
                    self._failing = True
                stop.wait(ERROR_BACKOFF_S)

    def close(self) -> None:
        """Free the event set."""
        if self._event_set is not None:
            with contextlib.suppress(self.errors.base):  # shutting down
                self.nvml.nvmlEventSetFree(self._event_set)
            self._event_set = None

    def _count(self, device_handle: Any, xid: int) -> None:
        uuid = self._by_handle.get(handle_key(device_handle))
        if uuid is None:
            try:
                uuid = text(self.nvml.nvmlDeviceGetUUID(device_handle))
            except self.errors.base:
                uuid = None
        log.warning("XID %d on GPU %s", xid, uuid or "unknown")
        with self.lock:
            counts = self.counts.get(uuid or "")
            if counts is None:
                self.failures["unknown_device"] += 1
                return
            code = str(xid)
            if code not in counts and len(counts) >= MAX_XID_CODES_PER_GPU:
                code = OTHER
            counts[code] += 1
