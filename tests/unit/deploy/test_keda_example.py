"""The KEDA example under deploy/examples/: its objects are consistent with the chart, and the PromQL its trigger
uses returns the queue depth from a real Prometheus scraping a real exporter fed by vLLM-format /metrics."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from exporter.service.settings import load_settings
from tests.support.inproc import InProcessExporter
from tests.support.procs import REPO, free_port, wait_for

EXAMPLES = REPO / "deploy/examples"
CHART = REPO / "deploy/helm/llm-token-exporter"
VLLM_METRICS = REPO / "exporter/samples/vllm-0.32-cpu/metrics.txt"
Obj = dict[str, Any]


def load(name: str) -> list[Obj]:
    """The objects of an example file."""
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


@pytest.fixture(scope="module")
def scaled_object() -> Obj:
    """The example ScaledObject."""
    (obj,) = load("keda-scaledobject.yaml")
    assert (obj["apiVersion"], obj["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    return obj


@pytest.fixture(scope="module")
def vllm_deployment() -> Obj:
    """The example vLLM Deployment."""
    (obj,) = load("vllm-deployment.yaml")
    return obj


def prometheus_trigger(scaled_object: Obj) -> Obj:
    """The ScaledObject's Prometheus trigger."""
    triggers: list[Obj] = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
    assert len(triggers) == 1
    return triggers[0]


def test_scaled_object_targets_the_vllm_deployment(scaled_object: Obj, vllm_deployment: Obj) -> None:
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-llama-3-8b"}
    assert vllm_deployment["metadata"]["name"] == spec["scaleTargetRef"]["name"]
    assert vllm_deployment["metadata"]["namespace"] == scaled_object["metadata"]["namespace"]
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    trigger = prometheus_trigger(scaled_object)
    assert trigger["metricType"] == "AverageValue", "the HPA divides the sum by the replicas: per-replica queue"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    assert float(meta["threshold"]) > 0
    assert meta["ignoreNullValues"] == "false"
    assert spec["fallback"]["replicas"] >= spec["minReplicaCount"]
    served = next(a.split("=", 1)[1] for a in vllm_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                  if a.startswith("--served-model-name="))  # fmt: skip
    assert f'model="{served}"' in meta["query"], "the query selects the model the Deployment serves"


def test_vllm_deployment_matches_the_chart_defaults(vllm_deployment: Obj) -> None:
    kubernetes_validate.validate(vllm_deployment, kubernetes_validate.utils.latest_version(), strict=True)
    with helm.Chart.load(str(CHART)) as chart:
        values = chart.values
        manifests = chart.render(name="llm-token-exporter", namespace="monitoring", is_install=True)
    services = [
        doc
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if isinstance(doc, dict) and doc.get("kind") == "Service"
    ]
    otlp = next(s for s in services if s["spec"].get("internalTrafficPolicy") == "Local")
    pod = vllm_deployment["spec"]["template"]
    assert values["vllmPods"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    grpc_port = next(p["port"] for p in otlp["spec"]["ports"] if p["name"] == "otlp-grpc")
    endpoint = f"--otlp-traces-endpoint=http://{otlp['metadata']['name']}.monitoring.svc:{grpc_port}"
    assert endpoint in container["args"]
    assert "http" in {p["name"] for p in container["ports"]}, "the exporter scrapes the port named http"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert f"--served-model-name={env['OTEL_SERVICE_NAME']}" in container["args"], "spans name the served model"


class FakeVllm:
    """A loopback HTTP server answering /metrics with a real vLLM 0.32 exposition, for one model with N waiting."""

    def __init__(self, model: str, waiting: int) -> None:
        text = VLLM_METRICS.read_text().replace('model_name="tiny"', f'model_name="{model}"')
        text, count = re.subn(
            r"^(vllm:num_requests_waiting\{[^}]*\}) \S+$", rf"\g<1> {waiting}.0", text, flags=re.MULTILINE
        )
        assert count == 1
        body = text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def query(base: str, promql: str) -> list[Obj]:
    """An instant query's result vector."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    payload = response.json()
    assert payload["status"] == "success", payload
    assert payload["data"]["resultType"] == "vector"
    result: list[Obj] = payload["data"]["result"]
    return result


def test_trigger_query_returns_queue_depth_from_prometheus(scaled_object: Obj) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (scripts/install-system-deps installs it)")
    meta = prometheus_trigger(scaled_object)["metadata"]
    match = re.search(r'model="([^"]+)"', meta["query"])
    assert match
    model = match.group(1)
    # Two replicas of the model with 3 and 5 requests waiting, and another model's queue the query must not count.
    servers = [FakeVllm(model, 3), FakeVllm(model, 5), FakeVllm("other-model", 7)]
    exporter: InProcessExporter | None = None
    process: subprocess.Popen[bytes] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="keda-prom-"))
    try:
        web_port = free_port()
        settings = load_settings(
            {
                "web_listen_address": f"127.0.0.1:{web_port}",
                "otlp_grpc_listen_address": "",
                "otlp_http_listen_address": "",
                "gpu_enabled": False,
                "topology_mode": "static",
                "instances": [{"url": s.url} for s in servers],
                "engine_scrape_interval_seconds": 0.5,
            }
        )
        exporter = InProcessExporter(settings)
        prom_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "llm-token-exporter", "static_configs": [{"targets": [f"127.0.0.1:{web_port}"]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with (workdir / "prometheus.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        base = f"http://127.0.0.1:{prom_port}"

        def ready() -> bool:
            assert process is not None and process.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "Prometheus ready")
        expected = 3 + 5
        wait_for(
            lambda: [float(r["value"][1]) for r in query(base, meta["query"])] == [expected],
            30,
            f"the trigger query to return {expected}",
            interval=0.25,
        )
        (sample,) = query(base, meta["query"])
        assert float(sample["value"][1]) == expected
        # Through the exporter: one series per vLLM instance of the model, each with its own queue.
        per_instance = query(base, f'llm_engine_requests_waiting{{model="{model}"}}')
        assert sorted(float(r["value"][1]) for r in per_instance) == [3.0, 5.0]
        assert all(r["metric"]["job"] == "llm-token-exporter" for r in per_instance)
        # What the HPA does with it (AverageValue): ceil(sum / threshold per replica) replicas.
        desired = math.ceil(expected / float(meta["threshold"]))
        assert desired == 2
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if exporter is not None:
            exporter.stop()
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
