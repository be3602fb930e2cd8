"""A mixed OpenAI-API workload for a real vLLM server, with a test gateway that names tenants in its spans."""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.propagators.textmap import DefaultSetter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.vllm.server import SERVED_NAME

_SRC = Path(sysconfig.get_paths()["stdlib"], "textwrap.py").read_text()
LONG_PREFIX = _SRC[:4000]
MEDIUM = _SRC[9000:10000]


@dataclass(frozen=True)
class Call:
    """One API request: its path, body, and the tenant the gateway gives it (None: sent without a gateway)."""

    label: str
    path: str
    body: dict[str, Any]
    tenant: str | None = None

    @property
    def sequences(self) -> int:
        """Sequences (and so spans) this request makes."""
        return int(self.body.get("n", 1))

    @property
    def max_tokens(self) -> int:
        """Output tokens per sequence: exact, since every call sets ignore_eos."""
        return int(self.body["max_tokens"])


def _cmpl(label: str, prompt: str, max_tokens: int, tenant: str | None = None, **extra: Any) -> Call:
    body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, **extra}
    return Call(label, "/v1/completions", body, tenant)


def _chat(label: str, content: str, max_tokens: int, tenant: str | None = None, **extra: Any) -> Call:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": content}]
    body = {"model": SERVED_NAME, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True, **extra}
    return Call(label, "/v1/chat/completions", body, tenant)


STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def calls() -> tuple[list[Call], list[Call]]:
    """(sequential calls, concurrent calls): chat and completions, streaming or not, short and long prompts,
    a shared long prefix, n=2, max_tokens=1, and calls through the gateway for two tenants."""
    sequential = [
        _cmpl("cmpl-short", "def wrap(text):", 16),
        _cmpl("cmpl-short-stream", "class TextWrapper:", 24, **STREAM),
        _chat("chat", "Say hello.", 12),
        _chat("chat-stream", "Count to five.", 20, **STREAM),
        _cmpl("cmpl-medium-stream", MEDIUM, 32, **STREAM),
        _cmpl("prefix-1", LONG_PREFIX + " first", 8, **STREAM),
        _cmpl("prefix-2", LONG_PREFIX + " second", 8, **STREAM),
        _cmpl("prefix-3", LONG_PREFIX + " third", 8),
        _cmpl("n2", "import os", 10, n=2, temperature=1.0),
        _cmpl("max-tokens-1", "x = ", 1),
        _cmpl("max-tokens-1-stream", "y = ", 1, **STREAM),
        _chat("chat-max-tokens-1", "One word.", 1),
        _cmpl("acme-cmpl", "def fill(text):", 12, tenant="acme"),
        _chat("acme-chat-stream", "Hi from acme.", 16, tenant="acme", **STREAM),
        _cmpl("acme-n2", "import sys", 6, tenant="acme", n=2, temperature=0.8),
        _cmpl("acme-max-tokens-1", "z = ", 1, tenant="acme"),
        _chat("globex-chat", "Hi from globex.", 10, tenant="globex"),
        _cmpl("globex-long-stream", LONG_PREFIX + " globex", 6, tenant="globex", **STREAM),
    ]
    concurrent = [
        _cmpl(f"concurrent-{i}", MEDIUM[i * 50 :], 40, tenant="globex" if i % 2 else None, **STREAM) for i in range(4)
    ]
    return sequential, concurrent


@dataclass
class Expected:
    """What the exporter must have counted for the workload, from the client's side."""

    sequences_by_tenant: Counter[str] = field(default_factory=Counter)
    at_most_one_output_token: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def sequences(self) -> int:
        """All sequences sent."""
        return sum(self.sequences_by_tenant.values())


class Gateway:
    """A stand-in API gateway: a SERVER span carrying tenant.id, propagated to vLLM as `traceparent`."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test-gateway"}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer: Tracer = self.provider.get_tracer("tests.gateway")

    @contextmanager
    def request(self, tenant: str | None) -> Iterator[dict[str, str]]:
        """Headers to send for a call; for a tenant, inside a gateway span that ends after the call."""
        if tenant is None:
            yield {}
            return
        with self.tracer.start_as_current_span("gateway POST", attributes={"tenant.id": tenant}):
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers, setter=DefaultSetter())  # type: ignore[misc]
            yield headers

    def shutdown(self) -> None:
        """Flush and stop."""
        self.provider.force_flush()
        self.provider.shutdown()


def _send(client: httpx.Client, gateway: Gateway, call: Call) -> dict[str, int]:
    """Send one call; returns the usage vLLM reported."""
    with gateway.request(call.tenant) as headers:
        if not call.body.get("stream"):
            response = client.post(call.path, json=call.body, headers=headers)
            response.raise_for_status()
            usage: dict[str, int] = response.json()["usage"]
            return usage
        usage = {}
        with client.stream("POST", call.path, json=call.body, headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
        return usage


def run(base_url: str, gateway: Gateway) -> Expected:
    """Send the workload; returns what the exporter must count, checked against vLLM's usage replies."""
    sequential, concurrent = calls()
    expected = Expected()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        usages = [(c, _send(client, gateway, c)) for c in sequential]
        with ThreadPoolExecutor(len(concurrent)) as pool:
            usages += list(zip(concurrent, pool.map(lambda c: _send(client, gateway, c), concurrent), strict=True))
    gateway.shutdown()
    for call, usage in usages:
        assert usage["completion_tokens"] == call.sequences * call.max_tokens, (call.label, usage)
        expected.sequences_by_tenant[call.tenant or "unknown"] += call.sequences
        if call.max_tokens <= 1:
            expected.at_most_one_output_token += call.sequences
        expected.prompt_tokens += usage["prompt_tokens"] * call.sequences
        expected.completion_tokens += usage["completion_tokens"]
    return expected
