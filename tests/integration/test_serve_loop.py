"""The whole loop: dcmtk storescu -> ``meddet serve`` -> worker -> results at a destination SCP.

Distributed mode (``meddet serve`` with Redis + a ``meddet worker`` subprocess), embedded mode
(``meddet serve`` alone), and Redis stopped while the node receives: nothing is lost and the job
runs once Redis is back. Results arrive exactly once in every case.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node import jobs
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Job, Outbox
from dicom_node.loopback import MeddetProcess, TestPACS, free_port, node_environment, wait_for
from tests.factories import write_series
from tests.integration.test_worker_loop import (
    EVERY_STATE,
    _assert_results_once,
    _settings,
    _states,
    series_datasets,
)
from tests.worker.support import (
    RedisServer,
    checkpoint_for_tests,
    claimed_redis_db,
    start_worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STORESCU = "/usr/bin/storescu"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return checkpoint_for_tests(tmp_path_factory.mktemp("checkpoint"))


def start_serve(env: dict[str, str], log: Path) -> MeddetProcess:
    return MeddetProcess(["serve"], env, log, ready="listening on")


def _env(tmp_path: Path, scp: TestPACS, checkpoint: Path, broker_url: str | None) -> dict[str, str]:
    env = node_environment(dict(os.environ), tmp_path / "data", free_port(), scp.destination, 2, checkpoint)
    env |= {"MEDDET_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.db'}", "OMP_NUM_THREADS": "1"}
    if broker_url:
        env["MEDDET_BROKER_URL"] = broker_url
    return env


def _send(tmp_path: Path, env: dict[str, str], n: int = 8) -> None:
    files = write_series(series_datasets(n, seed=3), tmp_path / "to-send")
    subprocess.run(
        [STORESCU, "-aec", "MEDDET", "127.0.0.1", env["MEDDET_PORT"], *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        check=True,
        capture_output=True,
        timeout=60,
    )


def _one_job(env: dict[str, str]):  # type: ignore[no-untyped-def]
    sessions = make_session_factory(make_engine(env["MEDDET_DATABASE_URL"]))

    def finished() -> int | None:
        with sessions() as session:
            job = session.scalars(select(Job)).first()
            return job.id if job is not None and job.state.value in ("done", "failed") else None

    return sessions, finished


def _check(sessions, job_id: int, scp: TestPACS, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    time.sleep(1.0)  # a duplicate would arrive now
    with sessions() as session:
        assert len(session.scalars(select(Job)).all()) == 1
        history = jobs.job_history(session, job_id)
    assert _states(history) == EVERY_STATE, history
    _assert_results_once(scp, _settings(env), job_id)


def _send_and_check(tmp_path: Path, env: dict[str, str], scp: TestPACS) -> None:
    _send(tmp_path, env)
    sessions, finished = _one_job(env)
    job_id = wait_for(finished, 120, "the job to finish", interval=0.2)
    _check(sessions, job_id, scp, env)


def test_storescu_to_serve_to_celery_worker_to_destination(tmp_path, scp, checkpoint):
    with claimed_redis_db() as redis_url:
        env = _env(tmp_path, scp, checkpoint, redis_url)
        serve = start_serve(env, tmp_path / "serve.log")
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            _send_and_check(tmp_path, env, scp)
        finally:
            worker.stop()
            serve.stop()


def test_storescu_to_serve_embedded_to_destination(tmp_path, scp, checkpoint):
    env = _env(tmp_path, scp, checkpoint, None)
    serve = start_serve(env, tmp_path / "serve.log")
    try:
        _send_and_check(tmp_path, env, scp)
    finally:
        serve.stop()


def test_a_late_instance_reruns_the_finished_job(tmp_path, scp, checkpoint):
    """Late instances reopen a finished series; its job runs again (run 2) and re-sends results
    with the same SOP Instance UIDs."""
    env = _env(tmp_path, scp, checkpoint, None)
    serve = start_serve(env, tmp_path / "serve.log")
    try:
        _send_and_check(tmp_path, env, scp)
        first = sorted(scp.uids())
        late = dcmread(sorted((tmp_path / "to-send").glob("*.dcm"))[-1])
        late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        late.InstanceNumber = int(late.InstanceNumber) + 1
        late.ImagePositionPatient = [float(v) + 1.0 for v in late.ImagePositionPatient]
        path = tmp_path / "late.dcm"
        late.save_as(path)
        subprocess.run(
            [STORESCU, "-aec", "MEDDET", "127.0.0.1", env["MEDDET_PORT"], str(path)],
            env={**os.environ, "TCP_NODELAY": "1"},
            check=True,
            capture_output=True,
            timeout=60,
        )
        sessions, _ = _one_job(env)

        def second_run_done() -> bool:
            with sessions() as session:
                job = session.scalars(select(Job)).one()
                return job.run == 2 and job.state.value == "done"

        wait_for(second_run_done, 120, "the second run", interval=0.2)
        with sessions() as session:
            job = session.scalars(select(Job)).one()
            states = _states(jobs.job_history(session, job.id))
    finally:
        serve.stop()
    assert states == EVERY_STATE + EVERY_STATE, states
    assert sorted(scp.uids()) == sorted(first + first)  # same objects, same UIDs, once per run


def test_embedded_serve_moves_a_job_queued_for_another_model_to_its_own(tmp_path, scp, checkpoint):
    """A job queued before an upgrade (another model version) would fail on this node's only
    worker; ``meddet serve`` in embedded mode queues its series for its own model at start-up."""
    from migrations import upgrade
    from tests.worker.support import register_series

    env = _env(tmp_path, scp, checkpoint, None)
    upgrade(env["MEDDET_DATABASE_URL"])
    sessions = make_session_factory(make_engine(env["MEDDET_DATABASE_URL"]))
    old = register_series(sessions, series_datasets(6), tmp_path / "spooled", "meddet-student-000000000000+r0")
    serve = start_serve(env, tmp_path / "serve.log")
    try:

        def moved_and_done() -> int | None:
            with sessions() as session:
                new = session.scalars(select(Job).where(Job.id != old)).one_or_none()
                return new.id if new is not None and new.state.value == "done" else None

        new_id = wait_for(moved_and_done, 120, "the moved job", interval=0.2)
    finally:
        serve.stop()
    with sessions() as session:
        job = session.get(Job, old)
        assert job.state.value == "failed" and f"re-analysed as job {new_id}" in job.reason
        assert session.get(Job, new_id).model_version != job.model_version
    assert f"its series queued as job {new_id}" in (tmp_path / "serve.log").read_text()
    _assert_results_once(scp, _settings(env), new_id)


def test_redis_down_while_receiving_loses_nothing(tmp_path, scp, checkpoint):
    redis_server = RedisServer(tmp_path / "redis").start()
    env = _env(tmp_path, scp, checkpoint, redis_server.url)
    serve = start_serve(env, tmp_path / "serve.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        redis_server.stop()
        _send(tmp_path, env)  # the node keeps receiving with the broker down
        sessions, finished = _one_job(env)

        def waiting_in_outbox() -> bool:
            with sessions() as session:
                rows = session.scalars(select(Outbox)).all()
                return len(rows) == 1 and rows[0].published_at is None and rows[0].attempts >= 1

        wait_for(waiting_in_outbox, 60, "the job waiting in the outbox", interval=0.2)
        assert scp.uids() == []
        redis_server.start()
        job_id = wait_for(finished, 180, "the job to run after Redis returned", interval=0.2)
        _check(sessions, job_id, scp, env)
    finally:
        worker.stop()
        serve.stop()
        redis_server.stop()


def test_each_destination_gets_the_result_objects_it_asked_for(tmp_path, scp, checkpoint):
    """A PACS that takes no SEG is configured ``AE@host:port?objects=sr+gsps``."""
    old_pacs = TestPACS(ae_title="OLDPACS").start()
    try:
        env = _env(tmp_path, scp, checkpoint, None)
        env["MEDDET_DESTINATIONS"] = f"{scp.destination},{old_pacs.destination}?objects=sr+gsps"
        serve = start_serve(env, tmp_path / "serve.log")
        try:
            _send(tmp_path, env)
            sessions, finished = _one_job(env)
            wait_for(finished, 120, "the job to finish", interval=0.2)
        finally:
            serve.stop()
        modality = lambda server: sorted(str(ds.Modality) for ds in server.received())  # noqa: E731
        assert modality(scp) == ["PR", "SEG", "SR"]
        assert modality(old_pacs) == ["PR", "SR"]
    finally:
        old_pacs.stop()
