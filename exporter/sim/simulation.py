"""The simulated node: vLLM instances on GPUs, fed by the tenants' arrivals, changed by a scenario. Pure.

`advance_to(t)` moves everything to time t (unix seconds, or any clock the caller keeps): arrivals are routed to
an instance of their model, each engine steps (the power model sets each step's duration under the GPUs' power
caps), the GPUs' timelines and the energy ledger are written, and what the vLLM processes and the gateway would
send over OTLP is queued in `outbox` with the time it happens. Sockets, wall clocks and threads are the node's
business (`exporter.sim.node`), not this module's.

The same spec, scenario, seed and start give the same results whatever the times `advance_to` is called at: the
engines are stepped in one global order (by each engine's clock), which is what lets every process of a simulated
fleet run its own copy and serve only its node's part (`exporter.sim.fleet`). A fleet (`FleetSpec`) adds
prefill/decode pairs (a request runs as two halves, on two instances), data-parallel servers (one API server,
several engines) and tensor-parallel groups whose GPUs span nodes.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Protocol

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from exporter.sim import scenarios as sc
from exporter.sim.engine import EngineConfig, EngineModel, SimRequest, StepOutcome, StepPlan
from exporter.sim.kv import KvCache
from exporter.sim.ledger import Ledger, RequestTruth
from exporter.sim.metrics import CacheConfig, ModelShape, VllmStats
from exporter.sim.power import GpuSpec, GpuTimeline, idle_state, step_state
from exporter.sim.spans import (
    FIRST_TOKEN_OVERHEAD_S,
    GATEWAY_SERVICE,
    RESPONSE_OVERHEAD_S,
    SCOPE,
    RequestTiming,
    VllmProcess,
    gateway_resource,
    gateway_span,
    request_span,
    startup_requests,
)
from exporter.sim.spec import ACTIVATION_RESERVE, DECODE, PREFILL, ModelSpec, Placement
from exporter.sim.workload import Arrival, ArrivalKind, Tenant, Workload

INITIAL_STARTUP_S = 25.0  # how long the instances took to load before the simulation began (backdated)
DRIVER_UPTIME_ENERGY_J = 86_400 * 70.0  # energy counters start where a day at idle leaves them
MAX_STEPS_PER_ADVANCE = 1_000_000  # a guard against a livelocked engine, never reached in practice
ROLE_ATTRIBUTE = "llm.role"  # the resource attribute a P/D instance's processes carry (OTEL_RESOURCE_ATTRIBUTES)
# P/D hand-off: the proxy forwards the request to the decode server when the prefill's response is back, and the
# decode engine can only start once the prompt's KV has arrived over the interconnect.
HANDOFF_PROXY_S = 0.002
KV_TRANSFER_BYTES_PER_S = 20e9  # RDMA between nodes, sustained (NIXL over 200 Gb/s links: ~25 GB/s)
KV_TRANSFER_SETUP_S = 0.003


class SimSpec(Protocol):
    """What a simulation is built from: a node (`NodeSpec`) or a fleet (`FleetSpec`)."""

    @property
    def gpus(self) -> int:
        """GPUs in all."""
        ...

    @property
    def gpu(self) -> GpuSpec:
        """The GPU model."""
        ...

    @property
    def arrival(self) -> ArrivalKind:
        """The arrival process (a scenario may override it)."""
        ...

    @property
    def gateway_share(self) -> float:
        """Share of requests that come through the gateway."""
        ...

    def tenant_list(self) -> list[Tenant]:
        """The tenants."""
        ...

    def layout(self) -> list[Placement]:
        """Every server."""
        ...


def gpu_uuid(index: int) -> str:
    """The simulated GPU's NVML UUID."""
    return f"GPU-5a1e0000-{index:04x}-4000-8000-{index:012x}"


@dataclass
class SimGpu:
    """One GPU: its timeline of power and activity, power cap, memory, processes, and whether it is lost."""

    index: int
    uuid: str
    spec: GpuSpec
    timeline: GpuTimeline
    power_cap_w: float
    lost_at: float | None = None  # when it fell off the bus (NVML then raises GpuIsLost)
    memory_used: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A span a simulated process sends once the time reaches `time` (its end), to the exporter of node `node`."""

    time: float
    sender: str  # one BatchSpanProcessor per sender: a vLLM process, or the gateway
    resource: Resource
    scope: str
    span: Span
    node: int = 0  # whose exporter receives it (a fleet routes a P/D request's spans to its decode node's)


@dataclass(frozen=True, slots=True)
class _Unshown:
    """A step's contribution to its instance's /metrics, as of its end (the engine has moved on since)."""

    stats: VllmStats  # the process's stats it belongs to (a restart replaces them)
    outcome: StepOutcome
    decode_context: int
    running: int
    waiting: int
    kv_usage: float


@dataclass
class InstanceRuntime:
    """One vLLM engine: its scheduler, metrics, processes and state. A server is one engine, or several
    (data parallel: same name, one runtime per engine, `engine_index` 0, 1, ...; they share the API server)."""

    index: int
    name: str
    model: ModelSpec
    replica: int
    gpus: tuple[int, ...]
    config: EngineConfig
    kv_blocks: int
    engine: EngineModel
    stats: VllmStats
    cache: CacheConfig
    clock: float
    processes: dict[str, VllmProcess] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    process_start: float = 0.0
    up: bool = False
    dead: bool = False  # its GPU is lost: it does not come back
    # (time, serving) of each start and death: the simulation runs a little ahead of the wall clock, so what
    # its /metrics endpoint shows at time t is decided by the transitions up to t, not by `up`.
    transitions: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=16))
    starts: int = 0
    pending: deque[SimRequest] = field(default_factory=deque)  # routed, reaching the engine at queued_at
    # Steps computed but not yet counted in `stats`, oldest first: vLLM counts a step once it has finished, and
    # the simulation computes a step (and runs ahead of the wall clock) before it ends.
    unshown: deque[_Unshown] = field(default_factory=deque)
    node: int = 0  # the node of its API server
    role: str = ""  # P/D role: "", PREFILL or DECODE
    engine_index: int = 0
    group: str = ""  # the multi-node group it leads, if any

    def serving(self, t: float) -> bool:
        """Whether the server answers at time t (started and not dead by then)."""
        for when, serving in reversed(self.transitions):
            if when <= t:
                return serving
        return False

    def show(self, t: float) -> None:
        """Count in `stats` the steps that finished by time t."""
        while self.unshown and self.unshown[0].outcome.end <= t:
            step = self.unshown.popleft()
            step.stats.step(step.outcome, step.decode_context)
            step.stats.gauges(step.running, step.waiting, step.kv_usage)


@dataclass
class Server:
    """One vLLM API server and its engines (more than one: data parallel); what a /metrics endpoint serves."""

    index: int
    placement: Placement
    engines: list[InstanceRuntime]

    @property
    def name(self) -> str:
        """Its name (OTEL_SERVICE_NAME, the exporter's vllm_instance)."""
        return self.placement.name

    @property
    def model(self) -> ModelSpec:
        """Its model."""
        return self.placement.model

    @property
    def node(self) -> int:
        """The node of its API server."""
        return self.placement.node

    @property
    def gpus(self) -> tuple[int, ...]:
        """Every GPU of every engine (global indexes), on any node."""
        return self.placement.gpus

    def serving(self, t: float) -> bool:
        """Whether the API server answers at t (its first engine's process is up)."""
        return self.engines[0].serving(t)


@dataclass(frozen=True, slots=True)
class _Tracked:
    instance: int
    trace_id: bytes
    span_id: bytes
    gateway_span_id: bytes
    request_id: str
    decode_instance: int = -1  # a P/D prefill half: the decode instance that takes it over
    decode_span_id: bytes = b""
    caller_start: float | None = None  # a P/D decode half: when the request reached the caller (not this half)


@dataclass(frozen=True)
class _Boot:
    """Internal event: an instance finished loading and serves."""

    at: float
    instance: int
    process_start: float


class Simulation:
    """A node of GPUs serving vLLM instances; see the module docstring."""

    def __init__(
        self,
        spec: SimSpec,
        scenario: sc.Scenario,
        seed: int = 1,
        start: float = 0.0,
        arrivals_until: float = math.inf,
        arrivals_from: float = -math.inf,
    ) -> None:
        self.spec, self.scenario, self.seed = spec, scenario, seed
        self.arrivals_until = arrivals_until  # no arrivals from then on (a test lets the fleet drain)
        # None before then (a test measures from an idle fleet); the draws are made all the same, so what arrives
        # afterwards is the same with or without it.
        self.arrivals_from = arrivals_from
        self.start = self.now = start
        self.rng = random.Random(seed)  # the workload's draws
        self._ids = random.Random(seed * 7919 + 1)  # ids and process identities
        self._loss = random.Random(seed * 104_729 + 2)  # span-loss draws, apart so they do not shift arrivals
        self.ledger = Ledger()
        self.outbox: deque[Outgoing] = deque()
        self.span_loss = 0.0
        self.gpus = [
            SimGpu(i, gpu_uuid(i), spec.gpu, GpuTimeline(spec.gpu, start), spec.gpu.max_w) for i in range(spec.gpus)
        ]
        self.instances: list[InstanceRuntime] = []
        self.servers: list[Server] = []
        replicas: dict[str, int] = {}  # per model, in layout order
        for placement in spec.layout():
            replica = replicas[placement.model.name] = replicas.get(placement.model.name, -1) + 1
            engines = []
            per_engine = len(placement.gpus) // placement.engines
            for k in range(placement.engines):
                gpus = placement.gpus[k * per_engine : (k + 1) * per_engine]
                runtime = self._instance(len(self.instances), placement.model, replica, gpus)
                runtime.name, runtime.node, runtime.role = placement.name, placement.node, placement.role
                runtime.engine_index, runtime.group = k, placement.group
                self.instances.append(runtime)
                engines.append(runtime)
            self.servers.append(Server(len(self.servers), placement, engines))
        for kv in scenario.kv:
            self.instances[kv.instance].kv_blocks = max(1, kv.tokens // self.instances[kv.instance].model.block_size)
        self.workload = Workload(
            spec.tenant_list(), scenario.arrival, self.rng, start, scenario.profile, max_multiplier=scenario.peak
        )
        self._tracked: dict[int, _Tracked] = {}
        self._next_request = itertools.count(1)
        self._round_robin: dict[str, int] = {}
        self._seq = itertools.count()
        self._events: list[tuple[float, int, sc.Event | _Boot]] = []
        for event in scenario.events:
            heapq.heappush(self._events, (start + event.at, next(self._seq), event))
        self._prefills = [i for i in self.instances if i.role == PREFILL]
        self._gateway = gateway_resource(str(uuid.UUID(bytes=self._ids.randbytes(16), version=4)))
        for instance in self.instances:
            self._boot(instance, start - INITIAL_STARTUP_S, start)

    # --- set-up ---

    def _instance(self, index: int, model: ModelSpec, replica: int, gpus: tuple[int, ...]) -> InstanceRuntime:
        config = EngineConfig(model.cost(), model.max_num_seqs, model.max_num_batched_tokens)
        blocks = model.kv_blocks(self.spec.gpu)
        return InstanceRuntime(
            index=index,
            name=f"vllm-{model.name}-{replica}",
            model=model,
            replica=replica,
            gpus=gpus,
            config=config,
            kv_blocks=blocks,
            engine=EngineModel(config, KvCache(blocks, model.block_size)),
            stats=VllmStats(self.start, ModelShape(model.params_b * 1e9, model.tp, model.kv_bytes_per_token)),
            cache=self._cache_config(model, blocks),
            clock=self.start,
        )

    def _cache_config(self, model: ModelSpec, blocks: int) -> CacheConfig:
        kv_bytes = int(blocks * model.block_size * model.kv_bytes_per_token)
        return CacheConfig(model.block_size, blocks, kv_bytes, model.gpu_memory_utilization, model.max_num_seqs)

    def _new_process(self, instance: InstanceRuntime, kind: str) -> VllmProcess:
        return VllmProcess(
            service_name=instance.name,
            instance_id=str(uuid.UUID(bytes=self._ids.randbytes(16), version=4)),
            pid=self._ids.randint(2_000, 4_000_000),
            kind=kind,
        )

    def _resource(self, instance: InstanceRuntime, process: VllmProcess) -> Resource:
        resource = process.resource()
        if instance.role:  # a P/D instance says its role, as OTEL_RESOURCE_ATTRIBUTES=llm.role=... makes vLLM do
            resource.attributes.append(KeyValue(key=ROLE_ATTRIBUTE, value=AnyValue(string_value=instance.role)))
        return resource

    def _boot(self, instance: InstanceRuntime, process_start: float, ready: float) -> None:
        """A new vLLM process for the instance, serving from `ready`, with its start-up spans."""
        instance.starts += 1
        instance.process_start = process_start
        first = self.instances[instance.index - instance.engine_index]
        if instance.engine_index:
            # A data-parallel engine: the API server (and its spans) is the first engine's.
            instance.processes, instance.resources = first.processes, first.resources
        else:
            instance.processes = {k: self._new_process(instance, k) for k in ("api_server", "engine_core", "worker")}
            instance.resources = {k: self._resource(instance, p) for k, p in instance.processes.items()}
        instance.engine = EngineModel(instance.config, KvCache(instance.kv_blocks, instance.model.block_size))
        instance.cache = self._cache_config(instance.model, instance.kv_blocks)
        model = instance.model
        instance.stats = VllmStats(ready, ModelShape(model.params_b * 1e9, model.tp, model.kv_bytes_per_token))
        self._idle_instance(instance, ready)
        instance.clock = max(instance.clock, ready)
        instance.up = True
        instance.transitions.append((ready, True))
        worker_pid = instance.processes["worker"].pid + 16 * instance.engine_index
        for rank, index in enumerate(instance.gpus):
            gpu = self.gpus[index]
            gpu.memory_used = self._memory(model, 0.0)
            gpu.processes = [(worker_pid + rank, gpu.memory_used)]
        if instance.engine_index:
            return
        for process, request in startup_requests(instance.processes, process_start, ready, self._ids):
            sender = f"{instance.name}/{process.kind}/{process.instance_id}"
            resource = instance.resources[process.kind]
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        end = span.end_time_unix_nano / 1e9
                        self.outbox.append(Outgoing(end, sender, resource, ss.scope.name, span, instance.node))

    def _memory(self, model: ModelSpec, load: float) -> int:
        """Bytes one GPU of an instance uses: weights, the preallocated KV pool, activations growing with load."""
        activations = ACTIVATION_RESERVE * (0.5 + 0.5 * min(load, 1.0))
        return int(model.weight_bytes / model.tp + model.kv_bytes_per_gpu(self.spec.gpu) + activations)

    def _kill(self, instance: InstanceRuntime, when: float) -> None:
        """The instance's processes die at `when`: requests in flight are lost (vLLM sends no span for them)."""
        instance.up = False
        instance.transitions.append((when, False))
        for request in [*instance.engine.abort_all(), *instance.pending]:
            self._tracked.pop(request.id, None)
            self.ledger.abort(request.id)
        instance.pending.clear()
        for index in instance.gpus:
            self.gpus[index].memory_used = 0
            self.gpus[index].processes = []

    # --- time ---

    def advance_to(self, t: float, shown_until: float = math.inf) -> None:
        """Simulate everything up to time t (a no-op for t in the past); the instances' /metrics then count the
        steps finished by `shown_until` (default: every step computed, including one that ends after t)."""
        while self._events and self._events[0][0] <= t:
            when, _, event = heapq.heappop(self._events)
            self._run_until(when)
            self._apply(event, when)
        self._run_until(t)
        for instance in self.instances:
            instance.show(shown_until)

    def _apply(self, event: sc.Event | _Boot, when: float) -> None:
        if isinstance(event, _Boot):
            instance = self.instances[event.instance]
            if not instance.dead:
                self._boot(instance, event.process_start, when)
        elif isinstance(event, sc.PrefillSlowdown):
            model = event.model or self.instances[-1].model.name
            for instance in self.instances:
                if instance.model.name == model:
                    instance.config.prefill_slowdown = event.factor
        elif isinstance(event, sc.PowerCap):
            targets = (
                self.gpus if event.instance is None else [self.gpus[i] for i in self.instances[event.instance].gpus]
            )
            for gpu in targets:
                gpu.power_cap_w = event.watts
        elif isinstance(event, sc.LoseGpu):
            self.gpus[event.gpu].lost_at = when
            for instance in self.instances:
                if event.gpu in instance.gpus:
                    instance.dead = True
                    self._kill(instance, when)
        elif isinstance(event, sc.RestartEngine):
            instance = self.instances[event.instance]
            self._kill(instance, when)
            process_start = when + event.down_s
            boot = _Boot(process_start + event.startup_s, event.instance, process_start)
            heapq.heappush(self._events, (boot.at, next(self._seq), boot))
        elif isinstance(event, sc.SpanLoss):
            self.span_loss = event.fraction
        elif isinstance(event, sc.AddTenant):
            tenant = event.tenant
            if event.instance is not None:
                rate = sum(tenant.rates.values())
                tenant = replace(tenant, rates={self.instances[event.instance].model.name: rate})
            self.workload.add(tenant, when)

    def _run_until(self, t: float) -> None:
        if t <= self.now:
            return
        for arrival in self.workload.until(min(t, self.arrivals_until)):
            if arrival.time >= self.arrivals_from:
                self._route(arrival)
        # Every engine moves in one global order, the earliest clock first (ties: the lower index), one step or one
        # idle stretch at a time. An engine that hands work to another (a P/D prefill half finishing) does so at a
        # time after its step's start, so the other engine has not planned past it yet: the outcome is the same
        # whatever the times advance_to is called at (every process of a fleet gets the same results).
        heap = [(i.clock, i.index) for i in self.instances if i.clock < t]
        heapq.heapify(heap)
        for _ in range(MAX_STEPS_PER_ADVANCE * len(self.instances)):
            if not heap:
                break
            _, index = heapq.heappop(heap)
            instance = self.instances[index]
            self._advance_instance(instance, t)
            if instance.clock < t:
                heapq.heappush(heap, (instance.clock, index))
        else:
            raise RuntimeError(f"more than {MAX_STEPS_PER_ADVANCE} steps per engine in one advance")
        for gpu in self.gpus:
            self._idle_gpu(gpu, t)
        self.now = t

    def _handoff_bound(self) -> float:
        """No P/D hand-off can reach a decode engine before this time: each comes at least the proxy's delay after
        the start of a prefill step not yet taken, and no prefill engine starts one before its clock."""
        return min((p.clock for p in self._prefills), default=math.inf) + HANDOFF_PROXY_S

    def _advance_instance(self, instance: InstanceRuntime, t: float) -> None:
        """One step of the engine, or its idle time until its next request (or t)."""
        engine = instance.engine
        if not instance.up:
            self._idle_instance(instance, t)
            instance.clock = t
            return
        while instance.pending and instance.pending[0].queued_at <= instance.clock:
            engine.add(instance.pending.popleft())
        plan = engine.schedule(instance.clock)
        if plan is None and not engine.idle:
            plan = engine.schedule(instance.clock)  # a pass that only preempted: the next one admits
            if plan is None and not engine.running:
                self._abort_unfittable(instance)
                return
        if plan is None:
            until = min(instance.pending[0].queued_at if instance.pending else t, t)
            if instance.role == DECODE:
                until = min(until, self._handoff_bound())  # a prefill engine may still hand it a request
            self._idle_instance(instance, until)
            instance.clock = max(instance.clock, until)
            return
        self._step(instance, plan)

    # --- requests ---

    def _pick(self, key: str, candidates: list[InstanceRuntime]) -> InstanceRuntime:
        """Round robin over `candidates` (a data-parallel server's engines are candidates each: balanced)."""
        turn = self._round_robin.get(key, 0)
        self._round_robin[key] = turn + 1
        return candidates[turn % len(candidates)]

    def _route(self, arrival: Arrival) -> None:
        serving = [i for i in self.instances if i.model.name == arrival.model and i.up]
        candidates = [i for i in serving if i.role != DECODE]  # a P/D request starts on a prefill instance
        decoders = [i for i in serving if i.role == DECODE]
        if not candidates or (candidates[0].role == PREFILL and not decoders):
            self.ledger.reject()
            return
        instance = self._pick(arrival.model, candidates)
        rid = next(self._next_request)
        # The API server tokenises before the engine sees the request.
        queued = arrival.time + 0.0005 + 2e-7 * arrival.prompt_tokens
        request = SimRequest(rid, arrival, queued, arrival.prompt_tokens, arrival.output_tokens)
        ids = self._ids
        trace_id, span_id = ids.randbytes(16), ids.randbytes(8)
        gateway = ids.randbytes(8) if ids.random() < self.spec.gateway_share else b""
        request_id = f"chatcmpl-{ids.randbytes(8).hex()}" if arrival.chat else f"cmpl-{ids.randbytes(8).hex()}-0"
        gpus = tuple(self.gpus[g].uuid for g in instance.gpus)
        truth = RequestTruth(
            request_id, trace_id + span_id, arrival.model, arrival.tenant, instance.name, gpus, arrival.time
        )
        if instance.role == PREFILL:
            # Chosen and drawn here, in arrival order, not at the hand-off: the draws stay in one order.
            decoder = self._pick(f"{arrival.model}/{DECODE}", decoders)
            decode_span = ids.randbytes(8)
            # Both halves sit under the caller's span (the gateway's, or a proxy's that sends no span).
            gateway = gateway or ids.randbytes(8)
            tracked = _Tracked(instance.index, trace_id, span_id, gateway, request_id, decoder.index, decode_span)
            request.output_tokens = 1  # the prefill half: the prompt and one token
            truth.prefill_span_key, truth.span_key = truth.span_key, trace_id + decode_span
            truth.instance = decoder.name
            truth.gpus = gpus + tuple(self.gpus[g].uuid for g in decoder.gpus)
        else:
            tracked = _Tracked(instance.index, trace_id, span_id, gateway, request_id)
        self._tracked[rid] = tracked
        self.ledger.open(rid, truth)
        instance.pending.append(request)

    def _hand_off(self, prefill: SimRequest, tracked: _Tracked, done: float) -> None:
        """The prefill half is done (its response is back at `done`): the decode half reaches its instance, which
        loads the prompt's KV (no prefill compute) and produces the answer."""
        decoder = self.instances[tracked.decode_instance]
        arrival = replace(prefill.arrival, time=done + HANDOFF_PROXY_S)
        model = decoder.model
        load = KV_TRANSFER_SETUP_S + prefill.prompt_tokens * model.kv_bytes_per_token / KV_TRANSFER_BYTES_PER_S
        # The decode engine queues it once tokenised and once its KV has arrived (vLLM holds it until then).
        queued = arrival.time + 0.0005 + 2e-7 * arrival.prompt_tokens + load
        # Its id follows from the prefill half's, not from a counter that routing also draws from (routing runs
        # ahead in bulk, by as much as each advance_to spans).
        rid = -prefill.id
        request = SimRequest(rid, arrival, queued, prefill.prompt_tokens, arrival.output_tokens, kv_loaded=True)
        self._tracked[rid] = _Tracked(
            decoder.index,
            tracked.trace_id,
            tracked.decode_span_id,
            tracked.gateway_span_id,
            tracked.request_id,
            caller_start=prefill.arrival.time,
        )
        self.ledger.alias(rid, prefill.id)
        keys = [r.queued_at for r in decoder.pending]
        decoder.pending.insert(bisect.bisect_right(keys, queued), request)

    def _abort_unfittable(self, instance: InstanceRuntime) -> None:
        """A request that cannot fit an empty KV cache: vLLM refuses it; so do we (no span)."""
        request = instance.engine.waiting.popleft()
        self._tracked.pop(request.id, None)
        self.ledger.abort(request.id)

    def _step(self, instance: InstanceRuntime, plan: StepPlan) -> None:
        states = [step_state(self.gpus[g].spec, plan.compute_share, self.gpus[g].power_cap_w) for g in instance.gpus]
        # A tensor-parallel group moves at the pace of its slowest GPU.
        ratio = min(r for _, r in states)
        start = instance.clock
        end = start + plan.nominal_s / ratio
        # The interval as the timeline stores it: unix times are coarse floats (2^-22 s near 2026), and the
        # ledger must charge exactly what the timeline integrates.
        duration = end - start
        energy: list[tuple[str, float]] = []
        load = plan.tokens / instance.config.max_num_batched_tokens
        for index, (state, _) in zip(instance.gpus, states, strict=True):
            gpu = self.gpus[index]
            gpu.timeline.record(start, end, state)
            gpu.memory_used = self._memory(instance.model, load)
            if gpu.processes:
                gpu.processes = [(gpu.processes[0][0], gpu.memory_used)]
            energy.append((gpu.uuid, state.power_w * duration))
        outcome = instance.engine.complete(plan, end)
        self.ledger.charge_step(
            [(w.request.id, w.prefill_tokens, w.decode_tokens, w.cost_s) for w in plan.work], energy, duration
        )
        if self.ledger.steps is not None:
            work = [(w.request.id, w.prefill_tokens, w.decode_tokens) for w in plan.work]
            self.ledger.log_step(instance.name, start, end, sum(j for _, j in energy), work)
        engine = instance.engine
        context = sum(w.request.computed for w in plan.work if w.decode_tokens)
        instance.unshown.append(
            _Unshown(instance.stats, outcome, context, len(engine.running), len(engine.waiting), engine.kv.usage)
        )
        instance.clock = end
        self._finished(instance, outcome)

    def _finished(self, instance: InstanceRuntime, outcome: StepOutcome) -> None:
        for request in outcome.finished:
            tracked = self._tracked.pop(request.id, None)
            if tracked is None:
                continue
            lost = self.span_loss > 0 and self._loss.random() < self.span_loss
            arrival = request.arrival
            assert request.first_scheduled is not None and request.first_token is not None
            # The user's first token: when the API server streams it (a P/D request's comes from its decode half).
            shown = request.first_token + FIRST_TOKEN_OVERHEAD_S
            if tracked.decode_instance >= 0:
                self.ledger.prefill_done(request.id, shown)
            else:
                self.ledger.finish(request.id, outcome.end, not lost, shown)
            timing = RequestTiming(
                arrival.time,
                request.queued_at,
                request.first_scheduled,
                request.first_token,
                outcome.end,
                request.prompt_tokens,
                request.generated,
                tracked.request_id,
                arrival.max_tokens,
                arrival.temperature,
                arrival.top_p,
            )
            span = request_span(timing, tracked.trace_id, tracked.span_id, tracked.gateway_span_id)
            done = span.end_time_unix_nano / 1e9
            # A P/D request's spans (both halves, its caller's) go to its decode node's exporter, as a collector
            # routing by trace id sends them; everything else to its own node's.
            node = self.instances[tracked.decode_instance].node if tracked.decode_instance >= 0 else instance.node
            if not lost:
                api = instance.processes["api_server"]
                sender = f"{instance.name}/api_server/{api.instance_id}"
                self.outbox.append(Outgoing(done, sender, instance.resources["api_server"], SCOPE, span, node))
            if tracked.decode_instance >= 0:
                self._hand_off(request, tracked, done)
                continue  # the caller's span ends with the decode half's
            if tracked.gateway_span_id:
                route = "/v1/chat/completions" if arrival.chat else "/v1/completions"
                started = arrival.time if tracked.caller_start is None else tracked.caller_start
                caller = gateway_span(
                    tracked.trace_id,
                    tracked.gateway_span_id,
                    arrival.tenant,
                    route,
                    started - 0.002,
                    done + RESPONSE_OVERHEAD_S + 0.001,
                )
                self.outbox.append(Outgoing(done + 0.002, "gateway", self._gateway, GATEWAY_SERVICE, caller, node))

    # --- GPUs ---

    def _idle_gpu(self, gpu: SimGpu, t: float) -> None:
        start = gpu.timeline.end
        if t > start:
            idle = idle_state(gpu.spec)
            self.ledger.idle(gpu.uuid, idle.power_w * (t - start), t - start)
            gpu.timeline.record(start, t, idle)

    def _idle_instance(self, instance: InstanceRuntime, t: float) -> None:
        for index in instance.gpus:
            self._idle_gpu(self.gpus[index], t)

    # --- views ---

    def gpu_energy_j(self, index: int, t: float) -> float:
        """The true energy GPU `index` used from the start to `t`."""
        return self.gpus[index].timeline.at(t).energy_j
