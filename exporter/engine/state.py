"""Per-instance engine state from successive scrapes: up/down, monotonic counters across restarts, cold start.

Pure: readings and the times they were taken come in; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.engine.parse import COUNTER_FIELDS, EngineReading, HistogramReading, ModelReading

_K = TypeVar("_K")
_Seen = tuple[float, float]  # a counter's offset (what earlier processes counted) and its last raw value

# llm_engine_instance_info's mfu_metrics: whether vLLM's estimated FLOPs and bytes counters are there to use.
MFU_ON, MFU_OFF, MFU_ABSENT, MFU_UNKNOWN = "on", "off", "absent", "unknown"


@dataclass(frozen=True, slots=True)
class CounterPoint:
    """vLLM's token counters of one model at one scrape, made monotonic across restarts (for attribution)."""

    timestamp_s: float
    prompt_tokens: float
    generation_tokens: float


@dataclass
class InstanceState:
    """Everything known about one vLLM server."""

    name: str
    configured_model: str | None
    history_len: int
    up: bool = False
    scrapes: int = 0
    last_reading: EngineReading | None = None
    process_start_s: float | None = None
    restarts: int = 0
    time_to_ready_s: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    totals: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, counter) -> monotonic value
    finished: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, reason) -> monotonic value
    _raw: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    _raw_finished: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    rejected: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, reason) -> monotonic value
    _raw_rejected: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    http_responses: dict[tuple[str, str], float] = field(default_factory=dict)  # ("", status class) -> monotonic
    _raw_http: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    history: dict[str, deque[CounterPoint]] = field(default_factory=dict)
    absent_since: float | None = None  # left the topology at this time (not scraped since)
    labelled: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (model, field, label) -> monotonic
    _raw_labelled: dict[tuple[str, str, str], _Seen] = field(default_factory=dict)
    histograms: dict[tuple[str, str], MonotonicHistogram] = field(default_factory=dict)  # (model, field)

    def label_of(self, model: str) -> str:
        """The model label: the configured one wins over the served name vLLM reports."""
        return self.configured_model or model

    @property
    def served_models(self) -> tuple[str, ...]:
        """The model names its last good scrape reported, sorted (kept while it is down)."""
        return tuple(sorted(self.last_reading.models)) if self.last_reading is not None else ()

    def counter_points(self) -> tuple[CounterPoint, ...]:
        """Its token counters at each remembered scrape, summed over the models it serves (one scrape, one time)."""
        histories = list(self.history.values())
        if len(histories) == 1:
            return tuple(histories[0])
        merged: dict[float, CounterPoint] = {}
        for history in histories:
            for p in history:
                prior = merged.get(p.timestamp_s)
                merged[p.timestamp_s] = (
                    p
                    if prior is None
                    else CounterPoint(
                        p.timestamp_s,
                        prior.prompt_tokens + p.prompt_tokens,
                        prior.generation_tokens + p.generation_tokens,
                    )
                )
        return tuple(merged[t] for t in sorted(merged))

    @property
    def mfu_metrics(self) -> str:
        """Whether vLLM's estimated FLOPs and bytes are usable: on (they count), off (served but still 0 after
        the engine did work: --enable-mfu-metrics not given, or vLLM cannot estimate this model), absent (this
        vLLM does not serve them) or unknown (no good scrape yet, or no work yet to tell off from on)."""
        reading = self.last_reading
        if reading is None or not reading.models:
            return MFU_UNKNOWN
        flops = [m.counters["flops"] for m in reading.models.values() if "flops" in m.counters]
        if not flops:
            return MFU_ABSENT
        if any(f > 0 for f in flops):
            return MFU_ON
        # vLLM 0.32 registers the counters whatever the flag and counts only with it: zeros after token work
        # mean the flag is off (the raw values of this process, not the monotonic totals of earlier ones).
        work = sum(
            m.counters.get("prompt_tokens", 0.0) + m.counters.get("generation_tokens", 0.0)
            for m in reading.models.values()
        )
        return MFU_OFF if work > 0 else MFU_UNKNOWN

    @property
    def models(self) -> list[ModelReading]:
        """The models of the last successful scrape (empty while down: stale values are not served)."""
        if not self.up or self.last_reading is None:
            return []
        return list(self.last_reading.models.values())


def _advance(
    seen: dict[_K, _Seen],
    totals: dict[_K, float],
    key: _K,
    raw: float,
    restarted: bool,
) -> None:
    """Make a counter's monotonic total what earlier processes counted plus this process's raw value; after a
    restart all of the raw value is new. Until a restart the total is vLLM's own value, bit for bit (adding up
    differences would drift from it in the last digits of a float)."""
    previous = seen.get(key)
    offset = 0.0
    if previous is not None:
        offset, last = previous
        if restarted or raw < last:
            offset = totals[key]
    totals[key] = offset + raw
    seen[key] = (offset, raw)


class MonotonicHistogram:
    """One of vLLM's histograms kept monotonic across restarts, bucket by bucket, as counters are."""

    __slots__ = ("_raw", "_totals", "edges")

    def __init__(self) -> None:
        self.edges: tuple[str, ...] = ()
        self._totals: dict[str, float] = {}  # le, "sum", "count" -> monotonic value
        self._raw: dict[str, _Seen] = {}

    def advance(self, reading: HistogramReading, restarted: bool) -> None:
        """Add the growth since the last scrape; new bucket edges (vLLM reconfigured) start the histogram over."""
        edges = tuple(le for le, _ in reading.buckets)
        if edges != self.edges:
            self.edges, self._totals, self._raw = edges, {}, {}
        # A reset is the histogram's as a whole (its count went down), so that every bucket starts over together.
        last_count = self._raw.get("count")
        reset = restarted or (last_count is not None and reading.count < last_count[1])
        for key, raw in (*reading.buckets, ("sum", reading.sum), ("count", reading.count)):
            _advance(self._raw, self._totals, key, raw, reset)

    @property
    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) in vLLM's order, +Inf last."""
        return [(le, self._totals[le]) for le in self.edges]

    @property
    def sum(self) -> float:
        """Sum of the observations."""
        return self._totals.get("sum", 0.0)


class EngineTracker:
    """Folds scrape outcomes into InstanceState; one per exporter."""

    def __init__(self, history_len: int = 256) -> None:
        self.history_len = history_len
        self.instances: dict[str, InstanceState] = {}

    def instance(self, name: str, configured_model: str | None = None) -> InstanceState:
        """The state of instance `name`, created on first use."""
        state = self.instances.get(name)
        if state is None:
            state = self.instances[name] = InstanceState(name, configured_model, self.history_len)
        state.configured_model = configured_model
        return state

    def present(self, names: set[str], now: float, forget_after_s: float) -> None:
        """Mark instances that left the topology down; forget them (their series go away) once gone for
        `forget_after_s`. The grace keeps a server that restarts (and briefly leaves the topology) one
        instance, with monotonic counters and its restart counted."""
        for name, state in list(self.instances.items()):
            if name in names:
                state.absent_since = None
                continue
            state.up = False
            if state.absent_since is None:
                state.absent_since = now
            elif now - state.absent_since >= forget_after_s:
                del self.instances[name]

    def success(self, name: str, reading: EngineReading, now: float, configured_model: str | None = None) -> None:
        """Record a good scrape taken at wall-clock `now`."""
        state = self.instance(name, configured_model)
        restarted = (
            state.process_start_s is not None
            and reading.process_start_time_s is not None
            and reading.process_start_time_s != state.process_start_s
        )
        # Time to ready only when we watched the server come up (it was down, or it restarted): an exporter
        # started beside a server that has run for days must not report days. An upper bound by up to one
        # scrape interval.
        watched_start = restarted or (not state.up and state.errors.total() > 0)
        if restarted:
            state.restarts += 1
        if watched_start and reading.process_start_time_s is not None:
            state.time_to_ready_s = max(0.0, now - reading.process_start_time_s)
        for model, m in reading.models.items():
            for counter in COUNTER_FIELDS:
                if counter in m.counters:
                    _advance(state._raw, state.totals, (model, counter), m.counters[counter], restarted)
            for reason, value in m.finished.items():
                _advance(state._raw_finished, state.finished, (model, reason), value, restarted)
            for reason, value in m.rejected.items():
                _advance(state._raw_rejected, state.rejected, (model, reason), value, restarted)
            for (name, label), value in m.labelled.items():
                _advance(state._raw_labelled, state.labelled, (model, name, label), value, restarted)
            for name, hist in m.histograms.items():
                state.histograms.setdefault((model, name), MonotonicHistogram()).advance(hist, restarted)
            history = state.history.setdefault(model, deque(maxlen=self.history_len))
            history.append(
                CounterPoint(
                    now,
                    state.totals.get((model, "prompt_tokens"), 0.0),
                    state.totals.get((model, "generation_tokens"), 0.0),
                )
            )
        for status, value in reading.http_responses.items():
            _advance(state._raw_http, state.http_responses, ("", status), value, restarted)
        state.process_start_s = reading.process_start_time_s
        state.last_reading = reading
        state.up = True
        state.scrapes += 1

    def failure(self, name: str, reason: str, configured_model: str | None = None) -> None:
        """Record a failed scrape: the instance is down and its gauges are no longer served (the scraper logs why)."""
        state = self.instance(name, configured_model)
        state.up = False
        state.errors[reason] += 1
        state.scrapes += 1
