"""Storage Commitment across a restart (issue 14): an accepted N-ACTION is on disk before its
N-ACTION-RSP, so a node stopped (or killed) before the N-EVENT-REPORT could go answers it
after the next start, on a new association, with the right committed and failed references.
"""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
)
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.commitment import CLASS_INSTANCE_CONFLICT, NO_SUCH_INSTANCE, WELL_KNOWN_INSTANCE
from dicom_node.commitment_store import PendingRequests
from dicom_node.config import Settings
from dicom_node.loopback import free_port, wait_for
from tests.factories import make_mr_series
from tests.integration.receiving import serve, start_node
from tests.integration.test_storage_commitment import request, scu

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def committed(report: Dataset) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in report.get("ReferencedSOPSequence", [])}


def listening_scu(ae_title: str, port: int) -> tuple[AE, queue.Queue[tuple[int, Dataset, str]]]:
    """The SCU's own SCP on ``port``, taking N-EVENT-REPORTs (the node in the SCP role)."""
    reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type or 0, event.event_information, event.assoc.requestor.ae_title.strip()))
        return 0x0000, None

    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return ae, reports


def store_and_request(port: int, datasets: list[Dataset]) -> tuple[Dataset, list[tuple[str, str, int]]]:
    """C-STORE ``datasets``, then N-ACTION for them plus two references that must fail; the
    association is released at once (the SCU waits for the report on its own SCP)."""
    assoc = scu().associate("127.0.0.1", port, ae_title="MEDDET")
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [statuses.SUCCESS] * len(datasets)
        missing = generate_uid()
        failing = [
            (MRImageStorage, missing, NO_SUCH_INSTANCE),
            (CTImageStorage, str(datasets[0].SOPInstanceUID), CLASS_INSTANCE_CONFLICT),
        ]
        transaction = request(
            [(MRImageStorage, str(ds.SOPInstanceUID)) for ds in datasets] + [(c, i) for c, i, _ in failing]
        )
        status, _ = assoc.send_n_action(transaction, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    return transaction, failing


def check_report(
    got: tuple[int, Dataset, str], transaction: Dataset, datasets: list[Dataset], failing: list[tuple[str, str, int]]
) -> None:
    event_type, report, calling = got
    assert event_type == 2 and calling == "MEDDET"
    assert report.TransactionUID == transaction.TransactionUID
    assert committed(report) == {str(ds.SOPInstanceUID) for ds in datasets}
    failed = {
        (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): i.FailureReason
        for i in report.FailedSOPSequence
    }
    assert failed == {(c, i): reason for c, i, reason in failing}


def test_a_request_pending_at_stop_is_answered_after_the_restart(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    port = free_port()  # the SCU's own SCP: not listening until after the restart
    settings = node_settings.model_copy(
        update={
            "commitment_association": "new",
            "commitment_peers": Settings(commitment_peers=f"COMMITSCU@127.0.0.1:{port}").commitment_peers,
        }
    )
    pending = PendingRequests(settings.data_dir / "commitment")
    datasets = make_mr_series(3, 64, 64)
    node = start_node(settings, session_factory)
    try:
        transaction, failing = store_and_request(node.port, datasets)
        assert len(pending.load()) == 1  # on disk once N-ACTION-RSP came
    finally:
        node.stop(timeout=5)  # the report's one attempt at shutdown finds nobody listening
    assert not node.commitment.delivered
    [kept] = pending.load()
    assert kept.transaction_uid == transaction.TransactionUID and kept.calling_ae == "COMMITSCU"

    listener, reports = listening_scu("COMMITSCU", port)
    restarted = start_node(settings, session_factory)
    try:
        check_report(reports.get(timeout=30), transaction, datasets, failing)
        assert wait_for(lambda: restarted.commitment.delivered.get(str(transaction.TransactionUID))) == "new"
        assert wait_for(lambda: not pending.load())  # answered: forgotten
    finally:
        restarted.stop(timeout=5)
        listener.shutdown()
    with pytest.raises(queue.Empty):
        reports.get(timeout=0.5)  # answered once


def test_a_request_pending_at_sigkill_is_answered_after_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``meddet serve`` killed right after N-ACTION-RSP: instances maybe not flushed or recorded
    yet, the report not sent; after the restart recovery records them and the report comes."""
    port, scu_port = free_port(), free_port()
    monkeypatch.setenv("MEDDET_COMMITMENT_ASSOCIATION", "new")
    monkeypatch.setenv("MEDDET_COMMITMENT_PEERS", f"COMMITSCU@127.0.0.1:{scu_port}")
    datasets = make_mr_series(20, 64, 64, images_in_acquisition=False)
    node = serve(tmp_path, port)
    try:
        transaction, failing = store_and_request(port, datasets)
    finally:
        node.kill()
    pending = PendingRequests(tmp_path / "data" / "commitment")
    assert [p.transaction_uid for p in pending.load()] == [transaction.TransactionUID]

    listener, reports = listening_scu("COMMITSCU", scu_port)
    node = serve(tmp_path, port)  # recovery, then the pending request
    try:
        check_report(reports.get(timeout=60), transaction, datasets, failing)
        assert wait_for(lambda: not pending.load())
    finally:
        node.stop(30)
        listener.shutdown()
