"""An audit DB with something to show, written as the node and the worker write it: a series
spooled and recorded, its job run with results on disk whose send failed, and two quarantined
files (one a good image refused by a limit, one garbage)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Association, Instance, Job, JobState, QuarantineRecord, SendAttempt, utcnow
from dicom_node.config import Settings
from dicom_node.spool import Spool
from tests.factories import make_mr_series
from tests.worker.fakes import result_object
from tests.worker.support import register_series
from worker.pipeline import write_results

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-4242"
ACCESSION = "ACC-77"
CALLING_AE = "MODALITY1"
MODEL = "test-model"


@dataclass(frozen=True)
class Seeded:
    job_id: int
    series_uid: str
    study_uid: str
    good_quarantine: int  # a valid MR image quarantined by a limit: release files it
    bad_quarantine: int  # garbage: release refuses it
    quarantined_series_uid: str


def _findings(datasets: list[Dataset]) -> dict:
    key = datasets[1]
    return {
        "study_instance_uid": key.StudyInstanceUID,
        "series_instance_uid": key.SeriesInstanceUID,
        "model": {"name": "meddet", "version": MODEL},
        "operating_point": {"threshold": 0.5, "method": "test"},
        "levels": {"anchor": "found", "reason": None},
        "findings": [
            {
                "level": "C4-C5",
                "label": "normal_disc",
                "score": 0.12,
                "probability": 0.12,
                "protrusion_mm": 0.4,
                "sop_instance_uid": key.SOPInstanceUID,
                "box": [12, 10, 40, 20],
            },
            {
                "level": "C5-C6",
                "label": "herniation",
                "score": 0.91,
                "probability": 0.91,
                "protrusion_mm": 2.6,
                "sop_instance_uid": key.SOPInstanceUID,
                "box": [12, 30, 40, 42],
            },
        ],
    }


def seed(settings: Settings, sessions: sessionmaker[Session]) -> Seeded:
    datasets = make_mr_series(3, 64, 64, seed=3)
    for ds in datasets:
        ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, ACCESSION
    first = datasets[0]
    folder = settings.spool_dir / str(first.StudyInstanceUID) / str(first.SeriesInstanceUID)
    job_id = register_series(sessions, datasets, folder, MODEL)
    out = settings.results_dir / str(job_id)
    sr = result_object(seed=5)
    write_results(out, _findings(datasets), [("sr", sr)])
    with transaction(sessions) as session:
        association = Association(
            calling_ae=CALLING_AE,
            called_ae="MEDDET",
            address="127.0.0.1",
            started_at=utcnow(),
            ended_at=utcnow(),
            n_stored=3,
            outcome="released",
        )
        session.add(association)
        session.flush()
        session.execute(update(Instance).values(association_id=association.id))
        job = session.get(Job, job_id)
        assert job is not None
        jobs.transition(session, job, JobState.running)
        job.results_path = str(out)
        jobs.transition(session, job, JobState.results_written, {"objects": ["sr"]})
        session.add(
            SendAttempt(
                job_id=job_id,
                destination="PACS@127.0.0.1:1",
                sop_instance_uid=sr.SOPInstanceUID,
                kind="sr",
                outcome="unreachable",
                error="connection refused",
                at=utcnow(),
            )
        )
        jobs.transition(session, job, JobState.failed, "gave up after 0 retries: PACS@127.0.0.1:1 unreachable")
    spool = Spool(settings.spool_dir, settings.incoming_tmp_dir, settings.quarantine_dir)
    [other] = make_mr_series(1, 32, 32, seed=4)
    other_path = settings.data_dir / "other.dcm"
    other.save_as(other_path, enforce_file_format=True)
    good = spool.quarantine(
        other_path.read_bytes(), "image too large: 1024 pixels > 512", sop_instance_uid=str(other.SOPInstanceUID)
    )
    other_path.unlink()
    bad = spool.quarantine(b"this is not DICOM", "not a DICOM file")
    with transaction(sessions) as session:
        rows = [
            QuarantineRecord(
                sop_instance_uid=str(other.SOPInstanceUID),
                path=str(good),
                reason="image too large: 1024 pixels > 512",
                at=utcnow(),
            ),
            QuarantineRecord(path=str(bad), reason="not a DICOM file", at=utcnow()),
        ]
        session.add_all(rows)
        session.flush()
        ids = [r.id for r in rows]
    return Seeded(
        job_id, str(first.SeriesInstanceUID), str(first.StudyInstanceUID), ids[0], ids[1], str(other.SeriesInstanceUID)
    )
