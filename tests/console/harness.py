"""A real ``meddet serve`` (embedded worker, SQLite, web console on) that received a synthetic
study, for the browser tests and the screenshots in docs/console.md.

The node's destination is a port where nothing listens and ``MEDDET_SEND_RETRIES=0``, so the
job runs the real detector, writes its results and then fails to send them: a job with findings,
previews and a failure, which an admin may retry and a radiologist may not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from dicom_node.loopback import NodeProcess, free_port, node_environment, wait_for

ADMIN = ("alice", "alice-password-1")
RADIOLOGIST = ("rita", "rita-password-1")
CALLING_AE = "CONSOLETEST"


@dataclass(frozen=True)
class RunningNode:
    url: str  # the web console, e.g. http://127.0.0.1:PORT
    data_dir: Path
    log: Path
    series_uid: str
    study_uid: str
    job_id: int
    patient_name: str
    patient_id: str


def add_users(database_url: str) -> None:
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.console import users
    from migrations import upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    users.add_user(sessions, ADMIN[0], "admin", ADMIN[1], by="tests")
    users.add_user(sessions, RADIOLOGIST[0], "radiologist", RADIOLOGIST[1], by="tests")
    engine.dispose()


def job_of(url: str, series_uid: str) -> dict | None:
    """The series' job once it has failed (its results could not be sent), via the JSON API."""
    rows = httpx.get(f"{url}/api/jobs", auth=ADMIN, timeout=10).raise_for_status().json()
    for row in rows:
        if row["series_instance_uid"] == series_uid and row["state"] in ("failed", "done", "quarantined"):
            return row
    return None


@contextmanager
def node_with_study(folder: Path, seed: int = 1, timeout: float = 150.0) -> Iterator[RunningNode]:
    from pydicom import dcmread

    from dicom_node.destinations import Destination
    from dicom_node.sender import send_objects
    from dicom_node.synth import write_studies

    [study] = write_studies(folder / "study", 1, seed)
    sources = [dcmread(p) for p in sorted(study.dicom_dir.glob("*.dcm"))]
    data_dir = folder / "node"
    add_users(f"sqlite:///{(data_dir / 'meddet.db').resolve()}")
    dicom_port, console_port = free_port(), free_port()
    nobody = f"DOWNPACS@127.0.0.1:{free_port()}"  # nothing listens there
    env = node_environment(dict(os.environ), data_dir, dicom_port, nobody, 1.0, None, "cpu")
    env |= {"MEDDET_CONSOLE_PORT": str(console_port), "MEDDET_SEND_RETRIES": "0", "OMP_NUM_THREADS": "1"}
    log = folder / "node.log"
    node = NodeProcess(env, log)
    url = f"http://127.0.0.1:{console_port}"
    try:
        node.wait_listening(dicom_port)
        wait_for(lambda: "web console on" in log.read_text(errors="replace"), 30, "the web console")
        report = send_objects(
            sources, Destination(ae_title="MEDDET", host="127.0.0.1", port=dicom_port), calling_ae=CALLING_AE
        )
        assert report.ok, report.summary
        job = wait_for(
            lambda: job_of(url, study.series_instance_uid),
            timeout,
            lambda: f"the job of the series\n{node.tail()}",
            interval=0.5,
        )
        first = sources[0]
        yield RunningNode(
            url,
            data_dir,
            log,
            study.series_instance_uid,
            str(first.StudyInstanceUID),
            int(job["job_id"]),
            str(first.PatientName),
            str(first.PatientID),
        )
    finally:
        node.stop(timeout=3)  # test data only: a node still closing an association is killed
