"""The demo's live view: what the exporter serves on /metrics (and Prometheus, when it runs), as rich tables.

Everything shown is read back from the exporter's own /metrics text, the way a user's Prometheus would see it;
rates and percentiles cover the last `window_s` seconds (deltas between scrapes). What is not there shows "-": cost
and energy until the exporter has charged a request (none without GPU sampling), SLO burn rates and alerts without
Prometheus or before its rules have data.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from exporter.alerts.timescale import scale_duration
from exporter.metrics import catalog
from exporter.sim.quantiles import histogram_quantile

if TYPE_CHECKING:  # only the type: the load generator imports this module and needs none of the alerting
    from exporter.sim.promstack import AlertState

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One reading of /metrics: sample name -> {sorted labels: value}."""

    time: float
    samples: Mapping[str, Mapping[Labels, float]]

    @classmethod
    def parse(cls, text: str, time: float) -> Scrape:
        """Parse Prometheus text exposition."""
        samples: dict[str, dict[Labels, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name][tuple(sorted(s.labels.items()))] = s.value
        return cls(time, samples)

    def sum_by(self, name: str, keys: Sequence[str], where: Mapping[str, str] | None = None) -> dict[Labels, float]:
        """Samples called `name`, filtered by `where`, summed by the label values of `keys`."""
        out: dict[Labels, float] = defaultdict(float)
        for labels, value in self.samples.get(name, {}).items():
            d = dict(labels)
            if where and any(d.get(k) != v for k, v in where.items()):
                continue
            out[tuple((k, d.get(k, "")) for k in keys)] += value
        return out

    def has(self, name: str) -> bool:
        """Whether any sample is called `name`."""
        return bool(self.samples.get(name))


@dataclass
class Window:
    """The scrapes of the last `window_s` seconds (plus one older, so a full window is covered)."""

    window_s: float = 30.0
    scrapes: deque[Scrape] = field(default_factory=deque)

    def add(self, scrape: Scrape) -> None:
        """Keep a new scrape, forget those no longer needed."""
        self.scrapes.append(scrape)
        while len(self.scrapes) > 2 and self.scrapes[1].time <= scrape.time - self.window_s:
            self.scrapes.popleft()

    @property
    def latest(self) -> Scrape | None:
        """The newest scrape."""
        return self.scrapes[-1] if self.scrapes else None

    def delta(self, name: str, keys: Sequence[str], where: Mapping[str, str] | None = None) -> dict[Labels, float]:
        """Growth of a counter over the window, by `keys` (a series born inside the window counts from 0)."""
        if not self.scrapes:
            return {}
        new = self.scrapes[-1].sum_by(name, keys, where)
        old = self.scrapes[0].sum_by(name, keys, where) if len(self.scrapes) > 1 else {}
        return {k: max(0.0, v - old.get(k, 0.0)) for k, v in new.items()}

    @property
    def seconds(self) -> float:
        """Time the window covers."""
        return self.scrapes[-1].time - self.scrapes[0].time if len(self.scrapes) > 1 else 0.0

    def quantiles(self, histogram: str, keys: Sequence[str], qs: Sequence[float]) -> dict[Labels, list[float | None]]:
        """Quantiles of a histogram's observations in the window, by `keys` (PromQL's histogram_quantile)."""
        buckets = self.delta(histogram + "_bucket", [*keys, "le"])
        grouped: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for labels, count in buckets.items():
            d = dict(labels)
            le = d.pop("le")
            grouped[tuple((k, d[k]) for k in keys)].append((math.inf if le == "+Inf" else float(le), count))
        out: dict[Labels, list[float | None]] = {}
        for labels, pairs in grouped.items():
            pairs.sort()
            bounds = [b for b, _ in pairs if b != math.inf]
            cumulative = [round(c) for _, c in pairs]
            out[labels] = [histogram_quantile(q, bounds, cumulative) for q in qs]
        return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


def request_table(window: Window) -> Table:
    """Per model and tenant: traffic, latency percentiles, cost and energy per token."""
    keys = ("model", "tenant")
    seconds = window.seconds or math.nan
    latest = window.latest
    requests = window.delta(catalog.REQUESTS.name, keys)
    out_tokens = window.delta(catalog.TOKENS.name, keys, {"type": "output"})
    all_tokens = window.delta(catalog.TOKENS.name, keys)
    # Per tenant the exporter keeps a few edges (they hold the SLO thresholds): the percentiles are interpolated
    # between them, as Grafana's would be.
    ttft = window.quantiles(catalog.TENANT_TTFT.name, keys, (0.5, 0.95))
    tpot = window.quantiles(catalog.TENANT_TPOT.name, keys, (0.5, 0.95))
    cost = window.delta(catalog.COST.name, keys) if latest and latest.has(catalog.COST.name) else None
    energy = window.delta(catalog.ENERGY.name, keys) if latest and latest.has(catalog.ENERGY.name) else None
    table = Table(title=f"requests (last {window.window_s:.0f} s)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("model", "tenant", "req/s", "out tok/s", "TTFT p50", "TTFT p95", "TPOT p50", "TPOT p95"):
        table.add_column(name, justify="left" if name in keys else "right")
    # Per token of both kinds (what a bill per token counts) and per output token (what the README's
    # joules-per-output-token query gives): a prompt-heavy tenant differs by several times between the two.
    for name in ("$/Mtok\nin+out", "$/Mtok\nout", "J/tok\nin+out", "J/tok\nout"):
        table.add_column(name, justify="right")
    for labels in sorted(set(requests) | set(ttft)):
        tokens, out = all_tokens.get(labels, 0.0), out_tokens.get(labels, 0.0)
        t, p = ttft.get(labels, [None, None]), tpot.get(labels, [None, None])
        table.add_row(
            labels[0][1],
            labels[1][1],
            _num(requests.get(labels, 0.0) / seconds),
            _num(out / seconds, "{:.0f}"),
            _ms(t[0]),
            _ms(t[1]),
            _ms(p[0]),
            _ms(p[1]),
            _num(_per(cost, labels, tokens, 1e6), "{:.3f}"),
            _num(_per(cost, labels, out, 1e6), "{:.3f}"),
            _num(_per(energy, labels, tokens), "{:.2f}"),
            _num(_per(energy, labels, out), "{:.2f}"),
        )
    table.caption = (
        "latencies in ms, interpolated between the per-tenant histogram edges (TTFT "
        + ", ".join(f"{b:g}" for b in catalog.TENANT_TTFT.default_buckets)
        + " s; TPOT "
        + ", ".join(f"{b:g}" for b in catalog.TENANT_TPOT.default_buckets)
        + " s); $ and J charged to the requests over the window, per million (input + output) or output tokens; "
        "'-': not served (yet)"
    )
    return table


def _per(spent: Mapping[Labels, float] | None, labels: Labels, tokens: float, scale: float = 1.0) -> float | None:
    """What `labels` spent per token (times `scale`), None when nothing is charged or no token came."""
    return spent.get(labels, 0.0) / tokens * scale if spent is not None and tokens else None


def engine_table(window: Window) -> Table:
    """Per vLLM instance: up, queue depth, running batch, KV-cache usage, preemptions, restarts."""
    table = Table(title="vLLM instances", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("instance", "model", "up", "waiting", "running", "KV cache", "preempted", "restarts"):
        table.add_column(name, justify="left" if name in ("instance", "model") else "right")
    latest = window.latest
    if latest is None:
        return table
    keys = ("vllm_instance", "model")
    up = latest.sum_by(catalog.ENGINE_UP.name, keys)
    waiting = latest.sum_by(catalog.ENGINE_WAITING.name, keys)
    running = latest.sum_by(catalog.ENGINE_RUNNING.name, keys)
    kv = latest.sum_by(catalog.ENGINE_KV_USAGE.name, keys)
    preempted = window.delta(catalog.ENGINE_PREEMPTIONS.name, keys)
    restarts = latest.sum_by(catalog.ENGINE_RESTARTS.name, ("vllm_instance",))
    for labels in sorted(up):
        is_up = up[labels] >= 1
        table.add_row(
            labels[0][1],
            labels[1][1],
            Text("up", style="green") if is_up else Text("DOWN", style="bold red"),
            _num(waiting.get(labels), "{:.0f}"),
            _num(running.get(labels), "{:.0f}"),
            _num(None if labels not in kv else 100 * kv[labels], "{:.0f}%"),
            _num(preempted.get(labels, 0.0), "{:.0f}"),
            _num(restarts.get(labels[:1], 0.0), "{:.0f}"),
        )
    return table


def gpu_table(window: Window) -> Table:
    """Per GPU: up, power, utilisation, SM clock, temperature, active clock-event reasons."""
    table = Table(title="GPUs", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("gpu", "up", "power W", "busy", "DRAM bw", "SM MHz", "temp C", "clock events"):
        table.add_column(name, justify="left" if name in ("gpu", "clock events") else "right")
    latest = window.latest
    if latest is None:
        return table
    keys = ("index",)

    def get(name: str) -> dict[Labels, float]:
        return latest.sum_by(name, keys)

    up, power, busy = get(catalog.GPU_UP.name), get(catalog.GPU_POWER.name), get(catalog.GPU_UTILIZATION.name)
    dram, clock, temp = (
        get(catalog.GPU_DRAM_BANDWIDTH.name),
        get(catalog.GPU_SM_CLOCK.name),
        get(catalog.GPU_TEMPERATURE.name),
    )
    reasons: dict[Labels, list[str]] = defaultdict(list)
    for labels, value in latest.sum_by(catalog.GPU_CLOCK_EVENT_REASON.name, ("index", "reason")).items():
        if value >= 1 and labels[1][1] != "idle":
            reasons[labels[:1]].append(labels[1][1])
    for labels in sorted(up, key=lambda k: int(k[0][1] or 0)):
        is_up = up[labels] >= 1
        table.add_row(
            labels[0][1],
            Text("up", style="green") if is_up else Text("LOST", style="bold red"),
            _num(power.get(labels), "{:.0f}"),
            _num(None if labels not in busy else 100 * busy[labels], "{:.0f}%"),
            _num(None if labels not in dram else 100 * dram[labels], "{:.0f}%"),
            _num(None if labels not in clock else clock[labels] / 1e6, "{:.0f}"),
            _num(temp.get(labels), "{:.0f}"),
            Text(", ".join(sorted(reasons[labels])), style="yellow") if reasons.get(labels) else Text("none"),
        )
    return table


@dataclass(frozen=True)
class SloStatus:
    """What Prometheus says: burn rates by "slo model" and window, and the firing and pending alerts (None when it
    is not running); `note` says how the demo's alerting differs from production's."""

    burn_rates: Mapping[str, Mapping[str, float]] | None = None
    alerts: Sequence[AlertState] | None = None
    note: str = ""
    time_scale: float = 1.0  # the rules' windows are their names divided by this


BURN_WINDOWS = ("5m", "1h", "6h")


def slo_table(status: SloStatus) -> Table:
    """SLO burn rates (1 spends the error budget exactly over the SLO period), firing alerts and pending ones with
    the time left of their `for:`, '-' when there is no Prometheus or no rules yet."""
    table = Table(title="SLO burn rates and alerts", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("slo, model")
    for window in BURN_WINDOWS:
        scaled = "" if status.time_scale == 1 else f" ({scale_duration(window, status.time_scale)})"
        table.add_column(f"burn {window}{scaled}", justify="right")
    rates = status.burn_rates or {}
    for key in sorted(rates):
        row = [_num(rates[key].get(w), "{:.2f}") for w in BURN_WINDOWS]
        table.add_row(key, *[Text(v, style="bold red" if v != "-" and float(v) >= 1 else "") for v in row])
    if not rates:
        table.add_row("-", *["-"] * len(BURN_WINDOWS))
    if status.alerts is None:
        alerts = ["firing and pending alerts: - (no Prometheus, or it does not answer)"]
    else:
        firing = ", ".join(a.name for a in status.alerts if a.firing) or "none"
        waiting = [a for a in status.alerts if not a.firing]
        pending = ", ".join(f"{a.name} (fires in {a.fires_in:.0f} s if it holds)" for a in waiting) or "none"
        alerts = [f"firing alerts: {firing}", f"pending alerts: {pending}"]
    table.caption = "\n".join([*alerts, *filter(None, [status.note])])
    table.caption_justify = "left"
    return table


def render(header: str, window: Window, status: SloStatus, footer: Iterable[str] = ()) -> RenderableType:
    """The whole view."""
    parts: list[RenderableType] = [Text(header, style="bold")]
    parts += [request_table(window), engine_table(window), gpu_table(window), slo_table(status)]
    parts += [Text(line, style="dim") for line in footer]
    return Group(*parts)
