"""The Helm chart, linted and rendered by the real Helm engine (helm-python-sdk: Helm's Go SDK as a shared library),
with every rendered object checked against the Kubernetes and Prometheus Operator schemas and the security rules."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from exporter.alerts.spec import load_spec
from exporter.attribution.stage import DEFAULT_GPU_PRICES
from exporter.service.settings import SLO_METRICS, Settings, load_settings
from tests.support.certs import CertAuthority
from tests.support.procs import EXPORTER_BIN, REPO

CHART = REPO / "deploy/helm/llm-token-exporter"
CRDS = REPO / "tests/data/crds"
RELEASE, NAMESPACE = "lte", "monitoring"
FULLNAME = f"{RELEASE}-llm-token-exporter"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.26.0", kubernetes_validate.utils.latest_version())
MONITORING = "monitoring.coreos.com/v1"
# Settings the chart sets itself, so values.schema.json refuses them under `config`.
CHART_OWNED = {
    "web_listen_address",
    "otlp_grpc_listen_address",
    "otlp_http_listen_address",
    "podresources_socket",
    "kubernetes_node_name",
}
Obj = dict[str, Any]

# Value sets rendered and checked for schemas and security; each also has its own assertions below.
VALUE_SETS: dict[str, Obj] = {
    "default": {},
    "trace-routing": {"traceRouting": {"peersService": True}},
    "monitors-off": {
        "monitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "dashboards": {"enabled": False},
    },
    "podmonitor": {"monitor": {"kind": "PodMonitor", "additionalLabels": {"release": "kube-prometheus-stack"}}},
    "networkpolicy-off": {"networkPolicy": {"enabled": False}},
    "static-instances": {
        "config": {
            "topology_mode": "static",
            "instances": [
                {"url": "http://10.0.0.5:8000", "model": "llama-3-8b", "gpus": ["0", "1"]},
                {"url": "http://10.0.0.5:8001", "gpus": ["GPU-5c3bd2e9-0000-0000-0000-000000000000"], "name": "b"},
                {"group": "big-0", "model": "big", "gpus": ["2", "3"]},  # a multi-node group's worker: no url
            ],
        },
        "podResources": {"enabled": False},
        "rbac": {"create": False},
    },
    "custom-prices": {
        "config": {
            "gpu_price_per_hour": {"H100": 2.49, "A100-SXM4-80GB": 1.6},
            "gpu_price_default_per_hour": 1.25,
            "energy_price_per_kwh": 0.12,
            "tenant_attribute_keys": ["org.id", "tenant.id"],
            "tenant_cap": 50,
            "model_cap": 8,
            "buckets_ttft": [0.1, 0.25, 0.5, 1, 2, 5],
            "forward_traces_endpoint": "http://tempo.tracing.svc:4317",
        }
    },
    "root-socket": {"podResources": {"runAsRoot": True}},
    "socket-group-openshift-uid": {
        "podResources": {"socketGroup": 0},
        "runAsUser": 1000680000,
        "runAsGroup": 1000680000,
        "priorityClassName": "system-node-critical",
    },
    "processes-hostpid": {
        "hostPID": True,
        "config": {"topology_mode": "processes"},
        "podResources": {"enabled": False},
    },
    "ipv6-no-runtimeclass": {"listenHost": "::", "runtimeClassName": "", "networkPolicy": {"metrics": {"from": []}}},
}


def render_manifests(values: Obj | None = None, chart: Path = CHART) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` / `helm install` would render it."""
    with helm.Chart.load(str(chart)) as loaded:
        return loaded.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: Obj | None = None, chart: Path = CHART) -> list[Obj]:
    """Every rendered Kubernetes object."""
    objects: list[Obj] = []
    for path, text in sorted(render_manifests(values, chart).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The single object of a kind (and name)."""
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def daemonset_pod(objects: list[Obj]) -> Obj:
    """The DaemonSet's pod spec."""
    spec: Obj = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def exporter_container(objects: list[Obj]) -> Obj:
    """The exporter container."""
    containers: list[Obj] = daemonset_pod(objects)["containers"]
    assert [c["name"] for c in containers] == ["exporter"]
    return containers[0]


def rendered_config(objects: list[Obj]) -> Obj:
    """The exporter's config file as rendered into its ConfigMap."""
    text = one(objects, "ConfigMap", FULLNAME)["data"]["config.yaml"]
    loaded: Obj = yaml.safe_load(text)
    return loaded


def settings_of(
    objects: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mounts: dict[str, Path] | None = None
) -> Settings:
    """The settings the exporter would start with: the rendered file plus the pod's env (node name); `mounts` maps
    a mount path in the pod to a local directory holding what the pod would find there."""
    for key in list(os.environ):
        if key.startswith("LLM_TOKEN_EXPORTER_"):
            monkeypatch.delenv(key)
    container = exporter_container(objects)
    for env in container["env"]:
        if env["name"] == "LLM_TOKEN_EXPORTER_KUBERNETES_NODE_NAME":
            assert env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
            monkeypatch.setenv(env["name"], "gpu-node-1")
    text = one(objects, "ConfigMap", FULLNAME)["data"]["config.yaml"]
    for mount, local in (mounts or {}).items():
        text = text.replace(f"{mount}/", f"{local}/")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings({}, path)


def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """A validator for a monitoring.coreos.com kind, from the CRD schemas kept under tests/data/crds/."""
    doc = json.loads((CRDS / f"{kind.lower()}.json").read_text())
    assert doc["kind"] == kind
    return jsonschema.Draft7Validator(doc["openAPIV3Schema"])


def validate_object(obj: Obj) -> None:
    """Core objects against the Kubernetes schemas (strict: unknown fields fail) of the oldest and newest supported
    versions; Prometheus Operator objects against their CRD schemas."""
    assert obj["metadata"]["name"], obj
    assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    if obj["apiVersion"] == MONITORING:
        errors = sorted(crd_validator(obj["kind"]).iter_errors(obj), key=str)
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(e.message for e in errors)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version} at {path}: {exc}")


def assert_secure(objects: list[Obj], values: Obj) -> None:
    """Least privilege: non-root (unless runAsRoot), not privileged, no capabilities added, read-only root
    filesystem, no privilege escalation, seccomp RuntimeDefault, no host namespaces unless asked, RBAC read-only
    on pods."""
    pod = daemonset_pod(objects)
    as_root = values.get("podResources", {}).get("runAsRoot", False)
    pod_sc = pod["securityContext"]
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    if as_root:
        assert pod_sc["runAsUser"] == 0 and pod_sc["runAsNonRoot"] is False
    else:
        assert pod_sc["runAsNonRoot"] is True
        assert isinstance(pod_sc["runAsUser"], int) and pod_sc["runAsUser"] > 0
    assert pod.get("hostNetwork", False) is False and pod.get("hostIPC", False) is False
    assert pod.get("hostPID", False) is values.get("hostPID", False)
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        sc = container["securityContext"]
        assert sc["privileged"] is False
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}, "no capability may be added"
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["runAsNonRoot"] is (not as_root)
        assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {})), "the exporter takes no GPU"
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        for volume in pod["volumes"]:
            if "hostPath" in volume:
                assert volume["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
                assert mounts[volume["name"]]["readOnly"] is True
    assert "SYS_ADMIN" not in json.dumps(objects)
    for role in [*of_kind(objects, "ClusterRole"), *of_kind(objects, "Role")]:
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""] and rule["resources"] == ["pods"], rule
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    for binding in [*of_kind(objects, "ClusterRoleBinding"), *of_kind(objects, "RoleBinding")]:
        assert binding["roleRef"]["name"] == FULLNAME
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def deep_merge(base: Obj, extra: Obj) -> Obj:
    """`extra` over `base`, as Helm coalesces values."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="module")
def default_objects() -> list[Obj]:
    """The default render."""
    return render()


@pytest.fixture
def chart_copy(tmp_path: Path) -> Iterator[Path]:
    """A scratch copy of the chart (to add or remove generated files)."""
    target = tmp_path / "llm-token-exporter"
    shutil.copytree(CHART, target)
    yield target


# --- Helm lint ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "podmonitor", "static-instances", "root-socket"])
def test_lint_reports_no_errors_or_warnings(name: str) -> None:
    report = helm.lint(str(CHART), VALUE_SETS[name] or None, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


def test_engine_is_helm_4_sdk() -> None:
    assert helm.helm_sdk_version().startswith("v4.")
    with helm.Chart.load(str(CHART)) as chart:
        assert chart.metadata["name"] == "llm-token-exporter"
        assert chart.metadata["kubeVersion"] == ">=1.26.0-0"


def test_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    # `helm package` + install from the .tgz: the archive keeps the rule and dashboard files.
    archive = Path(helm.package(str(CHART), destination=str(tmp_path)))
    assert archive.name == "llm-token-exporter-0.1.0.tgz"
    with helm.Chart.load(str(archive)) as packaged:
        from_archive = packaged.render(name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert from_archive == render_manifests()


# --- every value set: schemas, config, security ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_set_renders_valid_secure_objects(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = VALUE_SETS[name]
    objects = render(values or None)
    for obj in objects:
        validate_object(obj)
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    assert_secure(objects, values)
    settings = settings_of(objects, tmp_path, monkeypatch)
    assert settings.kubernetes_node_name == "gpu-node-1"
    with helm.Chart.load(str(CHART)) as chart:
        defaults: Obj = chart.values["config"]
    merged_config = deep_merge(defaults, values.get("config", {}))
    for key, value in merged_config.items():
        got = getattr(settings, key)
        if key == "instances":
            got = [i.model_dump(exclude_none=True) for i in got]
            value = [{"gpus": [], **i} for i in value]
        assert got == value, key


def test_default_render_objects(default_objects: list[Obj]) -> None:
    kinds = sorted(o["kind"] for o in default_objects)
    rules = sorted((REPO / "alerts/rules").glob("*.yaml"))
    boards = sorted((REPO / "dashboards").glob("*.json"))
    expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        *["ConfigMap"] * len(boards),
        "DaemonSet",
        "NetworkPolicy",
        *["PrometheusRule"] * len(rules),
        "Service",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert kinds == sorted(expected)


def test_daemonset_runs_on_gpu_nodes_through_the_nvidia_runtime(default_objects: list[Obj]) -> None:
    daemonset = one(default_objects, "DaemonSet", FULLNAME)
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    pod = daemonset_pod(default_objects)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["serviceAccountName"] == FULLNAME
    # The token is mounted by this pod alone (its ServiceAccount does not mount it by default).
    assert pod["automountServiceAccountToken"] is True
    assert one(default_objects, "ServiceAccount")["automountServiceAccountToken"] is False
    container = exporter_container(default_objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["LLM_TOKEN_EXPORTER_KUBERNETES_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert container["image"] == "llm-token-exporter:0.1.0"
    assert container["args"][:2] == ["--config", "/etc/llm-token-exporter/config.yaml"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9842, "otlp-grpc": 4317, "otlp-http": 4318}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/llm-token-exporter"]["readOnly"] is True
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-resources"]["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    assert volumes["config"]["configMap"]["name"] == FULLNAME
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64


def test_default_config_is_kubernetes_mode(
    default_objects: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(default_objects, tmp_path, monkeypatch)
    assert settings.topology_mode == "kubernetes"
    assert settings.kubernetes_pod_selector == "app.kubernetes.io/name=vllm"
    assert settings.podresources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert settings.web_listen_address == "0.0.0.0:9842"
    assert settings.otlp_grpc_listen_address == "0.0.0.0:4317"
    assert settings.otlp_http_listen_address == "0.0.0.0:4318"
    # The chart's defaults are the exporter's own.
    defaults = Settings.model_fields
    assert settings.gpu_price_per_hour == DEFAULT_GPU_PRICES
    for key in ("gpu_price_default_per_hour", "energy_price_per_kwh", "tenant_cap", "model_cap", "log_level"):
        assert getattr(settings, key) == defaults[key].get_default(call_default_factory=True), key
    assert settings.tenant_attribute_keys == ["tenant.id"]


def test_otlp_service_keeps_spans_on_the_node(default_objects: list[Obj]) -> None:
    otlp = one(default_objects, "Service", FULLNAME)
    assert otlp["spec"]["internalTrafficPolicy"] == "Local"
    assert otlp["spec"]["type"] == "ClusterIP"
    assert {(p["name"], p["port"], p["targetPort"]) for p in otlp["spec"]["ports"]} == {
        ("otlp-grpc", 4317, "otlp-grpc"),
        ("otlp-http", 4318, "otlp-http"),
    }
    pod_labels = one(default_objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert otlp["spec"]["selector"].items() <= pod_labels.items()
    metrics = one(default_objects, "Service", f"{FULLNAME}-metrics")
    assert [(p["name"], p["port"]) for p in metrics["spec"]["ports"]] == [("metrics", 9842)]


def test_service_monitor_scrapes_the_metrics_service_as_the_rules_expect(default_objects: list[Obj]) -> None:
    monitor = one(default_objects, "ServiceMonitor", FULLNAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    matching = [s for s in of_kind(default_objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in matching] == [f"{FULLNAME}-metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"} in (
        endpoint["relabelings"]
    )
    # The job label comes from the Service's label named by jobLabel; the generated rules select that job.
    job = matching[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    for path in (REPO / "alerts/rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "job=" in rule["expr"]:
                    assert f'job="{job}"' in rule["expr"], (path.name, rule["expr"])


def test_pod_monitor_variant_selects_the_pods() -> None:
    objects = render(VALUE_SETS["podmonitor"])
    assert of_kind(objects, "ServiceMonitor") == []
    monitor = one(objects, "PodMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    template = one(objects, "DaemonSet")["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "llm-token-exporter"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert endpoint["interval"] == "15s"


def test_monitors_off_renders_no_prometheus_operator_objects() -> None:
    objects = render(VALUE_SETS["monitors-off"])
    assert [o for o in objects if o["apiVersion"] == MONITORING] == []
    assert [o for o in of_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]] == []


def test_network_policy_admits_otlp_from_vllm_and_metrics_from_prometheus(default_objects: list[Obj]) -> None:
    policy = one(default_objects, "NetworkPolicy", FULLNAME)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    pod_labels = one(default_objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    otlp, metrics = spec["ingress"]
    assert otlp["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}}}
    ]
    assert {p["port"] for p in otlp["ports"]} == {"otlp-grpc", "otlp-http"}
    assert metrics["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]


def test_network_policy_never_renders_an_empty_from() -> None:
    # An empty `from` admits every source: with no scrapers listed, the metrics rule goes away instead.
    spec = one(render(VALUE_SETS["ipv6-no-runtimeclass"]), "NetworkPolicy")["spec"]
    assert len(spec["ingress"]) == 1
    assert all(rule.get("from") for rule in spec["ingress"])
    extra = {"networkPolicy": {"otlp": {"extraFrom": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]}}}
    spec = one(render(extra), "NetworkPolicy")["spec"]
    assert {"podSelector": {"matchLabels": {"app": "gateway"}}} in spec["ingress"][0]["from"]


def test_network_policy_off() -> None:
    assert of_kind(render(VALUE_SETS["networkpolicy-off"]), "NetworkPolicy") == []


def test_static_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(VALUE_SETS["static-instances"])
    settings = settings_of(objects, tmp_path, monkeypatch)
    assert settings.topology_mode == "static"
    assert [(i.url, i.model, i.gpus) for i in settings.instances] == [
        ("http://10.0.0.5:8000", "llama-3-8b", ["0", "1"]),
        ("http://10.0.0.5:8001", None, ["GPU-5c3bd2e9-0000-0000-0000-000000000000"]),
        (None, "big", ["2", "3"]),
    ]
    assert settings.instances[2].group == "big-0"
    assert settings.podresources_socket == ""
    assert "hostPath" not in json.dumps(daemonset_pod(objects)["volumes"])
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    assert daemonset_pod(objects)["automountServiceAccountToken"] is False, "static mode needs no API token"


def test_custom_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(render(VALUE_SETS["custom-prices"]), tmp_path, monkeypatch)
    # Helm coalesces maps: the default products stay, the given ones are added or replaced.
    assert settings.gpu_price_per_hour == {**DEFAULT_GPU_PRICES, "H100": 2.49, "A100-SXM4-80GB": 1.6}
    assert settings.gpu_price_default_per_hour == 1.25
    assert settings.energy_price_per_kwh == 0.12
    assert settings.tenant_attribute_keys == ["org.id", "tenant.id"]
    assert (settings.tenant_cap, settings.model_cap) == (50, 8)
    assert settings.buckets_ttft == [0.1, 0.25, 0.5, 1.0, 2.0, 5.0]
    assert settings.forward_traces_endpoint == "http://tempo.tracing.svc:4317"


def test_price_map_can_be_replaced_with_null_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--set config.gpu_price_per_hour.B200=null` removes a default product, as in any Helm map.
    values = {"config": {"gpu_price_per_hour": {"B200": None, "H200": None}}}
    settings = settings_of(render(values), tmp_path, monkeypatch)
    assert "B200" not in settings.gpu_price_per_hour and settings.gpu_price_per_hour["H100"] == 3.0


def test_large_ids_and_group_render_as_integers() -> None:
    pod = daemonset_pod(render(VALUE_SETS["socket-group-openshift-uid"]))
    assert pod["securityContext"]["runAsUser"] == 1000680000
    assert pod["securityContext"]["supplementalGroups"] == [0]
    assert pod["priorityClassName"] == "system-node-critical"


def test_root_socket_mode_keeps_every_other_restriction() -> None:
    objects = render(VALUE_SETS["root-socket"])
    assert daemonset_pod(objects)["securityContext"]["runAsUser"] == 0
    assert exporter_container(objects)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_ipv6_listen_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(VALUE_SETS["ipv6-no-runtimeclass"])
    settings = settings_of(objects, tmp_path, monkeypatch)
    assert settings.web_listen_address == "[::]:9842"
    assert "runtimeClassName" not in daemonset_pod(objects)


TLS_MOUNT = "/etc/llm-token-exporter-tls"
TLS_VALUES: Obj = {
    "tls": {"secretName": "lte-tls", "clientAuth": {"otlp": True}},
    "monitor": {"tlsConfig": {"ca": {"secret": {"name": "lte-tls", "key": "ca.crt"}}, "serverName": "lte.example"}},
}


def test_tls_secret_is_mounted_and_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(TLS_VALUES)
    for obj in objects:
        validate_object(obj)
    assert_secure(objects, TLS_VALUES)
    container = exporter_container(objects)
    # A whole-Secret mount (no subPath), so the kubelet rewrites the files on renewal and the exporter re-loads them.
    assert {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True} in container["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "lte-tls"}} in daemonset_pod(objects)["volumes"]
    config = rendered_config(objects)
    for group in ("web", "otlp"):
        assert config[f"{group}_tls_cert_file"] == f"{TLS_MOUNT}/tls.crt"
        assert config[f"{group}_tls_key_file"] == f"{TLS_MOUNT}/tls.key"
    assert config["otlp_tls_client_ca_file"] == f"{TLS_MOUNT}/ca.crt" and "web_tls_client_ca_file" not in config
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTPS"}
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == TLS_VALUES["monitor"]["tlsConfig"]
    # The exporter starts with that config when the Secret holds what cert-manager writes into it.
    secret = tmp_path / "secret"
    secret.mkdir()
    ca = CertAuthority.create("ca")
    ca.write(secret / "ca.crt")
    ca.issue("lte.example", 7, server=True).write(secret / "tls.crt", secret / "tls.key")
    settings = settings_of(objects, tmp_path, monkeypatch, {TLS_MOUNT: secret})
    assert settings.otlp_tls_client_ca_file == str(secret / "ca.crt")
    assert settings.web_tls_key_file == str(secret / "tls.key")
    notes = render_manifests(TLS_VALUES)["llm-token-exporter/templates/NOTES.txt"]
    assert f"--otlp-traces-endpoint https://{FULLNAME}.{NAMESPACE}.svc:4317" in notes
    assert "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE" in notes and "TRACES_INSECURE" not in notes
    report = helm.lint(str(CHART), TLS_VALUES, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def test_tls_on_metrics_only_with_mtls() -> None:
    values = {"tls": {"secretName": "lte-tls", "otlp": False, "clientAuth": {"web": True}}}
    objects = render(values)
    config = rendered_config(objects)
    assert not any(key.startswith("otlp_tls") for key in config)
    assert config["web_tls_client_ca_file"] == f"{TLS_MOUNT}/ca.crt"
    container = exporter_container(objects)
    # The kubelet presents no client certificate: with mTLS the probes check the port only.
    assert (
        container["livenessProbe"]["tcpSocket"] == {"port": "metrics"} and "httpGet" not in container["livenessProbe"]
    )
    assert container["readinessProbe"]["tcpSocket"] == {"port": "metrics"}
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    notes = render_manifests(values)["llm-token-exporter/templates/NOTES.txt"]
    assert f"--otlp-traces-endpoint http://{FULLNAME}" in notes and "TRACES_INSECURE=true" in notes
    assert "--cert client.crt --key client.key https://localhost:9842/readyz" in notes


def test_no_tls_by_default(default_objects: list[Obj]) -> None:
    assert not any("tls" in key for key in rendered_config(default_objects))
    assert "tls" not in {v["name"] for v in daemonset_pod(default_objects)["volumes"]}
    assert one(default_objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


@pytest.mark.parametrize(
    "tls",
    [{"clientAuth": {"web": True}}, {"secretName": "s", "otlp": False, "clientAuth": {"otlp": True}}],
)
def test_client_auth_without_tls_fails_at_install(tls: Obj) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"tls.clientAuth.(web|otlp) needs TLS"):
        render({"tls": tls})


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "ab" * 32
    container = exporter_container(render({"image": {"repository": "registry.example/lte", "digest": digest}}))
    assert container["image"] == f"registry.example/lte@{digest}"


def test_notes_explain_how_to_point_vllm_at_it() -> None:
    notes = render_manifests()["llm-token-exporter/templates/NOTES.txt"]
    assert f"--otlp-traces-endpoint http://{FULLNAME}.{NAMESPACE}.svc:4317" in notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:4318/v1/traces" in notes
    assert "OTEL_SERVICE_NAME" in notes and "release" in notes


# --- values.schema.json ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"monitor": {"kind": "Probe"}}, "/monitor/kind"),
        ({"config": {"web_listen_address": "0.0.0.0:1"}}, "additional properties 'web_listen_address' not allowed"),
        ({"config": {"no_such_setting": 1}}, "additional properties 'no_such_setting' not allowed"),
        ({"config": {"tenant_cap": 0}}, "/config/tenant_cap"),
        ({"config": {"topology_mode": "magic"}}, "/config/topology_mode"),
        ({"config": {"buckets_ttft": []}}, "/config/buckets_ttft"),
        ({"config": {"gpu_price_per_hour": {"H100": "cheap"}}}, "/config/gpu_price_per_hour/H100"),
        ({"config": {"instances": [{"model": "x"}]}}, "/config/instances/0"),
        ({"runAsUser": 0}, "/runAsUser"),
        ({"ports": {"metrics": 70000}}, "/ports/metrics"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"dashboards": {"labelValue": 1}}, "/dashboards/labelValue"),
        ({"service": {"internalTrafficPolicy": "Everywhere"}}, "/service/internalTrafficPolicy"),
        ({"nvidia": {"driverCapabilities": "utility;rm -rf"}}, "/nvidia/driverCapabilities"),
        ({"nodeselector": {}}, "additional properties 'nodeselector' not allowed"),
    ],
)
def test_bad_values_fail_at_install_with_a_clear_message(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert message in str(caught.value)


def test_schema_config_matches_the_exporter_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == set(Settings.model_fields) - CHART_OWNED
    pydantic = Settings.model_json_schema()["properties"]
    for name, ours in config["properties"].items():
        theirs = pydantic[name]
        if "type" in theirs:
            assert ours["type"] == theirs["type"], name
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength"):
            if key in theirs:
                assert ours.get(key) == theirs[key], (name, key)
        if "items" in theirs and "type" in theirs["items"]:
            assert ours["items"]["type"] == theirs["items"]["type"], name
        if isinstance(theirs.get("additionalProperties"), dict):
            assert ours["additionalProperties"] == theirs["additionalProperties"], name
    instance = schema["definitions"]["instance"]
    assert set(instance["properties"]) == set(Settings.model_json_schema()["$defs"]["InstanceConfig"]["properties"])


def test_every_value_has_a_schema_entry() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: Any, node: Obj, path: str) -> None:
        if (
            isinstance(values, dict)
            and node.get("properties") is not None
            and node.get("additionalProperties") is False
        ):
            for key, value in values.items():
                assert key in node["properties"], f"{path}.{key} has no schema entry"
                walk(value, node["properties"][key], f"{path}.{key}")

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")


# --- generated artifacts: byte-identical to alerts/ and dashboards/ -----------------------------------------------


def files_of(directory: Path, pattern: str) -> dict[str, bytes]:
    """name -> bytes of the files matching pattern (empty when the directory does not exist)."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob(pattern)) if p.is_file()}


def test_chart_artifacts_are_byte_identical_to_the_generated_ones() -> None:
    assert files_of(CHART / "files/rules", "*.yaml") == files_of(REPO / "alerts/rules", "*.yaml"), (
        "run scripts/sync-chart-artifacts"
    )
    assert files_of(CHART / "files/dashboards", "*.json") == files_of(REPO / "dashboards", "*.json"), (
        "run scripts/sync-chart-artifacts"
    )


def test_sync_script_reproduces_the_chart_artifacts(tmp_path: Path) -> None:
    # Sync into a scratch copy whose artifacts were removed and one stale file added: the result must equal the
    # committed chart byte for byte, and --check must pass on the real repo.
    root = tmp_path / "root"
    chart = root / "deploy/helm/llm-token-exporter"
    shutil.copytree(CHART, chart)
    for stale in (chart / "files").rglob("*.*"):
        stale.unlink()
    (chart / "files/rules").mkdir(parents=True, exist_ok=True)
    (chart / "files/rules/removed.rules.yaml").write_text("groups: []\n")
    script = REPO / "scripts/sync-chart-artifacts"
    run = [sys.executable, str(script), "--repo", str(REPO), "--chart-root", str(root)]
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    for sub, pattern in (("files/rules", "*.yaml"), ("files/dashboards", "*.json")):
        assert files_of(chart / sub, pattern) == files_of(CHART / sub, pattern)
    check = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(not (REPO / "exporter/alerts/slos.yaml").is_file(), reason="no SLO spec to generate rules from")
def test_regenerated_rules_equal_the_chart_copies(tmp_path: Path) -> None:
    out = tmp_path / "alerts"
    subprocess.run(
        [str(EXPORTER_BIN), "alerts", "--slo-spec", str(REPO / "exporter/alerts/slos.yaml"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert files_of(out / "rules", "*.yaml") == files_of(CHART / "files/rules", "*.yaml")


def test_prometheus_rules_carry_the_rule_files(default_objects: list[Obj]) -> None:
    rules = {
        o["metadata"]["annotations"]["llm-token-exporter/source"]: o for o in of_kind(default_objects, "PrometheusRule")
    }
    sources = files_of(CHART / "files/rules", "*.yaml")
    assert set(rules) == set(sources)
    for name, content in sources.items():
        assert rules[name]["spec"] == yaml.safe_load(content), name
        stem = name.removesuffix(".yaml").removesuffix(".rules")
        assert rules[name]["metadata"]["name"] == f"{FULLNAME}-{stem}"


def test_rules_and_dashboards_from_a_chart_with_other_files(chart_copy: Path) -> None:
    # Works whatever the generators produce: none at all, or a new rule file and dashboard.
    for path in (chart_copy / "files").rglob("*.*"):
        path.unlink()
    objects = render(chart=chart_copy)
    assert of_kind(objects, "PrometheusRule") == []
    assert [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] != FULLNAME] == []

    rule_file = (
        "# generated\ngroups:\n  - name: g\n    rules:\n      - alert: A\n"
        "        expr: |-\n          up\n\n          == 0\n"
        "        annotations:\n          summary: '{{ $labels.instance }} down'\n"
    )
    dashboard = json.dumps({"title": "LLM <serving> & cost", "uid": "llm-cost", "panels": [{"id": 1}]}, indent=2)
    (chart_copy / "files/rules").mkdir(parents=True, exist_ok=True)
    (chart_copy / "files/dashboards").mkdir(parents=True, exist_ok=True)
    (chart_copy / "files/rules/extra.rules.yaml").write_text(rule_file)
    (chart_copy / "files/dashboards/LLM-Cost.json").write_text(dashboard + "\n")
    values = {
        "dashboards": {"folder": "Inference", "additionalLabels": {"team": "ml"}, "namespace": "grafana"},
        "prometheusRule": {"additionalLabels": {"release": "kube-prometheus-stack"}},
    }
    objects = render(values, chart=chart_copy)
    for obj in objects:
        validate_object(obj)
    rule = one(objects, "PrometheusRule", f"{FULLNAME}-extra")
    assert rule["spec"] == yaml.safe_load(rule_file)
    assert rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] == "{{ $labels.instance }} down"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    board = one(objects, "ConfigMap", f"{FULLNAME}-dashboard-llm-cost")
    assert board["metadata"]["namespace"] == "grafana"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["labels"]["team"] == "ml"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Inference"}
    assert board["data"] == {"LLM-Cost.json": dashboard + "\n"}


def test_the_slo_thresholds_of_the_shipped_rules_are_bucket_edges_of_the_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec()
    settings = settings_of(render(), tmp_path, monkeypatch)
    buckets = settings.histogram_buckets()
    latency = [slo for slo in spec.slos if slo.threshold_seconds is not None]
    assert latency
    for slo in latency:
        assert slo.metric in settings.slo_latency_thresholds
        assert slo.threshold_seconds in buckets[slo.histogram.name]
        for family in SLO_METRICS[str(slo.metric)]:
            assert slo.threshold_seconds in buckets[family.name], family.name
    # A user's own thresholds win over the generated ones.
    own = settings_of(render({"config": {"slo_latency_thresholds": {"e2e": [42.0]}}}), tmp_path, monkeypatch)
    assert own.slo_latency_thresholds == {"e2e": [42.0]}


def test_the_peers_service_lists_every_exporter_pod_for_trace_routing() -> None:
    assert not [s for s in of_kind(render(), "Service") if s["metadata"]["name"].endswith("otlp-peers")]
    objects = render(VALUE_SETS["trace-routing"])
    peers = one(objects, "Service", f"{FULLNAME}-otlp-peers")
    pods = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert peers["spec"]["clusterIP"] == "None"  # headless: its DNS name answers every pod's address
    assert peers["spec"]["selector"].items() <= pods.items()
    [port] = peers["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("otlp-grpc", "otlp-grpc")
