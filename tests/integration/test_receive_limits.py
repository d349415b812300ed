"""Issue 12 items 4 and 5: what a peer can make the node hold, over loopback.

Raw sockets play the misbehaving peers (a huge declared PDU, a sender that trickles bytes);
pynetdicom plays the well-behaved ones (and sends the oversized and forged instances).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.sop_class import MRImageStorage, Verification
from pynetdicom.transport import AssociationSocket
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.models import QuarantineRecord
from dicom_node.config import Settings
from dicom_node.loopback import wait_for
from dicom_node.node import Node
from tests.factories import make_mr_series, make_size_bomb
from tests.integration.receiving import rejected_association, running_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

A_ASSOCIATE_RQ, A_ASSOCIATE_RJ, P_DATA_TF, A_ABORT = 0x01, 0x03, 0x04, 0x07


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def answer(sock: socket.socket, within: float) -> bytes:
    """What the node sends back until it closes the connection (at most ``within`` s)."""
    sock.settimeout(within)
    received = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received + b"<still open>"


def associated(node: Node, *contexts: tuple[str, str]) -> PynetdicomAssociation:
    """An established association to ``node``: Verification and ``contexts`` requested."""
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.connection_timeout = 5
    ae.add_requested_context(Verification)
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
    assert assoc.is_established
    return assoc


def dul_socket(assoc: PynetdicomAssociation) -> AssociationSocket:
    """The association's socket, to send what pynetdicom would not."""
    sock = assoc.dul.socket
    assert sock is not None
    return sock


def ends_soon(assoc: PynetdicomAssociation, act: Callable[[], None], within: float) -> float:
    """Call ``act`` every 0.3 s until the node ends the association; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if assoc.is_aborted or not assoc.is_alive():
            return time.monotonic() - started
        try:
            act()
        except (OSError, RuntimeError, AttributeError):
            pass  # the node closed the connection under us
        time.sleep(0.3)
    raise AssertionError(f"the association was still open after {within} s")


# --- item 4: before authentication ---------------------------------------------------------
def test_source_address_is_refused_at_accept_before_any_pdu_is_read(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, allowed_ips=["192.0.2.10"]) as node:
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            # A request that declares 2 GiB and never sends them: the node must not wait for it.
            sock.sendall(pdu_header(A_ASSOCIATE_RQ, 0x7FFF_FFFF) + b"\x00\x01\x00\x00")
            reply = answer(sock, within=3)
        assert reply[:1] == bytes([A_ASSOCIATE_RJ]), reply[:20]
        assert not reply.endswith(b"<still open>")
        rejected = rejected_association(node, session_factory)
        assert rejected is not None and rejected.address == "127.0.0.1"
        assert "allow-list" in (rejected.reason or "")


def test_an_association_request_longer_than_the_limit_is_cut_at_once(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory) as node:
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            sock.sendall(pdu_header(A_ASSOCIATE_RQ, 1 << 30) + b"\x00\x01\x00\x00")
            reply = answer(sock, within=3)
        assert not reply.endswith(b"<still open>")
        assert reply in (b"", pdu_header(A_ABORT, 4) + b"\x00\x00\x02\x00") or reply[:1] == bytes([A_ABORT])


def test_max_pdu_is_announced_and_a_longer_pdu_aborts(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, max_pdu=16384) as node:
        assoc = associated(node)
        assert assoc.acceptor.maximum_length == 16384  # announced (was 0: unlimited)
        assert assoc.send_c_echo().Status == statuses.SUCCESS
        sock = dul_socket(assoc)
        # A P-DATA-TF declaring 1 GiB, more than announced: aborted without reading it.
        sock.send(pdu_header(P_DATA_TF, 1 << 30) + b"\x00" * 16)
        wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=5)


# --- item 4: trickling and endless associations ---------------------------------------------
def test_a_sender_trickling_a_pdu_is_cut_after_the_network_timeout(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, network_timeout=1.0) as node:
        assoc = associated(node)
        raw = dul_socket(assoc).socket
        assert raw is not None
        raw.sendall(pdu_header(P_DATA_TF, 200))  # then one byte every 0.3 s, never idle
        took = ends_soon(assoc, lambda: raw.sendall(b"\x00"), within=8)
        assert took < 5


def test_an_association_is_aborted_after_its_time_limit_however_busy(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, association_time_limit=2.0) as node:
        assoc = associated(node)
        took = ends_soon(assoc, assoc.send_c_echo, within=10)  # a C-ECHO every 0.3 s
        assert 1.5 < took < 6


# --- item 4: per instance -------------------------------------------------------------------
def test_an_instance_over_max_instance_bytes_is_refused_and_the_association_goes_on(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, max_instance_bytes=100_000, max_pdu=16384) as node:
        big = make_mr_series(1, 256, 256)[0]  # 128 KiB of pixels
        small = make_mr_series(1, 64, 64)[0]
        assoc = associated(node, (MRImageStorage, ExplicitVRLittleEndian))
        refused = assoc.send_c_store(big)
        assert refused.Status != statuses.SUCCESS, "accepted"
        assert refused.Status == statuses.INSTANCE_TOO_LARGE
        assert "MEDDET_MAX_INSTANCE_BYTES" in refused.ErrorComment
        assert assoc.send_c_store(small).Status == statuses.SUCCESS
        assoc.release()
        assert [p.stem for p in node.spool.iter_files()] == [str(small.SOPInstanceUID)]


def deflate_bomb() -> Dataset:
    """32 MiB of zero pixels: ~32 KiB deflated, 32 MiB inflated."""
    ds = make_mr_series(1, 8, 8)[0]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.Rows = ds.Columns = 4096
    ds.PixelData = np.zeros((4096, 4096), np.uint16).tobytes()
    return ds


def test_a_deflated_instance_that_inflates_beyond_the_limit_is_refused(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, max_instance_bytes=1 << 20) as node:
        assoc = associated(node, (MRImageStorage, DeflatedExplicitVRLittleEndian))
        status = assoc.send_c_store(deflate_bomb()).Status
        assoc.release()
        assert status != statuses.SUCCESS, "accepted"
        assert status == statuses.INSTANCE_TOO_LARGE
        assert node.spool.iter_files() == []


# --- item 5: image-size bombs ---------------------------------------------------------------
def test_a_tiny_instance_declaring_a_huge_image_is_quarantined_with_the_reason(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory) as node:
        bomb = make_size_bomb()  # 65535 x 65535 x 10000 frames in ~1 KB
        assoc = associated(node, (MRImageStorage, RLELossless))
        status = assoc.send_c_store(bomb).Status
        assoc.release()
        assert status != statuses.SUCCESS, "accepted"
        assert status == statuses.INSTANCE_TOO_LARGE
        assert node.spool.iter_files() == []
        node.recorder.flush()
        with session_factory() as session:
            record = session.scalar(select(QuarantineRecord))
        assert record is not None and "MEDDET_MAX_PIXELS" in record.reason
        assert "65535 x 65535 x 10000" in record.reason


def test_an_endless_dimse_command_set_aborts(node_settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_node(node_settings, session_factory, max_pdu=16384) as node:
        assoc = associated(node)
        sock = dul_socket(assoc)
        context_id = assoc.accepted_contexts[0].context_id
        fragment = b"\x01" + b"\x00" * 16000  # command, not the last fragment
        pdv = struct.pack(">LB", len(fragment) + 1, context_id) + fragment
        pdu = pdu_header(P_DATA_TF, len(pdv)) + pdv  # each within max_pdu, never a whole command

        def send_fragment() -> None:
            sock.send(pdu)

        took = ends_soon(assoc, send_fragment, within=10)  # 16 KB every 0.3 s
        assert took < 3
