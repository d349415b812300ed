"""Shared fixtures: free ports, dcmtk tools, audit databases, an in-process node."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.config import Settings
from migrations import upgrade

POSTGRES_ADMIN_URL = os.environ.get("MEDDET_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    name = f"meddet_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
