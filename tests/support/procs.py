"""Real processes for tests and benchmarks: the exporter (as its CLI runs it) and helpers to find ports and wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
EXPORTER_BIN = Path(sys.executable).parent / "llm-token-exporter"
T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port held bound and listening while the block runs (for binds that must fail)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port: int = s.getsockname()[1]
        yield port


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something true, and return that; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.1) -> T:
    """`wait_for` on an event loop: await `check` until it gives something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`llm-token-exporter ARGS...` to completion, its output captured."""
    return subprocess.run([str(EXPORTER_BIN), *args], capture_output=True, text=True, timeout=timeout, check=False)


def http_ok(url: str) -> bool:
    """True if GET url answers 200."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class ExporterProcess:
    """`llm-token-exporter serve` on free loopback ports, as a subprocess."""

    def __init__(self, extra_args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.web_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        self.log: IO[bytes] = tempfile.NamedTemporaryFile(prefix="exporter-", suffix=".log", delete=False)  # noqa: SIM115
        args = [
            str(EXPORTER_BIN),
            "serve",
            "--web.listen-address",
            f"127.0.0.1:{self.web_port}",
            "--otlp.http.listen-address",
            f"127.0.0.1:{self.http_port}",
            "--otlp.grpc.listen-address",
            f"127.0.0.1:{self.grpc_port}",
            *extra_args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_TOKEN_EXPORTER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        try:
            wait_for(lambda: self.proc.poll() is not None or http_ok(self.url("/readyz")), 30, "exporter ready")
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {self.proc.returncode}:\n{self.output()}")

    def url(self, path: str) -> str:
        """URL of the exporter's web endpoint `path`."""
        return f"http://127.0.0.1:{self.web_port}{path}"

    @property
    def otlp_http_url(self) -> str:
        """The OTLP/HTTP traces endpoint."""
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def otlp_grpc_target(self) -> str:
        """The OTLP/gRPC target (host:port)."""
        return f"127.0.0.1:{self.grpc_port}"

    def scrape(self, openmetrics: bool = False) -> str:
        """The text of /metrics."""
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        response = httpx.get(self.url("/metrics"), headers=headers, timeout=10)
        response.raise_for_status()
        return response.text

    def output(self) -> str:
        """Everything the process logged."""
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait, kill if needed; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
