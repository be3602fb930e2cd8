"""Prometheus and Alertmanager for the demo: found on the PATH, run on loopback from a temporary directory.

Prometheus scrapes the exporter and loads the rules generated from the SLO spec shipped in the package
(`exporter/alerts/slos.yaml`, the spec `alerts/` is generated from), written into that directory: an installed
package has no `alerts/` beside it. Alertmanager gets the generated routing and inhibition with every receiver's
integrations removed: the demo shows what fires and what a page inhibits, and notifies no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter.alerts.generate import RULES_DIR, generate
from exporter.alerts.spec import DEFAULT_SPEC, load_spec, parse_spec
from exporter.alerts.windows import sli_windows

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("alertmanager", "prometheus-alertmanager")  # Debian names the binary prometheus-alertmanager
READY_TIMEOUT_S = 30.0


def scrape_interval_for(time_scale: float) -> float:
    """Prometheus's scrape and evaluation interval for rules compressed `time_scale` times: five samples in the
    shortest window (the 5m one), between 1 s and the 5 s a real-time demo uses."""
    return max(1.0, min(5.0, min(sli_windows()) / time_scale / 5))


@dataclass(frozen=True)
class AlertState:
    """An alert Prometheus holds: firing, or pending until its `for:` has passed (`fires_in` seconds left)."""

    name: str  # the alert name and what it is about (model, instance or GPU)
    firing: bool
    fires_in: float = 0.0


@dataclass(frozen=True)
class PromStatus:
    """What the demo's Prometheus says: burn rates by "slo model" and window, and every firing or pending alert."""

    burn_rates: dict[str, dict[str, float]]
    alerts: list[AlertState]


class StackError(Exception):
    """Prometheus or Alertmanager could not start; the message says why."""


def find_binary(names: Sequence[str]) -> str | None:
    """The first of `names` on the PATH."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _generated(time_scale: float = 1.0) -> dict[str, str]:
    """Everything the generator writes for the package's SLO spec (compressed `time_scale` times), by path under
    alerts/."""
    spec = load_spec(DEFAULT_SPEC)
    if time_scale != 1:
        spec = parse_spec({**spec.model_dump(), "time_scale": time_scale}, DEFAULT_SPEC.name)
    return generate(spec, DEFAULT_SPEC.name)


def rule_files(time_scale: float = 1.0) -> dict[str, str]:
    """The alerting and recording rule files for the package's SLO spec: {path under alerts/: text}; with a
    `time_scale`, every window and `for:` divided by it (exporter/alerts/timescale.py)."""
    return {path: text for path, text in _generated(time_scale).items() if path.startswith(f"{RULES_DIR}/")}


def alertmanager_config(time_scale: float = 1.0) -> dict[str, Any]:
    """The generated Alertmanager routing for the package's SLO spec, with receivers that notify no one (and its
    timers divided by `time_scale`)."""
    config: dict[str, Any] = yaml.safe_load(_generated(time_scale)["alertmanager.yaml"])
    # Keep the receivers' names (routes refer to them), drop their webhooks, e-mails, pagers.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    return config


@dataclass
class Managed:
    """A child process the demo started."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """Its web UI and API."""
        return f"http://{self.address}"

    def log_tail(self, lines: int = 8) -> str:
        """The end of what it logged."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class PromStack:
    """Prometheus (and Alertmanager when found) scraping `target`, in `workdir`."""

    workdir: Path
    target: str  # the exporter's host:port
    prometheus_address: str = "127.0.0.1:9090"
    alertmanager_address: str = "127.0.0.1:9093"
    scrape_interval_s: float = 5.0
    time_scale: float = 1.0  # rules and Alertmanager timers run this many times faster than real time
    rules: dict[str, str] = field(default_factory=dict)  # {path under workdir: text}; empty: rule_files(time_scale)
    children: list[Managed] = field(default_factory=list)
    # A fleet: (host:port, node name) of every node's exporter, scraped with a `node` label; empty: `target` alone.
    targets: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rules:
            self.rules = rule_files(self.time_scale)

    def write_rules(self) -> list[Path]:
        """Write the rule files into the working directory; their paths."""
        paths = []
        for name, text in self.rules.items():
            path = self.workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            paths.append(path)
        return paths

    def prometheus_config(self, alertmanager: bool) -> dict[str, Any]:
        """prometheus.yml."""
        interval = f"{self.scrape_interval_s:g}s"
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": "llm-token-exporter", "static_configs": self.static_configs()}],
            "rule_files": [str(self.workdir / name) for name in self.rules],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager_address]}]}]}
        return config

    def static_configs(self) -> list[dict[str, Any]]:
        """The scrape job's static_configs: the one target, or each node's exporter with its `node` label."""
        if not self.targets:
            return [{"targets": [self.target]}]
        return [{"targets": [address], "labels": {"node": node}} for address, node in self.targets]

    async def start(self, prometheus: str, alertmanager: str | None) -> None:
        """Start both (Alertmanager first, so Prometheus finds it) and wait until they are ready."""
        if alertmanager is not None:
            config = self.workdir / "alertmanager.yml"
            config.write_text(yaml.safe_dump(alertmanager_config(self.time_scale)))
            args = [
                alertmanager,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address={self.alertmanager_address}",
                "--cluster.listen-address=",  # no HA gossip port (it would bind 0.0.0.0:9094)
                "--log.level=warn",
            ]
            await self._start("alertmanager", self.alertmanager_address, args)
        self.write_rules()
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.prometheus_config(alertmanager is not None)))
        args = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            f"--web.listen-address={self.prometheus_address}",
            "--log.level=warn",
        ]
        await self._start("prometheus", self.prometheus_address, args)

    async def _start(self, name: str, address: str, args: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            # No preexec_fn (not safe with the exporter's threads): the demo stops its children itself.
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        child = Managed(name, address, process, log)
        self.children.append(child)
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode}:\n{child.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{child.url}/-/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise StackError(f"{name} not ready on {address} after {READY_TIMEOUT_S:.0f} s:\n{child.log_tail()}")

    def url(self, name: str) -> str | None:
        """The URL of a running child by name."""
        for child in self.children:
            if child.name == name:
                return child.url
        return None

    async def stop(self) -> list[str]:
        """Stop every child (SIGTERM, then SIGKILL after 10 s); returns 'name (pid N)' for each."""
        stopped = []
        for child in reversed(self.children):
            process = child.process
            if process.poll() is None:
                process.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, process.wait, 10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stopped.append(f"{child.name} (pid {process.pid})")
        self.children = []
        return stopped

    async def status(self, client: httpx.AsyncClient) -> PromStatus | None:
        """Burn rates by "slo model" and window (from recording rules named like `slo:burn_rate:ratio_rate1h`;
        empty when the rules define none) and the firing and pending alerts; None when Prometheus does not answer."""
        base = self.url("prometheus")
        if base is None:
            return None
        try:
            query = {"query": '{__name__=~".*burn_?rate.*"}'}
            rates = (await client.get(f"{base}/api/v1/query", params=query)).json()
            rules = (await client.get(f"{base}/api/v1/rules", params={"type": "alert"})).json()
        except (httpx.HTTPError, ValueError):
            return None
        burn: dict[str, dict[str, float]] = {}
        for item in rates.get("data", {}).get("result", []):
            labels = item.get("metric", {})
            window = re.search(r"rate(\d+[smhdw])$", labels.get("__name__", ""))
            key = " ".join(labels[k] for k in ("slo", "model") if labels.get(k))
            with contextlib.suppress(ValueError, IndexError, TypeError, KeyError):
                burn.setdefault(key or "?", {})[window[1] if window else "?"] = float(item["value"][1])
        return PromStatus(burn, alert_states(rules, time.time()))


# What an alert is about, after its name: the first of these labels it has (the instance before its model).
SUBJECT_LABELS = ("vllm_instance", "model", "gpu", "index", "reason")


def alert_states(rules: dict[str, Any], now: float) -> list[AlertState]:
    """The firing and pending alerts of a /api/v1/rules answer, firing first, each pending one with the seconds
    left of its rule's `for:` (from the alert's activeAt)."""
    out = []
    for group in rules.get("data", {}).get("groups", []):
        for rule in group.get("rules", []):
            for alert in rule.get("alerts", []):
                labels = alert.get("labels", {})
                subject = next((str(labels[k]) for k in SUBJECT_LABELS if labels.get(k)), "")
                name = " ".join(filter(None, (str(labels.get("alertname", rule.get("name", "?"))), subject)))
                if alert.get("state") == "firing":
                    out.append(AlertState(name, True))
                elif alert.get("state") == "pending":
                    since = _unix(str(alert.get("activeAt", "")))
                    left = float(rule.get("duration", 0.0)) - (now - since) if since is not None else 0.0
                    out.append(AlertState(name, False, max(0.0, left)))
    return sorted(out, key=lambda a: (not a.firing, a.fires_in, a.name))


def _unix(stamp: str) -> float | None:
    """Unix time of an RFC 3339 time as Prometheus writes it (nanoseconds, Z), or None."""
    match = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if match is None:
        return None
    try:
        base = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    except ValueError:
        return None
    return base.timestamp() + (float(f"0.{match[2]}") if match[2] else 0.0)
