"""deploy/systemd: units verified by `systemd-analyze verify`, hardening present."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED_MEDDET = "/opt/meddet/venv/bin/meddet"
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}


def _parse(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)  # repeated keys are valid
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_node_and_worker_units_exist() -> None:
    assert {p.name for p in UNITS} == {"meddet-node.service", "meddet-worker@.service"}


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened_and_runs_meddet_unprivileged(path: Path, setting_env_names: set[str]) -> None:
    service = _parse(path)["Service"]
    assert service["User"] == "meddet"
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["CapabilityBoundingSet"] == ""
    assert service["ExecStart"].startswith(f"{INSTALLED_MEDDET} --config /etc/meddet/meddet.toml ")
    for line in path.read_text().splitlines():
        if line.startswith("Environment=MEDDET_"):
            assert line.split("=")[1] in setting_env_names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """Verify copies whose ExecStart points at the `meddet` installed here (verify checks it)."""
    meddet = shutil.which("meddet")
    assert meddet, "the project is not installed (`meddet` not on PATH)"
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_MEDDET, meddet))
    names = [str(tmp_path / "meddet-node.service"), str(tmp_path / "meddet-worker@0.service")]
    result = subprocess.run(
        ["systemd-analyze", "verify", *names],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_LEVEL": "notice"},
    )
    ours = [line for line in result.stderr.splitlines() if "meddet" in line]
    assert result.returncode == 0 and ours == [], result.stderr
