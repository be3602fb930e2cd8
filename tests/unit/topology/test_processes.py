"""Bare-metal discovery: vLLM API servers found by walking a fake /proc tree from NVML's GPU processes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter.engine.scraper import ScrapeTarget
from exporter.topology.model import GroupWorker
from exporter.topology.processes import ComputeProcess, ProcessTopology, discover, discover_all, read_process
from exporter.topology.vllm_args import VllmArgs, is_vllm_server, parse_vllm_args, server_url

LLAMA = ["/usr/bin/python3", "/opt/venv/bin/vllm", "serve", "meta-llama/Llama-3.1-8B", "--port", "8001"]
LLAMA += ["--served-model-name", "llama-8b", "llama", "--tensor-parallel-size", "2"]
QWEN = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-7B", "--host", "0.0.0.0"]
SPAWN = ["/usr/bin/python3", "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"]


def make_proc(root: Path, pid: int, ppid: int, argv: Sequence[str], comm: str = "python3") -> None:
    """One /proc/<pid> with the two files the walker reads, shaped as the kernel writes them."""
    base = root / str(pid)
    base.mkdir(parents=True)
    (base / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 1234 0 0 0 12 3 0 0 20 0 1 0\n")
    (base / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    make_proc(root, 1, 0, ["/sbin/init"], comm="systemd")
    make_proc(root, 500, 1, ["-bash"], comm="bash")
    # vllm serve, TP=2 with a forked engine core (same cmdline as its parent) and retitled workers.
    make_proc(root, 1000, 500, LLAMA, comm="vllm")
    make_proc(root, 1010, 1000, LLAMA, comm="vllm")
    make_proc(root, 1020, 1010, ["VLLM::Worker_TP0"], comm="VLLM::Worker_TP")
    make_proc(root, 1021, 1010, ["VLLM::Worker_TP1"], comm="VLLM::Worker_TP")
    # The api_server module with spawned children, default port, listening on every address.
    make_proc(root, 2000, 1, QWEN)
    make_proc(root, 2010, 2000, SPAWN)
    # Not vLLM: a training job on a GPU, and a shell that merely mentions vllm serve.
    make_proc(root, 3000, 1, ["python", "train.py"])
    make_proc(root, 3100, 1, ["bash", "-c", "vllm serve x --port 9999"], comm="bash")
    # A CPU-only server bound to one address: found without any GPU process.
    make_proc(root, 4000, 1, ["vllm", "serve", "tiny", "--port=8100", "--host", "10.1.2.3"], comm="vllm")
    # Odd but legal: comm with spaces and parentheses; a process with unreadable stat.
    make_proc(root, 4100, 1, ["odd"], comm="my (odd) name)")
    make_proc(root, 4200, 1, ["broken"])
    (root / "4200" / "stat").write_text("garbage")
    (root / "self").mkdir()  # non-numeric entries are ignored
    return root


GPU_PROCESSES = [
    ComputeProcess(1020, "GPU-aaaa"),
    ComputeProcess(1021, "GPU-bbbb"),
    ComputeProcess(2010, "GPU-cccc"),
    ComputeProcess(3000, "GPU-dddd"),
    ComputeProcess(5000, "GPU-eeee"),  # exited between NVML and /proc
]


def test_discover_walks_gpu_processes_up_to_their_api_server(proc_root: Path) -> None:
    instances = discover(GPU_PROCESSES, proc_root)
    assert [i.id for i in instances] == ["10.1.2.3:8100", "127.0.0.1:8000", "127.0.0.1:8001"]
    cpu, qwen, llama = instances
    assert (llama.url, llama.model, llama.gpus, llama.pid) == (
        "http://127.0.0.1:8001",
        "llama-8b",
        ("GPU-aaaa", "GPU-bbbb"),
        1000,
    )
    # Every process of the tree sends spans with its own vllm.process_id: all are match keys.
    assert llama.pids == (1000, 1010, 1020, 1021)
    assert ScrapeTarget(llama.id, llama.url).metrics_url == "http://127.0.0.1:8001/metrics"
    assert (qwen.url, qwen.model, qwen.gpus, qwen.pid, qwen.pids) == (
        "http://127.0.0.1:8000",
        "Qwen/Qwen2.5-7B",
        ("GPU-cccc",),
        2000,
        (2000, 2010),
    )
    assert (cpu.url, cpu.model, cpu.gpus, cpu.pid) == ("http://10.1.2.3:8100", "tiny", (), 4000)
    assert all(i.namespace is None and i.pod is None for i in instances)


def test_discover_reads_gpu_processes_missing_from_the_listing(tmp_path: Path) -> None:
    # A GPU process hidden from the directory listing (or started after the scan) is read directly.
    root = tmp_path / "proc"
    make_proc(root, 10, 1, ["vllm", "serve", "m"])
    make_proc(root, 11, 10, ["VLLM::Worker"])
    assert discover([ComputeProcess(11, "0")], root)[0].gpus == ("0",)
    shutil.rmtree(root / "11")
    assert discover([ComputeProcess(11, "0")], root)[0].gpus == ()


def test_parent_cycle_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    make_proc(root, 20, 21, ["vllm", "serve", "m", "--port", "8005"])
    make_proc(root, 21, 20, ["python"])  # PID reuse can make a ppid chain loop
    make_proc(root, 22, 20, ["VLLM::Worker"])
    (instance,) = discover([ComputeProcess(22, "GPU-1")], root)
    assert (instance.id, instance.gpus) == ("127.0.0.1:8005", ("GPU-1",))


def test_read_process_parses_stat_after_the_last_paren(proc_root: Path) -> None:
    info = read_process(proc_root, 4100)
    assert info is not None and (info.ppid, info.argv) == (1, ("odd",))
    assert read_process(proc_root, 4200) is None
    assert read_process(proc_root, 999999) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vllm", "serve", "m"], True),
        (["/usr/bin/python3", "/venv/bin/vllm", "serve", "m"], True),
        (["python3", "-m", "vllm.entrypoints.openai.api_server"], True),
        (["python3", "/src/vllm/vllm/entrypoints/openai/api_server.py", "--model", "m"], True),
        (["bash", "-c", "vllm serve m"], False),
        (["vllm", "--version"], False),
        (["pip", "install", "vllm"], False),
        (["VLLM::EngineCore"], False),
        ([], False),
    ],
)
def test_is_vllm_server(argv: list[str], expected: bool) -> None:
    assert is_vllm_server(argv) is expected


def test_parse_vllm_args_forms() -> None:
    assert parse_vllm_args(LLAMA) == VllmArgs(8001, None, "llama-8b", "meta-llama/Llama-3.1-8B")
    assert parse_vllm_args(["vllm", "serve", "m"]) == VllmArgs(8000, None, None, "m")
    assert parse_vllm_args(["--model=/models/x", "--port=9000", "--host=::"]) == VllmArgs(9000, "::", None, "/models/x")
    # Later flags win, as with argparse; a bad port keeps the default.
    assert parse_vllm_args(["vllm", "serve", "m", "--port", "1", "--port", "2"]).port == 2
    assert parse_vllm_args(["vllm", "serve", "m", "--port", "http"]).port == 8000
    assert parse_vllm_args(["vllm", "serve", "--port", "8001"]).model is None
    tls = parse_vllm_args(["vllm", "serve", "m", "--ssl-keyfile", "k", "--ssl-certfile", "c"])
    assert tls.tls and server_url(tls) == "https://127.0.0.1:8000"
    assert VllmArgs(served_model_name="a", model="b").model_label == "a"


def test_server_url_hosts() -> None:
    assert server_url(VllmArgs(8000, "0.0.0.0")) == "http://127.0.0.1:8000"
    assert server_url(VllmArgs(8000, "::")) == "http://127.0.0.1:8000"
    assert server_url(VllmArgs(8000, "localhost")) == "http://127.0.0.1:8000"
    assert server_url(VllmArgs(8000, "fd00::2")) == "http://[fd00::2]:8000"
    assert server_url(VllmArgs(8000, "10.0.0.3")) == "http://10.0.0.3:8000"


def test_process_source_refreshes_keeps_last_view_on_failure(proc_root: Path, tmp_path: Path) -> None:
    processes: list[ComputeProcess] = list(GPU_PROCESSES)
    failing = {"lister": False}

    def lister() -> list[ComputeProcess]:
        if failing["lister"]:
            raise RuntimeError("NVML: GPU is lost")
        return processes

    async def scenario() -> None:
        source = ProcessTopology(lister, proc_root, refresh_s=3600)
        assert source.current().stale  # nothing observed yet
        await source.start()
        try:
            first = source.current()
            assert (first.source, first.stale, len(first.instances)) == ("processes", False, 3)
            failing["lister"] = True
            second = await source.refresh()
            assert second.stale and second.instances == first.instances
            assert second.observed_at == first.observed_at
            assert source.error_counts() == {("processes", "gpu_processes"): 1}
            failing["lister"] = False
            processes.remove(ComputeProcess(1021, "GPU-bbbb"))
            third = await source.refresh()
            assert not third.stale
            llama = third.by_id("127.0.0.1:8001")
            assert llama is not None and llama.gpus == ("GPU-aaaa",)
            source.proc_root = tmp_path / "no-such-proc"
            fourth = await source.refresh()
            assert fourth.stale and fourth.instances == third.instances
            assert source.error_counts()[("processes", "proc_unreadable")] == 1
        finally:
            await source.stop()
            await source.stop()  # idempotent

    asyncio.run(scenario())


def test_process_source_without_gpu_lister_finds_servers(proc_root: Path) -> None:
    async def scenario() -> None:
        source = ProcessTopology(None, proc_root, refresh_s=3600)
        topology = await source.refresh()
        assert [i.id for i in topology.instances] == ["10.1.2.3:8100", "127.0.0.1:8000", "127.0.0.1:8001"]
        assert all(i.gpus == () for i in topology.instances)

    asyncio.run(scenario())


def test_the_role_is_the_kv_transfer_configs_kv_role() -> None:
    def role(config: str) -> str | None:
        return parse_vllm_args(["vllm", "serve", "m", "--kv-transfer-config", config]).role

    assert role('{"kv_connector": "NixlConnector", "kv_role": "kv_producer"}') == "prefill"
    assert role('{"kv_connector": "NixlConnector", "kv_role": "kv_consumer"}') == "decode"
    assert role('{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}') == "both"
    assert role("not json") is None and role('["a list"]') is None
    assert parse_vllm_args(["vllm", "serve", "m"]).role is None


RANK0 = ["vllm", "serve", "big", "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2", "--nnodes", "2"]
RANK0 += ["--node-rank", "0", "--master-addr", "10.0.0.1", "--master-port", "29500", "--port", "8000"]
RANK1 = [*RANK0[:-2], "--headless"]
RANK1[RANK1.index("--node-rank") + 1] = "1"


def test_multi_node_vllm_arguments_name_the_group_alike_on_every_node() -> None:
    leader, worker = parse_vllm_args(RANK0), parse_vllm_args(RANK1)
    assert (leader.group, leader.headless) == ("10.0.0.1:29500", False)
    assert (worker.group, worker.headless, worker.model_label) == ("10.0.0.1:29500", True, "big")
    assert parse_vllm_args(["vllm", "serve", "m", "--master-addr", "10.0.0.1"]).group is None  # one node
    dp = ["vllm", "serve", "m", "--data-parallel-size", "4", "--data-parallel-size-local", "2"]
    dp += ["--data-parallel-address", "10.0.0.2", "--data-parallel-rpc-port", "13345"]
    assert parse_vllm_args(dp).group == "10.0.0.2:13345"
    assert parse_vllm_args([*dp[:5], "4"]).group is None  # every engine on this node


def test_a_headless_vllm_tree_is_a_group_worker_with_its_gpus(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    make_proc(root, 30, 1, RANK1)
    make_proc(root, 31, 30, ["VLLM::Worker_PP1_TP0"])
    make_proc(root, 32, 30, ["VLLM::Worker_PP1_TP1"])
    make_proc(root, 40, 1, ["vllm", "serve", "small", "--port", "8002"])
    instances, workers = discover_all([ComputeProcess(31, "GPU-1"), ComputeProcess(32, "GPU-2")], root)
    assert [i.id for i in instances] == ["127.0.0.1:8002"]  # the headless tree is not scraped
    assert workers == (GroupWorker(id="pid30", group="10.0.0.1:29500", model="big", gpus=("GPU-1", "GPU-2")),)


def test_the_process_source_publishes_workers(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    make_proc(root, 30, 1, RANK1)
    make_proc(root, 31, 30, ["VLLM::Worker"])
    source = ProcessTopology(lambda: [ComputeProcess(31, "GPU-1")], root)
    topology = asyncio.run(source.refresh())
    assert [(w.group, w.gpus) for w in topology.workers] == [("10.0.0.1:29500", ("GPU-1",))]
