"""Pure parts of Kubernetes discovery: a Pod object to an instance, failure reasons, the in-cluster URL."""

from __future__ import annotations

import httpx
import pytest

from exporter.topology.kubernetes import (
    ApiError,
    BadResponse,
    Skipped,
    failure_reason,
    in_cluster_api_url,
    lws_group,
    pod_instance,
)
from exporter.topology.model import GroupWorker, Instance
from tests.support.k8s_api import make_pod

ANNOTATION = "llm-token-exporter/port"


def instance_of(pod: dict[str, object]) -> Instance:
    result = pod_instance(pod, "http", ANNOTATION)
    assert isinstance(result, Instance), result
    return result


def test_running_pod_with_named_port() -> None:
    pod = make_pod(
        "llama-0",
        "10.244.1.7",
        uid="uid-1",
        args=["--model", "meta-llama/Llama-3.1-8B", "--served-model-name", "llama-8b", "--port", "8000"],
        env=[
            {"name": "OTEL_SERVICE_NAME", "value": "llama-svc"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    )
    instance = instance_of(pod)
    assert instance == Instance(
        id="llm/llama-0",
        url="http://10.244.1.7:8000",
        model="llama-8b",
        namespace="llm",
        pod="llama-0",
        pod_uid="uid-1",
        ip="10.244.1.7",
        service_instance_ids=("uid-1", "llama-0", "llm.llama-0.vllm"),
        service_names=("llama-svc",),
    )
    assert instance.gpus == ()  # GPUs come from the kubelet, not the pod spec


def test_annotation_wins_over_named_port_and_picks_its_container() -> None:
    pod = make_pod("p", "10.0.0.1", annotations={ANNOTATION: "9000"})
    sidecar = {"name": "proxy", "args": ["--model", "wrong"], "ports": [{"name": "http", "containerPort": 8080}]}
    vllm = {
        "name": "engine",
        "command": ["vllm", "serve", "Qwen/Qwen2.5-7B"],
        "args": ["--port", "9000"],
        "ports": [{"containerPort": 9000}],
        "env": [{"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "service.name=qwen,service.instance.id=qwen-0"}],
    }
    pod["spec"]["containers"] = [sidecar, vllm]
    instance = instance_of(pod)
    assert (instance.url, instance.model, instance.service_names) == (
        "http://10.0.0.1:9000",
        "Qwen/Qwen2.5-7B",
        ("qwen",),
    )
    assert instance.service_instance_ids[0] == "qwen-0"
    assert "llm.p.engine" in instance.service_instance_ids


def test_ipv6_pod_ip_is_bracketed() -> None:
    assert instance_of(make_pod("p", "fd00:10:244::7")).url == "http://[fd00:10:244::7]:8000"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"phase": "Pending"}, "not_running"),
        ({"phase": "Succeeded"}, "not_running"),
        ({"ip": None}, "no_ip"),
        ({"ports": [{"name": "grpc", "containerPort": 9000}]}, "no_port"),
        ({"ports": []}, "no_port"),
        ({"annotations": {ANNOTATION: "http"}}, "bad_port"),
        ({"annotations": {ANNOTATION: "70000"}}, "bad_port"),
    ],
)
def test_pods_that_are_not_instances(changes: dict[str, object], reason: str) -> None:
    kwargs: dict[str, object] = {"ip": "10.0.0.1", **changes}
    ip = kwargs.pop("ip")
    assert ip is None or isinstance(ip, str)
    pod = make_pod("p", ip, **kwargs)  # type: ignore[arg-type]
    result = pod_instance(pod, "http", ANNOTATION)
    assert isinstance(result, Skipped) and result.reason == reason


def test_env_references_are_not_taken_literally() -> None:
    pod = make_pod("p", "10.0.0.1", env=[{"name": "OTEL_SERVICE_NAME", "value": "$(POD_NAME)"}])
    assert instance_of(pod).service_names == ()


def test_failure_reasons_are_bounded() -> None:
    request = httpx.Request("GET", "http://api/api/v1/pods")
    assert failure_reason(ApiError(401, "")) == "unauthorized"
    assert failure_reason(ApiError(403, "")) == "unauthorized"
    assert failure_reason(ApiError(500, "")) == "server_error"
    assert failure_reason(ApiError(503, "")) == "server_error"
    assert failure_reason(ApiError(429, "")) == "http_error"
    assert failure_reason(httpx.ConnectError("refused", request=request)) == "unreachable"
    assert failure_reason(httpx.ReadTimeout("slow", request=request)) == "timeout"
    assert failure_reason(httpx.RemoteProtocolError("closed", request=request)) == "connection"
    assert failure_reason(BadResponse("x")) == "bad_response"
    assert failure_reason(ValueError("bad json")) == "bad_response"
    assert failure_reason(RuntimeError("bug")) == "internal"


def test_in_cluster_api_url() -> None:
    assert in_cluster_api_url({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://10.96.0.1:443"
    )
    assert in_cluster_api_url({"KUBERNETES_SERVICE_HOST": "fd00::1"}) == "https://[fd00::1]:443"
    assert in_cluster_api_url({}) is None


def test_the_role_comes_from_the_llm_d_label_else_the_kv_transfer_config() -> None:
    kv = ["--model", "m", "--kv-transfer-config", '{"kv_connector": "NixlConnector", "kv_role": "kv_consumer"}']
    assert instance_of(make_pod("p", "10.0.0.1", labels={"llm-d.ai/role": "prefill"}, args=kv)).role == "prefill"
    assert instance_of(make_pod("p", "10.0.0.1", args=kv)).role == "decode"
    assert instance_of(make_pod("p", "10.0.0.1", labels={"llm-d.ai/role": "chef"})).role is None
    assert instance_of(make_pod("p", "10.0.0.1")).role is None


LWS = {
    "app": "vllm",
    "leaderworkerset.sigs.k8s.io/name": "llama-405b",
    "leaderworkerset.sigs.k8s.io/group-index": "1",
    "leaderworkerset.sigs.k8s.io/group-key": "6f1c0e",
}


def test_a_leaderworkerset_leader_is_an_instance_that_names_its_group() -> None:
    leader = make_pod("llama-405b-1", "10.0.0.5", labels={**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "0"})
    instance = instance_of(leader)
    assert (instance.id, instance.group) == ("llm/llama-405b-1", "llm/llama-405b-1")
    assert instance_of(make_pod("plain", "10.0.0.6")).group is None


def test_a_leaderworkerset_worker_is_a_group_worker_even_without_a_port() -> None:
    labels = {**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "2"}
    headless = ["vllm", "serve", "meta-llama/Llama-3.1-405B", "--headless", "--data-parallel-start-rank", "2"]
    worker = pod_instance(
        make_pod("llama-405b-1-2", "10.0.1.7", labels=labels, args=headless, ports=[]), "http", ANNOTATION
    )
    assert worker == GroupWorker(
        id="llm/llama-405b-1-2",
        group="llm/llama-405b-1",  # the leader's instance id
        model="meta-llama/Llama-3.1-405B",
        namespace="llm",
        pod="llama-405b-1-2",
    )
    ray = pod_instance(make_pod("llama-405b-1-1", "10.0.1.8", labels=labels, args=["ray", "start"]), "http", ANNOTATION)
    assert isinstance(ray, GroupWorker) and ray.model is None  # the fleet rules take the leader's model
    pending = make_pod("llama-405b-1-3", None, labels=labels, phase="Pending")
    assert pod_instance(pending, "http", ANNOTATION) == Skipped("not_running", "Pending")


def test_partial_leaderworkerset_labels_are_no_group() -> None:
    assert lws_group("llm", {"leaderworkerset.sigs.k8s.io/name": "x"}) is None
    bad_index = {**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "leader"}
    assert lws_group("llm", bad_index) is None
    assert lws_group("llm", {**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "3"}) == ("llm/llama-405b-1", False)


def test_a_headless_vllm_pod_outside_a_leaderworkerset_is_a_worker_of_its_rendezvous() -> None:
    base = ["vllm", "serve", "big", "--nnodes", "2", "--master-addr", "10.0.0.1", "--master-port", "29500"]
    leader = instance_of(make_pod("big-leader", "10.0.0.1", args=[*base, "--node-rank", "0"]))
    assert leader.group == "10.0.0.1:29500"
    worker = pod_instance(
        make_pod("big-worker", "10.0.0.2", args=[*base, "--node-rank", "1", "--headless"], ports=[]), "http", ANNOTATION
    )
    assert worker == GroupWorker(
        id="llm/big-worker", group="10.0.0.1:29500", model="big", namespace="llm", pod="big-worker"
    )
