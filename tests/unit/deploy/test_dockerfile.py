"""The exporter's Dockerfile (no container engine here, so it is parsed, not built): multi-stage, pinned slim base,
non-root numeric user, nothing written at run time, no compilers in the final image."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.support.procs import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE = "python:3.11-slim-bookworm"
COMPILERS = ("gcc", "g++", "cc", "clang", "make", "build-essential", "cmake", "gfortran", "rustc", "cargo", "go")
PACKAGE_INSTALLERS = re.compile(r"\b(apt-get|apt|apk|yum|dnf|microdnf)\s+(-\S+\s+)*install\b")


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword and its argument text (continuations joined)."""

    keyword: str
    args: str


@dataclass
class Stage:
    """A build stage: its FROM image, its name, its instructions."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every instruction with this keyword."""
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    """Instructions grouped by stage: comments dropped, backslash continuations joined, parser directives skipped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        assert stages, f"{keyword} before any FROM"
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    """The parsed Dockerfile."""
    return parse(DOCKERFILE.read_text())


def env_of(stage: Stage) -> dict[str, str]:
    """ENV settings of a stage (KEY=VALUE form)."""
    out: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"use ENV KEY=VALUE, not {args!r}"
            out[key] = value
    return out


def test_multi_stage_build_on_a_pinned_slim_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a builder stage and a final stage"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        _repo, sep, tag = stage.image.partition(":")
        assert sep and tag, f"{stage.image}: pin the base image by tag (or digest)"
        assert tag.split("@")[0] not in ("latest", "3", "slim"), f"{stage.image}: a moving tag"
        assert stage.image.split("@")[0] == BASE, stage.image
    final = stages[-1]
    assert "slim" in final.image
    assert "digest" in DOCKERFILE.read_text(), "say that production should pin the digest"


def test_wheel_built_in_builder_and_installed_from_it(stages: list[Stage]) -> None:
    builder, final = stages[0], stages[-1]
    assert builder.name, "the builder stage is named"
    assert any("pip wheel" in run for run in builder.all("RUN"))
    install = [run for run in final.all("RUN") if "pip install" in run]
    assert install, "the final stage installs the wheel"
    assert all("--no-index" in run for run in install), "install only the builder's wheels"
    assert all(f"from={builder.name}" in run or f"--from={builder.name}" in run for run in install)
    copied = [c for s in stages for c in s.all("COPY") if "--from" not in c]
    for copy in copied:
        *sources, _dest = shlex.split(copy)
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} is not in the repository"


def test_no_compilers_in_the_final_stage(stages: list[Stage]) -> None:
    final = stages[-1]
    for run in final.all("RUN"):
        assert not PACKAGE_INSTALLERS.search(run), f"the final stage installs system packages: {run}"
        words = set(re.split(r"[\s;&|]+", run))
        assert not words & set(COMPILERS), f"a compiler or build tool in the final stage: {run}"
    assert "slim" in final.image, "the slim base ships no compiler"
    # pip and setuptools are removed once the wheel is installed.
    assert any("pip uninstall" in run and "setuptools" in run for run in final.all("RUN"))


def test_runs_as_a_non_root_numeric_user(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric, non-zero uid (runAsNonRoot can check it)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    order = [i.keyword for i in final.instructions]
    assert order.index("ENTRYPOINT") > max(i for i, k in enumerate(order) if k == "USER")
    assert "RUN" not in order[order.index("USER") :], "nothing runs as root after USER"


def test_read_only_root_filesystem_friendly(stages: list[Stage]) -> None:
    env = env_of(stages[-1])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert not stages[-1].all("VOLUME"), "no anonymous volumes"


def test_entrypoint_and_ports(stages: list[Stage]) -> None:
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["llm-token-exporter", "serve"], "exec form, so signals reach the exporter"
    exposed = {p for args in final.all("EXPOSE") for p in args.split()}
    assert exposed == {"9842", "4317", "4318"}
    assert not final.all("CMD")


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert lines[0] == "*", "ignore everything, then allow what the image is built from"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "exporter"}


def test_parser_reads_continuations_and_stages() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM a:1 AS b\nRUN x \\\n  # note\n  && y\nFROM a:1\nUSER 1:1\n"
    parsed = parse(text)
    assert [(s.image, s.name) for s in parsed] == [("a:1", "b"), ("a:1", None)]
    assert parsed[0].all("RUN") == ["x && y"]
