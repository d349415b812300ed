"""Connections that close without a valid A-ASSOCIATE-RQ must not hold association slots.

Found by the fault suite's PDU fuzz (benchmarks/faults.py, 100 examples): each such connection
stays counted as an active association until MEDDET_ACSE_TIMEOUT (30 s) although the peer has
gone, so ``max_associations`` of them within 30 s make the node refuse every sender ("too many
concurrent associations"). Fixed in ``EventDrivenDUL.receive_pdu`` (dicom_node/reactor_dul.py):
the wait for the request ends as soon as the DUL has stopped.
"""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from tests.integration.receiving import running_node

pytestmark = pytest.mark.integration


def garbage_connection(port: int, data: bytes) -> None:
    """Connect, send ``data``, close our side, wait for the node to close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def test_closed_garbage_connections_free_their_association_slots(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from benchmarks.faultsuite.fuzz import echo

    with running_node(node_settings, session_factory, max_associations=2) as node:
        for _ in range(3):
            garbage_connection(node.port, b"\x13\x37 not a PDU " * 4)
        deadline = time.monotonic() + 3
        answered = echo(node.port)
        while not answered and time.monotonic() < deadline:
            time.sleep(0.2)
            answered = echo(node.port)
    assert answered, "the node refused associations after 3 closed garbage connections"
