"""Bare-metal topology: vLLM servers found through /proc, with the GPUs of the NVML compute processes under them.

NVML lists the processes using each GPU (host PIDs): with vLLM these are its GPU workers, whose process titles
are rewritten (`VLLM::Worker_TP0`). Walking their parent chain leads to the API server (`vllm serve ...` or
`python -m vllm.entrypoints.openai.api_server ...`), whose command line gives the port and the served model.
The GPU process list is passed in as plain data, so this module needs no NVML.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.topology.model import (
    SOURCE_PROCESSES,
    ErrorCounts,
    GroupWorker,
    Instance,
    Topology,
    empty_topology,
    now,
)
from exporter.topology.vllm_args import is_vllm_server, parse_vllm_args, server_url

log = logging.getLogger(__name__)

MAX_PARENT_DEPTH = 64  # a ppid cycle (PID reuse mid-walk) must not loop forever


@dataclass(frozen=True, slots=True)
class ComputeProcess:
    """One NVML compute process: its host PID and the GPU it runs on (UUID or index)."""

    pid: int
    gpu: str


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    argv: tuple[str, ...]


def read_process(proc_root: Path, pid: int) -> ProcInfo | None:
    """A process's parent and command line, or None when it is gone or unreadable."""
    base = proc_root / str(pid)
    try:
        stat = (base / "stat").read_text()
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself hold spaces or ')': split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 2 or not fields[1].lstrip("-").isdigit():
        return None
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    return ProcInfo(pid, int(fields[1]), argv)


def scan_processes(proc_root: Path) -> dict[int, ProcInfo]:
    """Every readable process under proc_root (raises OSError when proc_root itself is unreadable)."""
    out: dict[int, ProcInfo] = {}
    for entry in os.scandir(proc_root):
        if entry.name.isdigit():
            info = read_process(proc_root, int(entry.name))
            if info is not None:
                out[info.pid] = info
    return out


def server_of(pid: int, processes: Mapping[int, ProcInfo]) -> int | None:
    """The topmost vLLM API server among pid and its ancestors. Topmost, because a forked engine core keeps
    its parent's command line and would otherwise pass for a server of its own."""
    server: int | None = None
    seen: set[int] = set()
    current: int | None = pid
    while current is not None and current > 0 and current not in seen and len(seen) < MAX_PARENT_DEPTH:
        seen.add(current)
        info = processes.get(current)
        if info is None:
            break
        if is_vllm_server(info.argv):
            server = current
        current = info.ppid
    return server


def discover(gpu_processes: Iterable[ComputeProcess], proc_root: Path = Path("/proc")) -> tuple[Instance, ...]:
    """Every vLLM API server on this host (those without GPUs too, e.g. CPU builds), each with the GPUs its
    process tree uses, in NVML's order. GPU processes outside any vLLM tree are ignored."""
    return discover_all(gpu_processes, proc_root)[0]


def discover_all(
    gpu_processes: Iterable[ComputeProcess], proc_root: Path = Path("/proc")
) -> tuple[tuple[Instance, ...], tuple[GroupWorker, ...]]:
    """The API servers (as `discover`) and the multi-node group workers: `vllm serve --headless` trees, whose GPUs
    serve a server on another node (its rendezvous address names the group)."""
    gpu_list = list(gpu_processes)
    processes = scan_processes(proc_root)
    for proc in gpu_list:
        # A GPU process this scan missed (started meanwhile, or hidden from the listing): read it directly.
        if proc.pid not in processes:
            info = read_process(proc_root, proc.pid)
            if info is not None:
                processes[info.pid] = info
    trees: dict[int, list[int]] = {}
    for pid in sorted(processes):
        server = server_of(pid, processes)
        if server is not None:
            trees.setdefault(server, []).append(pid)
    gpus: dict[int, dict[str, None]] = {server: {} for server in trees}
    for proc in gpu_list:
        server = server_of(proc.pid, processes)
        if server is not None:
            gpus[server][proc.gpu] = None
    instances: list[Instance] = []
    workers: list[GroupWorker] = []
    ids: set[str] = set()
    for server, pids in sorted(trees.items()):
        args = parse_vllm_args(processes[server].argv)
        if args.headless and args.group:
            workers.append(
                GroupWorker(id=f"pid{server}", group=args.group, model=args.model_label, gpus=tuple(gpus[server]))
            )
            continue
        url = server_url(args)
        instance_id = url.split("://", 1)[1]
        if instance_id in ids:  # two servers on one port: different network namespaces
            instance_id = f"{instance_id}/pid{server}"
        ids.add(instance_id)
        instances.append(
            Instance(
                id=instance_id,
                url=url,
                model=args.model_label,
                gpus=tuple(gpus[server]),
                pid=server,
                pids=tuple(pids),
                role=args.role,
                group=args.group,
            )
        )
    return tuple(sorted(instances, key=lambda i: i.id)), tuple(workers)


ComputeProcessLister = Callable[[], Sequence[ComputeProcess]]
"""Returns the NVML compute processes of every GPU now (called off the event loop; may block briefly)."""


class ProcessTopology:
    """A TopologySource re-reading /proc every `refresh_s`. A failed refresh keeps the last view, marked stale."""

    source = SOURCE_PROCESSES

    def __init__(
        self,
        gpu_processes: ComputeProcessLister | None = None,
        proc_root: Path = Path("/proc"),
        refresh_s: float = 10.0,
    ) -> None:
        self.gpu_processes = gpu_processes or (lambda: ())
        self.proc_root = proc_root
        self.refresh_s = refresh_s
        self.errors = ErrorCounts()
        self._topology = empty_topology(SOURCE_PROCESSES)
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None

    def current(self) -> Topology:
        """The latest view."""
        return self._topology

    def error_counts(self) -> dict[tuple[str, str], int]:
        """Failures by (source, reason): gpu_processes (the lister raised) or proc_unreadable."""
        return self.errors.snapshot()

    def _discover(self) -> tuple[tuple[Instance, ...], tuple[GroupWorker, ...]]:
        try:
            processes = list(self.gpu_processes())
        except Exception as exc:
            raise _RefreshError("gpu_processes", exc) from exc
        try:
            return discover_all(processes, self.proc_root)
        except OSError as exc:
            raise _RefreshError("proc_unreadable", exc) from exc

    async def refresh(self) -> Topology:
        """Re-read now (in a worker thread: /proc reads and NVML calls block) and return the new view."""
        try:
            instances, workers = await asyncio.to_thread(self._discover)
        except _RefreshError as exc:
            self.errors.add(SOURCE_PROCESSES, exc.reason)
            if self._failing != exc.reason:
                log.warning("process topology: %s: %s; keeping the last view", exc.reason, exc.__cause__)
            self._failing = exc.reason
            old = self._topology
            self._topology = Topology(old.instances, old.observed_at, SOURCE_PROCESSES, stale=True, workers=old.workers)
            return self._topology
        if self._failing is not None:
            log.info("process topology: readable again")
            self._failing = None
        if instances != self._topology.instances or workers != self._topology.workers:
            log.info(
                "process topology: %s%s",
                ", ".join(f"{i.id} (pid {i.pid}, gpus {i.gpus})" for i in instances),
                "".join(f"; group worker {w.id} of {w.group} (gpus {w.gpus})" for w in workers),
            )
        self._topology = Topology(instances, now(), SOURCE_PROCESSES, stale=False, workers=workers)
        return self._topology

    async def start(self) -> None:
        """Read once now, then every refresh_s in the background."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="topology-processes")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a bug must not end discovery for good
                if self.errors.add(SOURCE_PROCESSES, "internal") == 1:
                    log.exception("process topology: refresh failed")

    async def stop(self) -> None:
        """Stop refreshing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _RefreshError(Exception):
    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
