"""Shared paths and helpers for the deploy-file tests (all offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicom_node.config import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def setting_env_names() -> set[str]:
    """Every valid ``MEDDET_*`` environment variable name."""
    return {f"MEDDET_{name.upper()}" for name in Settings.model_fields} | {"MEDDET_CONFIG"}


@pytest.fixture(scope="session")
def torch_version() -> str:
    """The torch pin of the install instructions (README and pyproject.toml must agree)."""
    versions = set()
    for doc in (REPO / "README.md", REPO / "pyproject.toml"):
        versions |= set(re.findall(r"pip install torch==([0-9][0-9.]*[0-9])", doc.read_text()))
    assert len(versions) == 1, f"README.md and pyproject.toml disagree on the torch pin: {versions}"
    return versions.pop()
