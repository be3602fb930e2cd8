"""The harness's environment variables stay out of the exporter's reserved prefix, do what README.md says, and the
old names stop a run with the new name instead of failing every exporter the tests start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from exporter.service.settings import ENV_PREFIX, Settings, env_of
from tests.support import harness_env
from tests.support.procs import REPO

SETTING_VARS = {env_of(name) for name in Settings.model_fields}
# Reads of an environment variable: Python's os.environ / os.getenv, the shell's ${NAME...}.
READS = re.compile(
    r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z0-9_]+)["']|getenv\(\s*["']([A-Z0-9_]+)["']|\$\{([A-Z0-9_]+)"""
)
HARNESS_FILES = [
    *sorted((REPO / "tests").rglob("*.py")),
    *sorted((REPO / "benchmarks").rglob("*.py")),
    *sorted(p for p in (REPO / "scripts").iterdir() if p.is_file()),
    REPO / "Makefile",
    REPO / ".ci" / "run",
]
# Where an old name is read only to refuse it, naming the new one.
REFUSALS = {("scripts/setup-vllm-env", "LLM_TOKEN_EXPORTER_VLLM_VENV")}


def test_no_harness_variable_is_read_under_the_exporters_prefix() -> None:
    offenders = []
    for path in HARNESS_FILES:
        for match in READS.finditer(path.read_text(errors="replace")):
            name = next(group for group in match.groups() if group)
            where = path.relative_to(REPO).as_posix()
            # A setting's own variable is the exporter's to read.
            if name.startswith(ENV_PREFIX) and name not in SETTING_VARS and (where, name) not in REFUSALS:
                offenders.append(f"{where}: {name}")
    assert offenders == []


def test_readme_documents_the_new_names_and_not_the_old() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"{harness_env.VLLM_VENV}=DIR make test" in readme
    for name in (harness_env.CACHE, harness_env.FUZZ_EXAMPLES, harness_env.FUZZ_CORPUS_SCALE, harness_env.FUZZ_SEED):
        assert name in readme, name
    for old in harness_env.RENAMED:
        assert old not in readme, old


PROBE = """
import json
from exporter.service.settings import load_settings
from tests.support.vllm import server
load_settings()  # the exporter's settings, in the same environment: the harness's variables are not refused
print(json.dumps({"venv": str(server.VENV), "model": str(server.MODEL_DIR)}))
"""


def probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The vLLM launcher's paths as a fresh interpreter sees them under `env` (the caller's, cleaned, plus it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, harness_env.PREFIX))}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_documented_override_moves_the_vllm_environment_and_the_exporter_accepts_it(tmp_path: Path) -> None:
    run = probe({harness_env.VLLM_VENV: str(tmp_path / "venv")})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["venv"] == str(tmp_path / "venv")
    run = probe({harness_env.CACHE: str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "venv": str(tmp_path / "cache" / "vllm-0.32-venv"),
        "model": str(tmp_path / "cache" / "tiny-model"),
    }
    refused = probe({"LLM_TOKEN_EXPORTER_VLLM_VENV": str(tmp_path / "venv")})  # the exporter still refuses it
    assert refused.returncode != 0 and "LLM_TOKEN_EXPORTER_VLLM_VENV: not a known setting" in refused.stderr


def test_an_old_name_stops_pytest_at_once_naming_the_new_one(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, harness_env.PREFIX))}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "tests/unit/test_support.py",
        ],
        cwd=REPO,
        env={**base, "LLM_TOKEN_EXPORTER_FUZZ_SEED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert f"LLM_TOKEN_EXPORTER_FUZZ_SEED is now {harness_env.FUZZ_SEED}" in run.stderr + run.stdout
