"""The kubelet PodResources client against a real gRPC server on a unix socket, and the committed stubs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from exporter.topology.kubernetes import KubernetesOptions, KubernetesTopology
from exporter.topology.podresources import PodResourcesClient, device_uuid, gpus_by_pod, is_gpu_resource
from exporter.topology.proto.podresources.v1 import api_pb2, api_pb2_grpc
from tests.support.k8s_api import FakeKubeApi, eventually, make_pod
from tests.support.procs import REPO

GPU_A = "GPU-3a1e2a44-7c59-5f7e-8d1e-0f6b6a9d1c01"
GPU_B = "GPU-5b2f3b55-8d6a-6a8f-9e2f-1a7c7b0e2d02"
GPU_C = "GPU-6c3a4c66-9e7b-7b9a-0f3a-2b8d8c1f3e03"
MIG = "MIG-7d4b5d77-0f8c-5c0b-a14b-3c9e9d2a4f04"


def pod(namespace: str, name: str, *containers: api_pb2.ContainerResources) -> api_pb2.PodResources:
    return api_pb2.PodResources(name=name, namespace=namespace, containers=list(containers))


def container(name: str, *devices: tuple[str, list[str]]) -> api_pb2.ContainerResources:
    return api_pb2.ContainerResources(
        name=name,
        devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devices],
        cpu_ids=[2, 3],
    )


NODE_PODS = [
    pod("llm", "llama-0", container("vllm", ("nvidia.com/gpu", [GPU_A, GPU_B]))),
    # Two containers, one with a GPU and a non-GPU device (an RDMA NIC) beside it.
    pod(
        "llm",
        "qwen-0",
        container("proxy"),
        container("vllm", ("rdma/hca_shared_devices_a", ["0"]), ("nvidia.com/gpu", [GPU_C])),
    ),
    pod("llm", "small-0", container("vllm", ("nvidia.com/mig-1g.10gb", [MIG]))),
    pod("kube-system", "coredns-1", container("coredns")),
]


class Lister(api_pb2_grpc.PodResourcesListerServicer):
    """The kubelet's side: answers List with whatever `pods` holds now."""

    def __init__(self, pods: list[api_pb2.PodResources]) -> None:
        self.pods = pods
        self.calls = 0

    def List(self, request: api_pb2.ListPodResourcesRequest, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


@contextlib.contextmanager
def kubelet(socket: Path, pods: list[api_pb2.PodResources]) -> Iterator[Lister]:
    """A real gRPC server speaking podresources/v1 on a unix socket."""
    lister = Lister(pods)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(lister, server)  # type: ignore[no-untyped-call]
    assert server.add_insecure_port(f"unix://{socket}") != 0
    server.start()
    try:
        yield lister
    finally:
        server.stop(grace=None).wait()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    # unix socket paths are limited to ~107 bytes; pytest's tmp_path stays well under that here.
    path = tmp_path / "kubelet.sock"
    assert len(str(path)) < 100
    return path


def test_client_maps_gpus_to_pods(socket_path: Path) -> None:
    async def scenario() -> None:
        client = PodResourcesClient(str(socket_path), timeout_s=2.0)
        try:
            with kubelet(socket_path, NODE_PODS) as lister:
                gpus = await client.gpus_by_pod()
                assert lister.calls == 1
        finally:
            await client.close()
        assert gpus == {
            ("llm", "llama-0"): (GPU_A, GPU_B),
            ("llm", "qwen-0"): (GPU_C,),
            ("llm", "small-0"): (MIG,),
            ("kube-system", "coredns-1"): (),
        }
        assert client.error_counts() == {}

    asyncio.run(scenario())


def test_missing_socket_is_unknown_and_counted(socket_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        client = PodResourcesClient(str(socket_path))
        assert await client.gpus_by_pod() is None
        assert await client.gpus_by_pod() is None
        assert client.error_counts() == {("podresources", "socket_missing"): 2}
        # The kubelet comes (back) up: the next call works.
        with kubelet(socket_path, NODE_PODS[:1]):
            assert await client.gpus_by_pod() == {("llm", "llama-0"): (GPU_A, GPU_B)}
        await client.close()

    asyncio.run(scenario())
    warnings = [r for r in caplog.records if "GPUs per pod unknown" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage, not per call


def test_dead_socket_is_unknown_and_counted(socket_path: Path) -> None:
    # A socket file nobody listens on (the kubelet died): the call fails, nothing raises.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(socket_path))

    async def scenario() -> None:
        client = PodResourcesClient(str(socket_path), timeout_s=1.0)
        assert await client.gpus_by_pod() is None
        counts = client.error_counts()
        assert sum(counts.values()) == 1
        assert next(iter(counts)) in {("podresources", "unavailable"), ("podresources", "timeout")}
        await client.close()

    asyncio.run(scenario())


def test_gpu_resource_names_and_time_slicing_ids() -> None:
    assert is_gpu_resource("nvidia.com/gpu")
    assert is_gpu_resource("nvidia.com/gpu.shared")
    assert is_gpu_resource("nvidia.com/mig-3g.40gb")
    assert not is_gpu_resource("nvidia.com/gpu-fake-other")
    assert not is_gpu_resource("rdma/hca_shared_devices_a")
    assert not is_gpu_resource("amd.com/gpu")
    assert device_uuid(f"{GPU_A}::3") == GPU_A
    shared = api_pb2.ListPodResourcesResponse(
        pod_resources=[pod("llm", "p", container("a", ("nvidia.com/gpu.shared", [f"{GPU_A}::0", f"{GPU_A}::1"])))]
    )
    assert gpus_by_pod(shared) == {("llm", "p"): (GPU_A,)}


def test_kubernetes_topology_takes_gpus_from_the_kubelet(socket_path: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    api = FakeKubeApi()
    api.add(make_pod("llama-0", "10.244.0.10"))
    api.add(make_pod("qwen-0", "10.244.0.11"))

    async def scenario() -> None:
        await api.start()
        options = KubernetesOptions(
            api_url=api.url, node_name="node-1", token_file=str(token), gpu_min_interval_s=0.0, gpu_refresh_s=60.0
        )
        source = KubernetesTopology(options, PodResourcesClient(str(socket_path)))
        try:
            with kubelet(socket_path, NODE_PODS):
                await source.start()
                assert await source.wait_synced(5.0)
                await eventually(lambda: all(i.gpus for i in source.current().instances), "GPUs from the kubelet")
                assert [(i.id, i.gpus) for i in source.current().instances] == [
                    ("llm/llama-0", (GPU_A, GPU_B)),
                    ("llm/qwen-0", (GPU_C,)),
                ]
        finally:
            await source.stop()
            await api.stop()

    asyncio.run(scenario())


def test_generated_stubs_are_reproducible(tmp_path: Path) -> None:
    """scripts/gen-protos into a temp dir gives exactly the committed modules."""
    out = tmp_path / "gen"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(REPO / "scripts" / "gen-protos"), str(out)], check=True, env=env, capture_output=True)
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert [str(p) for p in generated] == [
        "exporter/metrics/proto/prometheus/metrics_pb2.py",
        "exporter/metrics/proto/prometheus/metrics_pb2.pyi",
        "exporter/metrics/proto/prometheus/metrics_pb2_grpc.py",
        "exporter/topology/proto/podresources/v1/api_pb2.py",
        "exporter/topology/proto/podresources/v1/api_pb2.pyi",
        "exporter/topology/proto/podresources/v1/api_pb2_grpc.py",
    ]
    for rel in generated:
        assert (out / rel).read_bytes() == (REPO / rel).read_bytes(), f"{rel} is stale: run scripts/gen-protos"


def test_stubs_speak_the_kubelet_wire_names() -> None:
    # The kubelet routes by these names; the Python module path must not leak into them.
    service = api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert [m.name for m in service.methods] == ["List", "GetAllocatableResources", "Get"]
    fields = {f.name: f.number for f in api_pb2.ContainerDevices.DESCRIPTOR.fields}
    assert fields == {"resource_name": 1, "device_ids": 2, "topology": 3}
