"""Span de-duplication: a re-delivered span (an exporter's retry) is counted once. Pure."""

from __future__ import annotations

from collections import OrderedDict


class Deduplicator:
    """Remembers the identities of the last `capacity` spans, so a re-delivered span is counted once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def first_time(self, key: bytes) -> bool:
        """True the first time `key` is seen (within the remembered window)."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True
