"""Kubernetes topology: the vLLM pods on this node, from the API server (list + watch), with their GPUs from the
kubelet PodResources API.

One LIST of `/api/v1/pods?fieldSelector=spec.nodeName=<node>&labelSelector=<selector>`, then a WATCH from its
resourceVersion (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR; 410 Gone means re-list), and a full re-list every
`resync_s` so a missed event cannot linger. When the API server is unreachable or erroring, the last known pods
stay, marked stale; the failure is counted by reason and retried with backoff. Nothing here raises out of the
background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import httpx

from exporter.topology.model import (
    POD_ROLE_LABEL,
    ROLES,
    SOURCE_KUBERNETES,
    ErrorCounts,
    GroupWorker,
    Instance,
    Topology,
    empty_topology,
    now,
)
from exporter.topology.podresources import PodKey
from exporter.topology.vllm_args import VllmArgs, parse_vllm_args

log = logging.getLogger(__name__)

PODS_PATH = "/api/v1/pods"
OTEL_SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES_ENV = "OTEL_RESOURCE_ATTRIBUTES"
# LeaderWorkerSet's labels on every pod of a group (sigs.k8s.io/lws, api/leaderworkerset/v1).
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"


class Skipped(NamedTuple):
    """Why a pod on the node is not a scrapeable instance."""

    reason: str  # not_running, no_ip, no_port, bad_port
    detail: str = ""


def _container_env(container: Mapping[str, Any]) -> dict[str, str]:
    # Only literal values: valueFrom and $(VAR) references are resolved by the kubelet, not visible here.
    out: dict[str, str] = {}
    for item in container.get("env") or ():
        value = item.get("value")
        if isinstance(item.get("name"), str) and isinstance(value, str) and "$(" not in value:
            out[item["name"]] = value
    return out


def _resource_attribute(attributes: str, key: str) -> str | None:
    for pair in attributes.split(","):
        name, sep, value = pair.partition("=")
        if sep and name.strip() == key and value.strip():
            return value.strip()
    return None


def lws_group(namespace: str, labels: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(group id, is the leader) of a LeaderWorkerSet pod, else None. The group's id is its leader's instance id:
    LeaderWorkerSet names the leader pod `<set>-<group index>` and its workers `<set>-<group index>-<worker index>`,
    and labels every member with the set's name, the group index and the worker index (0: the leader)."""
    name, index, worker = (labels.get(k) for k in (LWS_NAME_LABEL, LWS_GROUP_INDEX_LABEL, LWS_WORKER_INDEX_LABEL))
    if not (isinstance(name, str) and isinstance(index, str) and isinstance(worker, str)) or not name:
        return None
    if not (index.isdigit() and worker.isdigit()):
        return None
    return f"{namespace}/{name}-{index}", int(worker) == 0


def _container_args(container: Mapping[str, Any]) -> list[str]:
    return [str(a) for a in (*(container.get("command") or ()), *(container.get("args") or ()))]


def pod_instance(pod: Mapping[str, Any], port_name: str, port_annotation: str) -> Instance | GroupWorker | Skipped:
    """The instance a Pod object describes (a group's worker: a GroupWorker), or why it is none. Only Running
    pods with an IP count. The metrics port is the annotation `port_annotation` if present, else the container
    port named `port_name`; a LeaderWorkerSet worker (worker index > 0) needs none."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    uid = str(meta.get("uid") or "")
    if status.get("phase") != "Running":
        return Skipped("not_running", str(status.get("phase")))
    ip = status.get("podIP")
    if not isinstance(ip, str) or not ip:
        return Skipped("no_ip")
    containers: list[Mapping[str, Any]] = [c for c in spec.get("containers") or () if isinstance(c, Mapping)]
    parsed = [parse_vllm_args(_container_args(c)) for c in containers]
    labels = meta.get("labels") or {}
    group = lws_group(namespace, labels)
    if group is not None and not group[1]:
        # A worker's GPUs are the leader's model's; its own arguments name the model when it runs vLLM
        # (`vllm serve <model> --headless`), not when it is a Ray worker (the fleet rules take the leader's).
        model = next((a.model_label for a in parsed if a.model_label), None)
        return GroupWorker(id=f"{namespace}/{name}", group=group[0], model=model, namespace=namespace, pod=name)
    headless = next((a for a in parsed if a.headless), None)
    if group is None and headless is not None and headless.group:
        # Not a LeaderWorkerSet, but a `vllm serve --headless` node of a multi-node server: its rendezvous names
        # the group, as on the leader's pod.
        return GroupWorker(
            id=f"{namespace}/{name}", group=headless.group, model=headless.model_label, namespace=namespace, pod=name
        )
    annotations = meta.get("annotations") or {}
    port: int | None = None
    container: Mapping[str, Any] | None = None
    annotated = annotations.get(port_annotation) if port_annotation else None
    if annotated is not None:
        text = str(annotated).strip()
        if not text.isdigit() or not 0 < int(text) < 65536:
            return Skipped("bad_port", f"annotation {port_annotation}={annotated!r} is not a port number")
        port = int(text)
        container = next(
            (c for c in containers if any(p.get("containerPort") == port for p in c.get("ports") or ())),
            containers[0] if containers else None,
        )
    else:
        for candidate in containers:
            for declared in candidate.get("ports") or ():
                if declared.get("name") == port_name and isinstance(declared.get("containerPort"), int):
                    port, container = declared["containerPort"], candidate
                    break
            if port is not None:
                break
    if port is None:
        return Skipped("no_port", f"no annotation {port_annotation} and no container port named {port_name!r}")
    vllm = VllmArgs()
    env: dict[str, str] = {}
    container_name = ""
    if container is not None:
        vllm = parsed[containers.index(container)]
        env = _container_env(container)
        container_name = str(container.get("name") or "")
    host = f"[{ip}]" if ":" in ip else ip
    # Keys the pod's spans may carry: OTel's Kubernetes convention for service.instance.id is
    # <namespace>.<pod>.<container>; operators also use the pod name or uid, or set it explicitly.
    instance_ids = [uid, name, f"{namespace}.{name}.{container_name}" if container_name else ""]
    explicit = _resource_attribute(env.get(OTEL_RESOURCE_ATTRIBUTES_ENV, ""), "service.instance.id")
    service_name = env.get(OTEL_SERVICE_NAME_ENV) or _resource_attribute(
        env.get(OTEL_RESOURCE_ATTRIBUTES_ENV, ""), "service.name"
    )
    role = labels.get(POD_ROLE_LABEL) if labels.get(POD_ROLE_LABEL) in ROLES else vllm.role
    return Instance(
        id=f"{namespace}/{name}",
        url=f"http://{host}:{port}",
        model=vllm.model_label,
        role=role,
        namespace=namespace,
        pod=name,
        pod_uid=uid or None,
        ip=ip,
        service_instance_ids=tuple(dict.fromkeys(v for v in (explicit, *instance_ids) if v)),
        service_names=(service_name,) if service_name else (),
        group=group[0] if group is not None else vllm.group,
    )


class ApiError(Exception):
    """The API server answered with an error status (HTTP or a watch ERROR event)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class BadResponse(Exception):
    """The API server's answer is not what the pods API returns."""


class _Expired(Exception):
    """410 Gone: the resourceVersion is too old to watch from; re-list."""


def failure_reason(exc: BaseException) -> str:
    """A bounded reason label for a failed API call."""
    if isinstance(exc, ApiError):
        if exc.status in (401, 403):
            return "unauthorized"
        return "server_error" if exc.status >= 500 else "http_error"
    if isinstance(exc, httpx.ConnectError):
        return "unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.HTTPError):
        return "connection"
    if isinstance(exc, BadResponse | ValueError | KeyError | TypeError | AttributeError):
        return "bad_response"
    return "internal"


def in_cluster_api_url(environ: Mapping[str, str]) -> str | None:
    """The API server URL a pod sees (KUBERNETES_SERVICE_HOST/PORT), or None outside a cluster."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    if not host:
        return None
    port = environ.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class GpuLookup(Protocol):
    """Where GPUs per pod come from (the kubelet PodResources client, or a fake in tests)."""

    async def gpus_by_pod(self) -> dict[PodKey, tuple[str, ...]] | None:
        """GPUs per (namespace, name); None when unknown right now."""
        ...

    def error_counts(self) -> dict[tuple[str, str], int]:
        """Its failures by (source, reason)."""
        ...

    async def close(self) -> None:
        """Release its connection."""
        ...


@dataclass(frozen=True)
class KubernetesOptions:
    """How to reach the API server and which pods to watch; the timing knobs exist for tests."""

    api_url: str = ""  # empty: in-cluster (KUBERNETES_SERVICE_HOST/PORT)
    node_name: str = ""
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    pod_selector: str = ""
    port_name: str = "http"
    port_annotation: str = "llm-token-exporter/port"
    resync_s: float = 30.0
    request_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    gpu_refresh_s: float = 10.0
    gpu_min_interval_s: float = 1.0
    rewatch_min_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class _PodEntry:
    key: PodKey
    result: Instance | GroupWorker | Skipped


class KubernetesTopology:
    """A TopologySource watching this node's pods. start() returns at once; `wait_synced` waits for the first
    list. `current()` is stale until then, and whenever the API server cannot be reached."""

    source = SOURCE_KUBERNETES

    def __init__(
        self,
        options: KubernetesOptions,
        gpu_lookup: GpuLookup | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self.gpu_lookup = gpu_lookup
        self.errors = ErrorCounts()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pods: dict[str, _PodEntry] = {}
        self._gpus: dict[PodKey, tuple[str, ...]] | None = None
        self._topology = empty_topology(SOURCE_KUBERNETES)
        self._observed_at = 0.0
        self._stale = True
        self._failures = 0
        self._outage: str | None = None
        self._logged_skips: set[tuple[str, str]] = set()
        self._synced = asyncio.Event()
        self._gpu_wanted = asyncio.Event()

    # --- the TopologySource interface ---

    def current(self) -> Topology:
        """The latest view of this node's vLLM pods."""
        return self._topology

    def error_counts(self) -> dict[tuple[str, str], int]:
        """API server failures (source kubernetes) and, with a GPU lookup, its failures (source podresources)."""
        counts = self.errors.snapshot()
        if self.gpu_lookup is not None:
            counts.update(self.gpu_lookup.error_counts())
        return counts

    async def start(self) -> None:
        """Spawn the list/watch task (and the GPU lookup task); returns without waiting for the API server."""
        if self._tasks:
            return
        self._client = httpx.AsyncClient(
            base_url=self.options.api_url,
            verify=self._verify(),
            timeout=httpx.Timeout(self.options.request_timeout_s),
            transport=self._transport,
            trust_env=False,  # the API server is addressed directly; a proxy from the environment is wrong here
            headers={"Accept": "application/json"},
        )
        self._tasks.append(asyncio.create_task(self._run(), name="topology-kubernetes"))
        if self.gpu_lookup is not None:
            self._tasks.append(asyncio.create_task(self._gpu_run(), name="topology-podresources"))

    async def stop(self) -> None:
        """Cancel the background tasks and close connections; idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self.gpu_lookup is not None:
            await self.gpu_lookup.close()

    async def wait_synced(self, timeout_s: float) -> bool:
        """Wait until the first list succeeded; False on timeout."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # --- talking to the API server ---

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.options.api_url.startswith("https:"):
            return True
        ca_file = self.options.ca_file
        if ca_file and os.path.exists(ca_file):
            try:
                return ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                log.warning("cannot load Kubernetes CA %s (%s); trying the system CAs", ca_file, exc)
        return True

    def _headers(self) -> dict[str, str]:
        # Re-read on every (re)connect: projected service-account tokens rotate (about hourly).
        token_file = self.options.token_file
        if not token_file:
            return {}
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            if ("token", token_file) not in self._logged_skips:
                self._logged_skips.add(("token", token_file))
                log.warning("cannot read Kubernetes token %s (%s); calling the API without one", token_file, exc)
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _selectors(self) -> dict[str, str]:
        params = {"fieldSelector": f"spec.nodeName={self.options.node_name}"}
        if self.options.pod_selector:
            params["labelSelector"] = self.options.pod_selector
        return params

    def _backoff(self) -> float:
        delay = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2.0 ** max(0, self._failures - 1))
        return delay * random.uniform(0.8, 1.2)  # jitter: exporters on every node must not retry in lockstep

    async def _run(self) -> None:
        while True:
            try:
                resource_version = await self._list()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(self._backoff())
                continue
            try:
                async with asyncio.timeout(self.options.resync_s):
                    await self._watch(resource_version)
            except TimeoutError:
                continue  # time for the periodic full re-list
            except _Expired:
                self.errors.add(SOURCE_KUBERNETES, "expired")
                log.debug("pod watch expired (410 Gone); re-listing")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(self._backoff())

    def _failed(self, exc: Exception) -> None:
        reason = failure_reason(exc)
        self._failures += 1
        self.errors.add(SOURCE_KUBERNETES, reason)
        if self._outage is None:
            if reason == "internal":
                log.exception("Kubernetes pod discovery failed; keeping the last known pods (stale)")
            else:
                log.warning(
                    "Kubernetes API %s: %s (%s); keeping the last known pods (stale), retrying",
                    self.options.api_url,
                    reason,
                    exc,
                )
        self._outage = reason
        if not self._stale:
            self._stale = True
            self._publish()

    async def _list(self) -> str:
        assert self._client is not None
        response = await self._client.get(PODS_PATH, params=self._selectors(), headers=self._headers())
        if response.status_code != 200:
            raise ApiError(response.status_code, response.text[:200])
        body = response.json()
        if not isinstance(body, dict) or body.get("kind") != "PodList":
            raise BadResponse(f"expected a PodList, got kind {body.get('kind') if isinstance(body, dict) else body!r}")
        resource_version = str(body["metadata"]["resourceVersion"])
        pods: dict[str, _PodEntry] = {}
        for item in body.get("items") or ():
            uid, entry = self._entry(item)
            pods[uid] = entry
        self._pods = pods
        self._logged_skips = {k for k in self._logged_skips if k[0] in pods or k[0] == "token"}
        self._observed_at = now()
        self._stale = False
        if self._outage is not None:
            log.info("Kubernetes API %s reachable again; %d pods on node", self.options.api_url, len(pods))
            self._outage = None
        self._publish(want_gpus=True)
        self._synced.set()
        return resource_version

    async def _watch(self, resource_version: str) -> None:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        while True:
            params = {
                **self._selectors(),
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(max(1, int(self.options.resync_s))),
            }
            started, events = loop.time(), 0
            timeout = httpx.Timeout(self.options.request_timeout_s, read=None)  # idle watches are normal
            async with self._client.stream(
                "GET", PODS_PATH, params=params, headers=self._headers(), timeout=timeout
            ) as response:
                if response.status_code == 410:
                    raise _Expired
                if response.status_code != 200:
                    await response.aread()
                    raise ApiError(response.status_code, response.text[:200])
                self._failures = 0  # connected: the next failure starts the backoff from the beginning
                async for line in response.aiter_lines():
                    if line.strip():
                        resource_version = self._apply(json.loads(line), resource_version)
                        events += 1
            if events == 0 and loop.time() - started < self.options.rewatch_min_interval_s:
                # A server closing watches at once must not make us spin.
                await asyncio.sleep(self.options.rewatch_min_interval_s)

    def _apply(self, event: Any, resource_version: str) -> str:
        if not isinstance(event, dict):
            raise BadResponse(f"watch event is not an object: {event!r:.100}")
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                raise _Expired
            raise ApiError(code, str(obj.get("message", "")))
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_version
        if kind in ("ADDED", "MODIFIED"):
            uid, entry = self._entry(obj)
            self._pods[uid] = entry
        elif kind == "DELETED":
            uid = str(obj["metadata"]["uid"])
            self._pods.pop(uid, None)
            self._logged_skips = {k for k in self._logged_skips if k[0] != uid}
        else:
            raise BadResponse(f"unknown watch event type {kind!r}")
        self._observed_at = now()
        self._publish(want_gpus=True)
        return new_version

    def _entry(self, pod: Mapping[str, Any]) -> tuple[str, _PodEntry]:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        key = (str(meta.get("namespace") or "default"), str(meta["name"]))
        result = pod_instance(pod, self.options.port_name, self.options.port_annotation)
        logged = self._logged_skips
        if (
            isinstance(result, Skipped)
            and result.reason in ("no_port", "bad_port")
            and (uid, result.reason) not in logged
        ):
            self._logged_skips.add((uid, result.reason))
            log.info("pod %s/%s is not scraped: %s", key[0], key[1], result.detail)
        return uid, _PodEntry(key, result)

    def _publish(self, want_gpus: bool = False) -> None:
        instances: list[Instance] = []
        workers: list[GroupWorker] = []
        missing = False
        for entry in self._pods.values():
            if isinstance(entry.result, Skipped):
                continue
            gpus = None if self._gpus is None else self._gpus.get(entry.key)
            missing = missing or gpus is None
            if isinstance(entry.result, GroupWorker):
                workers.append(replace(entry.result, gpus=gpus or ()))
            else:
                instances.append(replace(entry.result, gpus=gpus or ()))
        instances.sort(key=lambda i: i.id)
        workers.sort(key=lambda w: w.id)
        old = self._topology
        self._topology = Topology(
            tuple(instances), self._observed_at, SOURCE_KUBERNETES, stale=self._stale, workers=tuple(workers)
        )
        if old.instances != self._topology.instances or old.workers != self._topology.workers:
            log.info(
                "Kubernetes topology: %d instance(s): %s; %d group worker(s): %s",
                len(instances),
                ", ".join(f"{i.id} {i.url} gpus={','.join(i.gpus) or '?'}" for i in instances) or "-",
                len(workers),
                ", ".join(f"{w.id} group={w.group} gpus={','.join(w.gpus) or '?'}" for w in workers) or "-",
            )
        if missing and want_gpus:
            self._gpu_wanted.set()

    # --- GPUs per pod ---

    async def _gpu_run(self) -> None:
        assert self.gpu_lookup is not None
        while True:
            try:
                gpus = await self.gpu_lookup.gpus_by_pod()
            except asyncio.CancelledError:
                raise
            except Exception:  # the lookup counts its own failures; a bug in it must not end this loop
                if self.errors.add(SOURCE_KUBERNETES, "internal") == 1:
                    log.exception("GPU lookup failed")
                gpus = None
            # None: unknown right now; keep the last map (a pod's GPUs do not change while it lives).
            if gpus is not None and gpus != self._gpus:
                self._gpus = gpus
                self._publish()
            # Then wait for a pod whose GPUs are unknown (set by _publish) or the periodic refresh, whichever
            # comes first, but never sooner than gpu_min_interval_s: a pod churn must not hammer the kubelet.
            await asyncio.sleep(self.options.gpu_min_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gpu_wanted.wait(), self.options.gpu_refresh_s)
            self._gpu_wanted.clear()
