"""The Storage SCU against real peers on loopback: dcmtk storescp and pynetdicom SCPs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import MRImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SegmentationStorage,
)
from sqlalchemy import select

import migrations
from dicom_node import statuses
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import SendAttempt
from dicom_node.destinations import Destination
from dicom_node.loopback import free_port
from dicom_node.results import build_result_objects
from dicom_node.sender import requested_contexts, send_objects
from tests.results.make_sources import findings_for, mr_series

pytestmark = pytest.mark.integration


@pytest.fixture
def objects():
    sources = mr_series()
    return build_result_objects(findings_for(sources), sources, ("sr", "seg", "gsps"))


@pytest.fixture
def audit(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _rows(factory) -> list[SendAttempt]:
    with factory() as session:
        return list(session.scalars(select(SendAttempt).order_by(SendAttempt.id)))


@pytest.fixture
def pynetdicom_scp() -> Iterator[Callable[..., int]]:
    """Start pynetdicom Storage SCPs (AE PACS) on free loopback ports; shut them down after."""
    servers = []

    def start(sop_classes, handler) -> int:
        ae = AE(ae_title="PACS")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class)
        # Port 0: the kernel picks a free port at bind time (no race with other processes).
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def test_requested_contexts_are_exactly_what_is_sent(objects):
    contexts = requested_contexts([ds for _, ds in objects])
    assert set(contexts) == {ds.SOPClassUID for _, ds in objects}
    assert all(ts[0] == "1.2.840.10008.1.2.1" for ts in contexts.values())


def test_send_to_dcmtk_storescp(storescp, objects, audit):
    port, folder = storescp
    report = send_objects(
        objects,
        Destination.parse(f"PACS@127.0.0.1:{port}"),
        calling_ae="MEDDET",
        session_factory=audit,
        job_id=None,
    )
    assert report.ok and report.associations == 1, report.summary
    received = {pydicom.dcmread(p).SOPInstanceUID for p in folder.iterdir()}
    assert received == {ds.SOPInstanceUID for _, ds in objects}
    rows = _rows(audit)
    assert [(r.kind, r.outcome, r.status) for r in rows] == [
        ("sr", "success", 0),
        ("seg", "success", 0),
        ("gsps", "success", 0),
    ]
    assert {r.destination for r in rows} == {f"PACS@127.0.0.1:{port}"}


def test_destination_refusing_the_sop_class(pynetdicom_scp, objects, audit):
    stored = []

    def handler(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        return statuses.SUCCESS

    port = pynetdicom_scp([MRImageStorage], handler)
    mr = mr_series(1)[0]
    report = send_objects(
        [("source", mr), *objects],
        Destination(ae_title="PACS", host="127.0.0.1", port=port),
        calling_ae="MEDDET",
        session_factory=audit,
        retries=2,
        backoff=0.01,
    )
    assert not report.ok
    assert report.associations == 1  # a refusal is final: no retry
    outcomes = {o.kind: o for o in report.outcomes}
    assert outcomes["source"].outcome == "success" and stored == [mr.SOPInstanceUID]
    for kind in ("sr", "seg", "gsps"):
        assert outcomes[kind].outcome == "failure"
        assert outcomes[kind].status == statuses.SOP_CLASS_NOT_SUPPORTED
        assert "did not accept SOP class" in outcomes[kind].error
    assert Counter(r.outcome for r in _rows(audit)) == {"failure": 3, "success": 1}


def test_statuses_failure_final_warning_stored_out_of_resources_retried(pynetdicom_scp, objects, audit):
    calls: Counter[str] = Counter()

    def handler(event):
        sop_class = event.request.AffectedSOPClassUID
        calls[sop_class] += 1
        if sop_class == Comprehensive3DSRStorage:
            return statuses.CANNOT_UNDERSTAND
        if sop_class == GrayscaleSoftcopyPresentationStateStorage:
            return statuses.WARNING_ELEMENTS_DISCARDED
        return statuses.OUT_OF_RESOURCES if calls[sop_class] == 1 else statuses.SUCCESS

    port = pynetdicom_scp(
        [Comprehensive3DSRStorage, SegmentationStorage, GrayscaleSoftcopyPresentationStateStorage],
        handler,
    )
    report = send_objects(
        objects,
        Destination(ae_title="PACS", host="127.0.0.1", port=port),
        calling_ae="MEDDET",
        session_factory=audit,
        job_id=None,
        retries=3,
        backoff=0.01,
    )
    print(report, dict(calls))  # shown when the test fails
    outcomes = {o.kind: o for o in report.outcomes}
    assert (outcomes["sr"].outcome, outcomes["sr"].status) == ("failure", statuses.CANNOT_UNDERSTAND)
    assert outcomes["gsps"].outcome == "warning" and outcomes["gsps"].stored
    assert outcomes["seg"].outcome == "success"
    assert report.associations == 2 and not report.ok
    assert calls == {Comprehensive3DSRStorage: 1, GrayscaleSoftcopyPresentationStateStorage: 1, SegmentationStorage: 2}
    assert [(r.kind, r.outcome) for r in _rows(audit)] == [
        ("sr", "failure"),
        ("seg", "failure"),
        ("gsps", "warning"),
        ("seg", "success"),
    ]
    assert "sr failure" in report.summary


def test_destination_down_retries_then_records_failure(objects, audit):
    port = free_port()  # nothing listens there
    slept: list[float] = []
    report = send_objects(
        objects,
        Destination(ae_title="PACS", host="127.0.0.1", port=port),
        calling_ae="MEDDET",
        session_factory=audit,
        retries=2,
        backoff=0.5,
        sleep=slept.append,
    )
    assert not report.ok and report.associations == 3
    assert slept == [0.5, 1.0]  # exponential backoff
    assert all(o.outcome == "unreachable" for o in report.outcomes)
    rows = _rows(audit)
    assert len(rows) == 3 * len(objects)
    assert {r.outcome for r in rows} == {"unreachable"} and all(r.error for r in rows)


def test_sender_sockets_disable_nagle(pynetdicom_scp):
    import socket

    from dicom_node.sender import _nodelay

    port = pynetdicom_scp([MRImageStorage], lambda event: statuses.SUCCESS)
    ae = AE(ae_title="MEDDET")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    try:
        assert assoc.is_established
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


def test_bad_arguments_are_named(objects):
    destination = Destination(ae_title="PACS", host="127.0.0.1", port=104)
    with pytest.raises(ValueError, match="calling_ae"):
        send_objects(objects, destination, calling_ae="A" * 17)
    with pytest.raises(ValueError, match="retries"):
        send_objects(objects, destination, calling_ae="MEDDET", retries=-1)
