"""The command line as users run it: help, bad settings, busy ports, the demo."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from exporter.service.settings import ENV_PREFIX, HELP_GROUPS, Settings, flag_of, group_of, metavar_of
from tests.support import harness_env
from tests.support.procs import EXPORTER_BIN, ExporterProcess, busy_port, free_port, run_cli, wait_for
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


def test_serve_help_lists_the_settings_in_groups_with_their_defaults_on_one_line() -> None:
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    lines = serve.stdout.splitlines()
    headings = [lines.index(f"{title}:") for title in HELP_GROUPS.values()]  # each group once, in order
    assert headings == sorted(headings)
    for name in Settings.model_fields:
        flag_line = next(i for i, line in enumerate(lines) if line.startswith(f"  {flag_of(name)} "))
        assert lines[flag_line] == f"  {flag_of(name)} {metavar_of(name)}"
        heading = max(h for h in headings if h < flag_line)
        assert lines[heading] == f"{HELP_GROUPS[group_of(name)]}:", name  # under its own group
    assert not [line for line in lines if re.search(r"Default: *[.,]?$", line)]  # no empty default
    ttft = ",".join(f"{b:g}" for b in Settings.model_fields["buckets_ttft"].default)
    assert f"      Default: {ttft}" in lines  # a bucket list whole, on one line
    assert "  --price.gpu-per-hour PRODUCT=USD,..." in lines and "  --gpu.enabled true|false" in lines


def test_a_mistyped_flag_is_refused_first_with_the_flag_it_most_likely_meant() -> None:
    for args, meant in (
        (["serve", "--tenant.cpa", "5"], "--tenant.cap"),
        (["serve", "--gpu-price-per-hour", "H100=2"], "--price.gpu-per-hour"),
        (["demo", "--no-promethues"], "--no-prometheus"),
    ):
        result = run_cli(*args)
        assert result.returncode == 2
        first, second = result.stderr.splitlines()[:2]
        assert first == f"llm-token-exporter {args[0]}: error: unrecognized arguments: {' '.join(args[1:])}"
        assert second == f"  {args[1]}: did you mean {meant}?"
    command = run_cli("serv")
    assert command.returncode == 2 and "did you mean 'serve'?" in command.stderr.splitlines()[0]


def test_a_mistyped_env_var_stops_the_exporter_with_the_one_it_most_likely_meant() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["LLM_TOKEN_EXPORTER_PRICE_GPU_PER_HOUR"] = "H100=2"
    result = subprocess.run(
        [str(EXPORTER_BIN), "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "did you mean LLM_TOKEN_EXPORTER_GPU_PRICE_PER_HOUR?" in result.stderr


def test_the_documented_test_override_leaves_exporters_running_and_the_old_name_is_still_refused(
    tmp_path: Path,
) -> None:
    # README: `LLM_EXPORTER_TEST_VLLM_VENV=DIR make test`; every exporter a test starts inherits the variable.
    with ExporterProcess(env={harness_env.VLLM_VENV: str(tmp_path)}) as proc:
        assert "llm_exporter" in proc.scrape()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["LLM_TOKEN_EXPORTER_VLLM_VENV"] = str(tmp_path)  # the old name, under the exporter's prefix
    result = subprocess.run(
        [str(EXPORTER_BIN), "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "LLM_TOKEN_EXPORTER_VLLM_VENV: not a known setting (env var)" in result.stderr


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
    # Piped: one plain frame per --interval (1 s over 10 s), no cursor or colour codes, the stop message last.
    frames = out.count("llm-token-exporter demo | scenario")
    assert 6 <= frames <= 12, frames
    assert "\x1b" not in out
    assert out.splitlines()[-1] == "demo: stopped the exporter, the simulated node (3 vLLM instances, 4 GPUs)."


def test_demo_piped_into_a_reader_that_goes_stops_and_says_so_on_stderr() -> None:
    # `make demo | tee log` and Ctrl-C: tee is gone before the demo has stopped. Here the reader closes the pipe.
    argv, _ = demo_args("--no-prometheus")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        framed = any("llm-token-exporter demo | scenario" in line for line in proc.stdout)  # up to the first frame
        proc.stdout.close()
        code = proc.wait(timeout=40)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert framed and code == 0, err
    assert "demo: the output's reader has gone (broken pipe): stopping" in err
    assert "demo: stopped the exporter, the simulated node (3 vLLM instances, 4 GPUs)." in err
    assert "Traceback" not in err and "Exception ignored" not in err


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
    flat = " ".join(out.split())
    assert "pending alerts:" in flat and "firing alerts:" in flat
    assert "alert rules run 60x faster than real time" in flat and "burn 1h (1m)" in flat


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
        (["--scenario", "spikes"], "did you mean 'spike'?"),
        (["--duration", "-1"], "must be >= 0"),
        (["--sim.metrics-ports", "1,x"], "expected PORT,PORT"),
        (["--alerts.time-scale", "500"], "must be 1 (real time) .. 150"),
    ):
        result = run_cli("demo", *bad)
        assert result.returncode == 2 and message in result.stderr, (bad, result.stderr)
        # What is wrong comes first, then a short usage (it used to follow 64 lines of usage).
        assert result.stderr.startswith("llm-token-exporter demo: error: argument "), result.stderr
        assert result.stderr.index(message) < result.stderr.index("usage:")
        assert len(result.stderr.splitlines()) <= 4
