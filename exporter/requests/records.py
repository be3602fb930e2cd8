"""Plain records that wire formats become at the edge; the core works on these only."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

UNKNOWN = "unknown"
OTHER = "other"


class RequestSpan(NamedTuple):
    """One vLLM `llm_request` span (one finished sequence), validated and flattened. Durations in seconds.

    A NamedTuple rather than a frozen dataclass: as immutable, and several times cheaper to build on the ingest
    hot path (one per span).
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_time_ns: int
    end_time_ns: int
    model: str
    tenant: str | None  # None: not on the span or its resource; join with the caller's span
    tenant_source: str  # "span", "resource" or "" when tenant is None
    request_id: str
    ttft_s: float
    e2e_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    prompt_tokens: int
    completion_tokens: int
    instance: str = ""  # the vLLM instance that sent it, when the topology knows ("" otherwise)
    service_name: str = ""  # the sender's resource service.name (for forwarding the span)
    role: str = ""  # prefill or decode (one half of a disaggregated request), both, or "" (not said)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None when there are at most one output token."""
        if self.completion_tokens <= 1:
            return None
        return self.decode_s / (self.completion_tokens - 1)

    @property
    def window(self) -> tuple[float, float]:
        """When it occupied the engine: from the start of its prefill to its last token (unix seconds)."""
        first_token = self.start_time_ns / 1e9 + self.ttft_s
        return first_token - self.prefill_s, first_token + self.decode_s

    def kv_token_seconds(self) -> dict[str, float]:
        """The integral of its resident KV tokens, by phase: the memory bill of long context.

        During prefill its KV grows from 0 to the prompt (linearly, as chunks are computed); during decode from the
        prompt to prompt + output."""
        return {
            "prefill": self.prompt_tokens * self.prefill_s / 2.0,
            "decode": (self.prompt_tokens + self.completion_tokens / 2.0) * self.decode_s,
        }

    @property
    def key(self) -> bytes:
        """Identity of the span (trace id + span id): n=2 gives two spans with one request id."""
        return self.trace_id + self.span_id


@dataclass(frozen=True, slots=True)
class TenantHint:
    """A non-request span (typically a gateway's) that carries a tenant for its trace."""

    trace_id: bytes
    tenant: str


@dataclass(frozen=True, slots=True)
class StartupSpan:
    """A vLLM start-up span (model load phases), for cold-start metrics."""

    model: str
    phase: str
    seconds: float
    end_time_ns: int


@dataclass(slots=True)
class DecodedBatch:
    """What one OTLP export request turned into."""

    requests: list[RequestSpan] = field(default_factory=list)
    hints: list[TenantHint] = field(default_factory=list)
    startup: list[StartupSpan] = field(default_factory=list)
    other_names: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    received: int = 0
    first_errors: list[str] = field(default_factory=list)

    def reject(self, reason: str, message: str) -> None:
        """Count one span rejected for `reason`, keeping the first few messages for the OTLP response."""
        self.rejected[reason] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(message)
