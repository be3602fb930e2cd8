"""A vLLM API server's command line (a process's argv, or a pod's container command + args): is it vLLM's API
server, where does it listen, what does it serve. Pure; shared by the /proc and Kubernetes sources."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_PORT = 8000
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True, slots=True)
class VllmArgs:
    """What the API server's command line says about where it listens and what it serves."""

    port: int = DEFAULT_PORT
    host: str | None = None
    served_model_name: str | None = None
    model: str | None = None
    tls: bool = False
    role: str | None = None  # from --kv-transfer-config's kv_role
    headless: bool = False  # --headless: engines (GPU workers) for a server on another node; no API server here
    group: str | None = None  # a multi-node server's rendezvous ("addr:port"), the same on the leader and workers

    @property
    def model_label(self) -> str | None:
        """The model_name vLLM itself reports: the first served name, else the model."""
        return self.served_model_name or self.model


def is_vllm_server(argv: Sequence[str]) -> bool:
    """Whether a command line starts vLLM's OpenAI API server (`vllm serve` or the api_server module)."""
    for i, arg in enumerate(argv):
        if arg == API_SERVER_MODULE or arg.endswith("vllm/entrypoints/openai/api_server.py"):
            return True
        if os.path.basename(arg) == "vllm" and i + 1 < len(argv) and argv[i + 1] == "serve":
            return True
    return False


def _option(argv: Sequence[str], name: str) -> tuple[str, ...] | None:
    """Values of `--name V...` / `--name=V` (last occurrence wins, as with argparse); None when absent."""
    found: tuple[str, ...] | None = None
    for i, arg in enumerate(argv):
        if arg == name:
            values = []
            for value in argv[i + 1 :]:
                if value.startswith("-"):
                    break
                values.append(value)
            found = tuple(values)
        elif arg.startswith(name + "="):
            found = (arg[len(name) + 1 :],)
    return found


def parse_vllm_args(argv: Sequence[str]) -> VllmArgs:
    """Port (default 8000), host, served model name and model from a vLLM server's command line (or a pod's
    container command + args)."""
    port = DEFAULT_PORT
    port_values = _option(argv, "--port")
    if port_values and port_values[0].isdigit() and 0 < int(port_values[0]) < 65536:
        port = int(port_values[0])
    host_values = _option(argv, "--host")
    # --served-model-name takes several names; vLLM labels its metrics with the first.
    served = _option(argv, "--served-model-name")
    model_values = _option(argv, "--model")
    model = model_values[0] if model_values else None
    headless = _option(argv, "--headless") is not None
    if model is None:
        for i, arg in enumerate(argv[:-1]):
            if arg == "serve" and not argv[i + 1].startswith("-"):
                model = argv[i + 1]
                break
    return VllmArgs(
        port=port,
        host=host_values[0] if host_values else None,
        served_model_name=served[0] if served else None,
        model=model,
        tls=_option(argv, "--ssl-certfile") is not None,
        role=_kv_role(_option(argv, "--kv-transfer-config")),
        headless=headless,
        group=_group(argv, headless),
    )


def _first_int(argv: Sequence[str], name: str) -> int | None:
    values = _option(argv, name)
    return int(values[0]) if values and values[0].isdigit() else None


def _address(argv: Sequence[str], address: str, port: str) -> str | None:
    host, number = _option(argv, address), _option(argv, port)
    if not host:
        return None
    return f"{host[0]}:{number[0]}" if number else host[0]


def _group(argv: Sequence[str], headless: bool) -> str | None:
    """The rendezvous every node of a multi-node vLLM server names alike: `--master-addr[:--master-port]` with
    `--nnodes` > 1 (tensor/pipeline parallel over nodes; rank 0 serves, the others run `--headless`), or
    `--data-parallel-address[:--data-parallel-rpc-port]` when engines run on other nodes (data parallel with
    `--data-parallel-size-local` below `--data-parallel-size`, or `--headless`). None for a one-node server."""
    if (_first_int(argv, "--nnodes") or 1) > 1 or headless:
        group = _address(argv, "--master-addr", "--master-port")
        if group:
            return group
    size, local = _first_int(argv, "--data-parallel-size"), _first_int(argv, "--data-parallel-size-local")
    if headless or (size is not None and local is not None and local < size):
        return _address(argv, "--data-parallel-address", "--data-parallel-rpc-port")
    return None


# vLLM's KV connector roles: a producer computes prefills for others, a consumer decodes from loaded KV.
_KV_ROLES = {"kv_producer": "prefill", "kv_consumer": "decode", "kv_both": "both"}


def _kv_role(values: tuple[str, ...] | None) -> str | None:
    """The disaggregation role a --kv-transfer-config JSON gives (None without one, or when it cannot be read)."""
    if not values:
        return None
    try:
        config = json.loads(" ".join(values))
    except ValueError:
        return None
    return _KV_ROLES.get(config.get("kv_role", "")) if isinstance(config, dict) else None


def server_url(args: VllmArgs) -> str:
    """Where to reach the server from this host: loopback when it listens on every address."""
    host = args.host or ""
    if host in _WILDCARD_HOSTS or host == "localhost":
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if args.tls else "http"
    return f"{scheme}://{host}:{args.port}"
