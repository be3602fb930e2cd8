"""The quick start's make targets pass what README.md says they pass (checked with `make -n`: nothing runs)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.procs import REPO

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="make not installed")


def demo_command(*variables: str) -> str:
    """The command `make demo VARIABLES...` would run last."""
    # Run from `make test` itself, the parent's MAKEFLAGS and MAKELEVEL would make this one print directories.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", "VENV=/nonexistent/venv", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return run.stdout.strip().splitlines()[-1]


def test_make_demo_passes_a_scenario_and_other_demo_flags_as_the_readme_says() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo SCENARIO=kv_exhaustion" in readme and "DEMO_ARGS='--scenario-at 30 --duration 300'" in readme
    assert demo_command().split() == ["/nonexistent/venv/bin/llm-token-exporter", "demo"]
    assert demo_command("SCENARIO=kv_exhaustion").endswith("llm-token-exporter demo --scenario kv_exhaustion")
    assert demo_command("SCENARIO=spike", "DEMO_ARGS=--scenario-at 30 --duration 300").endswith(
        "llm-token-exporter demo --scenario spike --scenario-at 30 --duration 300"
    )
