"""The receive node over real loopback associations: dcmtk storescu and pynetdicom SCUs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import BasicTextSRStorage, Verification
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.models import (
    Association,
    Instance,
    Job,
    JobState,
    Outbox,
    SeriesState,
)
from dicom_node.loopback import wait_for
from dicom_node.node import Node
from tests.conftest import storescu
from tests.factories import make_mr_series, write_series
from tests.integration.receiving import MODEL, completed, instance_count, send, series_state

pytestmark = pytest.mark.integration


def test_storescu_series_becomes_a_selected_series_with_a_queued_job(
    node: Node, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    datasets = make_mr_series(12, 128, 128)
    result = storescu(node.port, write_series(datasets, tmp_path / "in"))
    assert result.returncode == 0, result.stderr
    series = wait_for(lambda: completed(session_factory, datasets[0].SeriesInstanceUID))
    assert series.state == SeriesState.selected
    assert series.completion_reason == "expected_count"
    assert series.n_instances == 12 and instance_count(session_factory, series.series_instance_uid) == 12
    with session_factory() as session:
        job = session.scalar(select(Job).where(Job.series_instance_uid == series.series_instance_uid))
        assert job is not None and job.state == JobState.queued and job.model_version == MODEL
        assert session.scalar(select(func.count(Outbox.id)).where(Outbox.job_id == job.id)) == 1
        assoc = session.scalar(select(Association).where(Association.calling_ae == "STORESCU"))
        assert assoc.outcome == "released" and assoc.n_stored == 12 and assoc.ended_at is not None
    for ds in datasets:  # every instance is on disk, byte-complete
        path = node.spool.series_dir(ds.StudyInstanceUID, ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        assert path.stat().st_size > 128 * 128 * 2


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless, DeflatedExplicitVRLittleEndian])
def test_compressed_transfer_syntaxes_are_kept_as_sent(
    node: Node, session_factory: sessionmaker[Session], syntax: str
) -> None:
    datasets = make_mr_series(3, 64, 64)
    for ds in datasets:
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)
    assert send(node.port, datasets) == [statuses.SUCCESS] * 3
    series = wait_for(lambda: completed(session_factory, datasets[0].SeriesInstanceUID))
    with session_factory() as session:
        syntaxes = set(session.scalars(select(Instance.transfer_syntax_uid).where(Instance.series_id == series.id)))
    assert syntaxes == {str(syntax)}


def test_concurrent_associations_and_a_series_over_two_associations(
    node: Node, session_factory: sessionmaker[Session]
) -> None:
    many = [make_mr_series(6, 64, 64, seed=i) for i in range(4)]
    split = make_mr_series(8, 64, 64, seed=9)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda d=d: results.append(send(node.port, d))) for d in many]
    threads.append(threading.Thread(target=lambda: results.append(send(node.port, split[:4]))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == statuses.SUCCESS for batch in results for status in batch)
    assert series_state(session_factory, split[0].SeriesInstanceUID).state == SeriesState.receiving
    assert send(node.port, split[4:]) == [statuses.SUCCESS] * 4
    for datasets in [*many, split]:
        series = wait_for(lambda d=datasets: completed(session_factory, d[0].SeriesInstanceUID))
        assert series.state == SeriesState.selected and series.n_instances == len(datasets)


def test_quiet_period_completes_a_series_without_an_expected_count(
    node: Node, session_factory: sessionmaker[Session]
) -> None:
    datasets = make_mr_series(3, 64, 64, images_in_acquisition=False)
    assert send(node.port, datasets) == [statuses.SUCCESS] * 3
    series = wait_for(lambda: completed(session_factory, datasets[0].SeriesInstanceUID))
    assert series.completion_reason == "quiet_period"


def test_skipped_series_record_the_failed_rule(node: Node, session_factory: sessionmaker[Session]) -> None:
    axial = make_mr_series(2, 64, 64, orientation=(1, 0, 0, 0, 1, 0))
    assert send(node.port, axial) == [statuses.SUCCESS] * 2
    series = wait_for(lambda: completed(session_factory, axial[0].SeriesInstanceUID))
    assert series.state == SeriesState.skipped and series.failed_rule == "sagittal"
    with session_factory() as session:
        assert session.scalar(select(func.count(Job.id)).where(Job.series_id == series.id)) == 0


def test_a_series_with_too_few_slices_is_skipped(node: Node, session_factory: sessionmaker[Session]) -> None:
    """Issue 12 item 13: a 2-slice sagittal cervical T2 "series" is not analysed."""
    tiny = make_mr_series(2, 64, 64)
    assert send(node.port, tiny) == [statuses.SUCCESS] * 2
    series = wait_for(lambda: completed(session_factory, tiny[0].SeriesInstanceUID))
    assert series.state == SeriesState.skipped and series.failed_rule == "min_slices"
    with session_factory() as session:
        assert session.scalar(select(func.count(Job.id)).where(Job.series_id == series.id)) == 0


def test_duplicates_and_revisions(node: Node, session_factory: sessionmaker[Session]) -> None:
    datasets = make_mr_series(2, 64, 64, images_in_acquisition=False)
    assert send(node.port, datasets) == [statuses.SUCCESS] * 2
    assert send(node.port, datasets[:1]) == [statuses.SUCCESS]  # same bytes: ignored
    changed = make_mr_series(1, 64, 64, seed=5)[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(changed, keyword, datasets[1].get(keyword))
    changed.file_meta.MediaStorageSOPInstanceUID = changed.SOPInstanceUID
    assert send(node.port, [changed]) == [statuses.SUCCESS]  # different bytes: a revision
    series = wait_for(lambda: completed(session_factory, datasets[0].SeriesInstanceUID))
    with session_factory() as session:
        revisions = sorted(session.scalars(select(Instance.revision).where(Instance.series_id == series.id)))
    assert revisions == [0, 0, 1] and series.n_instances == 2


def test_late_instance_reopens_a_completed_series_and_requeues_its_job(
    node: Node, session_factory: sessionmaker[Session]
) -> None:
    datasets = make_mr_series(6, 64, 64, images_in_acquisition=False)
    assert send(node.port, datasets[:5]) == [statuses.SUCCESS] * 5
    wait_for(lambda: completed(session_factory, datasets[0].SeriesInstanceUID))
    with session_factory() as session:  # pretend a worker ran it
        job = session.scalar(select(Job))
        job.state = JobState.done
        session.commit()
    assert send(node.port, datasets[5:]) == [statuses.SUCCESS]
    series = wait_for(
        lambda: (s := completed(session_factory, datasets[0].SeriesInstanceUID)) and s.n_instances == 6 and s
    )
    with session_factory() as session:
        job = session.scalar(select(Job).where(Job.series_id == series.id))
        assert job.state == JobState.queued and job.run == 2


def test_non_image_sop_classes_are_refused_at_negotiation(node: Node) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(BasicTextSRStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assert BasicTextSRStorage not in accepted and Verification in accepted
    assert assoc.send_c_echo().Status == statuses.SUCCESS
    assoc.release()
