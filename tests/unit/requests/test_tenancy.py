"""Tenant join with the caller's span: parent first, child first, no parent, and the window."""

from __future__ import annotations

import random

from exporter.otlp.decode import DecodeRules, flatten
from exporter.requests.records import RequestSpan, TenantHint
from exporter.requests.tenancy import TenantJoiner
from tests.support.otlp import fresh, request_of, sample_request_spans


def _child(rng: random.Random, trace: bytes, parent: bytes = b"\x09" * 8) -> RequestSpan:
    span = fresh(sample_request_spans()[0], rng, parent=parent, trace_id=trace)
    [record] = flatten(request_of([span]), DecodeRules()).requests
    return record


def test_parent_first() -> None:
    rng = random.Random(1)
    trace = rng.randbytes(16)
    joiner = TenantJoiner(window_s=10)
    assert joiner.add_hints([TenantHint(trace, "acme")], now=0.0) == []
    resolved = joiner.add_request(_child(rng, trace), now=3.0)
    assert resolved is not None and (resolved.tenant, resolved.source) == ("acme", "trace")


def test_child_first_waits_then_joins() -> None:
    rng = random.Random(2)
    trace = rng.randbytes(16)
    joiner = TenantJoiner(window_s=10)
    child = _child(rng, trace)
    assert joiner.add_request(child, now=0.0) is None
    assert joiner.pending == 1
    assert joiner.expire(now=5.0) == []
    [released] = joiner.add_hints([TenantHint(rng.randbytes(16), "other-trace"), TenantHint(trace, "acme")], now=6.0)
    assert (released.span, released.tenant, released.source) == (child, "acme", "trace")
    assert joiner.pending == 0


def test_child_without_parent_span_in_window_becomes_unknown() -> None:
    rng = random.Random(3)
    joiner = TenantJoiner(window_s=10)
    child = _child(rng, rng.randbytes(16))
    assert joiner.add_request(child, now=0.0) is None
    assert joiner.expire(now=9.99) == []
    [released] = joiner.expire(now=10.0)
    assert (released.tenant, released.source) == ("unknown", "timeout")
    late = joiner.add_hints([TenantHint(child.trace_id, "acme")], now=11.0)
    assert late == []  # already counted as unknown: never counted twice


def test_request_without_caller_is_unknown_at_once() -> None:
    rng = random.Random(4)
    resolved = TenantJoiner(window_s=10).add_request(_child(rng, rng.randbytes(16), parent=b""), now=0.0)
    assert resolved is not None and (resolved.tenant, resolved.source) == ("unknown", "none")


def test_hints_expire_after_the_window() -> None:
    rng = random.Random(5)
    trace = rng.randbytes(16)
    joiner = TenantJoiner(window_s=10)
    joiner.add_hints([TenantHint(trace, "acme")], now=0.0)
    joiner.expire(now=11.0)
    assert joiner.add_request(_child(rng, trace), now=11.0) is None


def test_zero_window_never_waits() -> None:
    rng = random.Random(6)
    resolved = TenantJoiner(window_s=0).add_request(_child(rng, rng.randbytes(16)), now=0.0)
    assert resolved is not None and resolved.tenant == "unknown"


def test_pending_is_bounded() -> None:
    rng = random.Random(7)
    joiner = TenantJoiner(window_s=10, max_pending=3)
    results = [joiner.add_request(_child(rng, rng.randbytes(16)), now=0.0) for _ in range(5)]
    assert results[:3] == [None, None, None]
    assert [r.source for r in results[3:] if r is not None] == ["overflow", "overflow"]
    assert joiner.pending == 3


def test_each_span_of_a_trace_waits_its_own_window() -> None:
    # P/D: the prefill half waits for the caller's span, which ends only with the decode half; the decode half
    # arrives 9 s later and must not be released at the prefill half's deadline, a second after it came.
    rng = random.Random(6)
    trace = rng.randbytes(16)
    joiner = TenantJoiner(window_s=10)
    prefill, decode = _child(rng, trace), _child(rng, trace)
    assert joiner.add_request(prefill, now=0.0) is None
    assert joiner.add_request(decode, now=9.0) is None
    [expired] = joiner.expire(now=10.0)
    assert (expired.span, expired.source) == (prefill, "timeout")
    assert joiner.pending == 1
    [joined] = joiner.add_hints([TenantHint(trace, "acme")], now=10.5)
    assert (joined.span, joined.tenant) == (decode, "acme")
    assert joiner.pending == 0 and joiner.expire(now=30.0) == []
