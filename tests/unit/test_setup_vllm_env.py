"""scripts/setup-vllm-env with a stub Python whose `pip install` is slow: two runs at once take turns and build once,
a failed build leaves nothing behind, and the environment appears under its name only when it is whole."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import harness_env
from tests.support.procs import REPO

SCRIPT = REPO / "scripts" / "setup-vllm-env"

# A stand-in for python3.11 and for the environment's python. `-m venv DIR` makes DIR/bin/python (this script) and a
# DIR/bin/pip whose shebang names DIR, as pip's would; `-m pip install` takes STUB_SECONDS, logs its start and end
# in STUB_LOG, and writes fake torch and vllm modules (or fails when STUB_FAIL is set); anything else runs the real
# interpreter with those modules on its path, so `import vllm` works in a finished environment only.
STUB = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    set -euo pipefail
    root="$(cd "$(dirname "$0")/.." && pwd)"
    if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
      mkdir -p "$3/bin" "$3/site"
      cp "$0" "$3/bin/python"
      printf '#!%s/bin/python\\n# pip\\n' "$3" > "$3/bin/pip"
      exit 0
    fi
    if [ "${1:-}" = -m ] && [ "${2:-}" = pip ] && [ "${3:-}" = install ]; then
      echo "start $$ $root" >> "$STUB_LOG"
      sleep "$STUB_SECONDS"
      if [ -n "${STUB_FAIL:-}" ]; then echo "fail $$" >> "$STUB_LOG"; exit 1; fi
      echo "__version__ = 'stub'" > "$root/site/torch.py"
      echo "__version__ = 'stub'" > "$root/site/vllm.py"
      echo "end $$" >> "$STUB_LOG"
      exit 0
    fi
    if [ "${1:-}" = -m ] && [ "${2:-}" = pip ]; then exit 0; fi
    PYTHONPATH="$root/site" exec "$REAL_PYTHON" "$@"
    """
)


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    """The environment a run of the script gets: the stub as PYTHON, its log, the real interpreter."""
    path = tmp_path / "stub-python"
    path.write_text(STUB)
    path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(harness_env.PREFIX)}
    env.pop("LLM_TOKEN_EXPORTER_VLLM_VENV", None)
    env.update(PYTHON=str(path), STUB_LOG=str(tmp_path / "stub.log"), STUB_SECONDS="2", REAL_PYTHON=sys.executable)
    return env


def log_lines(env: dict[str, str]) -> list[list[str]]:
    """The stub's log, split into words."""
    path = Path(env["STUB_LOG"])
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def leftovers(venv: Path) -> list[str]:
    """What the script left beside the environment, other than the environment and its lock."""
    return sorted(p.name for p in venv.parent.iterdir() if p.name not in (venv.name, f"{venv.name}.lock"))


def test_two_runs_at_once_take_turns_build_once_and_share_the_environment(tmp_path: Path, stub: dict[str, str]) -> None:
    venv = tmp_path / "cache" / "vllm-venv"
    first = subprocess.Popen([str(SCRIPT), str(venv)], env=stub, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the first one holds the lock and builds
    second = subprocess.Popen([str(SCRIPT), str(venv)], env=stub, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert not venv.exists()  # still being built elsewhere: nothing half-built under its name
    out1, _ = first.communicate(timeout=60)
    out2, _ = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (out1, out2)
    assert "waiting for it" in out2 and f"vLLM environment ready at {venv}" in out2
    log = log_lines(stub)
    assert [line[0] for line in log] == ["start", "end"]  # one build, the second run reused it
    built_in = Path(log[0][2])
    assert built_in.parent == venv.parent and built_in.name.startswith("vllm-venv.build-")
    assert (venv / ".ready").exists() and (venv / "site" / "vllm.py").exists()
    assert (venv / "bin" / "pip").read_text().startswith(f"#!{venv}/bin/python\n")  # the final place, not the build's
    assert leftovers(venv) == []


def test_a_failed_build_leaves_nothing_and_a_stale_half_built_environment_is_replaced(
    tmp_path: Path, stub: dict[str, str]
) -> None:
    venv = tmp_path / "cache" / "vllm-venv"
    stale = venv / "bin"
    stale.mkdir(parents=True)  # an older script's half-built environment: no .ready
    failed = subprocess.run(
        [str(SCRIPT), str(venv)], env={**stub, "STUB_FAIL": "1"}, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode != 0
    assert leftovers(venv) == [] and not (venv / ".ready").exists()  # the build folder is gone
    done = subprocess.run([str(SCRIPT), str(venv)], env=stub, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (venv / ".ready").exists() and leftovers(venv) == []
    again = subprocess.run([str(SCRIPT), str(venv)], env=stub, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "ready at" in again.stdout
    assert [line[0] for line in log_lines(stub)] == ["start", "fail", "start", "end"]  # ready: not built again


def test_the_documented_variables_choose_the_environment_and_the_old_name_is_refused(
    tmp_path: Path, stub: dict[str, str]
) -> None:
    chosen = tmp_path / "chosen"
    run = subprocess.run(
        [str(SCRIPT)], env={**stub, harness_env.VLLM_VENV: str(chosen)}, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and (chosen / ".ready").exists(), run.stderr
    cache = tmp_path / "cache"
    run = subprocess.run(
        [str(SCRIPT)], env={**stub, harness_env.CACHE: str(cache)}, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and (cache / "vllm-0.32-venv" / ".ready").exists(), run.stderr
    old = subprocess.run(
        [str(SCRIPT)],
        env={**stub, "LLM_TOKEN_EXPORTER_VLLM_VENV": str(chosen)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert old.returncode == 2 and harness_env.VLLM_VENV in old.stderr
