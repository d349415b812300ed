from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.worker.support import RedisServer, migrated_sessions


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    """A migrated SQLite audit DB in the test's folder."""
    return migrated_sessions(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of our own (free port) that the test may stop and start."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
