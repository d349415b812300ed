"""Shared fixtures: dcmtk tools, audit databases, node settings, a test PACS (the loopback parts
themselves, free ports, waits, subprocesses, are dicom_node/loopback.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.config import Settings
from dicom_node.loopback import TestPACS
from migrations import upgrade
from tests.integration.orthanc_netns import NetNamespace, namespace_or_skip
from tests.worker.support import claimed_redis_db, fresh_postgres_database


def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool from Debian (a pip package shadows some names on PATH)."""
    path = Path("/usr/bin") / tool
    if not path.exists():
        pytest.fail(f"dcmtk's {tool} is missing: apt-get install dcmtk (.ci/run does)")
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """dcmtk from Debian does not set TCP_NODELAY unless told: without it, Nagle stalls it."""
    return dict(os.environ, TCP_NODELAY="1")


def storescu(port: int, files: list[Path], *extra: str, aet: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-aet", aet, "-aec", "MEDDET", *extra, "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scp() -> Iterator[TestPACS]:
    """A test PACS on loopback (AE DEST), results kept in memory."""
    server = TestPACS(ae_title="DEST").start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> Iterator[NetNamespace]:
    """A network namespace holding only loopback, for Orthanc (skipped where none can be made)."""
    with namespace_or_skip() as ns:
        yield ns


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (MEDDET_TEST_POSTGRES, else 127.0.0.1:5432), dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A database of the shared Redis at 127.0.0.1:6379, held for this test and flushed after."""
    with claimed_redis_db() as url:
        yield url


@pytest.fixture
def session_factory(sqlite_url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(sqlite_url))


@pytest.fixture
def node_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        port=0,
        quiet_period=1.0,
        # A broker nobody listens on: jobs stay queued, which is what receive tests check.
        broker_url="redis://127.0.0.1:1/0",
    )


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/bin", name).exists()
