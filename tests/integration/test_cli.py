"""The command line as users run it: help, bad settings, busy ports, the demo."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from exporter.service.settings import Settings, flag_of
from tests.support.procs import EXPORTER_BIN, busy_port, free_port, run_cli, wait_for
from tests.support.prom import total


def test_help_explains_commands_and_every_setting() -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("serve", "demo", "loadgen"))
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    for name, info in Settings.model_fields.items():
        assert flag_of(name) in serve.stdout, name
        assert info.description
    assert "LLM_TOKEN_EXPORTER_WEB_LISTEN_ADDRESS" in serve.stdout


def test_no_command_prints_help_and_fails() -> None:
    result = run_cli()
    assert result.returncode == 2 and "usage:" in result.stdout


def test_bad_settings_exit_non_zero_naming_each() -> None:
    result = run_cli("serve", "--tenant.cap", "zero", "--buckets.ttft", "1,0.5", "--web.listen-address", "nowhere")
    assert result.returncode == 2
    for needle in ("tenant_cap", "--tenant.cap", "buckets_ttft", "web_listen_address"):
        assert needle in result.stderr, needle


def test_busy_port_is_reported_and_exits_non_zero() -> None:
    with busy_port() as port:
        result = run_cli(
            "serve",
            "--web.listen-address",
            f"127.0.0.1:{free_port()}",
            "--otlp.http.listen-address",
            f"127.0.0.1:{port}",
            "--otlp.grpc.listen-address",
            f"127.0.0.1:{free_port()}",
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} for OTLP/HTTP" in result.stderr


def demo_args(*extra: str) -> tuple[list[str], int]:
    """`llm-token-exporter demo` on free loopback ports, fast refreshes; returns the argv and the metrics port."""
    web = free_port()
    argv = [
        str(EXPORTER_BIN),
        "demo",
        "--interval",
        "1",
        "--web.listen-address",
        f"127.0.0.1:{web}",
        "--otlp.http.listen-address",
        f"127.0.0.1:{free_port()}",
        "--otlp.grpc.listen-address",
        f"127.0.0.1:{free_port()}",
        "--sim.export-delay-seconds",
        "0.5",
        "--tenant.join-window-seconds",
        "2",
        *extra,
    ]
    return argv, web


def requests_served(port: int, timeout: float) -> float:
    """Poll the demo's exporter until it counts requests; the count (0.0 if none within `timeout`)."""

    def counted() -> float:
        with contextlib.suppress(httpx.HTTPError):
            return total(httpx.get(f"http://127.0.0.1:{port}/metrics").text, "llm_requests_total")
        return 0.0

    try:
        return wait_for(counted, timeout, "the demo's exporter to count requests", interval=0.25)
    except TimeoutError:
        return 0.0


def alive(pid: int) -> bool:
    """Whether a process with that pid exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_demo_serves_requests_from_the_simulated_node_and_stops_cleanly() -> None:
    argv, web = demo_args("--duration", "10", "--no-prometheus")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served = requests_served(web, 30)
        out, err = proc.communicate(timeout=40)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert served > 0
    for needle in ("TTFT p95", "TPOT p50", "$/Mtok", "KV cache", "acme", "hooli", "llama-3.1-8b-instruct"):
        assert needle in out, needle
    assert "Prometheus not started (--no-prometheus)" in out
    assert "demo: stopped the exporter, the simulated node (3 vLLM instances, 4 GPUs)." in out


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed (scripts/install-system-deps)")
def test_demo_with_prometheus_is_scraped_and_ctrl_c_stops_every_process() -> None:
    prom, am = free_port(), free_port()
    argv, web = demo_args(
        "--prometheus.listen-address", f"127.0.0.1:{prom}", "--alertmanager.listen-address", f"127.0.0.1:{am}"
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert requests_served(web, 30) > 0

        def exporter_up() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                targets = httpx.get(f"http://127.0.0.1:{prom}/api/v1/targets").json()["data"]["activeTargets"]
                return any(t["scrapeUrl"] == f"http://127.0.0.1:{web}/metrics" and t["health"] == "up" for t in targets)
            return False

        wait_for(exporter_up, 30, "Prometheus scraping the exporter")
        assert httpx.get(f"http://127.0.0.1:{am}/-/ready").status_code == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=40)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    pids = [int(p) for p in re.findall(r"(?:prometheus|alertmanager) \(pid (\d+)\) at", out)]
    assert len(pids) == 2, out
    stopped = re.search(r"demo: stopped (.*)\.", out)
    assert (
        stopped and "prometheus (pid" in stopped[1] and "alertmanager (pid" in stopped[1] and "exporter" in stopped[1]
    )
    assert not any(alive(pid) for pid in pids)
    assert f"Prometheus http://127.0.0.1:{prom}" in out


def test_demo_refuses_busy_ports_and_bad_flags() -> None:
    with busy_port() as port:
        argv, _ = demo_args("--duration", "5", "--no-prometheus")
        argv[argv.index("--web.listen-address") + 1] = f"127.0.0.1:{port}"
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port} (exporter /metrics)" in result.stderr
        assert "demo: stopped" not in result.stdout  # nothing had started
        if shutil.which("prometheus"):
            argv, _ = demo_args("--duration", "5", "--prometheus.listen-address", f"127.0.0.1:{port}")
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 1 and f"127.0.0.1:{port} (Prometheus)" in result.stderr
    for bad, message in (
        (["--scenario", "nope"], "invalid choice: 'nope'"),
        (["--duration", "-1"], "must be >= 0"),
        (["--sim.metrics-ports", "1,x"], "expected PORT,PORT"),
    ):
        result = run_cli("demo", *bad)
        assert result.returncode == 2 and message in result.stderr, (bad, result.stderr)
