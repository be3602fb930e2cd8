"""Topology records, span-sender matching, static mode, mode selection and the topology collector."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.engine.scraper import ScrapeTarget
from exporter.gpu.records import GpuIdentity, GpuProcess, GpuSample, GpuView
from exporter.metrics import catalog
from exporter.service import components
from exporter.service.settings import Settings, load_settings
from exporter.topology.build import TopologyOptions, build_source, compute_processes, resolve_mode
from exporter.topology.collector import TopologyCollector
from exporter.topology.kubernetes import KubernetesTopology
from exporter.topology.model import (
    GroupWorker,
    Instance,
    SpanSender,
    Topology,
    TopologyConfigError,
    TopologySource,
    match_sender,
    peer_ip,
    url_ip,
)
from exporter.topology.processes import ComputeProcess, ProcessTopology
from exporter.topology.static import InstanceConfig, StaticTopology, instance_from_config, static_instances


def cfg(**values: object) -> InstanceConfig:
    """An instance entry as the config file gives it."""
    return InstanceConfig.model_validate(values)


def settings(**flags: object) -> Settings:
    """Settings as the command line gives them."""
    return load_settings(dict(flags))


def options(**flags: object) -> TopologyOptions:
    """The topology options those settings give."""
    return components.topology_options(settings(**flags))


# --- peer addresses ---


@pytest.mark.parametrize(
    ("peer", "ip"),
    [
        ("ipv4:10.1.2.3:43210", "10.1.2.3"),  # grpc context.peer()
        ("ipv6:[fd00::5]:4317", "fd00::5"),
        ("ipv6:%5B::1%5D:4317", "::1"),  # some grpc versions percent-encode the brackets
        ("10.1.2.3", "10.1.2.3"),  # aiohttp request.remote
        ("10.1.2.3:5555", "10.1.2.3"),
        ("fd00::5", "fd00::5"),
        ("[fd00::5]:4318", "fd00::5"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # IPv4-mapped, from a dual-stack listener
        ("ipv6:[::ffff:10.1.2.3]:1", "10.1.2.3"),
        ("unix:/tmp/otlp.sock", None),
        ("localhost:4317", None),
        ("", None),
    ],
)
def test_peer_ip_normalises_every_form(peer: str, ip: str | None) -> None:
    assert peer_ip(peer) == ip


def test_url_ip_only_for_non_loopback_literals() -> None:
    assert url_ip("http://10.0.0.7:8000") == "10.0.0.7"
    assert url_ip("http://[fd00::7]:8000") == "fd00::7"
    assert url_ip("http://127.0.0.1:8000") is None
    assert url_ip("http://vllm.local:8000") is None


# --- matching a span's sender ---

A = Instance("llm/a", "http://10.0.0.1:8000", model="llama", ip="10.0.0.1", pids=(100, 101), service_names=("svc",))
B = Instance("llm/b", "http://10.0.0.2:8000", model="qwen", ip="10.0.0.2", pids=(200,), service_instance_ids=("b-uid",))
HOST_1 = Instance("host/1", "http://192.168.1.10:8001", ip="192.168.1.10", pids=(300,), service_names=("one",))
HOST_2 = Instance("host/2", "http://192.168.1.10:8002", ip="192.168.1.10", pids=(400,), service_names=("two",))


def test_match_prefers_pod_ip_over_everything_else() -> None:
    # The other keys point at B, but the connection came from A's pod IP: the IP wins.
    sender = SpanSender(peer_ip="10.0.0.1", process_id=200, service_instance_id="b-uid", service_name="svc")
    assert match_sender([A, B], sender) is A


def test_match_falls_back_in_order_pid_instance_id_service_name() -> None:
    assert match_sender([A, B], SpanSender(peer_ip="10.9.9.9", process_id=200)) is B
    assert match_sender([A, B], SpanSender(process_id=999, service_instance_id="b-uid")) is B
    assert match_sender([A, B], SpanSender(service_name="svc")) is A
    assert match_sender([A, B], SpanSender(service_name="nobody")) is None
    assert match_sender([A, B], SpanSender()) is None
    assert match_sender([], SpanSender(peer_ip="10.0.0.1")) is None


def test_shared_ip_narrows_then_next_key_decides() -> None:
    # hostNetwork pods share the node IP: the IP narrows to both, the PID (or service.name) picks one.
    assert match_sender([A, HOST_1, HOST_2], SpanSender(peer_ip="192.168.1.10", process_id=400)) is HOST_2
    assert match_sender([A, HOST_1, HOST_2], SpanSender(peer_ip="192.168.1.10", service_name="one")) is HOST_1
    # A key that only matches outside the narrowed set does not jump to that instance.
    assert match_sender([A, HOST_1, HOST_2], SpanSender(peer_ip="192.168.1.10", service_name="svc")) is None
    # Still ambiguous: no answer rather than a guess.
    assert match_sender([HOST_1, HOST_2], SpanSender(peer_ip="192.168.1.10")) is None


def test_sender_from_resource_reads_vllm_attributes() -> None:
    # vLLM 0.32 sends vllm.process_id as a string and a random service.instance.id per process.
    resource = {
        "service.name": "vllm-tiny",
        "service.instance.id": "387a6af4-6633-4341-a691-59472177815f",
        "vllm.process_id": "14512",
        "telemetry.sdk.name": "opentelemetry",
    }
    sender = SpanSender.from_resource(resource, "ipv4:10.0.0.2:50000")
    assert sender == SpanSender("10.0.0.2", 14512, "387a6af4-6633-4341-a691-59472177815f", "vllm-tiny")
    assert SpanSender.from_resource({"vllm.process_id": 7}, None).process_id == 7
    assert SpanSender.from_resource({"vllm.process_id": "x"}, "unix:/s") == SpanSender()
    assert match_sender([A, B], SpanSender.from_resource({"vllm.process_id": "101"}, None)) is A


# --- static mode ---


def test_static_instances_from_config() -> None:
    configs = [
        cfg(url="http://127.0.0.1:8000/", model="llama", gpus=["GPU-aaaa", "GPU-bbbb"], name="llama-0"),
        cfg(url="http://10.0.0.9:8001", gpus=["1"]),
    ]
    first, second = static_instances(configs)
    assert first == Instance(
        id="llama-0",
        url="http://127.0.0.1:8000",
        model="llama",
        gpus=("GPU-aaaa", "GPU-bbbb"),
        service_instance_ids=("llama-0",),
        service_names=("llama-0", "llama"),
    )
    assert ScrapeTarget(first.id, first.url).metrics_url == "http://127.0.0.1:8000/metrics"
    assert (second.id, second.model, second.gpus, second.ip) == ("10.0.0.9:8001", None, ("1",), "10.0.0.9")
    assert instance_from_config(cfg(url="https://[fd00::1]/")).id == "[fd00::1]:443"


def test_static_duplicate_ids_are_a_config_error() -> None:
    with pytest.raises(TopologyConfigError, match=r"127\.0\.0\.1:8000"):
        static_instances([cfg(url="http://127.0.0.1:8000"), cfg(url="http://127.0.0.1:8000/")])


def test_static_source_is_fresh_and_never_fails() -> None:
    source = StaticTopology([cfg(url="http://127.0.0.1:8000", model="m")])
    assert isinstance(source, TopologySource)
    asyncio.run(source.start())
    topology = source.current()
    assert (topology.source, topology.stale, len(topology.instances)) == ("static", False, 1)
    assert topology.observed_at > 0
    assert topology.by_id("127.0.0.1:8000") is topology.instances[0]
    assert topology.by_id("nope") is None
    assert source.error_counts() == {}
    asyncio.run(source.stop())


# --- choosing the source ---


def test_resolve_mode_auto() -> None:
    in_cluster = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    listed = [cfg(url="http://127.0.0.1:8000")]
    assert resolve_mode(options(kubernetes_node_name="n1"), in_cluster) == "kubernetes"
    assert resolve_mode(options(kubernetes_node_name="n1", kubernetes_api_url="http://127.0.0.1:8001"), {}) == (
        "kubernetes"
    )
    assert resolve_mode(options(), in_cluster) == "processes"  # in a cluster but no node name
    assert resolve_mode(options(instances=listed), {}) == "static"
    assert resolve_mode(options(), {}) == "processes"
    assert resolve_mode(options(topology_mode="static", kubernetes_node_name="n1"), in_cluster) == "static"


def test_build_source_per_mode() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    source = build_source(options(kubernetes_node_name="n1"), environ=env)
    assert isinstance(source, KubernetesTopology)
    assert source.options.api_url == "https://[fd00::1]:6443"
    assert source.options.node_name == "n1"
    assert isinstance(build_source(options(instances=[cfg(url="http://h:1")]), environ={}), StaticTopology)
    assert isinstance(build_source(options(), environ={}), ProcessTopology)
    with pytest.raises(TopologyConfigError, match="kubernetes_node_name"):
        build_source(options(topology_mode="kubernetes"), environ=env)
    with pytest.raises(TopologyConfigError, match="KUBERNETES_SERVICE_HOST"):
        build_source(options(topology_mode="kubernetes", kubernetes_node_name="n1"), environ={})


def test_compute_processes_from_gpu_views() -> None:
    def view(uuid: str, index: int, pids: tuple[int, ...] | None) -> GpuView:
        processes = None if pids is None else tuple(GpuProcess(p, 1 << 30) for p in pids)
        sample = GpuSample(uuid, index, 0.0, True, processes=processes)
        return GpuView(GpuIdentity(uuid, index, "H100", "550"), sample, None, {})

    views = [view("GPU-0", 0, (10, 11)), view("GPU-1", 1, None), view("GPU-2", 2, (12,))]
    assert compute_processes(views) == [
        ComputeProcess(10, "GPU-0"),
        ComputeProcess(11, "GPU-0"),
        ComputeProcess(12, "GPU-2"),
    ]


# --- the collector ---


class _FixedSource:
    source = "kubernetes"

    def __init__(self, topology: Topology, errors: dict[tuple[str, str], int]) -> None:
        self.topology = topology
        self.errors = errors

    async def start(self) -> None:
        """Nothing."""

    async def stop(self) -> None:
        """Nothing."""

    def current(self) -> Topology:
        return self.topology

    def error_counts(self) -> dict[tuple[str, str], int]:
        return self.errors


def test_collector_renders_instances_and_health() -> None:
    topology = Topology(
        (
            Instance("llm/a", "http://10.0.0.1:8000", "llama", ("GPU-1", "GPU-2"), "llm", "a", "uid-a", "10.0.0.1"),
            Instance("llm/b", "http://10.0.0.2:8000", None, (), "llm", "b"),
        ),
        observed_at=1_700_000_000.0,
        source="kubernetes",
        stale=True,
    )
    source = _FixedSource(topology, {("kubernetes", "unreachable"): 3, ("podresources", "socket_missing"): 1})
    assert isinstance(source, TopologySource)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TopologyCollector(source, lambda i: {"llm/a": "on"}.get(i, "unknown")))
    text = generate_latest(registry).decode()
    assert (
        'llm_engine_instance_info{gpus="GPU-1,GPU-2",group="",mfu_metrics="on",model="llama",namespace="llm",pod="a",'
        'role="",vllm_instance="llm/a"} 1.0' in text
    )
    assert (
        'llm_engine_instance_info{gpus="",group="",mfu_metrics="unknown",model="",namespace="llm",pod="b",role="",'
        'vllm_instance="llm/b"} 1.0' in text
    )
    assert 'llm_exporter_topology_instances{source="kubernetes"} 2.0' in text
    assert 'llm_exporter_topology_stale{source="kubernetes"} 1.0' in text
    assert 'llm_exporter_topology_observed_timestamp_seconds{source="kubernetes"} 1.7e+09' in text
    assert 'llm_exporter_topology_errors_total{reason="unreachable",source="kubernetes"} 3.0' in text
    assert 'llm_exporter_topology_errors_total{reason="socket_missing",source="podresources"} 1.0' in text
    for spec in catalog.TOPOLOGY_METRICS:
        assert f"# TYPE {spec.name} {spec.kind.value}" in text


def test_collector_before_first_observation() -> None:
    source = _FixedSource(Topology((), 0.0, "kubernetes", stale=True), {})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TopologyCollector(source))
    text = generate_latest(registry).decode()
    assert 'llm_exporter_topology_stale{source="kubernetes"} 1.0' in text
    assert 'llm_exporter_topology_instances{source="kubernetes"} 0.0' in text
    assert "llm_exporter_topology_observed_timestamp_seconds{" not in text
    assert "llm_engine_instance_info{" not in text


def test_a_static_instance_takes_its_configured_role() -> None:
    assert instance_from_config(cfg(url="http://h:1", role="decode")).role == "decode"
    assert instance_from_config(cfg(url="http://h:1")).role is None
    with pytest.raises(ValueError, match="role"):
        cfg(url="http://h:1", role="chef")


def test_a_static_entry_without_url_is_a_group_worker() -> None:
    leader = cfg(url="http://10.0.0.5:8000", model="big", name="big-0", group="big-0")
    worker = cfg(model="big", gpus=["0", "1"], group="big-0")
    topology = StaticTopology([leader, worker]).current()
    assert [(i.id, i.group) for i in topology.instances] == [("big-0", "big-0")]
    assert topology.workers == (GroupWorker(id="big-0/worker", group="big-0", model="big", gpus=("0", "1")),)
    with pytest.raises(ValueError, match=r"needs a url .* or a group"):
        cfg(model="big")
    with pytest.raises(ValueError, match="has no role"):
        cfg(group="g", role="decode")
    with pytest.raises(TopologyConfigError, match="the id 'g/worker'"):
        StaticTopology([cfg(group="g"), cfg(group="g")])
