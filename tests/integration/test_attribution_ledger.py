"""The exporter's attribution against the simulated node's ground truth (`exporter.sim.ledger`).

A simulated node (a 70B model on two GPUs with tensor parallelism, an 8B model with two replicas, five tenants)
runs beside an `Exporter` in this process with the simulated NVML injected, its spans over OTLP/gRPC, and the
enriched spans forwarded to a capturing backend. After a quiet start the tenants' load runs for LOAD_S seconds
and stops; once every request has finished and been charged, the exporter's charges are compared with the
ledger's truth: per request (the forwarded spans' llm.energy.joules and llm.gpu.seconds), per model, and per
(model, tenant) (llm_energy_joules_total, llm_gpu_seconds_total).

Why the tolerances are what they are: the exporter (docs/design.md §5) splits each scrape interval's measured
energy over the requests in it by token work (prompt tokens x a weight + output tokens, spread evenly over each
request's prefill and decode windows), with vLLM's counters as the interval's total work. The ledger splits each
engine step's energy by what each request added to the step's cost. What the exporter cannot see bounds how close
it can be:

- Inside an interval, token work is only a proxy for cost (a decode token with a long context reads more KV
  cache; with a weight of 1 a prompt token counts as much as an output token, which costs the weights' read of a
  whole step shared by a small batch). The best any token-work split can do with the exporter's intervals is to
  split them by the token work each request really did in each (the ledger's step log): the "ideal" below. Its
  error is measured, not assumed; the exporter may misplace MARGIN (a fifth) of the energy beyond it, for what
  spreading tokens evenly over a request's windows gets wrong.
- vLLM counts a whole prompt in the step that ends its prefill (§3), while the exporter spreads it over the
  prefill window; where a request's claims exceed what the counters say happened in an interval, the claim is
  cut to what is left and the rest of another interval stays unclaimed (pending). So a model's requests are
  charged their true energy, plus the idle gaps inside intervals with work (the exporter charges them, the
  ledger counts them idle), minus what is left pending; and a tenant may be short of the ideal by at most what
  its model left pending. Only the NVML energy counter's interpolation across busy/idle edges remains
  (MODEL_ROUNDING).

The discriminating checks are per request: charges shuffled among a model's requests, or one model's energy split
evenly over its requests, misplace 0.75-0.85 of the energy against a bound of about 0.52; tenant labels swapped
fail the join with the ledger. Measured on 2 cores (printed with pytest -s; three runs): the ideal split misplaces
0.32-0.33 of the energy, the exporter 0.38 (GPU-seconds: 0.37 and 0.40); per model the exporter charges the 70B's
requests 10-11 % under the truth (all of it left pending: its prompts of 2-4k tokens take prefill steps of up to
0.36 s, across interval ends) and the 8B's 6 % under; per (model, tenant) from -47 % (the 70B's long-prompt tenant,
two requests) to +48-51 % (the 8B's prefill-heavy tenant); the ideal split is itself off by -34 % to +51 % there,
and the exporter within 17 points of it either way.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest

from exporter.attribution.attributor import Amount
from exporter.metrics import catalog
from exporter.service.app import Exporter
from exporter.service.settings import load_settings
from exporter.sim.ledger import RequestTruth, StepRecord
from exporter.sim.node import NodeOptions, SimNode
from exporter.sim.scenarios import Scenario
from exporter.sim.spec import NodeSpec
from tests.support.otlp_capture import CapturingBackend, attributes
from tests.support.procs import free_port
from tests.support.prom import samples

# No arrivals at first: the exporter's first intervals, and the energy read after them (every 2.5 s, interpolated
# by the 1 s mean power), lie in a quiet stretch, where interpolating is exact.
QUIET_S = 4.0
LOAD_S = 12.0  # the tenants' Poisson arrivals (about 150 requests)
DRAIN_TIMEOUT_S = 40.0  # after the load: every request finishes (a 1000-token answer of the 70B takes ~20 s)
PREFILL_WEIGHT = 1.0  # the exporter's default
MARGIN = 0.2  # share of the energy the exporter may misplace beyond the ideal token-work split
MODEL_ROUNDING = 0.02  # per model: interpolation of the energy counter across busy/idle edges

Joules, Seconds = 0, 1  # index of a (joules, GPU-seconds) pair


def load_window(t: float) -> float:
    """The arrival rate multiplier: quiet, then the tenants' rates for LOAD_S seconds, then nothing."""
    return 1.0 if QUIET_S <= t < QUIET_S + LOAD_S else 0.0


@dataclass(frozen=True)
class Interval:
    """One of the exporter's accounting intervals, all its instance's GPUs together."""

    instance: str
    start: float
    end: float
    work: float  # the instance's token work in it by vLLM's counters
    amount: tuple[float, float]  # measured (joules, GPU-seconds)
    gpus: int


@dataclass(frozen=True)
class Charge:
    """What the exporter charged one request (its forwarded span)."""

    model: str
    tenant: str
    amount: tuple[float, float]


@dataclass
class Run:
    """What the exporter and the ledger said once everything was charged."""

    text: str  # the exporter's /metrics
    truth: dict[bytes, RequestTruth]  # finished requests whose span was sent, by span key
    charged: dict[bytes, Charge]  # forwarded spans with a charge, by span key
    steps: list[StepRecord]
    intervals: list[Interval]
    model_of: dict[str, str]  # instance -> model
    gpus_of: dict[str, tuple[str, ...]]  # model -> GPU UUIDs
    measured: dict[str, float]  # GPU -> joules measured over its intervals
    parts: dict[str, float]  # GPU -> attributed + idle + unattributed + pending joules
    left: dict[str, Amount]  # GPU -> pending + unattributed
    true_energy: dict[str, float]  # GPU -> its true energy over the span of its instance's intervals
    idle_w: float
    outcomes: dict[str, int]  # llm_exporter_attribution_spans_total

    def true_amount(self, key: bytes) -> tuple[float, float]:
        """A request's true (joules, GPU-seconds)."""
        truth = self.truth[key]
        return truth.total_energy_j, sum(truth.gpu_seconds.values())


async def run_scenario() -> Run:
    backend = CapturingBackend()
    web, grpc_port = free_port(), free_port()
    node = SimNode(
        NodeSpec(),
        Scenario("ledger", "Quiet, the tenants' load, quiet.", profile=load_window),
        NodeOptions(otlp_endpoint=f"127.0.0.1:{grpc_port}", export_delay_s=0.5, seed=7),
    )
    node.ledger.steps = []  # when each request's tokens were computed: the ideal token-work split needs it
    exporter: Exporter | None = None
    try:
        await node.serve_metrics()
        settings = load_settings(
            {
                "web_listen_address": f"127.0.0.1:{web}",
                "otlp_grpc_listen_address": f"127.0.0.1:{grpc_port}",
                "otlp_http_listen_address": "",
                "instances": node.instance_configs(),
                "engine_scrape_interval_seconds": 0.5,
                "gpu_sample_interval_seconds": 0.25,
                "tenant_join_window_seconds": 2.0,
                "attribution_prefill_weight": PREFILL_WEIGHT,
                "forward_traces_endpoint": backend.endpoint,
            }
        )
        # The node's clock first: before it runs, the simulated NVML's energy counter stands still.
        await node.start()
        exporter = Exporter(settings, nvml=node.nvml)
        await exporter.start()
        await asyncio.sleep(QUIET_S + LOAD_S)
        await drained(node, exporter)
        await node.stop()  # the clock stops: the GPUs' timelines hold still
        running, exporter = exporter, None
        await running.stop()  # flushes the forwarded spans
        return snapshot(node, running, backend)
    finally:
        await node.stop()
        if exporter is not None:
            await exporter.stop()
        backend.stop()


async def drained(node: SimNode, exporter: Exporter) -> None:
    """Wait until every request has finished and been charged, and the intervals reach well into the quiet
    after the last step (energy is read every 2.5 s and interpolated; across a quiet stretch, exactly)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        with node.lock:
            finished = node.ledger.outcomes["finished"]
            in_flight = sum(1 for t in node.ledger.requests.values() if t.outcome == "in_flight")
            last_step = max((s.end for s in node.ledger.steps or ()), default=0.0)
        with exporter.pipeline.lock:
            a = exporter.attribution.attributor
            charged = a.spans["charged"]
            closed = min((ring[-1].end for ring in a.intervals.values() if ring), default=0.0)
        if in_flight == 0 and charged >= finished and closed > last_step + 4.0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained: {in_flight} in flight, {charged} of {finished} charged")
        await asyncio.sleep(0.25)


def snapshot(node: SimNode, exporter: Exporter, backend: CapturingBackend) -> Run:
    model_of = {i.name: i.model.name for i in node.instances}
    gpus_of: dict[str, tuple[str, ...]] = defaultdict(tuple)
    for i in node.instances:
        gpus_of[i.model.name] += tuple(node.sim.gpus[g].uuid for g in i.gpus)
    index_of = {g.uuid: g.index for g in node.sim.gpus}
    a = exporter.attribution.attributor
    intervals: list[Interval] = []
    measured: dict[str, float] = {}
    parts: dict[str, float] = {}
    left: dict[str, Amount] = {}
    true_energy: dict[str, float] = {}
    for instance, ring in a.intervals.items():
        for kept in ring:
            amount = Amount()
            for per_gpu in kept.per_gpu.values():
                amount.add(per_gpu)
            work = kept.work(PREFILL_WEIGHT)
            measured_amount = (amount.joules, amount.gpu_seconds)
            intervals.append(Interval(instance, kept.start, kept.end, work, measured_amount, len(kept.per_gpu)))
        for gpu in ring[0].per_gpu:
            measured[gpu] = a.measured[gpu].joules
            rest = Amount()
            for (g, _), unattributed in a.unattributed.items():
                if g == gpu:
                    rest.add(unattributed)
            rest.add(a.pending_amount(gpu))
            left[gpu] = rest
            parts[gpu] = a.attributed_by_gpu[gpu].joules + a.idle.get(gpu, Amount()).joules + rest.joules
            # The ring is contiguous and nothing has expired (retention 900 s): what it measured spans this.
            index = index_of[gpu]
            true_energy[gpu] = node.sim.gpu_energy_j(index, ring[-1].end) - node.sim.gpu_energy_j(index, ring[0].start)
    charged = {}
    for _, span in backend.spans():
        attrs = attributes(span)
        if "llm.energy.joules" in attrs:
            charged[span.trace_id + span.span_id] = Charge(
                attrs["llm.model"], attrs["llm.tenant"], (attrs["llm.energy.joules"], attrs["llm.gpu.seconds"])
            )
    assert node.ledger.steps is not None
    return Run(
        text=generate_latest(exporter.registry).decode(),
        truth=node.ledger.by_span(),
        charged=charged,
        steps=list(node.ledger.steps),
        intervals=intervals,
        model_of=model_of,
        gpus_of=dict(gpus_of),
        measured=measured,
        parts=parts,
        left=left,
        true_energy=true_energy,
        idle_w=node.sim.spec.gpu.idle_w,
        outcomes=dict(a.spans),
    )


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    yield asyncio.run(run_scenario())


# --- the best a token-work split can do, and measures of error ---


def overlapping(run: Run) -> Iterator[tuple[Interval, list[tuple[StepRecord, float]]]]:
    """Each interval with the steps of its instance that overlap it, and the share of each step inside it."""
    steps: dict[str, list[StepRecord]] = defaultdict(list)
    for step in run.steps:
        steps[step.instance].append(step)
    starts = {name: [s.start for s in log] for name, log in steps.items()}
    for interval in run.intervals:
        log, begun = steps[interval.instance], starts.get(interval.instance, [])
        first = max(bisect.bisect_left(begun, interval.start) - 1, 0)
        inside = []
        for step in log[first : bisect.bisect_right(begun, interval.end)]:
            overlap = min(step.end, interval.end) - max(step.start, interval.start)
            if overlap > 0:
                inside.append((step, overlap / (step.end - step.start)))
        yield interval, inside


def token_work_split(run: Run) -> dict[bytes, tuple[float, float]]:
    """Each request's (joules, GPU-seconds) had every interval been split by the token work each request really did
    in it (from the step log; a step across an interval's end split by time): the best a token-work split can do
    with the exporter's intervals."""
    out: dict[bytes, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for interval, inside in overlapping(run):
        work: dict[bytes, float] = defaultdict(float)
        for step, share in inside:
            for key, prefill, decode in step.work:
                work[key] += share * (PREFILL_WEIGHT * prefill + decode)
        total = sum(work.values())
        for key, units in work.items():
            for index in (Joules, Seconds):
                out[key][index] += interval.amount[index] * units / total
    return {key: (j, s) for key, (j, s) in out.items()}


def misplaced(estimate: Mapping[bytes, float], truth: Mapping[bytes, float]) -> float:
    """Share of the true total an estimate puts on the wrong requests: sum |estimate - truth| / sum truth."""
    return sum(abs(estimate.get(k, 0.0) - v) for k, v in truth.items()) / sum(truth.values())


def by_pair(values: Mapping[bytes, float], truth: Mapping[bytes, RequestTruth]) -> dict[tuple[str, str], float]:
    """Per-request values summed per (model, tenant)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for key, value in values.items():
        out[(truth[key].model, truth[key].tenant)] += value
    return dict(out)


def shuffled(values: Mapping[bytes, float], truth: Mapping[bytes, RequestTruth]) -> dict[bytes, float]:
    """The values permuted among each model's requests (charges landing on the wrong requests)."""
    out: dict[bytes, float] = {}
    rng = random.Random(0)
    for model in sorted({t.model for t in truth.values()}):
        keys = sorted(k for k in values if truth[k].model == model)
        moved = [values[k] for k in keys]
        rng.shuffle(moved)
        out.update(zip(keys, moved, strict=True))
    return out


def evened(values: Mapping[bytes, float], truth: Mapping[bytes, RequestTruth]) -> dict[bytes, float]:
    """Each model's total split evenly over its requests."""
    out: dict[bytes, float] = {}
    for model in {t.model for t in truth.values()}:
        keys = [k for k in values if truth[k].model == model]
        out.update(dict.fromkeys(keys, sum(values[k] for k in keys) / len(keys)))
    return out


def metric_by_pair(text: str, name: str) -> dict[tuple[str, str], float]:
    """A model/tenant/phase family summed over phases."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for sample, labels, value in samples(text):
        if sample == name:
            out[(labels["model"], labels["tenant"])] += value
    return dict(out)


# --- the tests ---


def test_every_joule_measured_is_attributed_idle_unattributed_or_pending(run: Run) -> None:
    assert set(run.measured) == {g for gpus in run.gpus_of.values() for g in gpus}
    for gpu, measured in run.measured.items():
        assert run.parts[gpu] == pytest.approx(measured, rel=1e-9), gpu
    families = {f.name for f in (catalog.ENERGY, catalog.IDLE_ENERGY, catalog.UNATTRIBUTED_ENERGY)}
    families.add(catalog.PENDING_ENERGY.name)
    exposed = sum(v for name, _, v in samples(run.text) if name in families)
    assert exposed == pytest.approx(sum(run.measured.values()), rel=1e-9)


def test_what_the_exporter_measured_is_the_gpus_true_energy(run: Run) -> None:
    for gpu, measured in run.measured.items():
        # The rings start and end in quiet stretches, where interpolating the energy counter is exact but for a
        # pass's time stamp, taken just before NVML is read (a millisecond or two at idle power, at each end).
        assert measured == pytest.approx(run.true_energy[gpu], abs=0.5), gpu


def test_every_finished_request_is_charged_to_its_model_and_tenant(run: Run) -> None:
    assert len(run.truth) > 80
    assert set(run.charged) == set(run.truth)
    assert run.outcomes.get("charged") == len(run.truth) and not run.outcomes.get("partial")
    for key, charge in run.charged.items():
        assert (charge.model, charge.tenant) == (run.truth[key].model, run.truth[key].tenant)
    assert len({(t.model, t.tenant) for t in run.truth.values()}) == 8  # four tenants call each model
    # The metrics are the per-request charges summed: a label mix-up shows here.
    for index, family in ((Joules, catalog.ENERGY), (Seconds, catalog.GPU_SECONDS)):
        charged = by_pair({k: c.amount[index] for k, c in run.charged.items()}, run.truth)
        assert metric_by_pair(run.text, family.name) == pytest.approx(charged, rel=1e-9), family.name


def test_each_model_is_charged_its_true_energy_but_for_idle_gaps_and_what_is_left_pending(run: Run) -> None:
    gap: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # model -> idle inside intervals with work
    unseen: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # model -> steps in intervals without
    for interval, inside in overlapping(run):
        model = run.model_of[interval.instance]
        ran = sum(share * (step.end - step.start) for step, share in inside)
        if interval.work > 0:
            idle_s = (interval.end - interval.start - ran) * interval.gpus
            gap[model][Joules] += idle_s * run.idle_w
            gap[model][Seconds] += idle_s
        else:  # vLLM's counters had not moved yet (they show a step once it ends): idle to the exporter
            unseen[model][Joules] += sum(share * step.joules for step, share in inside)
            unseen[model][Seconds] += ran * interval.gpus
    lines = []
    for model, gpus in sorted(run.gpus_of.items()):
        keys = [k for k, t in run.truth.items() if t.model == model]
        left = (sum(run.left[g].joules for g in gpus), sum(run.left[g].gpu_seconds for g in gpus))
        for index, unit in ((Joules, "J"), (Seconds, "GPU-s")):
            true = sum(run.true_amount(k)[index] for k in keys)
            charged = sum(run.charged[k].amount[index] for k in keys)
            expected = true + gap[model][index] - unseen[model][index] - left[index]
            lines.append(
                f"{model} {unit}: charged {charged:.1f}, true {true:.1f} ({charged / true - 1:+.1%}); idle gaps "
                f"{gap[model][index]:+.1f}, in intervals the counters called idle {-unseen[model][index]:+.1f}, "
                f"left pending {-left[index]:+.1f}: expected {expected:.1f}"
            )
            assert charged == pytest.approx(expected, rel=MODEL_ROUNDING), lines[-1]
    print("\n" + "\n".join(lines))


def test_requests_are_charged_about_as_well_as_token_work_can(run: Run) -> None:
    ideal = token_work_split(run)
    lines = []
    for index, unit in ((Joules, "J"), (Seconds, "GPU-s")):
        truth = {k: run.true_amount(k)[index] for k in run.truth}
        exporter = {k: c.amount[index] for k, c in run.charged.items()}
        best = misplaced({k: v[index] for k, v in ideal.items()}, truth)
        got = misplaced(exporter, truth)
        wrong = {
            "shuffled within a model": misplaced(shuffled(exporter, run.truth), truth),
            "split evenly within a model": misplaced(evened(exporter, run.truth), truth),
        }
        lines.append(
            f"share of {unit} on the wrong request: exporter {got:.3f}, ideal token-work split {best:.3f}; "
            + ", ".join(f"{name} {value:.3f}" for name, value in wrong.items())
        )
        assert got <= best + MARGIN, lines[-1]
        for value in wrong.values():  # the check can fail: these would
            assert value > best + MARGIN, lines[-1]
    print("\n" + "\n".join(lines))


def test_tenants_are_charged_about_as_well_as_token_work_can(run: Run) -> None:
    ideal = token_work_split(run)
    counts = by_pair(dict.fromkeys(run.truth, 1.0), run.truth)
    lines = [f"{'model':23} {'tenant':9} {'n':>3} {'unit':5} {'true':>8} {'charged':>8} {'error':>7} {'ideal':>7}"]
    for index, unit in ((Joules, "J"), (Seconds, "GPU-s")):
        truth = by_pair({k: run.true_amount(k)[index] for k in run.truth}, run.truth)
        charged = by_pair({k: c.amount[index] for k, c in run.charged.items()}, run.truth)
        best = by_pair({k: v[index] for k, v in ideal.items() if k in run.truth}, run.truth)
        left = {
            model: sum((run.left[g].joules, run.left[g].gpu_seconds)[index] for g in gpus)
            for model, gpus in run.gpus_of.items()
        }

        def fits(pair: tuple[str, str], value: float) -> bool:
            low = best[pair] - left[pair[0]] - MARGIN * truth[pair]  # noqa: B023
            return low <= value <= best[pair] + MARGIN * truth[pair]  # noqa: B023

        for pair in sorted(truth):
            lines.append(
                f"{pair[0]:23} {pair[1]:9} {counts[pair]:3.0f} {unit:5} {truth[pair]:8.1f} {charged[pair]:8.1f} "
                f"{charged[pair] / truth[pair] - 1:+7.1%} {best[pair] / truth[pair] - 1:+7.1%}"
            )
        assert all(fits(pair, value) for pair, value in charged.items()), "\n".join(lines)
    print("\n" + "\n".join(lines))
