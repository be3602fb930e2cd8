"""The command line as users run it: help, bad settings, busy ports, the demo."""

from __future__ import annotations

import contextlib
import socket
import subprocess

import httpx

from exporter.config import Settings, flag_of
from tests.support.procs import EXPORTER_BIN, free_port
from tests.support.prom import total


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXPORTER_BIN), *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_help_explains_commands_and_every_setting() -> None:
    top = run("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "demo" in top.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for name, info in Settings.model_fields.items():
        assert flag_of(name) in serve.stdout, name
        assert info.description
    assert "LLM_TOKEN_EXPORTER_WEB_LISTEN_ADDRESS" in serve.stdout


def test_no_command_prints_help_and_fails() -> None:
    result = run()
    assert result.returncode == 2 and "usage:" in result.stdout


def test_bad_settings_exit_non_zero_naming_each() -> None:
    result = run("serve", "--tenant.cap", "zero", "--buckets.ttft", "1,0.5", "--web.listen-address", "nowhere")
    assert result.returncode == 2
    for needle in ("tenant_cap", "--tenant.cap", "buckets_ttft", "web_listen_address"):
        assert needle in result.stderr, needle


def test_busy_port_is_reported_and_exits_non_zero() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
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


def test_demo_replays_real_spans_and_stops_cleanly() -> None:
    web = free_port()
    proc = subprocess.Popen(
        [
            str(EXPORTER_BIN),
            "demo",
            "--duration",
            "4",
            "--interval",
            "1",
            "--rate",
            "40",
            "--web.listen-address",
            f"127.0.0.1:{web}",
            "--otlp.http.listen-address",
            f"127.0.0.1:{free_port()}",
            "--otlp.grpc.listen-address",
            f"127.0.0.1:{free_port()}",
            "--tenant.join-window-seconds",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scraped = 0.0
    try:
        import time

        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                scraped = total(httpx.get(f"http://127.0.0.1:{web}/metrics").text, "llm_requests_total")
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert scraped > 0
    assert "TTFT p50" in out and "acme" in out and "unknown" in out
    assert "demo: stopped" in out
