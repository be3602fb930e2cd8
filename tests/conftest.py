"""Shared test setup: tiers marked by folder, and no exporter settings leaking in from the caller's environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.service.settings import ENV_PREFIX
from tests.support.harness_env import renamed_in

# tests/integration: the exporter over real sockets or as a process (and a real vLLM server);
# tests/e2e: with a real Prometheus and Alertmanager, or a stress run. `make unit` leaves both out.
TIER_OF_FOLDER = {"integration": "integration", "e2e": "e2e"}


def pytest_configure(config: pytest.Config) -> None:
    """Stop at once on a harness variable's old name: under the exporter's prefix, every exporter would refuse it."""
    renamed = renamed_in(dict(os.environ))
    if renamed:
        raise pytest.UsageError(
            "; ".join(renamed) + f" (the exporter refuses unknown {ENV_PREFIX}* variables): rename it and run again"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the tier of the folder it lives in."""
    tests = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        tier = TIER_OF_FOLDER.get(parts[0]) if parts else None
        if tier is not None:
            item.add_marker(tier)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No LLM_TOKEN_EXPORTER_* variables from the caller's environment (settings built in this process)."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    yield
