"""Fixtures of the integration tests: an in-process node, a loopback-only network namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from dicom_node.node import Node
from tests.integration.receiving import running_node


@pytest.fixture
def node(node_settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Node]:
    """The receive node in this process on a free loopback port (jobs stay queued)."""
    with running_node(node_settings, session_factory) as running:
        yield running
