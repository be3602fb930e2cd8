"""GPUs per pod from the kubelet PodResources API (gRPC over a unix socket, v1.PodResourcesLister/List).

For the NVIDIA device plugin the device ids of `nvidia.com/gpu` are NVML UUIDs (`GPU-...`; MIG instances
`MIG-...`), so they join directly with what NVML reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import grpc

from exporter.topology.model import SOURCE_PODRESOURCES, ErrorCounts
from exporter.topology.proto.podresources.v1 import api_pb2

log = logging.getLogger(__name__)

LIST_METHOD = "/v1.PodResourcesLister/List"
DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a node with hundreds of pods answers in well under this

PodKey = tuple[str, str]
"""A pod by (namespace, name): the only identity PodResources gives."""


def is_gpu_resource(resource_name: str) -> bool:
    """Whether an extended resource is an NVIDIA GPU: nvidia.com/gpu, a renamed shared one (nvidia.com/gpu.shared)
    or a MIG profile under the mixed strategy (nvidia.com/mig-1g.10gb)."""
    return (
        resource_name == "nvidia.com/gpu"
        or resource_name.startswith("nvidia.com/gpu.")
        or resource_name.startswith("nvidia.com/mig-")
    )


def device_uuid(device_id: str) -> str:
    """The GPU behind a device id: time-slicing replicas are advertised as `<uuid>::<replica>`."""
    return device_id.split("::", 1)[0]


def gpus_by_pod(
    response: api_pb2.ListPodResourcesResponse, is_gpu: Callable[[str], bool] = is_gpu_resource
) -> dict[PodKey, tuple[str, ...]]:
    """Every listed pod with the GPUs of all its containers (first-seen order, no repeats); () for pods
    without GPUs, so "no GPUs" differs from "not listed"."""
    out: dict[PodKey, tuple[str, ...]] = {}
    for pod in response.pod_resources:
        gpus: dict[str, None] = {}
        for container in pod.containers:
            for devices in container.devices:
                if is_gpu(devices.resource_name):
                    for device_id in devices.device_ids:
                        gpus[device_uuid(device_id)] = None
        key = (pod.namespace, pod.name)
        out[key] = tuple(dict.fromkeys((*out.get(key, ()), *gpus)))
    return out


class PodResourcesClient:
    """Asks the kubelet which GPUs each pod holds. Failures are counted and logged once per outage, never raised:
    the answer is then None (unknown for now) and the next call dials again."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout_s: float = 2.0,
        is_gpu: Callable[[str], bool] = is_gpu_resource,
    ) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.is_gpu = is_gpu
        self.errors = ErrorCounts()
        self._channel: Any = None
        self._failing: str | None = None  # reason of the ongoing outage, for log-once

    def error_counts(self) -> dict[tuple[str, str], int]:
        """Failures so far by (source, reason); source is `podresources`."""
        return self.errors.snapshot()

    async def gpus_by_pod(self) -> dict[PodKey, tuple[str, ...]] | None:
        """GPUs per pod now, or None when the kubelet could not be asked (counted as socket_missing, timeout,
        unavailable or rpc_error)."""
        if not os.path.exists(self.socket_path):
            self._fail("socket_missing", f"socket {self.socket_path} does not exist")
            return None
        try:
            if self._channel is None:
                self._channel = grpc.aio.insecure_channel(
                    "unix://" + os.path.abspath(self.socket_path),
                    options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
                )
            call = self._channel.unary_unary(
                LIST_METHOD,
                request_serializer=api_pb2.ListPodResourcesRequest.SerializeToString,
                response_deserializer=api_pb2.ListPodResourcesResponse.FromString,
            )
            response = await call(api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            reason = {
                grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
                grpc.StatusCode.UNAVAILABLE: "unavailable",
            }.get(code, "rpc_error")
            self._fail(reason, f"{code.name}: {exc.details()}")
            await self._drop_channel()
            return None
        except Exception as exc:  # anything else from grpc or a bad answer: GPUs unknown, never a crash
            self._fail("rpc_error", f"{type(exc).__name__}: {exc}")
            await self._drop_channel()
            return None
        if self._failing is not None:
            log.info("kubelet pod-resources API at %s answers again", self.socket_path)
            self._failing = None
        return gpus_by_pod(response, self.is_gpu)

    def _fail(self, reason: str, detail: str) -> None:
        self.errors.add(SOURCE_PODRESOURCES, reason)
        if self._failing != reason:
            log.warning("GPUs per pod unknown for now: kubelet pod-resources API: %s (will retry)", detail)
        self._failing = reason

    async def _drop_channel(self) -> None:
        # A fresh channel on the next call: the kubelet re-creates its socket when it restarts.
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._drop_channel()
