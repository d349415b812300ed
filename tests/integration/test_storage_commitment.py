"""Storage Commitment Push Model SCP (PS3.4 Annex J) end to end, pynetdicom as the SCU.

The SCU stores instances, sends N-ACTION (Request Storage Commitment) and gets the
N-EVENT-REPORT on the same association or, configured so, on a new association to its own
SCP; committed and failed references with their reasons; and nothing is confirmed before
group commit has flushed it.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    BasicTextSRStorage,
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
)
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.commitment import (
    CLASS_INSTANCE_CONFLICT,
    CLASS_NOT_SUPPORTED,
    NO_SUCH_INSTANCE,
    WELL_KNOWN_INSTANCE,
)
from dicom_node.config import Settings
from dicom_node.loopback import free_port, wait_for
from dicom_node.node import Node
from tests.factories import make_mr_series
from tests.integration.receiving import start_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def request(references: list[tuple[str, str]], transaction_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid or generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def scu(ae_title: str = "COMMITSCU") -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def references(report: Dataset, sequence: str) -> dict[str, int | None]:
    return {str(item.ReferencedSOPInstanceUID): item.get("FailureReason") for item in report.get(sequence, [])}


def test_report_on_the_same_association_with_committed_and_failed_references(node: Node) -> None:
    stored = make_mr_series(3, 64, 64)
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    assoc = scu().associate(
        "127.0.0.1", node.port, ae_title="MEDDET", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in stored] == [statuses.SUCCESS] * 3
        missing = generate_uid()
        refs = [(MRImageStorage, str(ds.SOPInstanceUID)) for ds in stored]
        refs += [
            (MRImageStorage, missing),  # never sent
            (CTImageStorage, str(stored[0].SOPInstanceUID)),  # sent as MR
            (BasicTextSRStorage, generate_uid()),  # a class the node does not store
        ]
        transaction = request(refs)
        status, _ = assoc.send_n_action(transaction, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0000
        event_type, report = reports.get(timeout=30)
    finally:
        assoc.release()
    assert event_type == 2  # some failed
    assert report.TransactionUID == transaction.TransactionUID
    assert references(report, "ReferencedSOPSequence") == {str(ds.SOPInstanceUID): None for ds in stored}
    failed = report.FailedSOPSequence
    reasons = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): i.FailureReason for i in failed}
    assert reasons == {
        (MRImageStorage, missing): NO_SUCH_INSTANCE,
        (CTImageStorage, str(stored[0].SOPInstanceUID)): CLASS_INSTANCE_CONFLICT,
        (BasicTextSRStorage, refs[-1][1]): CLASS_NOT_SUPPORTED,
    }
    assert wait_for(lambda: node.commitment.delivered.get(str(transaction.TransactionUID))) == "same"


def test_everything_committed_is_event_type_1_and_an_invalid_request_is_refused(node: Node) -> None:
    stored = make_mr_series(2, 64, 64)
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
    handler = (evt.EVT_N_EVENT_REPORT, lambda e: (reports.put((e.event_type, e.event_information)), (0, None))[1])
    assoc = scu().associate("127.0.0.1", node.port, ae_title="MEDDET", evt_handlers=[handler])
    try:
        for ds in stored:
            assoc.send_c_store(ds)
        empty = Dataset()
        empty.TransactionUID = generate_uid()
        refused, _ = assoc.send_n_action(empty, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert refused.Status == 0x0115  # invalid argument value: no references
        wrong_action, _ = assoc.send_n_action(
            request([(MRImageStorage, str(stored[0].SOPInstanceUID))]),
            2,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assert wrong_action.Status == 0x0123  # no such action
        status, _ = assoc.send_n_action(
            request([(MRImageStorage, str(ds.SOPInstanceUID)) for ds in stored]),
            1,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assert status.Status == 0x0000
        event_type, report = reports.get(timeout=30)
    finally:
        assoc.release()
    assert event_type == 1 and "FailedSOPSequence" not in report
    assert set(references(report, "ReferencedSOPSequence")) == {str(ds.SOPInstanceUID) for ds in stored}


def listening_scu(ae_title: str) -> tuple[AE, int, queue.Queue[tuple[int, Dataset, str]]]:
    """The SCU's own SCP: accepts the Storage Commitment SOP Class with the node as SCP (role
    selection) and collects the N-EVENT-REPORTs."""
    reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information, event.assoc.requestor.ae_title.strip()))
        return 0x0000, None

    port = free_port()
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return ae, port, reports


@pytest.mark.parametrize("mode", ["new", "same"])
def test_report_on_a_new_association_to_the_requesting_ae(
    node_settings: Settings, session_factory: sessionmaker[Session], mode: str
) -> None:
    """``new``: always a new association; ``same``: a new one because the SCU released first."""
    listener, port, reports = listening_scu("COMMITSCU")
    settings = node_settings.model_copy(
        update={
            "commitment_association": mode,
            "commitment_peers": Settings(commitment_peers=f"COMMITSCU@127.0.0.1:{port}").commitment_peers,
        }
    )
    node = start_node(settings, session_factory)
    try:
        stored = make_mr_series(2, 64, 64)
        assoc = scu().associate("127.0.0.1", node.port, ae_title="MEDDET")
        for ds in stored:
            assert assoc.send_c_store(ds).Status == statuses.SUCCESS
        transaction = request([(MRImageStorage, str(ds.SOPInstanceUID)) for ds in stored])
        status, _ = assoc.send_n_action(transaction, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0000
        assoc.release()  # a typical SCU does not wait for the report
        event_type, report, calling = reports.get(timeout=30)
        assert event_type == 1 and calling == "MEDDET"
        assert report.TransactionUID == transaction.TransactionUID
        assert set(references(report, "ReferencedSOPSequence")) == {str(ds.SOPInstanceUID) for ds in stored}
        assert wait_for(lambda: node.commitment.delivered.get(str(transaction.TransactionUID))) == "new"
    finally:
        node.stop(timeout=5)
        listener.shutdown()


def test_nothing_is_confirmed_before_it_is_flushed(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Group commit: C-STORE success comes before the flush; the commitment report after it."""
    node = Node(node_settings, session_factory, on_selected=lambda s, series: None)
    assert node.committer is not None
    opened, flushed = threading.Event(), []
    real_flush = node.committer.flush

    def gated(folder: Path, paths: list[Path]) -> None:
        opened.wait(30)
        real_flush(folder, paths)
        flushed.extend(paths)

    node.committer.flush = gated
    node.start()
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
    handler = (evt.EVT_N_EVENT_REPORT, lambda e: (reports.put((e.event_type, e.event_information)), (0, None))[1])
    try:
        stored = make_mr_series(2, 64, 64)
        assoc = scu().associate("127.0.0.1", node.port, ae_title="MEDDET", evt_handlers=[handler])
        assert [assoc.send_c_store(ds).Status for ds in stored] == [statuses.SUCCESS] * 2  # not flushed yet
        transaction = request([(MRImageStorage, str(ds.SOPInstanceUID)) for ds in stored])
        assert assoc.send_n_action(transaction, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)[0].Status == 0
        with pytest.raises(queue.Empty):
            reports.get(timeout=1.5)  # the flush has not happened: no report
        assert flushed == []
        opened.set()
        event_type, report = reports.get(timeout=30)
        assert event_type == 1 and len(flushed) == 2
        assoc.release()
    finally:
        opened.set()
        node.stop(timeout=5)
