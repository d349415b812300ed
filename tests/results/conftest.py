"""Fixtures for result-object and sender tests: sources, dciodvfy, a real dcmtk storescp."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.loopback import accepts, free_port, wait_for
from tests.results.make_sources import findings_for, mr_series

STORESCP = "/usr/bin/storescp"


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dicom3tools' dciodvfy on one file."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60)
    lines = (proc.stdout + proc.stderr).decode("latin-1").splitlines()
    errors = [line for line in lines if line.startswith(("Error", "Abort"))]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid(path: Path) -> list[str]:
    """Fail on any dciodvfy error; return the warnings (allowed, reported by the test)."""
    errors, warnings = dciodvfy(path)
    assert not errors, f"{path.name}: {errors}"
    return warnings


@pytest.fixture
def sources():
    return mr_series()


@pytest.fixture
def findings(sources):
    return findings_for(sources)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A dcmtk storescp (AE PACS) on a free loopback port; yields (port, folder)."""
    out = tmp_path / "received"
    out.mkdir()
    env = {**os.environ, "TCP_NODELAY": "1"}
    for _ in range(5):  # a free port can be taken before storescp binds it: try another
        port = free_port()
        # dcmtk 3.6.7's storescp has no bind option; we only ever connect over loopback.
        proc = subprocess.Popen(
            [STORESCP, "-aet", "PACS", "-od", str(out), str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_listening(port, proc):
            break
    else:
        raise RuntimeError("storescp did not start on any of 5 free ports")
    try:
        yield port, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """True once ``proc`` accepts connections on ``port``; False (``proc`` ended) if it exits first."""
    try:
        wait_for(lambda: proc.poll() is not None or accepts(port), timeout, "storescp", interval=0.05)
    except TimeoutError:
        pass
    if proc.poll() is None and accepts(port):
        return True
    proc.kill()
    proc.wait(timeout=10)
    return False
