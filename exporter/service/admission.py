"""Admission control for OTLP exports: decode off the event loop, refuse fast when taking one more would hurt.

Decoding costs ~27 us a span (~14 ms for vLLM's 512-span batch). Done on the event loop, a flood queued every
export and every /metrics scrape behind it in the sockets, out of sight: answers took a second at 3x capacity.
So decoding runs on one thread of its own (one: the GIL), and an export is admitted only while the exports
already waiting for it would be decoded within `max_wait_s` (judged from recent decode times; four are always
admitted) and fewer than `max_concurrent` wait; the rest are refused at once with a retryable status (HTTP 503
+ Retry-After, gRPC UNAVAILABLE), which OpenTelemetry exporters retry with back-off. A fixed count alone
refused the ordinary burst of a node's many small exports arriving together. A memory ceiling (the container's
limit by default) refuses exports while the process is near it and spans are still queued, so a flood cannot
push the exporter into the OOM killer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

MEMORY_HIGH_WATER = 0.9  # refuse above this share of the memory limit while spans are still queued
RSS_CHECK_EVERY_S = 0.25  # reading /proc costs ~20 us: at most four times a second
LOG_EVERY_S = 10.0
DECODE_AVERAGE_WEIGHT = 0.2  # of the newest decode time in the moving average
# Up to this many waiting exports are always admitted: decode times measured under a flood stay high for a while
# after it, and a few big exports in flight are ordinary (bench_overload's recovery saw refusals without this).
ALWAYS_ADMITTED = 4
MAX_CONCURRENT = 64  # exports waiting to be decoded, HTTP and gRPC together
MAX_WAIT_S = 0.1  # refuse when those waiting would take longer than this to decode
QUEUE_HIGH_WATER = 0.5  # refuse while the pipeline's queue is fuller than this share: refused is retried, dropped lost
CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
NO_LIMIT = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def cgroup_memory_limit(files: tuple[Path, ...] = CGROUP_FILES) -> int:
    """The container's memory limit in bytes from its cgroup, 0 when there is none."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < NO_LIMIT:
            return int(text)
        return 0  # "max", or v1's "no limit"
    return 0


def resident_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Admission:
    """Counts exports in progress and says whether another may start; shared by the HTTP and gRPC receivers."""

    def __init__(
        self,
        max_concurrent: int,
        memory_limit_bytes: int,
        queue_depth: Callable[[], int],
        rss: Callable[[], int] = resident_bytes,
        clock: Callable[[], float] = time.monotonic,
        max_wait_s: float = MAX_WAIT_S,
        queue_capacity: int = 0,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_wait_s = max_wait_s
        self.decode_s = 0.0  # moving average of one export's decode time
        self.memory_limit_bytes = memory_limit_bytes
        self.queue_depth = queue_depth
        self.queue_capacity = queue_capacity  # 0: not judged
        self.rss = rss
        self.clock = clock
        self._lock = threading.Lock()  # the gRPC server may call from its own threads
        self._in_progress = 0
        self._rss = 0
        self._rss_at = float("-inf")
        self._refused: Counter[str] = Counter()
        self._logged_at = float("-inf")
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="otlp-decode")

    @property
    def in_progress(self) -> int:
        """Exports admitted and not yet answered."""
        return self._in_progress

    def try_enter(self) -> str | None:
        """Admit one export (then call leave()) or return why not: `overloaded` or `memory_limit`."""
        with self._lock:
            reason = self._refusal()
            if reason is None:
                self._in_progress += 1
            else:
                self._note(reason)
            return reason

    def leave(self) -> None:
        """An admitted export has been answered."""
        with self._lock:
            self._in_progress -= 1

    async def decode(self, work: Callable[[], T]) -> T:
        """Run an admitted export's decoding on the decode thread, keeping the event loop free."""
        return await asyncio.get_running_loop().run_in_executor(self._decoder, self._timed, work)

    def _timed(self, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            took = time.perf_counter() - started
            with self._lock:
                self.decode_s += DECODE_AVERAGE_WEIGHT * (took - self.decode_s)

    def close(self) -> None:
        """Stop the decode thread once the work given to it is done."""
        self._decoder.shutdown(wait=True)

    def _refusal(self) -> str | None:
        waiting = self._in_progress
        if waiting >= self.max_concurrent or (waiting >= ALWAYS_ADMITTED and waiting * self.decode_s > self.max_wait_s):
            return "overloaded"
        # The worker behind the queue is falling behind: an export taken now would be dropped from a full queue
        # after its acknowledgement (lost); refused now, its sender retries it.
        if self.queue_capacity and self.queue_depth() > QUEUE_HIGH_WATER * self.queue_capacity:
            return "overloaded"
        if self.memory_limit_bytes:
            now = self.clock()
            if now - self._rss_at >= RSS_CHECK_EVERY_S:
                self._rss, self._rss_at = self.rss(), now
            # RSS rarely shrinks after a peak (the allocator keeps freed memory), so near the limit refuse only
            # while spans are queued: once the worker has drained them, new batches reuse that memory.
            if self._rss >= MEMORY_HIGH_WATER * self.memory_limit_bytes and self.queue_depth() > 0:
                return "memory_limit"
        return None

    def _note(self, reason: str) -> None:
        # Refusals come in bursts of thousands: one summary line every LOG_EVERY_S at most.
        self._refused[reason] += 1
        now = self.clock()
        if now - self._logged_at < LOG_EVERY_S:
            return
        counts = ", ".join(f"{n} {r}" for r, n in sorted(self._refused.items()))
        log.warning(
            "refusing OTLP exports (retryable) since the last report: %s; %d in progress, memory %.0f MiB of %s",
            counts,
            self._in_progress,
            self._rss / 2**20,
            f"{self.memory_limit_bytes / 2**20:.0f} MiB" if self.memory_limit_bytes else "no limit",
        )
        self._refused.clear()
        self._logged_at = now
