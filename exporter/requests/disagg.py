"""Prefill/decode disaggregation: the two llm_request spans of one request become one request, counted once. Pure.

With P/D (llm-d, vLLM's disaggregated serving) a request runs twice: a prefill instance computes the prompt's KV
and its one token (which the user never sees), then a decode instance loads that KV and produces the answer. Each
sends an llm_request span; both sit in one trace under the same parent (the caller's span), often on two nodes
(docs/design.md §2). Counted as they come, the request would be counted twice and its user-visible TTFT would be
nowhere. So halves are held here, keyed by (trace id, parent span id), until their other half arrives:

- joined: one request, as the user saw it. TTFT = decode start + decode TTFT - prefill start (it matched the
  client within 2-10 ms on a real CPU pair), e2e from the prefill's start to the decode's end, queue and prefill
  time of the prefill instance, decode time, TPOT and tokens of the decode side; plus the hand-off (decode's first
  token - prefill's first token: what disaggregation adds to TTFT).
- a decode half alone (its prefill half never came, or went to another node's exporter): still one request,
  counted where its answer was produced, but its TTFT is the decode instance's own (from its arrival): the
  pipeline keeps that apart from the user-visible TTFT.
- a prefill half alone: never a request (its decode half is counted where it lands); its queue and prefill time
  are still measurements of the prefill instance.

Halves without a role (or `both`) are plain requests and pass straight through.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from exporter.requests.records import UNKNOWN, RequestSpan
from exporter.requests.tenancy import Resolved

PREFILL, DECODE = "prefill", "decode"


class Kind(Enum):
    """What became of a span."""

    PLAIN = "plain"  # not disaggregated: a request
    JOINED = "joined"  # both halves: one request as the user saw it
    DECODE_ALONE = "decode_alone"  # a decode half without its prefill half: a request, TTFT from decode's arrival
    PREFILL_ALONE = "prefill_alone"  # a prefill half without its decode half: not a request


@dataclass(frozen=True, slots=True)
class Finished:
    """A request (or a prefill half) ready to be counted: `span` is what to count (joined: the merged request)."""

    kind: Kind
    span: RequestSpan
    tenant: str
    source: str  # where the tenant came from (tenancy.Resolved.source)
    handoff_s: float | None = None  # joined: decode's first token - prefill's first token


def merged(prefill: RequestSpan, decode: RequestSpan) -> tuple[RequestSpan, float]:
    """The request as the user saw it, and the hand-off time between the halves' first tokens."""
    offset = (decode.start_time_ns - prefill.start_time_ns) / 1e9  # in integers first: unix ns lose precision as floats
    request = decode._replace(
        start_time_ns=prefill.start_time_ns,
        ttft_s=max(0.0, offset + decode.ttft_s),
        e2e_s=max(0.0, offset + decode.e2e_s),
        queue_s=prefill.queue_s,
        prefill_s=prefill.prefill_s,
        role="",
    )
    return request, offset + decode.ttft_s - prefill.ttft_s


class DisaggJoiner:
    """Holds P/D halves up to `window_s` for their other half; bounded by `max_pending` (the oldest leave alone)."""

    def __init__(self, window_s: float, max_pending: int = 65_536) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        # (trace id, parent span id) -> (arrival time, the half); oldest first
        self._prefill: OrderedDict[bytes, tuple[float, Resolved]] = OrderedDict()
        self._decode: OrderedDict[bytes, tuple[float, Resolved]] = OrderedDict()

    @property
    def pending(self) -> int:
        """Halves waiting for their other half."""
        return len(self._prefill) + len(self._decode)

    def add(self, item: Resolved, now: float) -> list[Finished]:
        """Take a span whose tenant is known; returns what can be counted now."""
        role = item.span.role
        if role not in (PREFILL, DECODE):
            return [Finished(Kind.PLAIN, item.span, item.tenant, item.source)]
        key = item.span.trace_id + item.span.parent_span_id
        if not item.span.parent_span_id:  # no caller span: nothing can pair it
            return [self._alone(item)]
        mine, other = (self._prefill, self._decode) if role == PREFILL else (self._decode, self._prefill)
        waiting = other.pop(key, None)
        if waiting is not None:
            prefill, decode = (item, waiting[1]) if role == PREFILL else (waiting[1], item)
            return [self._joined(prefill, decode)]
        out: list[Finished] = []
        if key in mine:  # a second half of the same side (n=2): the first one stays alone
            out.append(self._alone(mine.pop(key)[1]))
        mine[key] = (now, item)
        while self.pending > self.max_pending:
            table = self._prefill if self._oldest(self._prefill) <= self._oldest(self._decode) else self._decode
            out.append(self._alone(table.popitem(last=False)[1][1]))
        return out

    def expire(self, now: float) -> list[Finished]:
        """Halves that waited `window_s` without their other half, alone."""
        out: list[Finished] = []
        for table in (self._prefill, self._decode):
            while table and now - next(iter(table.values()))[0] >= self.window_s:
                out.append(self._alone(table.popitem(last=False)[1][1]))
        return out

    def flush(self) -> list[Finished]:
        """Every waiting half, alone (at shutdown)."""
        out = [self._alone(item) for _, item in (*self._prefill.values(), *self._decode.values())]
        self._prefill.clear()
        self._decode.clear()
        return out

    @staticmethod
    def _oldest(table: OrderedDict[bytes, tuple[float, Resolved]]) -> float:
        return next(iter(table.values()))[0] if table else float("inf")

    @staticmethod
    def _alone(item: Resolved) -> Finished:
        kind = Kind.PREFILL_ALONE if item.span.role == PREFILL else Kind.DECODE_ALONE
        return Finished(kind, item.span, item.tenant, item.source)

    @staticmethod
    def _joined(prefill: Resolved, decode: Resolved) -> Finished:
        request, handoff = merged(prefill.span, decode.span)
        # Both halves learned their tenant from the same caller span; if only one did, it is the tenant.
        first = prefill if decode.tenant == UNKNOWN else decode
        tenant, source = first.tenant, first.source
        return Finished(Kind.JOINED, request, tenant, source, handoff)
