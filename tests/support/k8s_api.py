"""A small fake Kubernetes API server for the pods API: LIST and chunked WATCH over real HTTP on 127.0.0.1.

It speaks the real shapes (PodList with metadata.resourceVersion; watch events one JSON object per line; ERROR
events carrying a Status; 410 Gone for a too-old resourceVersion), filters by `spec.nodeName=` field selectors and
`k=v` label selectors as the real server does, records every request, and can fail (an HTTP status for every
request) or go away entirely (connections refused) and come back on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.procs import wait_for_async

Json = dict[str, Any]


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `predicate` every 10 ms until true; fail naming `what` after `timeout` seconds."""

    async def check() -> bool:
        return predicate()

    await wait_for_async(check, timeout, what, interval=0.01)


def make_pod(
    name: str,
    ip: str | None,
    *,
    namespace: str = "llm",
    node: str = "node-1",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    ports: list[Json] | None = None,
    args: list[str] | None = None,
    env: list[Json] | None = None,
) -> Json:
    """A Pod object shaped as the API returns it (the fields the exporter reads, plus some it ignores)."""
    container: Json = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.32.0",
        "args": args if args is not None else ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"],
        "ports": ports if ports is not None else [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    if env is not None:
        container["env"] = env
    status: Json = {"phase": phase, "hostIP": "192.168.1.10"}
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "labels": labels if labels is not None else {"app": "vllm"},
            "annotations": annotations or {},
            "resourceVersion": "0",
        },
        "spec": {"nodeName": node, "containers": [container], "serviceAccountName": "default"},
        "status": status,
    }


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    watch: bool
    params: dict[str, str]
    authorization: str | None


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKubeApi:
    """The pods API of one cluster. Use from inside a running event loop: `await start()`, mutate, `await stop()`."""

    def __init__(self) -> None:
        self.pods: dict[str, Json] = {}
        self.resource_version = 1000
        self.history: list[tuple[int, Json]] = []  # (resourceVersion, event): what a watch replays
        self.oldest_watchable = 0  # watches from an older resourceVersion get 410 Gone
        self.fail_status: int | None = None  # answer every request with this status
        self.requests: list[Recorded] = []
        self.port = 0
        self._watchers: set[asyncio.Queue[Json | None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def lists(self) -> list[Recorded]:
        """The LIST requests received so far."""
        return [r for r in self.requests if not r.watch]

    @property
    def watches(self) -> list[Recorded]:
        """The WATCH requests received so far."""
        return [r for r in self.requests if r.watch]

    # --- serving ---

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a random port the first time, the same port after `refuse`)."""
        app = web.Application()
        app.router.add_get("/api/v1/pods", self._pods_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every watch and every connection, and stop listening."""
        self.close_watches()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def refuse(self) -> None:
        """Go away: connections are refused until `resume`."""
        await self.stop()

    async def resume(self) -> None:
        """Listen again on the same port."""
        await self.start()

    # --- the cluster's state ---

    def _bump(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _event(self, kind: str, pod: Json, notify: bool) -> None:
        rv = self._bump()
        pod["metadata"]["resourceVersion"] = str(rv)
        event = {"type": kind, "object": json.loads(json.dumps(pod))}
        self.history.append((rv, event))
        if notify:
            for queue in self._watchers:
                queue.put_nowait(event)

    def add(self, pod: Json, notify: bool = True) -> Json:
        """Create a pod (ADDED)."""
        self.pods[pod["metadata"]["uid"]] = pod
        self._event("ADDED", pod, notify)
        return pod

    def modify(self, pod: Json, notify: bool = True) -> Json:
        """Replace a pod with the same uid (MODIFIED)."""
        self.pods[pod["metadata"]["uid"]] = pod
        self._event("MODIFIED", pod, notify)
        return pod

    def delete(self, uid: str, notify: bool = True) -> Json:
        """Delete a pod (DELETED); notify=False models an event a watcher missed."""
        pod = self.pods.pop(uid)
        self._event("DELETED", pod, notify)
        return pod

    def bookmark(self) -> int:
        """Send a BOOKMARK (a resourceVersion with no change) to every watcher; returns that version."""
        rv = self._bump()
        for queue in self._watchers:
            queue.put_nowait(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}},
                }
            )
        return rv

    def expire(self, notify: bool = True) -> None:
        """Compact history: every version so far becomes too old to watch from. With notify, open watches get an
        ERROR event with a 410 Status, as the real server sends; without, only new watches see 410 Gone."""
        self.oldest_watchable = self._bump()
        self.history.clear()
        if notify:
            expired = {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
            for queue in self._watchers:
                queue.put_nowait(expired)
                queue.put_nowait(None)

    def close_watches(self) -> None:
        """End every open watch stream normally (as the server does at timeoutSeconds)."""
        for queue in self._watchers:
            queue.put_nowait(None)

    # --- HTTP ---

    @staticmethod
    def _selected(pod: Json, params: dict[str, str]) -> bool:
        for term in filter(None, params.get("fieldSelector", "").split(",")):
            key, _, value = term.partition("=")
            if key != "spec.nodeName" or pod["spec"].get("nodeName") != value:
                return False
        labels = pod["metadata"].get("labels") or {}
        for term in filter(None, params.get("labelSelector", "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    async def _pods_handler(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        watch = params.get("watch") in ("true", "1")
        self.requests.append(Recorded(watch, params, request.headers.get("Authorization")))
        if self.fail_status is not None:
            body = _status(self.fail_status, "InternalError", "etcdserver: request timed out")
            return web.json_response(body, status=self.fail_status)
        if not watch:
            items = [p for p in self.pods.values() if self._selected(p, params)]
            return web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {"resourceVersion": str(self.resource_version)},
                    "items": items,
                }
            )
        since = int(params.get("resourceVersion") or 0)
        if since < self.oldest_watchable:
            return web.json_response(_status(410, "Expired", f"too old resource version: {since}"), status=410)
        return await self._watch(request, params, since)

    async def _watch(self, request: web.Request, params: dict[str, str], since: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        queue: asyncio.Queue[Json | None] = asyncio.Queue()
        for rv, past in self.history:
            if rv > since:
                queue.put_nowait(past)
        self._watchers.add(queue)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(float(params.get("timeoutSeconds") or 1800)):
                    while (event := await queue.get()) is not None:
                        obj = event["object"]
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED") and not self._selected(obj, params):
                            continue
                        await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watchers.discard(queue)
        return response
