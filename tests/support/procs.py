"""Real processes for tests and benchmarks: the exporter (as its CLI runs it) and helpers to find ports and wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import httpx

from exporter.service.settings import ENV_PREFIX, env_of, flag_of

REPO = Path(__file__).resolve().parents[2]
EXPORTER_BIN = Path(sys.executable).parent / "llm-token-exporter"
T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


@dataclass(frozen=True)
class ProcStats:
    """A process's resources at one moment, from /proc."""

    rss_bytes: int
    threads: int
    fds: int
    cpu_seconds: float  # user + system, all its threads


def proc_stats(pid: int | str = "self") -> ProcStats:
    """Resident memory, threads, open file descriptors and CPU seconds of `pid`; OSError when it is gone."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    # After the command name's closing parenthesis: field 3 (state) first; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return ProcStats(rss, threads, len(os.listdir(f"/proc/{pid}/fd")), cpu)


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (getrusage: finer than /proc's clock ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """`llm-token-exporter serve` (or another `command`) as a subprocess on free loopback ports, ready once built.

    Settings (by name, as `Settings` fields) reach it as flags or as LLM_TOKEN_EXPORTER_* variables; the listen
    addresses are among them. Nothing of the caller's LLM_TOKEN_EXPORTER_* environment leaks in. `cpus` pins it
    with `taskset -c` (which execs, so the pid is the command's); its output goes to `log_path` (appended) or to a
    temporary file that is kept.
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        command: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        settings_as: Literal["flags", "env"] = "flags",
        cpus: str = "",
        log_path: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.web_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        self.stop_timeout = stop_timeout
        every = {
            "web_listen_address": f"127.0.0.1:{self.web_port}",
            "otlp_http_listen_address": f"127.0.0.1:{self.http_port}",
            "otlp_grpc_listen_address": f"127.0.0.1:{self.grpc_port}",
            **(settings or {}),
        }
        args = list(command) or [str(EXPORTER_BIN), "serve"]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        if settings_as == "flags":
            args += [arg for name, value in every.items() for arg in (flag_of(name), value)]
        else:
            full_env.update({env_of(name): value for name, value in every.items()})
        args += extra_args
        full_env.update(env or {})
        if cpus:
            args = ["taskset", "-c", cpus, *args]
        if log_path is None:
            with tempfile.NamedTemporaryFile(prefix="exporter-", suffix=".log", delete=False) as log:
                log_path = Path(log.name)
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        try:
            wait_for(lambda: self.proc.poll() is not None or http_ok(self.url("/readyz")), ready_timeout, "ready")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{args[0]} not ready within {ready_timeout:g} s:\n{self.output()[-4000:]}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.proc.pid

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
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, wait (`stop_timeout` unless given), kill if needed; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
