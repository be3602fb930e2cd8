"""Kubernetes discovery against a real HTTP server speaking the pods API: list, chunked watch, 410 Gone, outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter.topology.kubernetes import KubernetesOptions, KubernetesTopology
from exporter.topology.model import Instance
from exporter.topology.podresources import PodKey
from tests.support.k8s_api import FakeKubeApi, eventually, make_pod

NODE = "node-1"
SELECTOR = "app=vllm"


class FakeGpus:
    """A GpuLookup with a settable answer (the real kubelet client is tested in test_podresources)."""

    def __init__(self, gpus: dict[PodKey, tuple[str, ...]] | None = None) -> None:
        self.gpus = gpus or {}
        self.calls = 0

    async def gpus_by_pod(self) -> dict[PodKey, tuple[str, ...]] | None:
        self.calls += 1
        return dict(self.gpus)

    def error_counts(self) -> dict[tuple[str, str], int]:
        return {("podresources", "socket_missing"): 0}

    async def close(self) -> None:
        """Nothing to close."""


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


@contextlib.asynccontextmanager
async def serving(api: FakeKubeApi) -> AsyncIterator[FakeKubeApi]:
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def watching(
    api: FakeKubeApi, token_file: Path, gpus: FakeGpus | None = None, resync_s: float = 60.0
) -> AsyncIterator[KubernetesTopology]:
    options = KubernetesOptions(
        api_url=api.url,
        node_name=NODE,
        token_file=str(token_file),
        pod_selector=SELECTOR,
        resync_s=resync_s,
        request_timeout_s=2.0,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        gpu_refresh_s=60.0,
        gpu_min_interval_s=0.0,
        rewatch_min_interval_s=0.01,
    )
    source = KubernetesTopology(options, gpus)
    await source.start()
    try:
        assert await source.wait_synced(5.0), "first list never succeeded"
        yield source
    finally:
        await source.stop()
        await source.stop()  # idempotent


def ids(source: KubernetesTopology) -> list[str]:
    return [i.id for i in source.current().instances]


def get(source: KubernetesTopology, instance_id: str) -> Instance:
    instance = source.current().by_id(instance_id)
    assert instance is not None, f"{instance_id} not in {ids(source)}"
    return instance


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("token-1\n")
    return path


def test_list_builds_instances_from_this_nodes_selected_pods(token_file: Path) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10", args=["--model", "m", "--served-model-name", "llama"]))
    api.add(make_pod("b", "10.244.0.11", ports=[], annotations={"llm-token-exporter/port": "9000"}))
    api.add(make_pod("pending", None, phase="Pending"))
    api.add(make_pod("no-port", "10.244.0.12", ports=[{"name": "metrics", "containerPort": 9100}]))
    api.add(make_pod("elsewhere", "10.244.1.10", node="node-2"))
    api.add(make_pod("other-app", "10.244.0.13", labels={"app": "gateway"}))
    gpus = FakeGpus({("llm", "a"): ("GPU-1",), ("llm", "b"): ("GPU-2", "GPU-3"), ("llm", "no-port"): ()})

    async def scenario() -> None:
        async with serving(api), watching(api, token_file, gpus) as source:
            await eventually(lambda: get(source, "llm/b").gpus != (), "GPUs from the lookup")
            topology = source.current()
            assert (topology.source, topology.stale) == ("kubernetes", False)
            assert topology.observed_at > 0
            assert ids(source) == ["llm/a", "llm/b"]
            a, b = topology.instances
            assert (a.url, a.model, a.gpus, a.ip, a.namespace, a.pod) == (
                "http://10.244.0.10:8000",
                "llama",
                ("GPU-1",),
                "10.244.0.10",
                "llm",
                "a",
            )
            assert (b.url, b.gpus) == ("http://10.244.0.11:9000", ("GPU-2", "GPU-3"))
            first_list = api.lists[0]
            assert first_list.params["fieldSelector"] == f"spec.nodeName={NODE}"
            assert first_list.params["labelSelector"] == SELECTOR
            assert first_list.authorization == "Bearer token-1"
            await eventually(lambda: len(api.watches) >= 1, "the watch")
            watch = api.watches[0]
            assert watch.params["resourceVersion"] == str(api.resource_version)
            assert watch.params["allowWatchBookmarks"] == "true"
            assert watch.params["fieldSelector"] == f"spec.nodeName={NODE}"
            assert watch.params["labelSelector"] == SELECTOR
            assert watch.authorization == "Bearer token-1"
            assert source.error_counts() == {("podresources", "socket_missing"): 0}

    run(scenario)


def test_watch_follows_moves_recreations_deletions_and_bookmarks(token_file: Path) -> None:
    api = FakeKubeApi()
    a = api.add(make_pod("a", "10.244.0.10", uid="uid-a"))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            assert ids(source) == ["llm/a"]

            api.add(make_pod("g", "10.244.0.20", uid="uid-g1"))
            await eventually(lambda: ids(source) == ["llm/a", "llm/g"], "ADDED g")

            # The pod's IP changes: same instance id, new address.
            moved = replace_ip(a, "10.244.0.99")
            api.modify(moved)
            await eventually(lambda: get(source, "llm/a").url == "http://10.244.0.99:8000", "MODIFIED a")
            assert get(source, "llm/a").ip == "10.244.0.99"

            # Re-created (a StatefulSet pod): deleted, then added again with a new uid and IP.
            api.delete("uid-g1")
            api.add(make_pod("g", "10.244.0.21", uid="uid-g2"))
            await eventually(lambda: get(source, "llm/g").pod_uid == "uid-g2", "g re-created")
            assert get(source, "llm/g").url == "http://10.244.0.21:8000"

            api.delete("uid-a")
            await eventually(lambda: ids(source) == ["llm/g"], "DELETED a")

            failed = make_pod("g", "10.244.0.21", uid="uid-g2", phase="Failed")
            api.modify(failed)
            await eventually(lambda: ids(source) == [], "g failed")

            # A bookmark moves the resourceVersion the next watch resumes from.
            version = api.bookmark()
            await asyncio.sleep(0.05)
            api.close_watches()
            await eventually(lambda: len(api.watches) == 2, "the second watch")
            assert api.watches[1].params["resourceVersion"] == str(version)
            assert len(api.lists) == 1  # all of it through the watch, no re-list
            assert source.error_counts() == {}
            assert not source.current().stale

    run(scenario)


def replace_ip(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    """The same pod (name, uid) with another IP."""
    return make_pod(pod["metadata"]["name"], ip, uid=pod["metadata"]["uid"])


def test_gone_forces_a_relist_that_catches_missed_changes(token_file: Path) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10", uid="uid-a"))
    api.add(make_pod("b", "10.244.0.11", uid="uid-b"))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            # An ERROR event with a 410 Status on the open watch (history compacted meanwhile).
            api.delete("uid-b", notify=False)
            api.expire(notify=True)
            await eventually(lambda: ids(source) == ["llm/a"], "re-list after ERROR 410")
            assert len(api.lists) == 2
            # A new watch from a too-old resourceVersion gets HTTP 410 Gone.
            api.add(make_pod("c", "10.244.0.12"), notify=False)
            api.expire(notify=False)
            api.close_watches()
            await eventually(lambda: ids(source) == ["llm/a", "llm/c"], "re-list after HTTP 410")
            assert len(api.lists) == 3
            assert source.error_counts() == {("kubernetes", "expired"): 2}
            assert not source.current().stale  # an expired watch is routine, not an outage

    run(scenario)


def test_api_errors_keep_the_last_topology_stale_until_recovery(token_file: Path) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10", uid="uid-a"))
    api.add(make_pod("b", "10.244.0.11", uid="uid-b"))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            before = source.current()
            assert not before.stale

            api.fail_status = 500
            api.close_watches()
            await eventually(lambda: source.current().stale, "stale on HTTP 500")
            api.delete("uid-b", notify=False)  # the cluster moves on meanwhile
            await eventually(
                lambda: source.error_counts().get(("kubernetes", "server_error"), 0) >= 3, "retries with backoff"
            )
            during = source.current()
            assert during.instances == before.instances  # last known pods kept
            assert during.observed_at == before.observed_at

            api.fail_status = None
            await eventually(lambda: not source.current().stale, "fresh after recovery")
            assert ids(source) == ["llm/a"]
            assert source.current().observed_at > before.observed_at

    run(scenario)


def test_refused_connections_keep_the_last_topology_until_the_api_is_back(token_file: Path) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10", uid="uid-a"))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            await api.refuse()
            await eventually(lambda: source.current().stale, "stale while refused")
            await eventually(
                lambda: source.error_counts().get(("kubernetes", "unreachable"), 0) >= 2, "counted refusals"
            )
            assert ids(source) == ["llm/a"]
            api.add(make_pod("b", "10.244.0.11"), notify=False)
            await api.resume()
            await eventually(lambda: not source.current().stale, "fresh after the API is back")
            assert ids(source) == ["llm/a", "llm/b"]

    run(scenario)


def test_token_is_reread_on_reconnect_and_rejection_is_counted(token_file: Path) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10"))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            token_file.write_text("token-2")  # the kubelet rotated the projected token
            api.close_watches()
            await eventually(lambda: len(api.watches) == 2, "the re-watch")
            assert api.watches[1].authorization == "Bearer token-2"

            api.fail_status = 401
            api.close_watches()
            await eventually(lambda: source.error_counts().get(("kubernetes", "unauthorized"), 0) >= 1, "401 counted")
            assert source.current().stale and ids(source) == ["llm/a"]

    run(scenario)


def test_periodic_resync_corrects_missed_events_and_logs_skips_once(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeKubeApi()
    api.add(make_pod("a", "10.244.0.10", uid="uid-a"))
    api.add(make_pod("b", "10.244.0.11", uid="uid-b"))
    api.add(make_pod("no-port", "10.244.0.12", ports=[]))

    async def scenario() -> None:
        async with serving(api), watching(api, token_file, resync_s=0.2) as source:
            api.delete("uid-b", notify=False)  # a lost event: only a re-list can notice
            await eventually(lambda: ids(source) == ["llm/a"], "the resync", timeout=3.0)
            await eventually(lambda: len(api.lists) >= 3, "more resyncs", timeout=3.0)
            assert source.error_counts() == {}
            assert not source.current().stale

    with caplog.at_level(logging.INFO, logger="exporter.topology.kubernetes"):
        run(scenario)
    skipped = [r for r in caplog.records if "llm/no-port is not scraped" in r.getMessage()]
    assert len(skipped) == 1


def test_gpus_arrive_when_a_new_pod_appears(token_file: Path) -> None:
    api = FakeKubeApi()
    gpus = FakeGpus({})

    async def scenario() -> None:
        async with serving(api), watching(api, token_file, gpus) as source:
            await eventually(lambda: len(api.watches) == 1, "the watch")
            gpus.gpus[("llm", "late")] = ("GPU-7",)
            api.add(make_pod("late", "10.244.0.30"))
            # gpu_refresh_s is 60 s: only the new pod's unknown GPUs can trigger this lookup.
            await eventually(lambda: ids(source) == ["llm/late"] and get(source, "llm/late").gpus == ("GPU-7",), "GPUs")

    run(scenario)


def test_group_workers_get_their_gpus_and_stay_apart_from_instances(token_file: Path) -> None:
    api = FakeKubeApi()
    lws = {"app": "vllm", "leaderworkerset.sigs.k8s.io/name": "big", "leaderworkerset.sigs.k8s.io/group-index": "0"}
    worker_pod = api.add(
        make_pod("big-0-1", "10.244.0.20", labels={**lws, "leaderworkerset.sigs.k8s.io/worker-index": "1"})
    )
    api.add(make_pod("a", "10.244.0.10"))
    gpus = FakeGpus({("llm", "big-0-1"): ("GPU-5", "GPU-6"), ("llm", "a"): ("GPU-1",)})

    async def scenario() -> None:
        async with serving(api), watching(api, token_file, gpus) as source:
            await eventually(lambda: bool(source.current().workers and source.current().workers[0].gpus), "GPUs")
            assert ids(source) == ["llm/a"]
            (worker,) = source.current().workers
            assert (worker.id, worker.group, worker.gpus) == ("llm/big-0-1", "llm/big-0", ("GPU-5", "GPU-6"))
            api.delete(worker_pod["metadata"]["uid"])
            await eventually(lambda: not source.current().workers, "the worker's deletion")

    run(scenario)
