"""Tenant join: a request span without a tenant takes it from its caller's span in the same trace.

vLLM honours an incoming `traceparent`, so a gateway's span carrying the tenant shares the trace of the
`llm_request` span it caused. The two arrive in either order, in different batches, seconds apart: a request
waits up to the join window for its caller, then goes on as `unknown`. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.requests.records import UNKNOWN, RequestSpan, TenantHint


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request span with its final tenant and where the tenant came from."""

    span: RequestSpan
    tenant: str
    source: str  # span, resource, trace, none, timeout, overflow


class TenantJoiner:
    """Joins request spans with tenant hints from the same trace within a bounded window."""

    def __init__(self, window_s: float, max_pending: int = 100_000, max_traces: int = 200_000) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self.max_traces = max_traces
        self._trace_tenants: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        # trace id -> (deadline, span) of each span waiting for it: each span waits its own window (two P/D halves of
        # one trace arrive seconds apart and must not both be released at the first one's deadline)
        self._pending: dict[bytes, list[tuple[float, RequestSpan]]] = {}
        self._deadlines: deque[tuple[float, bytes]] = deque()
        self._pending_count = 0

    @property
    def pending(self) -> int:
        """Request spans waiting for their caller's span."""
        return self._pending_count

    def add_hints(self, hints: Iterable[TenantHint], now: float) -> list[Resolved]:
        """Remember each hint's tenant for its trace; release the requests of that trace that were waiting."""
        released: list[Resolved] = []
        for hint in hints:
            self._trace_tenants[hint.trace_id] = (hint.tenant, now + self.window_s)
            self._trace_tenants.move_to_end(hint.trace_id)
            waiting = self._pending.pop(hint.trace_id, None)
            if waiting:
                self._pending_count -= len(waiting)
                released.extend(Resolved(span, hint.tenant, "trace") for _, span in waiting)
        while len(self._trace_tenants) > self.max_traces:
            self._trace_tenants.popitem(last=False)
        return released

    def add_request(self, span: RequestSpan, now: float) -> Resolved | None:
        """Resolve a request span now, or hold it until its caller's span arrives or the window ends (None)."""
        if span.tenant is not None:
            return Resolved(span, span.tenant, span.tenant_source)
        if not span.parent_span_id:
            return Resolved(span, UNKNOWN, "none")
        known = self._trace_tenants.get(span.trace_id)
        if known is not None and known[1] >= now:
            return Resolved(span, known[0], "trace")
        if self.window_s <= 0:
            return Resolved(span, UNKNOWN, "timeout")
        if self._pending_count >= self.max_pending:
            return Resolved(span, UNKNOWN, "overflow")
        deadline = now + self.window_s
        self._pending.setdefault(span.trace_id, []).append((deadline, span))
        self._deadlines.append((deadline, span.trace_id))  # in order: `now` never goes back
        self._pending_count += 1
        return None

    def expire(self, now: float) -> list[Resolved]:
        """Release the requests whose window has ended as `unknown`; forget expired hints."""
        released: list[Resolved] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, trace_id = self._deadlines.popleft()
            waiting = self._pending.get(trace_id)
            if not waiting:
                continue  # released by a hint already
            due = [span for deadline, span in waiting if deadline <= now]
            left = [(deadline, span) for deadline, span in waiting if deadline > now]
            if left:
                self._pending[trace_id] = left
            else:
                del self._pending[trace_id]
            self._pending_count -= len(due)
            released.extend(Resolved(span, UNKNOWN, "timeout") for span in due)
        while self._trace_tenants:
            trace_id, (_, expires) = next(iter(self._trace_tenants.items()))
            if expires > now:
                break
            self._trace_tenants.popitem(last=False)
        return released

    def flush(self) -> list[Resolved]:
        """Release everything still waiting as `unknown` (shutdown)."""
        released = [Resolved(span, UNKNOWN, "timeout") for spans in self._pending.values() for _, span in spans]
        self._pending.clear()
        self._deadlines.clear()
        self._pending_count = 0
        return released
