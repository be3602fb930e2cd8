"""The trace-routing example (an OpenTelemetry Collector routing prefill/decode traces to one exporter): valid
Kubernetes objects, a Collector config whose pipelines are wired, and names that match the chart's Services."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from tests.support.procs import REPO

EXAMPLE = REPO / "deploy/examples/otel-collector-trace-routing.yaml"
CHART = REPO / "deploy/helm/llm-token-exporter"
Obj = dict[str, Any]


def objects() -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]


def chart_services() -> dict[str, Obj]:
    """The Services the chart renders with trace routing on, by name (the release the examples assume)."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(
            values={"traceRouting": {"peersService": True}},
            name="llm-token-exporter",
            namespace="monitoring",
            is_install=True,
        )
    docs = [d for p, text in manifests.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}


def test_the_example_objects_are_valid_kubernetes() -> None:
    kinds = []
    for obj in objects():
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
        kinds.append(obj["kind"])
    assert kinds == ["ConfigMap", "DaemonSet", "Service"]


def test_the_collector_routes_by_trace_id_to_the_chart_peers_and_the_rest_to_the_node_local_exporter() -> None:
    config = yaml.safe_load(objects()[0]["data"]["config.yaml"])
    services = chart_services()
    lb = config["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    peers = services["llm-token-exporter-otlp-peers"]
    assert peers["spec"]["clusterIP"] == "None"
    assert lb["resolver"]["dns"]["hostname"] == "llm-token-exporter-otlp-peers.monitoring.svc.cluster.local"
    assert lb["resolver"]["dns"]["port"] == peers["spec"]["ports"][0]["port"]
    local = services["llm-token-exporter"]
    assert local["spec"]["internalTrafficPolicy"] == "Local"
    grpc = next(p["port"] for p in local["spec"]["ports"] if p["name"] == "otlp-grpc")
    assert config["exporters"]["otlp/local"]["endpoint"] == f"llm-token-exporter.monitoring.svc:{grpc}"
    # Every pipeline's components are defined, and the routing connector feeds both paths.
    defined = {kind: set(config[kind]) for kind in ("receivers", "exporters", "connectors")}
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= defined["receivers"] | defined["connectors"]
        assert set(pipeline["exporters"]) <= defined["exporters"] | defined["connectors"]
    routed = {p for r in config["connectors"]["routing"]["table"] for p in r["pipelines"]}
    assert routed | set(config["connectors"]["routing"]["default_pipelines"]) == {"traces/by-trace", "traces/local"}
    assert 'attributes["llm.role"]' in config["connectors"]["routing"]["table"][0]["statement"]
