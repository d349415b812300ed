"""Lint, import rules and types, run as tests so that ``python -m pytest`` (and so ``.ci/run``)
enforces them. Their configuration is in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``,
``[tool.importlinter]``); the tools come with ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (or on PATH)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install -e '.[test]'")
    return found


def test_ruff_finds_nothing() -> None:
    done = run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."], 120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    """detector imports none of our packages; worker never imports the CLI; dicom_node imports
    worker and migrations only from its CLI, and only the CLI imports the CLI."""
    done = run([tool("lint-imports"), "--no-cache"], 120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_import_contracts_of_issue_13_are_configured() -> None:
    contracts = {c["name"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
    pure = [c for c in contracts.values() if c.get("source_modules") == ["detector"]]
    assert pure and set(pure[0]["forbidden_modules"]) == {"dicom_node", "worker", "migrations"}
    no_cli = [c for c in contracts.values() if c.get("source_modules") == ["worker"]]
    assert no_cli and no_cli[0]["forbidden_modules"] == ["dicom_node.cli"]
    node = [c for c in contracts.values() if c.get("source_modules") == ["dicom_node"]]
    assert node and set(node[0]["forbidden_modules"]) == {"worker", "migrations"}
    # Only the CLI's imports are exempt: no other edge is waved through.
    assert all(i.startswith("dicom_node.cli.** -> ") for i in node[0]["ignore_imports"])
    protected = [c for c in contracts.values() if c["type"] == "protected"]
    assert protected and protected[0]["protected_modules"] == ["dicom_node.cli"]


@pytest.mark.slow
def test_mypy_finds_nothing() -> None:
    """detector/ and the typed configuration (dicom_node/rules, dicom_node/kinds.py)."""
    done = run([sys.executable, "-m", "mypy"], 500)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(PYPROJECT["tool"]["mypy"]["files"]) >= {"detector", "dicom_node/rules"}
