"""Native histograms through a real Prometheus 2.42 (Debian's) with --enable-feature=native-histograms: it asks for
the protobuf exposition, stores each per-tenant latency histogram as one native series, and its quantiles agree
with the classic per-model histogram within the bucket error (and with the truth of what was sent)."""

from __future__ import annotations

import bisect
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.metrics import catalog
from exporter.sim.promstack import PROMETHEUS, find_binary
from tests.support.otlp import fresh, request_of, sample_request_spans, with_attribute
from tests.support.procs import ExporterProcess, free_port, wait_for
from tests.support.prom import total

pytestmark = pytest.mark.skipif(find_binary(PROMETHEUS) is None, reason="prometheus is not on the PATH")
TENANTS = 4
SPANS = 2000
NATIVE_RELATIVE_ERROR = 0.09  # a schema-3 bucket spans 2^(1/8) - 1 = 9 %


@pytest.fixture(scope="module")
def sent() -> Iterator[tuple[ExporterProcess, list[float]]]:
    """An exporter that has counted SPANS requests of one model and TENANTS tenants, and their TTFTs."""
    rng = random.Random(7)
    template = sample_request_spans()[0]
    ttfts = [rng.lognormvariate(-0.5, 0.6) for _ in range(SPANS)]
    spans = [
        with_attribute(
            with_attribute(fresh(template, rng), "gen_ai.latency.time_to_first_token", v),
            "tenant.id",
            f"t{i % TENANTS}",
        )
        for i, v in enumerate(ttfts)
    ]
    settings = {"gpu_enabled": "false", "topology_mode": "static", "tenant_join_window_seconds": "0"}
    with ExporterProcess(settings=settings) as exporter:
        for start in range(0, SPANS, 500):
            body = request_of(spans[start : start + 500]).SerializeToString()
            headers = {"Content-Type": "application/x-protobuf"}
            httpx.post(exporter.otlp_http_url, content=body, headers=headers, timeout=10).raise_for_status()
        wait_for(lambda: total(exporter.scrape(), catalog.REQUESTS.name) == SPANS, 20, "every request counted")
        yield exporter, ttfts


@pytest.fixture(scope="module")
def prometheus(sent: tuple[ExporterProcess, list[float]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus with native histograms and exemplars on, scraping the exporter every second."""
    exporter, _ = sent
    work: Path = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "llm", "static_configs": [{"targets": [f"127.0.0.1:{exporter.web_port}"]}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    binary = find_binary(PROMETHEUS)
    assert binary is not None
    args = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=native-histograms,exemplar-storage",
        "--log.level=warn",
    ]
    with (work / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: query(base, f"count({catalog.REQUESTS.name})") != [], 30, "a scrape of the exporter")
        yield base
    finally:
        process.terminate()
        process.wait(20)


def query(base: str, expr: str) -> list[Any]:
    """The result vector of an instant query ([] on no data or when Prometheus is not up yet)."""
    try:
        result: list[Any] = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()["data"][
            "result"
        ]
    except (httpx.HTTPError, KeyError, ValueError):
        return []
    return result


def value(base: str, expr: str) -> float:
    [sample] = query(base, expr)
    return float(sample["value"][1])


def test_each_per_tenant_histogram_is_one_native_series(prometheus: str) -> None:
    assert value(prometheus, f"count({catalog.TENANT_TTFT.name})") == TENANTS
    assert query(prometheus, f"{catalog.TENANT_TTFT.name}_bucket") == []  # no classic buckets stored
    assert value(prometheus, f"histogram_count(sum({catalog.TENANT_TTFT.name}))") == SPANS
    # The per-model histogram stays classic, so the SLO rules' le matchers keep working.
    assert value(prometheus, f'sum({catalog.TTFT.name}_bucket{{le="1.0"}})') > 0


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_native_quantiles_agree_with_the_classic_ones_within_the_bucket_error(
    sent: tuple[ExporterProcess, list[float]], prometheus: str, q: float
) -> None:
    _, ttfts = sent
    truth = sorted(ttfts)[int(q * len(ttfts))]
    native = value(prometheus, f"histogram_quantile({q}, sum by (model) ({catalog.TENANT_TTFT.name}))")
    classic = value(prometheus, f"histogram_quantile({q}, sum by (le, model) ({catalog.TTFT.name}_bucket))")
    edges = catalog.TTFT.default_buckets
    i = bisect.bisect_left(edges, truth)
    low, high = (edges[i - 1] if i else 0.0), edges[i]  # the classic bucket that holds the truth
    assert low <= classic <= high
    assert abs(native - truth) <= NATIVE_RELATIVE_ERROR * truth
    assert abs(native - classic) <= (high - low) + NATIVE_RELATIVE_ERROR * truth


def test_exemplars_are_kept_on_the_native_series(prometheus: str) -> None:
    params: dict[str, str | float] = {"query": catalog.TENANT_TTFT.name, "start": 0, "end": 4e9}
    found = httpx.get(f"{prometheus}/api/v1/query_exemplars", params=params, timeout=5).json()["data"]
    assert found and all("trace_id" in e["labels"] for series in found for e in series["exemplars"])


def test_a_text_scraper_still_gets_the_classic_tenant_buckets(sent: tuple[ExporterProcess, list[float]]) -> None:
    exporter, _ = sent
    text = exporter.scrape()
    assert total(text, f"{catalog.TENANT_TTFT.name}_count") == SPANS
    assert total(text, f"{catalog.TENANT_TTFT.name}_bucket", {"le": "1.0"}) > 0
