"""The exporter in this process (so a fake NVML can be injected), on its own event loop thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from exporter.service.app import Exporter
from exporter.service.settings import Settings


class InProcessExporter:
    """Starts `Exporter(settings, nvml=...)` on a background loop; `stop()` stops it the way SIGTERM would."""

    def __init__(self, settings: Settings, nvml: Any = None) -> None:
        self.exporter = Exporter(settings, nvml=nvml)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="exporter-loop", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.exporter.start(), self.loop).result(30)

    def stop(self) -> None:
        """Stop the exporter and its loop."""
        asyncio.run_coroutine_threadsafe(self.exporter.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> InProcessExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
